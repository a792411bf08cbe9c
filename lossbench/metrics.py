"""Per-class segmentation metrics from one confusion matrix.

The state is torchmetrics' ``MulticlassConfusionMatrix`` (a sum, synced across DDP ranks by
torchmetrics). Every reported number is arithmetic on it, pooled over every pixel of the split
with the ignore index excluded: IoU, sensitivity (recall), specificity, precision and Dice per
class, and the mean IoU. A ratio whose denominator is 0 (a class absent from both the target and
the prediction) is NaN — undefined, not 0 — and is left out of the mean IoU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

METRICS = ("iou", "sensitivity", "specificity", "precision", "dice")


def confusion_matrix_metric(num_classes: int, ignore_index: int | None) -> MulticlassConfusionMatrix:
    """The metric state: rows are true classes, columns predicted classes."""
    return MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, math.nan))


def per_class_metrics(confmat: torch.Tensor, class_names: Sequence[str], ignore_index: int | None = None) -> dict[str, Any]:
    """Derive the metric table from a ``[C, C]`` confusion matrix (rows: target, columns: prediction).

    When ``ignore_index`` is itself a class id, that class is not a class of the metrics: its pixels
    are already out of the matrix, and it gets no row (predicting it is still an error, a false
    negative of the true class) and no part in the mean IoU.

    Returns:
        ``{"miou": float, "pixels": int, "per_class": {name: {"iou", "sensitivity", "specificity",
        "precision", "dice", "support"}}}``; undefined ratios are ``nan``.
    """
    cm = confmat.detach().to("cpu", torch.float64)
    if cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix is {tuple(cm.shape)} but there are {len(class_names)} class names")
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    table = {
        "iou": _ratio(tp, tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    kept = [i for i in range(len(class_names)) if i != ignore_index]
    per_class = {
        class_names[i]: {m: float(table[m][i]) for m in METRICS} | {"support": int(tp[i] + fn[i])} for i in kept
    }
    iou = table["iou"][kept]
    miou = float(iou[~iou.isnan()].mean()) if (~iou.isnan()).any() else math.nan
    return {"miou": miou, "pixels": int(cm.sum()), "per_class": per_class}


def focus_class(class_names: Sequence[str], class_frequencies: Sequence[int], scored: Sequence[int], wanted: str | None = None) -> int:
    """The focus class id: ``wanted`` (``report.focus``), else the ``scored`` class with the fewest training
    pixels (the first on a tie)."""
    if wanted is not None:
        if wanted not in class_names:
            raise ValueError(f"report.focus {wanted!r} is not a class of the data ({', '.join(class_names)})")
        return list(class_names).index(wanted)
    freqs = list(class_frequencies) or [0] * len(class_names)
    return min(scored, key=lambda i: (freqs[i], i))


def flat_scalars(result: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{"<prefix>/miou": .., "<prefix>/iou/<class>": .., ...}`` for loggers (NaN entries dropped)."""
    out = {f"{prefix}/miou": result["miou"]}
    for name, row in result["per_class"].items():
        for m in METRICS:
            out[f"{prefix}/{m}/{name}"] = row[m]
    return {k: v for k, v in out.items() if not math.isnan(v)}
