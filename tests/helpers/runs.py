"""Hand-built run folders for the report's tests: a real config, record and evidence per run, with
per-image counts from predictions made up to a stated accuracy, so every expected number is known
without training a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from helpers.cli import SMOKE

from lossbench.config import dump_yaml, load_config
from lossbench.identity import run_config
from lossbench.metrics import per_class_metrics, per_image_counts
from lossbench.record import OK, Evidence, RunRecord, run_dir_for, suite_path, write_evidence, write_record, write_run_config

CLASSES = ["background", "blob", "spot"]
N, SIZE = 24, 16


def targets() -> np.ndarray:
    """The shared test set: ``[N, SIZE, SIZE]`` masks, background with a blob and a spot in every image."""
    rng = np.random.default_rng(0)
    t = np.zeros((N, SIZE, SIZE), np.int64)
    for i in range(N):
        y, x = rng.integers(0, SIZE - 6, 2)
        t[i, y : y + 6, x : x + 6] = 1
        y, x = rng.integers(0, SIZE - 2, 2)
        t[i, y : y + 2, x : x + 2] = 2
    return t


def predictions(accuracy: float, seed: int, never: int | None = None) -> np.ndarray:
    """Each pixel right with probability ``accuracy``, else a random other class; ``never``: a class never predicted."""
    t = targets()
    rng = np.random.default_rng(1000 + seed)
    wrong = (t + rng.integers(1, len(CLASSES), t.shape)) % len(CLASSES)
    p = np.where(rng.random(t.shape) < accuracy, t, wrong)
    if never is not None:
        p[p == never] = 0 if never else 1
    return p


def write_run(out: Path, cfg, label: str, seed: int, pred: np.ndarray, point=None, val_miou: float = 0.505) -> Path:
    """A finished run of loss ``label`` (an entry of ``cfg``) whose test predictions are ``pred`` — at a
    tuned suite's ``point`` if given — ending with validation mean IoU ``val_miou``."""
    entry = next(e for e in cfg.losses if e.label == label)
    rc = run_config(cfg, point.entry(entry) if point else entry, seed, settings=dict(point.settings) if point else None)
    run_dir = run_dir_for(out, rc)
    write_run_config(run_dir, rc)
    t, p = torch.as_tensor(targets()), torch.as_tensor(pred)
    counts = per_image_counts(p, t, len(CLASSES), None).numpy()
    confmat = torch.bincount((t * len(CLASSES) + p).flatten(), minlength=len(CLASSES) ** 2).view(len(CLASSES), -1)
    rec = RunRecord.start(rc, attempts=1)
    rec.status, rec.classes, rec.class_frequencies = OK, CLASSES, [900, 90, 9]
    rec.test, rec.focus, rec.epochs, rec.wall_s = per_class_metrics(confmat, CLASSES), "spot", 2, 1.0
    rec.objects = {"iou_threshold": 0.1, "recall": 1.0, "fp_per_image": 0.0, "f1": 1.0, "precision": 1.0}
    rec.history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_miou": 0.5, "val_iou/spot": 0.1},
                   {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_miou": val_miou, "val_iou/spot": 0.2}]  # levelled off
    boundary = np.full((N, len(CLASSES), 2), np.nan, np.float32)
    write_evidence(run_dir, Evidence(counts=counts, confmat=confmat.numpy(), objects=np.zeros((N, 4), np.int64), boundary=boundary))
    write_record(run_dir, rec)
    return run_dir


def suite(out: Path, losses: str, seeds: str = "[0, 1, 2]", *more: str):
    """A suite config written to ``out/suite.yaml`` as ``compare`` writes it."""
    cfg = load_config(SMOKE, [f"losses={losses}", f"seeds={seeds}", "report.bootstrap=400", *more])
    out.mkdir(parents=True, exist_ok=True)
    suite_path(out).write_text(dump_yaml(cfg))
    return cfg


