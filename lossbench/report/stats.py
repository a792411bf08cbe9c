"""The report's statistics: how sure a comparison of losses can be, and at which level.

A loss's score (mean IoU, or the focus class's IoU) is each run's IoU pooled over the test images,
averaged over the loss's seeds. Two sources make it uncertain, and the report keeps them apart:

* **Which test images were drawn** (*image level*): every run is tested on the same images, so this
  is measured by a bootstrap over the images — the same draws for every loss, so differences are
  paired by image — whatever the number of seeds. It is all a statement about *these trained
  models on this test set* can cover.
* **Training randomness** (*seed level*): what another seed would give. It is measured by the spread
  of the loss's runs, and only where there are at least :data:`SEED_LEVEL_MIN` seeds per loss. Runs
  are *not* paired by seed across losses: a seed fixes the initial weights and the batch order, but
  its effect does not agree from one loss to another (measured on real suites), so pairing by seed
  number would decide ties by chance.

At seed level a loss's interval is ``estimate ± t · sqrt(s²/n + v)`` and a difference to the best
is Welch's t-test on the seed means with the image-bootstrap variance ``v`` of the (image-paired)
difference added: ``t = Δ / sqrt(s₁²/n₁ + s₂²/n₂ + v_Δ)``, with Welch–Satterthwaite degrees of
freedom (the image part counts as known). Small-sample correct — a t with 2 degrees of freedom at 3
seeds, not a normal — so 3 seeds give wide intervals, as they should. At image level the interval
is the bootstrap's percentile interval and the difference a z-test on its bootstrap variance. The
p-values have no floor (a bootstrap p-value cannot go below 2/(B+1), which Holm can push above α);
they are Holm-corrected over the comparisons with the best, and a loss whose corrected p-value is at
least ``alpha`` is *tied* with the best. The tests simulate both: equal losses are called different
in at most α of comparisons at 3 and 5 seeds, and a real difference is found.

Each loss also gets its probability of being best and a 95 % interval of its rank (as rliable reports
for RL benchmarks): over the bootstrap's image draws, each loss's score plus — at seed level — a draw
of its seed-mean's error (``s/√n`` times a t with ``n − 1`` degrees of freedom).

The statistics use the per-image TP/FP/FN counts each run keeps (:func:`lossbench.metrics.per_image_counts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as st

from lossbench.metrics import FN, FP, TP

SEED_LEVEL_MIN = 3
"""Seeds per loss from which the report measures training randomness and compares losses at seed level."""

SEED, IMAGE = "seed", "image"
"""The levels of a comparison: training randomness measured (seed) or only the test images' (image)."""


# --- scores ---------------------------------------------------------------------------------------


def image_draws(n_images: int, replicates: int, seed: int = 0) -> np.ndarray:
    """``[B, N]`` multiplicities of a bootstrap over the test images (a fixed ``seed`` keeps the report reproducible)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, n_images, size=(replicates, n_images))
    weights = np.zeros((replicates, n_images), np.int64)
    np.add.at(weights, (np.arange(replicates)[:, None], images), 1)
    return weights


def _iou(counts: np.ndarray) -> np.ndarray:
    """IoU per class from ``[..., C, 3]`` TP/FP/FN sums; NaN where the class is in neither target nor prediction."""
    tp = counts[..., TP].astype(np.float64)
    den = tp + counts[..., FP] + counts[..., FN]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, tp / np.where(den > 0, den, 1), np.nan)


def seed_mean(x: np.ndarray) -> np.ndarray:
    """``[B, S]`` → ``[B]``: the mean over the seeds whose value is defined (what a score averages)."""
    return _nanmean(x)


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the values that are not NaN; NaN where none is left."""
    kept = ~np.isnan(x)
    total = kept.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.nan_to_num(x).sum(-1) / np.where(total > 0, total, 1), np.nan)


def replicate_scores(counts: np.ndarray, weights: np.ndarray, classes: Sequence[int], focus: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(mean IoU [B, S], focus IoU [B, S])``: each seed's IoU pooled over the images of each replicate.

    ``counts`` is ``[S, N, C, 3]`` (one loss, its seeds), ``weights`` ``[B, N]`` (:func:`image_draws`).
    """
    sums = np.einsum("bi,sick->bsck", weights, counts, optimize=True)  # [B, S, C, 3]
    iou = _iou(sums)  # [B, S, C]
    miou = _nanmean(iou[..., list(classes)])
    focus_iou = iou[..., focus] if focus is not None else np.full(miou.shape, np.nan)
    return miou, focus_iou


def scores(counts: np.ndarray, classes: Sequence[int], focus: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(mean IoU [S], focus IoU [S])`` of each seed on the whole test set (each image once)."""
    miou, focus_iou = replicate_scores(counts, np.ones((1, counts.shape[1]), np.int64), classes, focus)
    return miou[0], focus_iou[0]


@dataclass
class LossScores:
    """One statistic of one loss: each seed's score, and the seed-mean score over each image bootstrap replicate."""

    per_seed: np.ndarray  # [S] the runs' scores (NaN where undefined)
    replicates: np.ndarray | None = None  # [B] the seed mean under each image draw; None without evidence

    @property
    def n(self) -> int:
        return int(np.isfinite(self.per_seed).sum())

    @property
    def estimate(self) -> float:
        v = self.per_seed[np.isfinite(self.per_seed)]
        return float(v.mean()) if v.size else math.nan

    @property
    def seed_sd(self) -> float:
        """The spread of the runs (standard deviation over seeds; NaN with fewer than two)."""
        v = self.per_seed[np.isfinite(self.per_seed)]
        return float(v.std(ddof=1)) if v.size > 1 else math.nan

    @property
    def seed_var(self) -> float:
        """The variance of the seed mean from training randomness: ``s² / n``."""
        return self.seed_sd**2 / self.n if self.n > 1 else math.nan

    @property
    def image_var(self) -> float:
        """The variance of the seed mean from the test images drawn (bootstrap)."""
        if self.replicates is None:
            return math.nan
        r = self.replicates[np.isfinite(self.replicates)]
        return float(r.var(ddof=1)) if r.size > 1 else math.nan


# --- one comparison ------------------------------------------------------------------------------


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN and is not counted)."""
    finite = sorted((p, k) for k, p in p_values.items() if not math.isnan(p))
    m, running, out = len(finite), 0.0, {k: math.nan for k in p_values}
    for i, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the finite bootstrap values (NaN when there are none)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _welch_df(parts: Sequence[tuple[float, int]], total: float) -> float:
    """Welch–Satterthwaite degrees of freedom of ``total`` variance whose seed parts are ``(variance, n)``; the rest is known."""
    den = sum(v**2 / (n - 1) for v, n in parts if n > 1 and v > 0)
    return total**2 / den if den > 0 else math.inf


def loss_interval(s: LossScores, level: str, confidence: float = 0.95) -> tuple[float, float]:
    """A loss's interval: at seed level ``estimate ± t · sqrt(s²/n + v)``, kept within [0, 1] where IoU lies; at image
    level the bootstrap's percentiles."""
    if level == IMAGE or s.n < 2:
        return percentile_interval(s.replicates, confidence) if s.replicates is not None else (math.nan, math.nan)
    iv = 0.0 if math.isnan(s.image_var) else s.image_var
    total = s.seed_var + iv
    half = st.t.ppf(0.5 + confidence / 2, _welch_df([(s.seed_var, s.n)], total)) * math.sqrt(total)
    return max(0.0, s.estimate - half), min(1.0, s.estimate + half)  # an IoU lies in [0, 1]


@dataclass
class Difference:
    """The best loss minus another: the difference, its interval, its test."""

    delta: float
    lo: float
    hi: float
    se: float
    df: float
    p: float  # two-sided, before the Holm correction


def difference(best: LossScores, other: LossScores, level: str, confidence: float = 0.95) -> Difference:
    """``best − other`` with its standard error (image-paired bootstrap variance, plus at seed level each
    seed mean's variance), Welch–Satterthwaite degrees of freedom, interval and two-sided p-value."""
    delta = best.estimate - other.estimate
    image_var = 0.0
    if best.replicates is not None and other.replicates is not None:
        d = best.replicates - other.replicates
        d = d[np.isfinite(d)]
        image_var = float(d.var(ddof=1)) if d.size > 1 else 0.0
    parts = [(best.seed_var, best.n), (other.seed_var, other.n)] if level == SEED else []
    var = image_var + sum(v for v, _ in parts)
    df = _welch_df(parts, var) if parts else math.inf
    if not var > 0:  # the same predictions: no difference, or a difference nothing blurs
        p = 1.0 if delta == 0 else 0.0
        return Difference(delta, delta, delta, 0.0, df, p)
    se = math.sqrt(var)
    p = float(2 * st.t.sf(abs(delta) / se, df))
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * se
    return Difference(delta, delta - half, delta + half, se, df, p)


@dataclass
class Comparison:
    """One statistic (mean IoU or focus IoU) of every loss: intervals, ties with the best, chances of being best."""

    level: str  # SEED or IMAGE: what the intervals and ties account for
    estimate: dict[str, float]
    interval: dict[str, tuple[float, float]]
    best: str | None
    difference: dict[str, Difference]  # every other loss: best − loss
    p_holm: dict[str, float]
    tied: dict[str, bool]  # tied with the best (the best itself included)
    p_best: dict[str, float] = field(default_factory=dict)  # probability of being the best
    rank: dict[str, tuple[int, int]] = field(default_factory=dict)  # 95 % interval of the rank (1: best)


def level_of(scores_by_loss: Mapping[str, LossScores]) -> str:
    """Seed level when every loss has at least :data:`SEED_LEVEL_MIN` seeds, else image level."""
    ns = [s.n for s in scores_by_loss.values() if not math.isnan(s.estimate)]
    return SEED if ns and min(ns) >= SEED_LEVEL_MIN else IMAGE


def compare(scores_by_loss: Mapping[str, LossScores], alpha: float = 0.05, level: str | None = None, seed: int = 0) -> Comparison:
    """Intervals for every loss and, against the best estimate, differences, Holm-corrected ties, P(best) and ranks.

    A loss whose statistic is undefined (NaN) takes no part; when every value is 0 there is no best.
    ``level`` defaults to :func:`level_of`.
    """
    level = level or level_of(scores_by_loss)
    estimates = {k: s.estimate for k, s in scores_by_loss.items()}
    intervals = {k: loss_interval(s, level) for k, s in scores_by_loss.items()}
    losses = [k for k, v in estimates.items() if not math.isnan(v)]
    if not losses or max(estimates[k] for k in losses) <= 0:
        return Comparison(level, estimates, intervals, None, {}, {}, {k: False for k in estimates})
    top = max(estimates[k] for k in losses)
    best = sorted(k for k in losses if estimates[k] == top)[0]  # an exact tie goes to the first name
    diffs = {k: difference(scores_by_loss[best], scores_by_loss[k], level) for k in losses if k != best}
    adjusted = holm({k: d.p for k, d in diffs.items()})
    tied = {k: k == best or (k in adjusted and not adjusted[k] < alpha) for k in estimates}
    p_best, ranks = _chances({k: scores_by_loss[k] for k in losses}, level, seed)
    return Comparison(level, estimates, intervals, best, diffs, adjusted, tied, p_best, ranks)


def _chances(scores_by_loss: Mapping[str, LossScores], level: str, seed: int) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:
    """Each loss's probability of being best and the 95 % interval of its rank, over the image draws plus
    (at seed level) a t-distributed draw of each seed mean's error; a loss without replicates is left out."""
    with_reps = {k: s for k, s in scores_by_loss.items() if s.replicates is not None}
    if not with_reps:
        return {}, {}
    rng = np.random.default_rng(seed)
    names = sorted(with_reps)
    draws = np.stack([np.nan_to_num(with_reps[k].replicates, nan=-np.inf) for k in names], axis=1)  # [B, L]
    if level == SEED:
        for j, k in enumerate(names):
            s = with_reps[k]
            if s.n > 1:
                draws[:, j] += math.sqrt(s.seed_var) * rng.standard_t(s.n - 1, size=draws.shape[0])
    order = np.argsort(-draws, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(order.shape[0])[:, None], order] = np.arange(1, len(names) + 1)
    p_best = {k: float((rank[:, j] == 1).mean()) for j, k in enumerate(names)}
    ranks = {k: (int(np.quantile(rank[:, j], 0.025, method="lower")), int(np.quantile(rank[:, j], 0.975, method="higher")))
             for j, k in enumerate(names)}  # fmt: skip
    return p_best, ranks


def seeds_to_separate(delta: float, seed_sd: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Roughly how many seeds per loss a two-sided test at ``alpha`` needs to find a difference ``delta``
    with ``power``, when each loss's runs spread by ``seed_sd``: ``2 (z₁₋α/₂ + z_power)² s² / Δ²``."""
    if not (delta > 0 and seed_sd > 0):
        return None
    z = st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)
    return max(2, math.ceil(2 * (z * seed_sd / delta) ** 2))
