"""The suite (``lossbench compare``) and its report, through the real command line."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
import signal
import subprocess
import sys

import pandas as pd
import pytest
from helpers.cli import ROOT, SMOKE, lossbench_cli, sigterm_once_checkpointed
from helpers.processes import HANG_S, wait_for

from lossbench.report import RESULT_COLUMNS
from lossbench.report.analyse import analyse
from lossbench.report.gather import collect_runs
from helpers.wandb_offline import logged_values, offline_run_files


def compare(out, report, *extra, cache):
    return lossbench_cli(
        "compare", "--config", str(SMOKE), "--out", str(out), "--report", str(report),
        "--set", f"data.cache_dir={cache}", *extra,
    )  # fmt: skip


pytestmark = pytest.mark.slow


def records(out):
    return {(m["label"], m["seed"]): m for m in (json.loads(p.read_text()) for p in out.glob("*/*/metrics.json"))}


def test_a_suite_of_three_losses_writes_the_report_and_reruns_train_nothing(tmp_path, data_cache):
    out, report = tmp_path / "runs", tmp_path / "report"
    r = compare(out, report, "--jobs", "2", cache=data_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 to train" in r.stdout and "ETA" in r.stdout and "[3/3]" in r.stdout
    assert "dice seed 0: epoch 1/2, val mIoU" in r.stdout and "dice seed 0: epoch 2/2, val mIoU" in r.stdout
    assert "· suite ETA " in r.stdout  # from the epochs timed, before any run has ended
    assert r.stdout.startswith("suite smoke: checking the data and the losses before anything trains …")
    log = next(out.glob("dice/*/train.log")).read_text()
    assert log.startswith("epoch 1/2: step 1/4 (")  # inside the epoch (smoke: trainer.log_every_n_steps 1)
    assert "epoch 1/2: train loss" in log and "epoch 2/2: step 3/4 (" in log and "dice seed 0: test mIoU" in log
    for noise in ("Tip", "litmodels", "GPU available", "Warning", "weights_only", "anonymous"):
        assert noise not in log, (noise, log)
    assert f"wandb sync {out}/*/*/wandb/offline-run-* {out}/wandb/offline-run-*" in r.stdout  # where the offline runs are
    for run_dir in sorted(out.glob("*/seed0-*")):  # every forked run logs its prediction images, not only the first
        assert "were not logged" not in (run_dir / "train.log").read_text(), run_dir
        (wandb_file,) = offline_run_files(run_dir)
        assert logged_values(wandb_file)["test/predictions/count"] == 4, run_dir

    runs = records(out)
    assert set(runs) == {("ce", 0), ("dice", 0), ("tversky", 0)}
    assert "2 runs at once, 1 CPU thread each" in r.stdout
    for rec in runs.values():  # each run process records what it was given: two runs share the cores, no GPU
        assert rec["placement"]["threads"] == max(1, os.cpu_count() // 2) and rec["placement"]["device_ids"] == [0]
        assert rec["placement"]["cuda_visible_devices"] is None and rec["placement"]["accelerator"] == "CPUAccelerator"
    assert not list(out.glob("*/*/claim.json"))  # every claim released
    df = pd.read_csv(report / "results.csv")
    assert list(df.columns) == RESULT_COLUMNS
    assert len(df) == 3 * 4 and set(df["class"]) == {"background", "blob", "curve", "spot"}
    assert (df["status"] == "ok").all() and (df["epochs"] == 2).all() and (df["budget"] == 2).all()
    spot = df[df["class"] == "spot"].set_index("loss")
    for loss in ("ce", "dice", "tversky"):  # object metrics on the focus class's rows, from the record
        assert spot.at[loss, "objects_fp_per_image"] == pytest.approx(runs[(loss, 0)]["objects"]["fp_per_image"])
    assert df[df["class"] != "spot"]["objects_recall"].isna().all()
    for row in df.to_dict("records"):
        expected = runs[(row["loss"], row["seed"])]["test"]["per_class"][row["class"]]
        for m in ("iou", "sensitivity", "specificity", "precision", "dice"):
            if expected[m] is None:
                assert pd.isna(row[m])
            else:
                assert row[m] == pytest.approx(expected[m], rel=1e-5)

    readme = (report / "README.md").read_text()
    assert "### Leaderboard by mean IoU" in readme and "### Leaderboard by `spot` IoU (the focus class)" in readme
    assert "## Verdict" in readme and "a bootstrap over the 20 test images (2000 replicates" in readme
    assert "**1 seed per loss: training randomness is not measured.**" in readme  # one seed: image level, said so
    assert "## Per-class IoU" in readme and "## Per-class Sensitivity" in readme and "## Per-class Precision" in readme
    assert all(f"`{loss}`" in readme for loss in ("ce", "dice", "tversky"))
    for png in ("intervals.png", "miou_vs_focus.png", "predictions.png", "precision_recall.png", "iou_by_class.png",
                "rare_class_iou.png", "learning_curves.png"):  # fmt: skip
        assert (report / png).stat().st_size > 5000, png
        assert f"({png})" in readme
    lb = pd.read_csv(report / "leaderboard.csv")
    assert list(lb["loss"]) == ["ce", "dice", "tversky"] and (lb["miou_lo"] <= lb["miou"]).all() and (lb["miou"] <= lb["miou_hi"]).all()
    assert lb["in_best_set"].sum() >= 1  # the highest is in the best set

    first_bytes = {n: (report / n).read_bytes() for n in ("results.csv", "leaderboard.csv", "intervals.png", "predictions.png")}
    summary = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert summary, "no W&B summary run"
    logged = logged_values(summary[-1])
    assert logged["results/_type"] == "table-file" and int(logged["results/nrows"]) == 12
    assert int(logged["leaderboard/nrows"]) == 3

    again = compare(out, report, "--no-wandb", cache=data_cache)
    assert again.returncode == 0 and "0 to train" in again.stdout
    assert (report / "README.md").read_text() == readme  # the same report
    for name in ("results.csv", "leaderboard.csv", "intervals.png", "predictions.png"):  # byte for byte
        assert (report / name).read_bytes() == first_bytes[name], name
    assert {k: v["finished_at"] for k, v in records(out).items()} == {k: v["finished_at"] for k, v in runs.items()}

    # bug 9: a damaged metrics.json is named in the report, the others are reported, compare retrains it
    (damaged,) = out.glob("ce/*/metrics.json")
    damaged.write_text('{"status": "ok", "test": {')
    r = lossbench_cli("report", "--out", str(out), "--report", str(report), "--no-wandb")
    assert r.returncode == 0, r.stderr[-2000:]
    text = (report / "README.md").read_text()
    assert "## Damaged run records" in text and str(damaged) in text and "not valid JSON" in text
    assert "`dice`" in text.split("## Failed")[0] and "`tversky`" in text.split("## Failed")[0]
    again = compare(out, report, "--no-wandb", cache=data_cache)
    assert again.returncode == 0 and "1 to train" in again.stdout and "record of ce seed 0 is damaged" in again.stdout
    assert "trained 1 run in" in again.stdout  # not "1 runs"
    assert records(out)[("ce", 0)]["status"] == "ok"
    assert "## Damaged run records" not in (report / "README.md").read_text()


def _descendants(pid):
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children = {}
    for line in out.splitlines():
        p, parent = map(int, line.split())
        children.setdefault(parent, []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


def test_a_killed_suite_takes_its_run_with_it_and_resumes_without_retraining(tmp_path, data_cache, request):
    # issue 8 (faults): killing compare alone left its training child running beside the rerun
    out, report = tmp_path / "runs", tmp_path / "report"
    args = [
        sys.executable, "-m", "lossbench.cli", "compare", "--config", str(SMOKE), "--out", str(out),
        "--report", str(report), "--losses", "ce,dice", "--jobs", "1", "--no-wandb",
        "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=12",
    ]  # fmt: skip
    # issue 20 (10): a temporary folder of the suite's own, so kill -9 leaves one folder that the next compare removes
    tmp = Path(tempfile.mkdtemp(prefix="lb", dir="/tmp"))  # short: multiprocessing's socket path must fit in 107 bytes
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    env = {**os.environ, "TMPDIR": str(tmp)}
    log = tmp_path / "compare.log"
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: records(out).get(("ce", 0), {}).get("status") == "ok" and list(out.glob("dice/*/checkpoints/last.ckpt")),
                 proc, "ce finished and dice checkpointed", log=log)  # fmt: skip
        processes = _descendants(proc.pid)  # the run process (forked from the fork server), its data workers, ...
        assert processes
    finally:
        proc.kill()  # the suite alone, without warning
        proc.wait()
    wait_for(lambda: not any(_alive(p) for p in processes), None, "every process of the suite gone", hang_s=120)
    killed = records(out)
    assert killed[("dice", 0)]["status"] == "interrupted"  # it heard its parent go, and said so
    ce_finished = killed[("ce", 0)]["finished_at"]
    left = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor"))  # torch's compile cache stays
    # the suite's folder (W&B's tmp*wandb-* inside) and the multiprocessing folder it names: nothing else
    assert len(left) == 2 and left[0].startswith("lossbench-") and left[1].startswith("pymp-"), left
    assert (tmp / left[0] / "pymp-folder").read_text() == str(tmp / left[1])

    r = lossbench_cli(*args[3:], env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert [p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor")] == []  # the dead suite's folder, and its own
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "1 already done" in r.stdout and "1 to train" in r.stdout and "resuming from its last checkpoint" in r.stdout
    final = records(out)
    assert final[("ce", 0)]["finished_at"] == ce_finished  # not retrained
    dice = final[("dice", 0)]
    assert dice["status"] == "ok", dice.get("error")
    assert dice["attempts"] == 2 and 1 <= dice["resumed_after_epoch"] < 12
    assert [h["epoch"] for h in dice["history"]] == list(range(1, 13))  # the curve survives the interruption
    assert len(pd.read_csv(report / "results.csv")) == 2 * 4


def test_sigterm_to_the_suite_leaves_its_runs_resumable(tmp_path, data_cache):
    # issue 8 (faults): SIGTERM marked the interrupted run failed ("SIGTERMException"), for good
    out = tmp_path / "runs"
    args = ["compare", "--config", str(SMOKE), "--out", str(out), "--report", str(tmp_path / "report"), "--losses",
            "dice", "--no-wandb", "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=12"]  # fmt: skip
    returncode, output = sigterm_once_checkpointed(args, "dice/*/checkpoints/last.ckpt", out)
    assert returncode == 130 and "resumable" in output, output[-2000:]
    dice = records(out)[("dice", 0)]
    assert dice["status"] == "interrupted" and "SIGTERM" in dice["error"]
    again = lossbench_cli(*args, "--retry-failed")
    assert again.returncode == 0 and "resuming from its last checkpoint" in again.stdout  # --retry-failed left it alone
    assert records(out)[("dice", 0)]["attempts"] == 2


def test_two_launchers_on_one_run_train_it_once(tmp_path, data_cache):
    # issue 8 (faults): a shared .last.ckpt.tmp let one launcher crash another; issue 11: the run is claimed
    args = ["train", "--config", str(SMOKE), "--loss", "ce", "--out", str(tmp_path), "--no-progress",
            "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=4"]  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-m", "lossbench.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=HANG_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-1500:] for o in outputs]
    ce = records(tmp_path)[("ce", 0)]
    assert ce["status"] == "ok" and ce["attempts"] == 1
    said = [o for o in outputs if "not training it twice" in o]
    assert len(said) == 1 and "ce seed 0 is being trained by pid" in said[0], outputs  # or it had finished already
    assert not list(tmp_path.glob("*/*/claim.json"))


def test_two_compares_on_one_folder_train_every_run_once_and_both_report_it_all(tmp_path, data_cache):
    out = tmp_path / "runs"
    args = [sys.executable, "-m", "lossbench.cli", "compare", "--config", str(SMOKE), "--out", str(out), "--no-wandb",
            "--jobs", "1", "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=3"]  # fmt: skip
    procs = [subprocess.Popen([*args, "--report", str(tmp_path / f"report{i}")], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for i in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=HANG_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outputs]
    runs = records(out)
    assert set(runs) == {("ce", 0), ("dice", 0), ("tversky", 0)}
    assert all(r["status"] == "ok" and r["attempts"] == 1 and r["resumed_after_epoch"] is None for r in runs.values())
    started = [line.split("start  ")[1] for o in outputs for line in o.splitlines() if "] start  " in line]
    assert sorted(started) == ["ce seed 0", "dice seed 0", "tversky seed 0"]  # each started by one launcher only
    assert any("(trained by another launcher)" in o for o in outputs)
    for run_dir in out.glob("*/*/"):  # no checkpoint left once finished (issue 30, 9), no temporary or clobbered file,
        assert not (run_dir / "checkpoints").exists()  # and no empty folder (issue 36, 5): a file left would keep it
        assert not list(run_dir.glob("claim*")) and not list(run_dir.glob(".*.tmp"))
    for i in range(2):  # both reports are complete
        assert len(pd.read_csv(tmp_path / f"report{i}" / "results.csv")) == 3 * 4


def test_runs_pinned_to_gpu_groups_get_them_as_cuda_visible_devices(tmp_path, data_cache):
    # The pool's own GPU pinning, on the CPU: a placement with two single-"GPU" groups (the smoke
    # config trains on the CPU whatever it sees); each run process records the group it was given.
    from lossbench.config import load_config
    from lossbench.launch import Placement
    from lossbench.plan import plan_runs
    from lossbench.suite import _Pool

    cfg = load_config(SMOKE, [f"data.cache_dir={data_cache}", "trainer.max_epochs=1", "wandb.mode=disabled"])
    todo = plan_runs(cfg, tmp_path, num_classes=4)
    lines = []
    _Pool(todo, Placement(2, 1, (("0",), ("1",))), tmp_path, lines.append).run()
    runs = records(tmp_path)
    assert all(r["status"] == "ok" for r in runs.values()), [r.get("error") for r in runs.values()]
    given = [runs[(run.label, 0)]["placement"]["cuda_visible_devices"] for run in todo]
    assert given[:2] == ["0", "1"] and given[2] in ("0", "1")  # the third run took the group that freed up first
    starts = [line for line in lines if "] start  " in line]
    assert starts[0].endswith("on GPU 0") and starts[1].endswith("on GPU 1") and starts[2].endswith(f"on GPU {given[2]}")


def test_warm_workers_train_run_after_run_and_are_recycled(tmp_path, data_cache):
    # issue 27: one worker trains several runs (imports once); after max_runs it leaves and a fresh one goes on
    from lossbench.config import load_config
    from lossbench.launch import Placement
    from lossbench.plan import plan_runs
    from lossbench.suite import _Pool

    cfg = load_config(SMOKE, [f"data.cache_dir={data_cache}", "trainer.max_epochs=1", "wandb.mode=disabled"])
    todo = plan_runs(cfg, tmp_path, num_classes=4)
    lines = []
    pool = _Pool(todo, Placement(1, 2), tmp_path, lines.append, max_runs=2)
    pool.run()
    runs = records(tmp_path)
    assert all(r["status"] == "ok" for r in runs.values()), [r.get("error") for r in runs.values()]
    pids = [runs[(run.label, 0)]["placement"]["pid"] for run in todo]
    assert pids[0] == pids[1] != pids[2], pids  # two runs in the first worker, the third in a fresh one
    assert pool.workers.started == 2 and not pool.workers.idle  # and none is left behind
    for pid in set(pids):
        assert not _alive(pid)
    assert sum("a new worker imports torch" in line for line in lines) == 1


def test_a_killed_worker_takes_only_its_run_and_the_suite_goes_on_in_a_fresh_one(tmp_path, data_cache):
    out = tmp_path / "runs"
    args = [sys.executable, "-m", "lossbench.cli", "compare", "--config", str(SMOKE), "--out", str(out), "--report",
            str(tmp_path / "report"), "--losses", "ce,dice", "--jobs", "1", "--no-wandb",
            "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=12"]  # fmt: skip
    log = tmp_path / "compare.log"
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: list(out.glob("ce/*/checkpoints/last.ckpt")), proc, "ce checkpointed", log=log)
        worker = records(out)[("ce", 0)]["placement"]["pid"]
        os.kill(worker, signal.SIGKILL)
        assert proc.wait(timeout=HANG_S) == 1, log.read_text()[-3000:]  # a run did not finish ok: compare says so
    finally:
        if proc.poll() is None:
            proc.kill()
    runs = records(out)
    assert runs[("ce", 0)]["status"] == "failed" and "killed by signal 9" in runs[("ce", 0)]["error"]
    assert runs[("dice", 0)]["status"] == "ok" and runs[("dice", 0)]["placement"]["pid"] != worker
    said = log.read_text()
    assert "[1/2] FAILED" in said and "process killed by signal 9" in said and "[2/2] ok" in said
    assert "1 of 2 runs did not finish ok: ce seed 0" in said
    assert not list(out.glob("*/*/claim.json"))


def _children_of(pid):
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def test_submitit_jobs_train_the_suite_and_a_preempted_job_is_requeued_and_resumes(tmp_path, data_cache):
    from lossbench.status import folder_status

    # The --launcher slurm code path (job array, pickled RunJob, claims, requeue protocol) through
    # submitit's local executor: the dice job gets the scheduler's preemption signal mid-run.
    out, report = tmp_path / "runs", tmp_path / "report"
    args = [sys.executable, "-m", "lossbench.cli", "compare", "--config", str(SMOKE), "--out", str(out), "--report",
            str(report), "--losses", "ce,dice", "--launcher", "submitit-local", "--no-wandb",
            "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=16"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: list(out.glob("dice/*/checkpoints/last.ckpt")), proc, "a dice checkpoint")
        (claim_file,) = out.glob("dice/*/claim.json")
        holder = json.loads(claim_file.read_text())
        assert holder["by"] == "job" and holder["job"] is None  # the local job's controller holds it
        states = {s.label: s.state for s in folder_status(out)}  # what `lossbench status` prints
        assert states["dice"] == "running", states
        (task,) = _children_of(holder["pid"])  # the job's task process under its controller
        os.kill(task, signal.SIGUSR2)  # what SLURM sends before a preemption or the time limit
        output, _ = proc.communicate(timeout=HANG_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert "submitted 2 runs as submitit local jobs" in output and "[2/2] ok" in output
    runs = records(out)
    assert runs[("ce", 0)]["attempts"] == 1 and runs[("ce", 0)]["status"] == "ok"
    dice = runs[("dice", 0)]
    assert dice["status"] == "ok" and dice["attempts"] == 2 and 1 <= dice["resumed_after_epoch"] < 16
    assert [h["epoch"] for h in dice["history"]] == list(range(1, 17))
    log = next(out.glob("dice/*/train.log")).read_text()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    assert len(pd.read_csv(report / "results.csv")) == 2 * 4
    assert not list(out.glob("*/*/claim.json"))
    again = lossbench_cli(*args[3:])
    assert again.returncode == 0 and "0 to train" in again.stdout and "submitted" not in again.stdout
    status = lossbench_cli("status", "--out", str(out))
    assert "3 runs: 2 finished, 1 planned" in status.stdout  # the suite's third loss: not asked for by --losses


def _mount_tmpfs(path, options):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")


def test_a_full_disk_stops_the_suite_with_one_sentence_and_keeps_finished_runs(tmp_path, data_cache):
    out = tmp_path / "small"
    _mount_tmpfs(out, "size=48m")
    try:
        args = [sys.executable, "-m", "lossbench.cli", "compare", "--config", str(SMOKE), "--out", str(out),
                "--report", str(tmp_path / "report"), "--jobs", "1", "--no-wandb",
                "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=6"]  # fmt: skip
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: records(out).get(("ce", 0), {}).get("status") == "ok", proc, "ce finished")
        subprocess.run(["dd", "if=/dev/zero", f"of={out}/filler", "bs=1M"], capture_output=True)  # the disk fills up
        stdout, stderr = proc.communicate(timeout=HANG_S)
        assert proc.returncode == 1, stderr[-2000:]
        assert stderr.strip().splitlines()[-1].startswith(f"lossbench: error: cannot write under {out} (No space left on device")
        assert "Traceback" not in stderr and "finished runs are intact" in stderr
        assert records(out)[("ce", 0)]["status"] == "ok"  # intact
        assert not list(out.glob("tversky/*"))  # no run started after the disk filled
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


def test_a_read_only_runs_folder_is_one_sentence(tmp_path):
    out = tmp_path / "ro"
    _mount_tmpfs(out, "ro,size=1m")
    try:
        r = lossbench_cli("compare", "--config", str(SMOKE), "--out", str(out), "--no-wandb")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith(f"lossbench: error: cannot write under {out} (Read-only file system")
        assert line.endswith("the suite stopped, finished runs are intact")
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


def test_a_copied_config_as_suite_file_and_an_unlabelled_loss_entry_report(tmp_path, data_cache):
    # bug 2: copying the config to <out>/suite.yaml crashed report (KeyError 'plugins') or made every run stale
    # bug 1: a losses: entry with params and no label trained, then report crashed with KeyError 'label'
    out, report = tmp_path / "runs", tmp_path / "report"
    entry = "losses=[{name: tversky, params: {alpha: 0.1, beta: 0.9}}]"
    r = lossbench_cli("train", "--config", str(SMOKE), "--loss", "tversky", "--out", str(out), "--no-progress",
                      "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=1", entry)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (out / "suite.yaml").write_text(SMOKE.read_text().replace("max_epochs: 2", "max_epochs: 1")
                                    .replace("losses: [ce, dice, tversky]", "losses: [{name: tversky, params: {alpha: 0.1, beta: 0.9}}]"))  # fmt: skip
    r = lossbench_cli("report", "--out", str(out), "--report", str(report), "--no-wandb")
    assert r.returncode == 0, r.stderr[-2000:]
    text = (report / "README.md").read_text()
    assert "`tversky`" in text.split("## Failed")[0] and "trained with another config" not in text
    assert "`tversky` (tversky {'alpha': 0.1, 'beta': 0.9})" in text


def test_report_goes_on_when_wandb_cannot_log(tmp_path, data_cache):
    # issue 8 (config and CLI): WANDB_MODE=online without a key ended report with a raw UsageError
    out, report = tmp_path / "runs", tmp_path / "report"
    r = lossbench_cli("compare", "--config", str(SMOKE), "--out", str(out), "--report", str(report), "--losses", "ce",
                      "--no-wandb", "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=1")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    env = {"WANDB_MODE": "online", "HOME": str(tmp_path), "NETRC": str(tmp_path / ".netrc"), "WANDB_API_KEY": "",
           "WANDB_BASE_URL": "http://127.0.0.1:9"}  # fmt: skip
    r = lossbench_cli("report", "--out", str(out), "--report", str(report), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "the W&B summary was not logged" in r.stderr and "Traceback" not in r.stderr
    assert (report / "README.md").exists()
    # a run whose W&B cannot start goes on, and compare says so on the console (it was in train.log only)
    r = lossbench_cli("compare", "--config", str(SMOKE), "--out", str(out), "--report", str(report), "--losses", "ce",
                      "--seeds", "1", "--no-wandb", "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=1",
                      env={"WANDB_MODE": "not-a-mode"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ce seed 1: lossbench: W&B could not start" in r.stdout


PLUGIN = '''
import torch
from lossbench.losses import SegmentationLoss, register_loss, soft_stats


# Both pass the check before training (a 2-image batch) and fail on the suite's 8-image batches.
@register_loss("boom", description="raises")
class Boom(SegmentationLoss):
    def compute(self, prep):
        if prep.logits.shape[0] > 2:
            raise RuntimeError("boom: this loss always fails")
        return prep.logits.mean()


@register_loss("nan_loss", description="returns NaN")
class NanLoss(SegmentationLoss):
    def compute(self, prep):
        return prep.logits.sum() * (float("nan") if prep.logits.shape[0] > 2 else 1.0)


@register_loss("plain_dice", description="Dice without smoothing")
class PlainDice(SegmentationLoss):
    def compute(self, prep):
        tp, fp, fn = soft_stats(prep)
        return 1 - (2 * tp / (2 * tp + fp + fn).clamp_min(1e-7)).mean()
'''


def test_failing_plugin_losses_are_recorded_and_the_suite_goes_on(tmp_path, data_cache):
    plugin = tmp_path / "my_losses.py"
    plugin.write_text(PLUGIN)
    out, report = tmp_path / "runs", tmp_path / "report"
    r = lossbench_cli(
        "compare", "--config", str(SMOKE), "--out", str(out), "--report", str(report), "--no-wandb", "--jobs", "2",
        "--set", f"data.cache_dir={data_cache}", f"plugins=[{plugin}]", "losses=[boom, nan_loss, plain_dice]",
        "trainer.max_epochs=1",
    )  # fmt: skip
    assert r.returncode == 1, r.stderr[-3000:]  # any failed run makes compare fail, after the report is written
    assert "2 of 3 runs did not finish ok" in r.stderr
    runs = records(out)
    assert runs[("boom", 0)]["status"] == "failed" and "boom: this loss always fails" in runs[("boom", 0)]["error"]
    assert runs[("nan_loss", 0)]["status"] == "failed" and "became nan" in runs[("nan_loss", 0)]["error"]
    assert runs[("plain_dice", 0)]["status"] == "ok"
    assert "FAILED" in r.stdout

    readme = (report / "README.md").read_text()
    failed_section = readme.split("## Failed and unfinished runs")[1].split("##")[0]
    assert "`boom`" in failed_section and "boom: this loss always fails" in failed_section
    assert "`nan_loss`" in failed_section and "became nan" in failed_section
    assert "`plain_dice`" in readme.split("## Failed and unfinished runs")[0]  # trained and reported
    df = pd.read_csv(report / "results.csv")
    assert set(df[df["status"] == "failed"]["loss"]) == {"boom", "nan_loss"}
    assert df[df["loss"] == "boom"]["iou"].isna().all()

    again = lossbench_cli(
        "compare", "--config", str(SMOKE), "--out", str(out), "--report", str(report), "--no-wandb",
        "--set", f"data.cache_dir={data_cache}", f"plugins=[{plugin}]", "losses=[boom, nan_loss, plain_dice]",
        "trainer.max_epochs=1",
    )  # fmt: skip
    assert "0 to train" in again.stdout and "2 failed before" in again.stdout


def test_slurm_without_sbatch_is_one_sentence_before_anything_is_claimed(tmp_path, data_cache):
    # it was a raw traceback (submitit: 'Could not detect "srun"') with a claim left behind
    bare = tmp_path / "bin"
    bare.mkdir()
    r = lossbench_cli("compare", "--config", str(SMOKE), "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "rep"),
                      "--launcher", "slurm", "--no-wandb", "--set", f"data.cache_dir={data_cache}", env={"PATH": str(bare)})  # fmt: skip
    assert r.returncode == 2 and "--launcher slurm needs SLURM's sbatch on the PATH" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.rglob("claim.json")) and not (tmp_path / "runs").exists()


def test_compare_rejects_an_unknown_loss_before_training(tmp_path):
    r = lossbench_cli("compare", "--config", str(SMOKE), "--out", str(tmp_path), "--losses", "dice,tverski")
    assert r.returncode == 2 and "unknown loss 'tverski'; known losses (closest first): tversky" in r.stderr
    assert not list(tmp_path.glob("*/*"))


def test_budgets_train_each_run_at_each_budget_and_the_report_compares_them(tmp_path, data_cache):
    out, report = tmp_path / "runs", tmp_path / "report"
    r = compare(out, report, "--losses", "ce", "--no-wandb", "--set", "budgets=[1, 2]", "report.bootstrap=200", cache=data_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 to train" in r.stdout and "ce seed 0 (1 epoch)" in r.stdout
    epochs = sorted((m["label"], m["budget"], m["epochs"]) for m in (json.loads(p.read_text()) for p in out.glob("*/*/metrics.json")))
    assert epochs == [("ce", 1, 1), ("ce", 2, 2)]
    readme = (report / "README.md").read_text()
    assert "\n## Verdict — 1 epoch\n" in readme and "\n## Verdict — 2 epochs\n" in readme  # counts agree with their nouns
    lb = pd.read_csv(report / "leaderboard.csv")
    assert sorted(zip(lb["budget"], lb["loss"])) == [(1, "ce"), (2, "ce")]
    again = compare(out, report, "--losses", "ce", "--no-wandb", "--set", "budgets=[1, 2]", cache=data_cache)
    assert "0 to train" in again.stdout  # each budget is its own resumable run


def test_a_raced_suite_trains_more_seeds_only_for_the_losses_still_in_the_best_set_and_a_rerun_trains_nothing(tmp_path, data_cache):
    # lovasz_hinge reads every pixel as background on this data (see its caveat): it is ruled out in round 1,
    # and only ce and dice get seed 3
    out, report = tmp_path / "runs", tmp_path / "report"
    race = ("--no-wandb", "--jobs", "2", "--set", "losses=[ce, dice, lovasz_hinge]", "seeds=[0, 1, 2]",
            "race={max_seeds: 4}", "trainer.max_epochs=1", "report.bootstrap=200")  # fmt: skip
    r = compare(out, report, *race, cache=data_cache)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "race: round 1 (3 seeds per loss, level 0.0214, 3 racing): ruled out" in r.stdout
    trained = set(records(out))
    assert {(k, s) for k in ("ce", "dice", "lovasz_hinge") for s in (0, 1, 2)} <= trained
    (b,) = analyse(collect_runs(out)).budgets
    first = b.race.rounds[0]
    second = [k for k in ("ce", "dice", "lovasz_hinge") if k not in first.ruled_out]
    assert {(k, 3) for k in second} == trained - {(k, s) for k in ("ce", "dice", "lovasz_hinge") for s in (0, 1, 2)}
    assert f"race: round 2 trains 4 seeds per loss for {len(second)}" in r.stdout and "race: ended (" in r.stdout
    readme = (report / "README.md").read_text()
    assert "### The race (1 epoch)" in readme and "**The race ended**" in readme
    again = compare(out, report, *race, cache=data_cache)
    assert again.returncode == 0 and "0 to train" in again.stdout and "to train" in again.stdout
    assert "race: round 2 trains" not in again.stdout and set(records(out)) == trained


def test_killing_the_fork_server_leaves_its_workers_owned_and_their_runs_recorded_as_they_end(tmp_path, data_cache, request):
    # issue 37, P77: SIGKILL to the fork server while 2 runs trained recorded both "FAILED in 0s: process exited with
    # code 255", while the orphaned workers trained on and later wrote ok; compare exited 0
    out, report = tmp_path / "runs", tmp_path / "report"
    args = [
        sys.executable, "-m", "lossbench.cli", "compare", "--config", str(SMOKE), "--out", str(out),
        "--report", str(report), "--losses", "ce,dice", "--jobs", "2", "--no-wandb",
        "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=6",
    ]  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="lb", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    log = tmp_path / "compare.log"
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp)})
    try:
        wait_for(lambda: all((records(out).get((k, 0), {}).get("progress") or {}).get("epoch") for k in ("ce", "dice")),
                 proc, "both runs past their first epoch", log=log)  # fmt: skip
        server = [p for p in _descendants(proc.pid)
                  if "forkserver" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]  # fmt: skip
        assert server, "no fork server among compare's processes"
        os.kill(server[0], signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    final = records(out)
    assert {k: v["status"] for k, v in final.items()} == {("ce", 0): "ok", ("dice", 0): "ok"}, log.read_text()[-3000:]
    assert "FAILED" not in log.read_text() and "exited with code 255" not in log.read_text()


def test_a_full_disk_stops_the_suite_with_one_sentence_and_leaves_every_run_resumable(tmp_path, data_cache):
    # issue 37, P58: `--out` on a 3 MB tmpfs failed every run ("unexpected pos 3096640 vs 3096528") and the suite
    # went on, each run then needing --retry-failed (which deletes checkpoints)
    out = tmp_path / "small"
    out.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(out)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        r = compare(out, tmp_path / "report", "--losses", "ce,dice", "--jobs", "1", "--no-wandb", "--set",
                    "trainer.max_epochs=2", cache=data_cache)  # fmt: skip
        assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
        (line,) = [x for x in r.stderr.strip().splitlines() if x.startswith("lossbench")]
        assert line.startswith(f"lossbench: error: the disk is full at {out}") and "every run is resumable" in line, r.stderr
        assert "FAILED" not in r.stdout and "Traceback" not in r.stderr
        statuses = {k: v["status"] for k, v in records(out).items()}
        assert statuses and set(statuses.values()) <= {"interrupted"}, statuses  # resumable, never failed
        assert ("dice", 0) not in statuses  # the suite stopped at the first full disk
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


def test_a_data_cache_on_a_full_disk_is_one_sentence_naming_the_file(tmp_path):
    # issue 37, P59: data.cache_dir on a full tmpfs gave three chained raw `OSError: [Errno 28]`
    cache = tmp_path / "cache"
    cache.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(cache)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        r = lossbench_cli("compare", "--config", str(SMOKE), "--out", str(tmp_path / "runs"), "--dry-run", "--set",
                          f"data.cache_dir={cache}", "data.num_train=400")  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(cache)], capture_output=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"lossbench: error: no space left at {cache}/synthetic-" in r.stderr and "data.cache_dir" in r.stderr
