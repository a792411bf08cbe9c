"""The suite (``lossbench compare``) and its report, through the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import ROOT, SMOKE, lossbench_cli

from lossbench.report import RESULT_COLUMNS
from lossbench.wandb_offline import logged_values


def compare(out, report, *extra, cache):
    return lossbench_cli(
        "compare", "--config", str(SMOKE), "--out", str(out), "--report", str(report),
        "--set", f"data.cache_dir={cache}", *extra,
    )  # fmt: skip


def records(out):
    return {(m["label"], m["seed"]): m for m in (json.loads(p.read_text()) for p in out.glob("*/*/metrics.json"))}


def test_a_suite_of_three_losses_writes_the_report_and_reruns_train_nothing(tmp_path, data_cache):
    out, report = tmp_path / "runs", tmp_path / "report"
    r = compare(out, report, "--jobs", "2", cache=data_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 to train" in r.stdout and "ETA" in r.stdout and "[3/3]" in r.stdout

    runs = records(out)
    assert set(runs) == {("ce", 0), ("dice", 0), ("tversky", 0)}
    df = pd.read_csv(report / "results.csv")
    assert list(df.columns) == RESULT_COLUMNS
    assert len(df) == 3 * 4 and set(df["class"]) == {"background", "blob", "curve", "spot"}
    assert (df["status"] == "ok").all() and (df["epochs"] == 2).all()
    for row in df.itertuples():
        expected = runs[(row.loss, row.seed)]["test"]["per_class"][row._3]
        for m in ("iou", "sensitivity", "specificity", "precision", "dice"):
            if expected[m] is None:
                assert pd.isna(getattr(row, m))
            else:
                assert getattr(row, m) == pytest.approx(expected[m], rel=1e-5)

    readme = (report / "README.md").read_text()
    assert "## Leaderboard by mean IoU" in readme and "## Leaderboard by rare-class IoU (`spot`" in readme
    assert "## Per-class IoU" in readme and "## Per-class Sensitivity" in readme and "## Per-class Specificity" in readme
    assert all(f"`{loss}`" in readme for loss in ("ce", "dice", "tversky"))
    for png in ("iou_by_class.png", "rare_class_iou.png", "sensitivity_specificity.png", "learning_curves.png"):
        assert (report / png).stat().st_size > 5000, png
        assert f"({png})" in readme

    summary = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert summary, "no W&B summary run"
    logged = logged_values(summary[-1])
    assert logged["results/_type"] == "table-file" and int(logged["results/nrows"]) == 12
    assert int(logged["leaderboard/nrows"]) == 3

    again = compare(out, report, "--no-wandb", cache=data_cache)
    assert again.returncode == 0 and "0 to train" in again.stdout
    assert (report / "README.md").read_text() == readme  # the same report
    assert {k: v["finished_at"] for k, v in records(out).items()} == {k: v["finished_at"] for k, v in runs.items()}


def test_an_interrupted_suite_resumes_without_retraining_finished_runs(tmp_path, data_cache):
    out, report = tmp_path / "runs", tmp_path / "report"
    args = [
        sys.executable, "-m", "lossbench.cli", "compare", "--config", str(SMOKE), "--out", str(out),
        "--report", str(report), "--losses", "ce,dice", "--jobs", "1", "--no-wandb",
        "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=12",
    ]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait until ce is done and dice is part-way through
            runs = records(out)
            if runs.get(("ce", 0), {}).get("status") == "ok" and list(out.glob("dice/*/checkpoints/last.ckpt")):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the suite did not reach the middle of its second run")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the suite and its training process, without warning
        proc.wait()
    killed = records(out)
    assert killed[("dice", 0)]["status"] == "running"
    ce_finished = killed[("ce", 0)]["finished_at"]

    r = lossbench_cli(*args[3:])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 already done" in r.stdout and "1 to train" in r.stdout and "resuming from its last checkpoint" in r.stdout
    final = records(out)
    assert final[("ce", 0)]["finished_at"] == ce_finished  # not retrained
    dice = final[("dice", 0)]
    assert dice["status"] == "ok", dice.get("error")
    assert dice["attempts"] == 2 and 1 <= dice["resumed_after_epoch"] < 12
    assert [h["epoch"] for h in dice["history"]] == list(range(1, 13))  # the curve survives the interruption
    assert len(pd.read_csv(report / "results.csv")) == 2 * 4


PLUGIN = '''
import torch
from lossbench.losses import SegmentationLoss, register_loss, soft_stats


@register_loss("boom", description="raises")
class Boom(SegmentationLoss):
    def compute(self, prep):
        raise RuntimeError("boom: this loss always fails")


@register_loss("nan_loss", description="returns NaN")
class NanLoss(SegmentationLoss):
    def compute(self, prep):
        return prep.logits.sum() * float("nan")


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
    assert r.returncode == 0, r.stderr[-3000:]
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


def test_compare_rejects_an_unknown_loss_before_training(tmp_path):
    r = lossbench_cli("compare", "--config", str(SMOKE), "--out", str(tmp_path), "--losses", "dice,tverski")
    assert r.returncode == 2 and "unknown loss 'tverski'; known losses (closest first): tversky" in r.stderr
    assert not list(tmp_path.glob("*/*"))
