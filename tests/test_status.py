"""``lossbench status``: every run of a runs folder and where it stands, read from the folder alone."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import pytest
from helpers.cli import SMOKE
from helpers.processes import dead_pid

from lossbench import claim
from lossbench.cli import main
from lossbench.config import load_config
from lossbench.identity import run_config
from lossbench.record import FAILED, OK, RUNNING, Progress, RunRecord, config_path, run_dir_for, write_record, write_run_config


def set_up(out, losses: str):
    """A suite of ``losses`` (seed 0) whose runs a launcher has set up under ``out``: its config and run folders."""
    cfg = load_config(SMOKE, [f"losses={losses}"])
    dirs = {}
    for entry in cfg.losses:
        rc = run_config(cfg, entry, 0)
        dirs[entry.label] = run_dir_for(out, rc)
        write_run_config(dirs[entry.label], rc)
    return cfg, dirs


def status_lines(out, capsys) -> tuple[dict[str, str], str]:
    """``lossbench status --out out``: its line for each run, and the whole output."""
    assert main(["status", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    return {line.split("  ")[0]: line for line in text.splitlines() if " seed 0" in line}, text


def test_status_reads_queued_running_stalled_finished_and_failed_runs_from_the_folder(tmp_path, capsys):
    cfg, dirs = set_up(tmp_path, "[ce, dice, tversky, focal, lovasz_softmax]")

    def record(label: str, status: str, **fields) -> None:
        rec = RunRecord.start(run_config(cfg, next(e for e in cfg.losses if e.label == label), 0), attempts=1)
        rec.status = status
        for k, v in fields.items():
            setattr(rec, k, v)
        write_record(dirs[label], rec)

    claim.claim(dirs["ce"], claim.me("compare"))  # claimed by a live launcher, not started: queued
    record("dice", RUNNING, progress=Progress(3, 10, 0.5, step=40, steps=63, rate=3.14, epoch_s=60.0))
    claim.claim(dirs["dice"], claim.held_by(claim.me("job"), job=None))  # this process: alive
    record("tversky", RUNNING, progress=Progress(1, 10, None))
    claim.claim(dirs["tversky"], claim.me("compare", pid=dead_pid()))  # its owner died: stalled
    record("focal", OK, test={"miou": 0.4321})
    record("lovasz_softmax", FAILED, error="FloatingPointError: loss is nan")

    lines, out = status_lines(tmp_path, capsys)
    assert "queued" in lines["ce seed 0"] and f"pid {os.getpid()}" in lines["ce seed 0"]
    # inside its fourth epoch: the step, the rate, the last validation and the time left (60 s × 6.37 epochs)
    assert "running" in lines["dice seed 0"]
    assert "epoch 4/10, step 40/63 (3.1 it/s), val mIoU 0.500, about 6m22s left" in lines["dice seed 0"]
    assert "stalled" in lines["tversky seed 0"] and "next compare resumes it" in lines["tversky seed 0"]
    assert "finished" in lines["focal seed 0"] and "test mIoU 0.432" in lines["focal seed 0"]
    assert "failed" in lines["lovasz_softmax seed 0"] and "loss is nan" in lines["lovasz_softmax seed 0"]
    assert "5 runs: 1 queued, 1 running, 1 finished, 1 failed, 1 stalled" in out


def test_status_lists_every_run_whatever_is_damaged_missing_or_linked(tmp_path, capsys):
    # one truncated config.yaml failed the whole listing; a deleted one hid a finished run; a run claimed but
    # without a record was invisible; a run folder linked under a second name was listed twice
    cfg, dirs = set_up(tmp_path, "[ce, dice, tversky, focal]")
    config_path(dirs["ce"]).write_text("suite: smoke\nloss: {name: c")  # truncated
    done = RunRecord.start(run_config(cfg, cfg.losses[1], 0), attempts=1)
    done.status, done.test = OK, {"miou": 0.5}
    write_record(dirs["dice"], done)
    config_path(dirs["dice"]).unlink()  # finished, then its config deleted
    config_path(dirs["tversky"]).unlink()
    claim.claim(dirs["tversky"], claim.me("compare"))  # claimed by a live launcher, config not written yet
    (tmp_path / "focal" / "alias").symlink_to(dirs["focal"].name)  # the same run under a second name

    lines, out = status_lines(tmp_path, capsys)
    assert "damaged" in lines["ce seed 0"] and "config.yaml cannot be read" in lines["ce seed 0"]
    assert "finished" in lines["dice seed 0"] and "test mIoU 0.500" in lines["dice seed 0"]
    assert "queued" in lines["tversky seed 0"]
    assert "unclaimed" in lines["focal seed 0"]
    assert "4 runs:" in out  # focal once


def test_progress_reads_back_what_a_run_writes_and_tolerates_old_or_odd_records():
    prog = Progress(2, 8, 0.41, step=10, steps=40, rate=2.5, epoch_s=100.0)
    assert Progress.from_json(json.loads(json.dumps(asdict(prog)))) == prog
    assert Progress.from_json({"epoch": 2, "max_epochs": 8, "val_miou": None}) == Progress(2, 8, None)  # a record from before steps
    assert Progress.from_json({"epoch": 1, "max_epochs": 8, "val_miou": None, "step": "x", "rate": True}).step is None
    assert prog.seconds_left() == pytest.approx(100.0 * (8 - 2 - 0.25))
    assert Progress(0, 8, None, step=3, steps=40).seconds_left() is None  # no epoch timed yet: no guess
    assert Progress(8, 8, 0.5).describe() == "epoch 8/8, val mIoU 0.500"


def test_a_record_of_valid_json_with_wrong_types_is_named_damaged(tmp_path, capsys):
    # issue 30 (16): "miou": "high" made status say "Unknown format code 'f'…" and report "could not convert…"
    import json

    from lossbench.record import DamagedRecord, read_record, record_path

    cfg, dirs = set_up(tmp_path, "[ce, dice]")
    for name, edit in (("ce", {"miou": "high"}), ("dice", {"per_class": {"blob": {"iou": "high"}}})):
        rec = RunRecord.start(run_config(cfg, next(e for e in cfg.losses if e.label == name), 0), attempts=1)
        rec.status, rec.test = OK, {"miou": 0.5, "per_class": {}}
        write_record(dirs[name], rec)
        data = json.loads(record_path(dirs[name]).read_text())
        data["test"].update(edit)
        record_path(dirs[name]).write_text(json.dumps(data))
    with pytest.raises(DamagedRecord, match=r"metrics.json is damaged \(test.miou is 'high', expected a number\)"):
        read_record(dirs["ce"])
    with pytest.raises(DamagedRecord, match=r"test.per_class.blob.iou is 'high', expected a number"):
        read_record(dirs["dice"])
    lines, out = status_lines(tmp_path, capsys)
    assert "damaged" in lines["ce seed 0"] and "damaged" in lines["dice seed 0"]
    prog = {"epoch": "two", "max_epochs": 8, "val_miou": "high"}  # a progress of the wrong types reads as unknown
    from lossbench.record import Progress

    assert Progress.from_json(prog).describe() == "epoch 0/8"


def test_the_suite_says_when_a_run_scores_its_test_set_and_its_eta_does_not_jump(tmp_path):
    # issue 30 (7): nothing was printed for minutes while the test set was scored; the ETA jumped 3m45s -> 12m37s
    import time

    from lossbench.plan import plan_runs
    from lossbench.suite import ETA_STEP, _Progress, _Watched

    cfg = load_config(SMOKE, ["losses=[ce, dice]"])
    ce, dice = plan_runs(cfg, tmp_path, check=False)
    said = []
    progress = _Progress([ce, dice], 1, said.append)
    watched = _Watched(ce, time.perf_counter())
    rec = RunRecord.start(run_config(cfg, cfg.losses[0], 0), attempts=1)
    rec.progress = Progress(2, 2, 0.5, epoch_s=1.0)
    write_record(ce.run_dir, rec)
    progress.epochs([watched], [dice])
    assert said[-1].startswith("    ce seed 0: epoch 2/2, val mIoU 0.500") and "suite ETA" in said[-1]
    rec.progress = Progress(2, 2, 0.5, epoch_s=1.0, test_step=1, test_steps=40)
    write_record(ce.run_dir, rec)
    os.utime(ce.run_dir / "metrics.json", ns=(1, time.time_ns() + 10**9))  # a new write, as the run makes
    progress.epochs([watched], [dice])
    assert said[-1].startswith("    ce seed 0: testing, batch 1/40 (after 2/2 epochs)")
    # a run that took far longer than its epochs said (its test) moves the ETA shown part of the way, not all of it
    first = progress.suite_eta([watched], [dice])
    progress.durations.append((60.0, dice.budget))
    second = progress.suite_eta([], [dice])
    assert first < second < 60.0 and second == pytest.approx(first + ETA_STEP * (60.0 - first), abs=0.5)


def test_the_suite_eta_counts_each_run_by_its_budget(tmp_path):
    # make probe's suite (8- and 24-epoch runs) showed "suite ETA 10s" with 13 epochs of 3.5 s left: a run's time
    # was taken as the mean of the runs ended, whatever their budgets
    import time

    from lossbench.plan import plan_runs
    from lossbench.suite import _Progress, _Watched

    cfg = load_config(SMOKE, ["losses=[ce]", "seeds=[0]", "budgets=[8, 24]"])
    short, long = sorted(plan_runs(cfg, tmp_path, check=False), key=lambda run: run.budget)
    assert (short.budget, long.budget) == (8, 24)
    said = []
    progress = _Progress([short, long], 1, said.append)
    progress.ended(_Watched(short, time.perf_counter() - 40.0), None, 1)
    assert "ETA 2m00s" in said[-1], said  # 40 s for 8 epochs: 120 s for the 24 still to train
    # the run under way: 11 of 24 epochs done at 3.5 s each — its own epochs say 45.5 s are left, more than the 40 s that
    # the ended run's rate leaves it after 80 s; the larger is shown (the ETA shown moves part of the way)
    progress.shown = None
    watched = _Watched(long, time.perf_counter() - 80.0)
    watched.progress = Progress(11, 24, 0.6, epoch_s=3.5)
    assert progress.suite_eta([watched], []) == pytest.approx(45.5, abs=0.5)
    watched.progress, progress.shown = Progress(20, 24, 0.6, epoch_s=3.5), None
    assert progress.suite_eta([watched], []) == pytest.approx(40.0, abs=2.0)  # nearly done by its epochs: the rate's 40 s


def test_status_lists_planned_runs_and_neither_status_nor_losses_imports_the_training_stack(tmp_path):
    # issue 30 (8): status and losses took 32-36 s on a busy machine (they imported the training stack), and status
    # did not list the runs the suite plans that have not started
    import subprocess
    import sys

    from helpers.runs import predictions, suite, write_run

    cfg = suite(tmp_path, "[ce, dice]", "[0, 1]")
    write_run(tmp_path, cfg, "ce", 0, predictions(0.9, 0))
    code = ("import sys\nfrom lossbench.cli import main\n"
            f"main(['status', '--out', {str(tmp_path)!r}])\n"
            "print('heavy:', sorted(m for m in ('lightning', 'torch', 'pandas', 'matplotlib') if m in sys.modules))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "heavy: []" in r.stdout
    assert "4 runs: 1 finished, 3 planned" in r.stdout and "dice seed 1  planned   not started" in r.stdout
    code = "import sys\nfrom lossbench.cli import main\nmain(['losses'])\nprint('heavy:', 'lightning' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "heavy: False" in r.stdout and "lovasz_softmax" in r.stdout


def test_the_time_left_counts_the_test_before_and_while_it_runs(tmp_path):
    # issue 36 (1, 2): `status` said "testing, batch 8/30 … about 0s left" and the suite ETA left the test out
    from lossbench.run import finished_test_s

    training = Progress(2, 4, 0.5, epoch_s=10.0, test_s=30.0)
    assert training.seconds_left() == pytest.approx(2 * 10 + 30)
    testing = Progress(4, 4, 0.5, epoch_s=10.0, test_s=30.0, test_step=8, test_steps=30, test_rate=2.0)
    assert testing.seconds_left() == pytest.approx(22 / 2) and "testing, batch 8/30" in testing.describe()
    assert Progress(4, 4, 0.5, test_step=1, test_steps=30, test_s=30.0).seconds_left() == 30.0  # no pace yet: the expectation
    assert Progress.from_json(json.loads(json.dumps(asdict(testing)))) == testing
    _, dirs = set_up(tmp_path, "[ce, dice, focal]")
    assert finished_test_s(tmp_path) is None
    for label, test_s in (("ce", 12.0), ("dice", 40.0)):
        rec = RunRecord(status=OK, suite="smoke", loss=label, label=label, seed=0, loss_params={}, config_hash="x", test_s=test_s)
        write_record(dirs[label], rec)
    assert finished_test_s(tmp_path) == pytest.approx(26.0)  # the median of the suite's finished runs


def test_status_says_what_the_next_round_of_a_race_trains_and_when_it_is_decided(tmp_path):
    # issue 37 (minor): between rounds `status` listed no run of the next round, and said nothing of it
    from lossbench.config import dump_yaml
    from lossbench.record import suite_path
    from lossbench.status import folder_status, format_status

    cfg = load_config(SMOKE, ["losses=[ce, dice]", "seeds=[0, 1, 2]", "race={max_seeds: 6}"])
    suite_path(tmp_path).write_text(dump_yaml(cfg))
    for entry in cfg.losses:
        for seed in cfg.seeds:
            rc = run_config(cfg, entry, seed)
            run_dir = run_dir_for(tmp_path, rc)
            write_run_config(run_dir, rc)
            write_record(run_dir, RunRecord.start(rc, attempts=1) if seed else
                         RunRecord(**{**asdict(RunRecord.start(rc, attempts=1)), "status": OK, "test": {"miou": 0.5, "per_class": {}}}))  # fmt: skip
    text = format_status(folder_status(tmp_path), cfg)
    assert ("race: rounds of [3, 6] seeds a loss; the next round trains 3 more seeds for each loss still in the best set "
            "(at most 6 runs), decided when the 4 runs above not finished have ended") in text
    assert "race:" not in format_status(folder_status(tmp_path), load_config(SMOKE, ["losses=[ce, dice]"]))
