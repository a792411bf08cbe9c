"""Placement on one machine's GPUs, and claims (the rule that keeps two launchers off one run), with real processes and files."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys

import pytest

from lossbench import claim
from lossbench.config import ConfigError, TrainerConfig
from lossbench.launch import Placement, Slots, forkable, place
from lossbench.record import claim_path

# --- placement: G GPUs, d per run -> which runs start where and when --------------------------------


def gpus(n: int) -> list[str]:
    return [str(i) for i in range(n)]


@pytest.mark.parametrize(
    ("n_gpus", "devices", "slots"),
    [
        (8, 1, [("0",), ("1",), ("2",), ("3",), ("4",), ("5",), ("6",), ("7",)]),
        (8, 2, [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]),
        (8, 3, [("0", "1", "2"), ("3", "4", "5")]),  # two GPUs idle: a run never straddles groups
        (4, 4, [("0", "1", "2", "3")]),
        (4, -1, [("0", "1", "2", "3")]),
        (2, "auto", [("0", "1")]),
    ],
)
def test_g_gpus_with_d_per_run_give_g_over_d_runs_at_once_each_on_its_own_gpus(n_gpus, devices, slots):
    p = place(TrainerConfig(devices=devices), "auto", gpus(n_gpus), cores=32)
    assert p.gpu_slots == tuple(slots) and p.at_once == len(slots) and p.threads == 32 // len(slots)
    used = [g for s in p.gpu_slots for g in s]
    assert len(used) == len(set(used))  # no GPU in two groups


def test_placement_follows_the_visible_ids_and_a_number_of_jobs_caps_it():
    p = place(TrainerConfig(devices=1), "auto", ["3", "5", "6"], cores=12)
    assert p.gpu_slots == (("3",), ("5",), ("6",)) and p.threads == 4
    assert place(TrainerConfig(devices=1), 2, gpus(8), cores=16).at_once == 2  # jobs caps the runs at once
    assert place(TrainerConfig(devices=2), 16, gpus(4), cores=16).at_once == 2  # ...but never past one per group


def test_a_run_that_needs_more_gpus_than_are_visible_is_one_sentence_before_any_work():
    with pytest.raises(ConfigError, match=r"trainer.devices=4 asks for 4 GPUs per run, but 2 are visible \(0,1\)"):
        place(TrainerConfig(devices=4), "auto", gpus(2), cores=8)


def test_named_gpu_ids_and_the_cpu_keep_their_rules():
    p = place(TrainerConfig(devices=[2, 3]), "auto", gpus(4), cores=8)
    assert (p.at_once, p.gpu_slots) == (1, ()) and "one at a time" in p.note
    assert place(TrainerConfig(accelerator="cpu"), "auto", gpus(4), cores=8) == Placement(1, 8)  # CPU runs ignore GPUs
    assert place(TrainerConfig(), "auto", [], cores=2) == Placement(1, 2)  # auto on a CPU: one at a time
    assert place(TrainerConfig(), 2, [], cores=2) == Placement(2, 1)
    assert place(TrainerConfig(), -1, [], cores=6) == Placement(6, 1)
    ddp_cpu = place(TrainerConfig(devices=2), 2, [], cores=4)
    assert ddp_cpu.at_once == 1 and "one run at a time" in ddp_cpu.note


def test_only_one_process_runs_on_the_cpu_start_as_forks_of_the_preloaded_server():
    cpu = place(TrainerConfig(), 2, [], cores=2)
    assert forkable(TrainerConfig(), cpu) and forkable(TrainerConfig(accelerator="cpu", devices="auto"), cpu)
    assert not forkable(TrainerConfig(devices=2, strategy="ddp"), cpu)  # DDP starts its ranks from the command line
    assert not forkable(TrainerConfig(num_nodes=2), cpu)
    on_gpus = place(TrainerConfig(), "auto", gpus(2), cores=8)
    named = place(TrainerConfig(devices=[1]), "auto", gpus(2), cores=8)
    assert on_gpus.on_gpu and named.on_gpu  # CUDA must be pinned before it starts, in a fresh process
    assert not forkable(TrainerConfig(), on_gpus) and not forkable(TrainerConfig(devices=[1]), named)
    assert forkable(TrainerConfig(accelerator="cpu"), place(TrainerConfig(accelerator="cpu"), "auto", gpus(2), cores=8))


def test_slots_start_each_run_on_the_lowest_free_group_as_soon_as_one_frees_up():
    # 5 runs, 4 GPUs, 2 per run: runs 0 and 1 start at once on (0,1) and (2,3); run 2 waits for the
    # first group to free up and takes that one; a group given back twice is a bug, said so.
    slots = Slots(place(TrainerConfig(devices=2), "auto", gpus(4), cores=8).gpu_slots)
    started = [slots.take(), slots.take()]
    assert started == [("0", "1"), ("2", "3")] and slots.take() is None
    slots.give(("2", "3"))
    assert slots.take() == ("2", "3")
    slots.give(("0", "1"))
    slots.give(("2", "3"))
    assert [slots.take(), slots.take(), slots.take()] == [("0", "1"), ("2", "3"), None]
    slots.give(("0", "1"))
    with pytest.raises(ValueError, match="was not taken"):
        slots.give(("0", "1"))


# --- claims ---------------------------------------------------------------------------------------


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_claim_is_whole_held_by_its_token_and_released_only_by_it(tmp_path):
    a, b = claim.me("compare"), claim.me("compare")
    assert claim.claim(tmp_path, a) is None
    data = json.loads(claim_path(tmp_path).read_text())
    assert data["token"] == a.token and data["pid"] == os.getpid() and data["host"] and data["pid_start"]
    assert claim.claim(tmp_path, b) == a  # alive: b sees the holder
    assert claim.claim(tmp_path, claim.me("train", a.token)) is None  # the token's holder owns it (compare's child)
    claim.release(tmp_path, b.token)
    assert claim.read_claim(tmp_path) == a  # not b's to release
    claim.release(tmp_path, a.token)
    assert claim.read_claim(tmp_path) is None
    assert claim.claim(tmp_path, b) is None


def test_a_claim_is_taken_over_only_when_its_owner_is_provably_gone(tmp_path, monkeypatch):
    gone = claim.me("compare", pid=dead_pid())
    assert claim.claim(tmp_path, gone) is None
    taker = claim.me("compare")
    assert claim.claim(tmp_path, taker) is None and claim.read_claim(tmp_path).token == taker.token

    reused = claim.Owner(**{**json.loads(claim_path(tmp_path).read_text()), "pid_start": 1, "token": "old"})
    claim_path(tmp_path).write_text(json.dumps(reused.__dict__))
    assert claim.claim(tmp_path, claim.me("compare")) is None  # this pid, but another process: gone

    elsewhere = claim.Owner("t-host", "another-host", dead_pid(), None, None, "compare", 0.0)
    claim_path(tmp_path).write_text(json.dumps(elsewhere.__dict__))
    assert claim.claim(tmp_path, claim.me("compare")) == elsewhere  # another host's pid cannot be checked: kept

    job = claim.Owner("t-job", "any", 1, None, "12345_0", "job", 0.0)
    claim_path(tmp_path).write_text(json.dumps(job.__dict__))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no squeue to ask: the job is not provably gone
    assert claim.claim(tmp_path, claim.me("compare")) == job


def _race(run_dir: str, barrier, results) -> None:
    barrier.wait()
    holder = claim.claim(run_dir, claim.me("compare"))
    results.put(holder is None)
    barrier.wait()  # stay alive until all have looked: a winner that exits is a gone owner, rightly taken over


def test_two_launchers_racing_for_one_stale_claim_take_it_over_once(tmp_path):
    for attempt in range(5):
        run_dir = tmp_path / f"run{attempt}"
        claim.claim(run_dir, claim.me("compare", pid=dead_pid()))
        ctx = mp.get_context("fork")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(run_dir), barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        won = [results.get(timeout=5) for _ in procs]
        assert sum(won) == 1, won


def test_a_launcher_whose_job_took_over_its_claim_hands_it_on(tmp_path):
    launcher = claim.me("compare")
    claim.claim(tmp_path, launcher)
    job = claim.held_by(launcher, job="77_3")
    assert claim.update(tmp_path, job) and claim.read_claim(tmp_path).job == "77_3"
    assert not claim.update(tmp_path, claim.me("job", job="78_0"))  # another token cannot rewrite it
    assert "SLURM job 77_3" in claim.read_claim(tmp_path).describe()


# --- lossbench status: from the folder alone --------------------------------------------------------


def test_status_reads_queued_running_stalled_finished_and_failed_runs_from_the_folder(tmp_path, capsys):
    from conftest import SMOKE

    from lossbench.cli import main
    from lossbench.config import load_config
    from lossbench.identity import run_config
    from lossbench.record import FAILED, OK, RUNNING, RunRecord, run_dir_for, write_record, write_run_config

    cfg = load_config(SMOKE, ["losses=[ce, dice, tversky, focal, lovasz_softmax]"])
    dirs = {}
    for entry in cfg.losses:
        rc = run_config(cfg, entry, 0)
        dirs[entry.label] = run_dir_for(tmp_path, rc)
        write_run_config(dirs[entry.label], rc)

    def record(label: str, status: str, **fields) -> None:
        rec = RunRecord.start(run_config(cfg, next(e for e in cfg.losses if e.label == label), 0), attempts=1)
        rec.status = status
        for k, v in fields.items():
            setattr(rec, k, v)
        write_record(dirs[label], rec)

    claim.claim(dirs["ce"], claim.me("compare"))  # claimed by a live launcher, not started: queued
    record("dice", RUNNING, progress={"epoch": 3, "max_epochs": 10, "val_miou": 0.5})
    claim.claim(dirs["dice"], claim.held_by(claim.me("job"), job=None))  # this process: alive
    record("tversky", RUNNING, progress={"epoch": 1, "max_epochs": 10, "val_miou": None})
    claim.claim(dirs["tversky"], claim.me("compare", pid=dead_pid()))  # its owner died: stalled
    record("focal", OK, test={"miou": 0.4321})
    record("lovasz_softmax", FAILED, error="FloatingPointError: loss is nan")

    assert main(["status", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in out.splitlines() if " seed 0" in line}
    assert "queued" in lines["ce seed 0"] and f"pid {os.getpid()}" in lines["ce seed 0"]
    assert "running" in lines["dice seed 0"] and "epoch 3/10, val mIoU 0.500" in lines["dice seed 0"]
    assert "stalled" in lines["tversky seed 0"] and "next compare resumes it" in lines["tversky seed 0"]
    assert "finished" in lines["focal seed 0"] and "test mIoU 0.432" in lines["focal seed 0"]
    assert "failed" in lines["lovasz_softmax seed 0"] and "loss is nan" in lines["lovasz_softmax seed 0"]
    assert "5 runs: 1 queued, 1 running, 1 finished, 1 failed, 1 stalled" in out


REPEATED_SIGTERM = """
import os, signal, sys
from lossbench.run import RunInterrupted, install_interrupt_handler

install_interrupt_handler()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10**8):  # the handler raises here
        pass
    sys.exit("the first SIGTERM raised nothing")
except RunInterrupted as e:
    os.kill(os.getpid(), signal.SIGTERM)  # the same stop again, while the run writes its record
    os.kill(os.getpid(), signal.SIGTERM)
    sum(range(10**6))
    with open(sys.argv[1], "w") as f:
        f.write(str(e))
"""


def test_a_repeated_sigterm_does_not_cut_short_the_record_of_the_first(tmp_path):
    # A killed compare sent its run one parent-death SIGTERM per exiting thread; the second one,
    # arriving while the run wrote "interrupted", left its record saying "running".
    record = tmp_path / "record.txt"
    r = subprocess.run([sys.executable, "-c", REPEATED_SIGTERM, str(record)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert record.read_text() == "received signal SIGTERM"
