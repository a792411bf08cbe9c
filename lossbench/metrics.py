"""Per-class segmentation metrics from one confusion matrix.

The state is torchmetrics' ``MulticlassConfusionMatrix`` (a sum, synced across DDP ranks by
torchmetrics). Every reported number is arithmetic on it, pooled over every pixel of the split
with the ignore index excluded: IoU, sensitivity (recall), specificity, precision and Dice per
class, and the mean IoU. A ratio whose denominator is 0 (a class absent from both the target and
the prediction) is NaN — undefined, not 0 — and is left out of the mean IoU.

Boundary metrics (:func:`boundary_scores`) are per image: region overlap hides boundary errors on
thin curves and small spots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

METRICS = ("iou", "sensitivity", "specificity", "precision", "dice")
BOUNDARY_METRICS = ("hd95", "nsd")
"""Per test image and class, then averaged over the images where they are defined: the 95th-percentile
Hausdorff distance (pixels, lower is better) and the normalised surface Dice at a tolerance (higher is better)."""


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
        for m in (*METRICS, *BOUNDARY_METRICS):
            out[f"{prefix}/{m}/{name}"] = row.get(m, math.nan)
    return {k: v for k, v in out.items() if not math.isnan(v)}


def boundary_scores(pred: Any, target: Any, num_classes: int, ignore_index: int | None, tolerance: float) -> Any:
    """Per class, ``[C, 2]`` float64: the 95th-percentile Hausdorff distance and the normalised surface
    Dice of one image (``pred``, ``target``: ``[H, W]`` integer arrays), in pixels.

    A class's surface is its mask's edge pixels (the mask minus its erosion by a cross, the image's
    border counting as outside: ``torchmetrics``' ``mask_edges``) and each edge pixel's distance is
    the exact Euclidean distance to the nearest edge pixel of the other mask (SciPy; torchmetrics'
    ``edge_surface_distance`` took 48 ms per image and class at 64², and its default distance
    transform misreported far pixels as 0 — the tests hold this to brute force). HD95 is the larger of the two directions' 95th percentiles (MONAI's convention), NaN
    when either mask is empty; NSD (Nikolov et al. 2021) is the share of both surfaces within
    ``tolerance`` of the other: 0 when exactly one mask is empty, NaN when both are. Ignored pixels
    belong to neither mask.
    """
    import numpy as np
    from scipy.ndimage import distance_transform_edt

    pred, target = np.asarray(pred), np.asarray(target)
    scored = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        scored &= target != ignore_index
    out = np.full((num_classes, 2), np.nan)
    for c in range(num_classes):
        pm, tm = (pred == c) & scored, (target == c) & scored
        has_p, has_t = pm.any(), tm.any()
        if not (has_p or has_t):
            continue
        if not (has_p and has_t):
            out[c, 1] = 0.0
            continue
        ep, et = _edges(pm), _edges(tm)
        rows, cols = np.nonzero(ep | et)  # every nearest edge pixel lies in the box around both surfaces
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        ep, et = ep[box], et[box]
        d_pt = distance_transform_edt(~et)[ep]  # predicted surface to the true one
        d_tp = distance_transform_edt(~ep)[et]
        out[c, 0] = max(_percentile95(d_pt), _percentile95(d_tp))
        out[c, 1] = ((d_pt <= tolerance).sum() + (d_tp <= tolerance).sum()) / (len(d_pt) + len(d_tp))
    return out


def _edges(mask: Any) -> Any:
    """The mask minus its erosion by a cross, outside the image counting as background (torchmetrics' ``mask_edges``)."""
    import numpy as np

    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def _percentile95(values: Any) -> float:
    """``numpy.percentile(values, 95)`` (linear interpolation), without its per-call overhead."""
    import numpy as np

    s = np.sort(values)
    pos = 0.95 * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))
