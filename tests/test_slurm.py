"""``compare --launcher slurm`` on a real SLURM cluster (``scripts/slurm-up.sh`` starts one on this machine).

These run where ``sbatch`` is on the PATH and the cluster answers; ``make test-slurm`` sets it up and runs them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from helpers.cli import ROOT, SMOKE, lossbench_cli
from helpers.processes import HANG_S, wait_for


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return r.returncode == 0 and any(s in r.stdout for s in ("idle", "mixed", "allocated"))


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster here (scripts/slurm-up.sh starts one; make test-slurm)"),
]


def records(out):
    return {m["label"]: m for m in (json.loads(p.read_text()) for p in out.glob("*/*/metrics.json"))}


def compare_args(out, report, cache, *extra):
    return ["compare", "--config", str(SMOKE), "--out", str(out), "--report", str(report), "--losses", "ce,dice",
            "--launcher", "slurm", "--no-wandb", "--set", f"data.cache_dir={cache}", "launcher.cpus_per_task=1",
            "launcher.time_min=20", *extra]  # fmt: skip


def test_a_detached_suite_on_slurm_is_shown_by_status_and_a_second_compare_submits_nothing_and_reports(tmp_path, data_cache):
    out, report = tmp_path / "runs", tmp_path / "report"
    args = compare_args(out, report, data_cache, "trainer.max_epochs=6")
    first = lossbench_cli(*args, "--detach")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "submitted 2 runs as SLURM job array" in first.stdout and "detached" in first.stdout
    assert not (report / "README.md").exists()
    claims = [json.loads(p.read_text()) for p in out.glob("*/*/claim.json")]
    assert len(claims) == 2 and all(c["job"] and "_" in c["job"] for c in claims)  # array tasks own the runs
    status = lossbench_cli("status", "--out", str(out))
    assert status.returncode == 0 and "SLURM job" in status.stdout
    assert any(s in status.stdout for s in ("queued", "running")), status.stdout

    second = lossbench_cli(*args)  # while the jobs are queued or running
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "submitted" not in second.stdout and second.stdout.count("being trained by SLURM job") == 2
    runs = records(out)
    assert {k: (r["status"], r["attempts"]) for k, r in runs.items()} == {"ce": ("ok", 1), "dice": ("ok", 1)}
    assert all(r["placement"]["slurm_job"] == c["job"] for r, c in zip(sorted(runs.values(), key=lambda r: r["label"]),
                                                                       sorted(claims, key=lambda c: c["job"])))  # fmt: skip
    assert len(pd.read_csv(report / "results.csv")) == 2 * 4
    assert not list(out.glob("*/*/claim.json"))
    assert "2 runs: 2 finished" in lossbench_cli("status", "--out", str(out)).stdout


def test_a_preempted_slurm_job_is_requeued_by_slurm_and_resumes_from_its_checkpoint(tmp_path, data_cache):
    # SLURM holds a requeued job back for about two minutes before it starts again: this test takes ~4.
    out, report = tmp_path / "runs", tmp_path / "report"
    proc = subprocess.Popen([sys.executable, "-m", "lossbench.cli", *compare_args(out, report, data_cache, "trainer.max_epochs=20")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for(lambda: list(out.glob("dice/*/checkpoints/last.ckpt")), proc, "a dice checkpoint")
        (claim_file,) = out.glob("dice/*/claim.json")
        job = json.loads(claim_file.read_text())["job"]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what SLURM sends before preempting it
        output, _ = proc.communicate(timeout=HANG_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-3000:]
    dice = records(out)["dice"]
    assert dice["status"] == "ok" and dice["attempts"] == 2 and 1 <= dice["resumed_after_epoch"] < 20
    assert dice["placement"]["slurm_job"] == job  # the same job, requeued
    assert [h["epoch"] for h in dice["history"]] == list(range(1, 21))
    assert "Requeued job" in next(out.glob("dice/*/train.log")).read_text()
    assert len(pd.read_csv(report / "results.csv")) == 2 * 4
