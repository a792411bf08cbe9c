"""Per-class segmentation metrics from one confusion matrix.

The state is torchmetrics' ``MulticlassConfusionMatrix`` (a sum, synced across DDP ranks by
torchmetrics). Every reported number is arithmetic on it, pooled over every pixel of the split
with the ignore index excluded: IoU, sensitivity (recall), specificity, precision and Dice per
class, and the mean IoU. A ratio whose denominator is 0 (a class absent from both the target and
the prediction) is NaN — undefined, not 0 — and is left out of the mean IoU.

Per test image the test also keeps TP/FP/FN pixel counts per class (:func:`per_image_counts`, what
the report's bootstrap resamples), boundary metrics (:func:`boundary_scores`: region overlap hides
boundary errors on thin curves and small spots) and focus-class objects (:func:`object_counts`).

One rule decides which pixels are scored, in the metrics, the evidence and the data checks:
:func:`scored_pixels`, a target value that is a class and not the ignore index. (The losses ignore
the ignore index and reject any other value outside the classes: :func:`lossbench.losses.functional.check_inputs`.)

Objects (:func:`object_counts`): connected components (8-connectivity in an image, 26 in a volume,
``scipy.ndimage.label``) of one class in the ground truth and in the prediction of one image or volume. A ground-truth object is
*hit* when some predicted component overlaps it with IoU ≥ the threshold; a predicted component
that overlaps no ground-truth object that well is a *false positive*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

TP, FP, FN = 0, 1, 2
"""The last axis of per-image counts (:func:`per_image_counts`)."""
OBJECT_FIELDS = ("gt", "hit", "pred", "fp")
"""Per image: ground-truth objects, those hit, predicted objects, false-positive objects."""

METRICS = ("iou", "sensitivity", "specificity", "precision", "dice")
BOUNDARY_METRICS = ("hd95", "nsd")
"""Per test image and class, then averaged over the images where they are defined (the class in the target or the
prediction; a run's record counts them as ``boundary_images``): the 95th-percentile Hausdorff distance (pixels,
lower is better; the image diagonal where the class is missed or wrongly predicted) and the normalised surface
Dice at a tolerance (higher is better)."""


def scored_pixels(target: Any, num_classes: int, ignore_index: int | None) -> Any:
    """Where ``target`` (a tensor or an array) is scored: a class id, and not the ignore index."""
    scored = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        scored &= target != ignore_index
    return scored


def per_image_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    """``[B, C, 3]`` TP, FP and FN pixels of each image and class (pixels that are not scored excluded)."""
    b = pred.shape[0]
    valid = scored_pixels(target, num_classes, ignore_index)
    image = torch.arange(b, device=pred.device).view(b, *([1] * (target.ndim - 1))).expand_as(target)
    flat = ((image * num_classes + target.clamp(0, num_classes - 1)) * num_classes + pred)[valid]
    cm = torch.bincount(flat, minlength=b * num_classes * num_classes).view(b, num_classes, num_classes)
    tp = cm.diagonal(dim1=1, dim2=2)
    return torch.stack([tp, cm.sum(1) - tp, cm.sum(2) - tp], dim=-1)


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


KD_PER_POINT = 30
"""A k-d tree of the edge pixels (``scipy.spatial.cKDTree``) measures the same exact distances as a distance transform
of their box; it is the faster one while the box has more than this many pixels per edge pixel (measured on
360×480 street scenes: about 2.4 µs an edge pixel against 0.09 µs a box pixel)."""


def boundary_scores(
    pred: Any, target: Any, num_classes: int, ignore_index: int | None, tolerance: float, spacing: Sequence[float] | None = None
) -> Any:
    """Per class, ``[C, 2]`` float64: the 95th-percentile Hausdorff distance and the normalised surface
    Dice of one image or volume (``pred``, ``target``: ``[H, W]`` or ``[D, H, W]`` integer arrays), in pixels —
    or, with ``spacing`` (the grid step of each axis, millimetres per voxel), in millimetres.

    A class's surface is its mask's edge pixels (the mask minus its erosion by a cross, the image's
    border counting as outside: ``torchmetrics``' ``mask_edges``, MONAI's ``get_mask_edges``) and each edge
    pixel's distance is the exact Euclidean distance to the nearest edge pixel of the other mask (SciPy's distance
    transform of the box around both surfaces, ``sampling=spacing``, or, in pixels with few edge pixels in a large box,
    a k-d tree of them: :data:`KD_PER_POINT`; torchmetrics' ``edge_surface_distance`` took 48 ms per image and class at 64², and
    its default distance transform misreported far pixels as 0 — the tests hold this to brute force, and
    volumes to MONAI's ``compute_hausdorff_distance`` and ``compute_surface_dice``). HD95 is the larger of
    the two directions' 95th percentiles (MONAI's convention); NSD (Nikolov et al. 2021) is the share of
    both surfaces within ``tolerance`` of the other. When exactly one mask is empty — the class missed,
    or predicted where there is none — each gets its worst value, as Metrics Reloaded (Maier-Hein et
    al. 2024) recommends: HD95 the image's diagonal, NSD 0; averaging only over images where both are
    present would favour a loss that rarely predicts the class. Both are NaN (undefined) when neither
    mask has the class. Ignored pixels belong to neither mask.
    """
    from scipy.ndimage import distance_transform_edt

    pred, target = np.asarray(pred), np.asarray(target)
    steps = np.ones(pred.ndim) if spacing is None else np.asarray(spacing, np.float64)
    if steps.shape != (pred.ndim,):
        raise ValueError(f"spacing {list(steps)} does not match a {pred.ndim}-D prediction {pred.shape}")
    scored = scored_pixels(target, num_classes, ignore_index)
    out = np.full((num_classes, 2), np.nan)
    worst = float(np.linalg.norm((np.asarray(pred.shape) - 1) * steps))  # the farthest two pixels of the image can be
    for c in range(num_classes):
        pm, tm = (pred == c) & scored, (target == c) & scored
        has_p, has_t = pm.any(), tm.any()
        if not (has_p or has_t):
            continue
        if not (has_p and has_t):  # missed, or predicted where there is none: the worst case (Metrics Reloaded)
            out[c] = worst, 0.0
            continue
        ep, et = _edges(pm), _edges(tm)
        where = np.nonzero(ep | et)  # every nearest edge pixel lies in the box around both surfaces
        box = tuple(slice(i.min(), i.max() + 1) for i in where)
        ep, et = ep[box], et[box]
        n_p, n_t = int(ep.sum()), int(et.sum())
        if spacing is None and (n_p + n_t) * KD_PER_POINT < ep.size:  # few edge pixels in a large box: a k-d tree
            from scipy.spatial import cKDTree

            at_p, at_t = np.argwhere(ep), np.argwhere(et)
            d_pt = cKDTree(at_t).query(at_p)[0]
            d_tp = cKDTree(at_p).query(at_t)[0]
        else:
            d_pt = distance_transform_edt(~et, sampling=steps)[ep]  # predicted surface to the true one
            d_tp = distance_transform_edt(~ep, sampling=steps)[et]
        out[c, 0] = max(_percentile95(d_pt), _percentile95(d_tp))
        out[c, 1] = ((d_pt <= tolerance).sum() + (d_tp <= tolerance).sum()) / (len(d_pt) + len(d_tp))
    return out


def _edges(mask: Any) -> Any:
    """The mask minus its erosion by a cross (2-D) or its 3-D analogue, outside the image counting as
    background (torchmetrics' ``mask_edges``, MONAI's ``get_mask_edges``)."""
    padded = np.pad(mask, 1)
    inner = mask.copy()
    for axis in range(mask.ndim):
        for start in (0, 2):
            window = [slice(1, n + 1) for n in mask.shape]
            window[axis] = slice(start, start + mask.shape[axis])
            inner &= padded[tuple(window)]
    return mask & ~inner


def _percentile95(values: Any) -> float:
    """``numpy.percentile(values, 95)`` (linear interpolation), without its per-call overhead."""
    s = np.sort(values)
    pos = 0.95 * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def image_scores(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None, focus: int,
                 object_iou: float, tolerance: float, spacing: Sequence[float] | None = None) -> tuple[tuple[int, int, int, int], Any]:
    """What the test keeps of one image or volume beyond its pixel counts: the focus class's object counts
    (:func:`object_counts`, unscored pixels predicted as nothing) and every class's HD95 and NSD (:func:`boundary_scores`).
    Pure NumPy/SciPy on arrays, so the test runs it on a thread pool beside the next batch's forward pass."""
    shown = pred.copy()
    shown[~scored_pixels(target, num_classes, ignore_index)] = -1  # not scored there
    return object_counts(target, shown, focus, object_iou), boundary_scores(pred, target, num_classes, ignore_index, tolerance, spacing)


# --- objects --------------------------------------------------------------------------------------

def object_counts(target: np.ndarray, prediction: np.ndarray, cls: int, iou_threshold: float = 0.1) -> tuple[int, int, int, int]:
    """``(gt, hit, pred, fp)`` object counts of class ``cls`` in one image or volume (see the module docstring):
    components are 8-connected in an image, 26-connected in a volume."""
    from scipy import ndimage

    every_neighbour = np.ones((3,) * np.ndim(target), bool)
    gt_lab, n_gt = ndimage.label(np.asarray(target) == cls, structure=every_neighbour)
    pr_lab, n_pr = ndimage.label(np.asarray(prediction) == cls, structure=every_neighbour)
    if n_gt == 0 or n_pr == 0:
        return n_gt, 0, n_pr, n_pr
    overlap = np.bincount((gt_lab * (n_pr + 1) + pr_lab).ravel(), minlength=(n_gt + 1) * (n_pr + 1))
    overlap = overlap.reshape(n_gt + 1, n_pr + 1)[1:, 1:]  # [G, P] intersections
    gt_size = np.bincount(gt_lab.ravel(), minlength=n_gt + 1)[1:]
    pr_size = np.bincount(pr_lab.ravel(), minlength=n_pr + 1)[1:]
    union = gt_size[:, None] + pr_size[None, :] - overlap
    matched = overlap / union >= iou_threshold
    matched &= overlap > 0
    return int(n_gt), int(matched.any(1).sum()), int(n_pr), int((~matched.any(0)).sum())


def object_summary(per_image: np.ndarray) -> dict[str, float]:
    """Totals and rates of ``[N, 4]`` per-image object counts (:data:`OBJECT_FIELDS`)."""
    gt, hit, pred, fp = (int(x) for x in np.asarray(per_image).reshape(-1, 4).sum(0))
    n = int(np.asarray(per_image).reshape(-1, 4).shape[0])
    recall = hit / gt if gt else math.nan
    precision = (pred - fp) / pred if pred else math.nan
    f1 = 2 * precision * recall / (precision + recall) if pred and gt and precision + recall > 0 else (0.0 if gt or pred else math.nan)
    return {"gt": gt, "hit": hit, "pred": pred, "fp": fp, "images": n, "recall": recall, "precision": precision,
            "f1": f1, "fp_per_image": fp / n if n else math.nan}  # fmt: skip
