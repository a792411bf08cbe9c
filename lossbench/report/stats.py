"""The report's statistics: paired bootstrap intervals and Holm-corrected ties with the best.

Every run of a suite is tested on the same images, so losses can be compared *paired*: a bootstrap
replicate draws seeds with replacement, then test images with replacement, and uses the same draw
for every loss. A replicate's score of a loss is the mean over the drawn seeds of that seed's
pooled IoU over the drawn images (the statistic the leaderboards show: each run's test IoU,
averaged over seeds). Intervals are percentile intervals; a difference to the best loss has a
two-sided bootstrap p-value, Holm-corrected over the comparisons, and a loss whose corrected
p-value is at least ``alpha`` is *tied* with the best.

The bootstrap resamples the per-image TP/FP/FN counts each run keeps (:func:`lossbench.metrics.per_image_counts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lossbench.metrics import FN, FP, TP


# --- bootstrap ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draws:
    """Bootstrap draws: per replicate, how often each seed slot and each test image is drawn."""

    seed_weights: np.ndarray  # [B, S] multiplicities, each row sums to S
    image_weights: np.ndarray  # [B, N] multiplicities, each row sums to N

    @property
    def replicates(self) -> int:
        return self.image_weights.shape[0]


def draw(n_seeds: int, n_images: int, replicates: int, seed: int = 0) -> Draws:
    """Resample seeds, then images, with replacement — a fixed ``seed`` keeps the report reproducible."""
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(replicates, n_seeds))
    images = rng.integers(0, n_images, size=(replicates, n_images))
    sw = np.zeros((replicates, n_seeds), np.int64)
    iw = np.zeros((replicates, n_images), np.int64)
    np.add.at(sw, (np.arange(replicates)[:, None], seeds), 1)
    np.add.at(iw, (np.arange(replicates)[:, None], images), 1)
    return Draws(sw, iw)


def _iou(counts: np.ndarray) -> np.ndarray:
    """IoU per class from ``[..., C, 3]`` TP/FP/FN sums; NaN where the class is in neither target nor prediction."""
    tp = counts[..., TP].astype(np.float64)
    den = tp + counts[..., FP] + counts[..., FN]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, tp / np.where(den > 0, den, 1), np.nan)


def _nanmean(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean over the last axis of the values that are not NaN, weighted by ``weights`` (default 1); NaN where none is left."""
    w = np.where(np.isnan(x), 0.0, 1.0 if weights is None else weights)
    total = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (np.nan_to_num(x) * w).sum(-1) / np.where(total > 0, total, 1), np.nan)


def replicate_scores(counts: np.ndarray, draws: Draws, classes: Sequence[int], focus: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(mean IoU [B], focus IoU [B])`` of one loss in every replicate of ``draws``: ``counts`` is ``[S, N, C, 3]``.

    A replicate's score is the mean over its drawn seeds of that seed's IoU pooled over its drawn images.
    """
    sums = np.einsum("bi,sick->bsck", draws.image_weights, counts, optimize=True)  # [B, S, C, 3]
    iou = _iou(sums)  # [B, S, C]
    miou = _nanmean(iou[..., list(classes)])  # [B, S]
    focus_iou = iou[..., focus] if focus is not None else np.full(miou.shape, np.nan)
    sw = draws.seed_weights.astype(np.float64)
    return _nanmean(miou, sw), _nanmean(focus_iou, sw)


def scores(counts: np.ndarray, classes: Sequence[int], focus: int | None) -> tuple[float, float]:
    """Point estimates ``(mean IoU, focus IoU)`` of one loss: its score with every seed and image drawn once."""
    s, n = counts.shape[:2]
    miou, focus_iou = replicate_scores(counts, Draws(np.ones((1, s), np.int64), np.ones((1, n), np.int64)), classes, focus)
    return float(miou[0]), float(focus_iou[0])


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the finite bootstrap values (NaN when there are none)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of ``differences`` (best − other) against 0, with the +1 correction."""
    d = differences[np.isfinite(differences)]
    if d.size == 0:
        return math.nan
    below, above = np.count_nonzero(d <= 0), np.count_nonzero(d >= 0)
    return float(min(1.0, 2 * (min(below, above) + 1) / (d.size + 1)))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN and is not counted)."""
    finite = sorted((p, k) for k, p in p_values.items() if not math.isnan(p))
    m, running, out = len(finite), 0.0, {k: math.nan for k in p_values}
    for i, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


@dataclass
class Comparison:
    """One statistic (mean IoU or focus IoU) of every loss, with intervals and ties with the best."""

    estimate: dict[str, float]
    interval: dict[str, tuple[float, float]]
    best: str | None
    difference: dict[str, tuple[float, float, float]]  # loss → (best − loss, lo, hi)
    p_holm: dict[str, float]
    tied: dict[str, bool]  # tied with the best (the best itself included)


def compare(estimates: Mapping[str, float], replicates: Mapping[str, np.ndarray], alpha: float = 0.05) -> Comparison:
    """Intervals for every loss and, against the best point estimate, difference intervals and Holm ties.

    A loss whose statistic is undefined (NaN) takes no part; when every value is 0 there is no best.
    """
    losses = [k for k, v in estimates.items() if not math.isnan(v)]
    ivals = {k: interval(replicates[k]) for k in estimates}
    if not losses or max(estimates[k] for k in losses) <= 0:
        none = {k: False for k in estimates}
        return Comparison(dict(estimates), ivals, None, {}, {}, none)
    top = max(estimates[k] for k in losses)
    best = sorted(k for k in losses if estimates[k] == top)[0]  # an exact tie goes to the first name
    diffs, raw_p = {}, {}
    for k in losses:
        if k == best:
            continue
        d = replicates[best] - replicates[k]
        diffs[k] = (estimates[best] - estimates[k], *interval(d))
        raw_p[k] = p_value(d)
    adjusted = holm(raw_p)
    tied = {k: k == best or (k in adjusted and not adjusted[k] < alpha) for k in estimates}
    return Comparison(dict(estimates), ivals, best, diffs, adjusted, tied)
