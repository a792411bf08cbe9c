"""The report's statistics: how sure a comparison of losses can be, which losses could still be the best,
and what a suite of this size can detect.

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

**Intervals.** At seed level a loss's interval is ``estimate ± t(n−1) · sqrt(s²/n + v)`` (``v``: the
image-bootstrap variance) — the t of the *seeds'* degrees of freedom, not a Welch–Satterthwaite
count that grows with ``v``: that count treats the estimated ``s²`` as if it were known and its
intervals fall short of their level (92–93 % at 3 seeds). With ``v`` known the statistic is
``Z / sqrt(w·U + 1 − w)`` with ``U ~ χ²(n−1)/(n−1)`` and ``w`` the seed share of the variance; since
``u ↦ P(|Z| > c·√u)`` is convex, its tail is at most ``w`` times the t's plus ``1 − w`` times the
normal's, so ``t(n−1)`` keeps the level whatever the ratio of image to seed variance. A difference
of two losses uses ``t(min(n₁, n₂) − 1)``, the conservative Behrens–Fisher count, by the same bound.

**The best set** (:func:`best_set`). The best loss is picked from the data, so "the best vs each
other" is not a fixed family. The report asks instead, for each loss ``i``, whether it can be
*ruled out* as the best: ``H_i: μ_i ≥ μ_j for every j``. ``H_i`` is rejected when some other loss is
better than ``i`` beyond chance; its p-value is the smallest one-sided p-value of "``j`` beats ``i``"
over the ``k − 1`` others, Bonferroni-multiplied by ``k − 1``; the ``H_i`` are then Holm-stepped.
Every rejected ``H_i`` is a true claim ("``i`` is worse than some loss") with family-wise
probability at least ``1 − α`` *whatever the true means* — when all losses are equal, no loss is
ruled out in at least ``1 − α`` of suites (all-pairs control; Hsu's MCB, which only protects the
true best, rules out a loss among 14 equal ones in a quarter of suites). The losses not ruled out are
the *best set*. Its price is power: at 3 seeds and ``t(2)`` a loss must trail by many seed SDs.

**What a suite can detect** (:func:`detectable_difference`): the gap to the best at which a loss is
ruled out with 80 % power, from the measured seed spread, the number of seeds and losses, and the
test images' own variance — the floor that no number of seeds goes below on this test set.

**Racing** (:func:`race_alphas`): a suite that adds seeds in rounds to the losses still in the best
set spends ``α`` over its planned rounds in proportion to each round's seeds per loss; a loss ruled
out in any round stays out. The union bound over rounds keeps the family-wise level.

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
from scipy import optimize, stats as st

from lossbench.config import SEED_LEVEL_MIN  # seeds per loss from which losses are compared at seed level
from lossbench.metrics import FN, FP, TP

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


def loss_interval(s: LossScores, level: str, confidence: float = 0.95) -> tuple[float, float]:
    """A loss's interval: at seed level ``estimate ± t(n−1) · sqrt(s²/n + v)``, kept within [0, 1] where IoU lies;
    at image level the bootstrap's percentiles."""
    if level == IMAGE or s.n < 2:
        return percentile_interval(s.replicates, confidence) if s.replicates is not None else (math.nan, math.nan)
    iv = 0.0 if math.isnan(s.image_var) else s.image_var
    half = st.t.ppf(0.5 + confidence / 2, s.n - 1) * math.sqrt(s.seed_var + iv)
    return max(0.0, s.estimate - half), min(1.0, s.estimate + half)  # an IoU lies in [0, 1]


@dataclass
class Difference:
    """One loss minus another: the difference, its interval, its test."""

    delta: float
    lo: float
    hi: float
    se: float
    df: float
    p: float  # two-sided, for this one comparison (no correction)


def image_var_of_difference(a: LossScores, b: LossScores) -> float:
    """The image-bootstrap variance of ``a − b`` (the same image draws for both: paired); 0 without replicates."""
    if a.replicates is None or b.replicates is None:
        return 0.0
    d = a.replicates - b.replicates
    d = d[np.isfinite(d)]
    return float(d.var(ddof=1)) if d.size > 1 else 0.0


def _df(n1: int, n2: int, level: str) -> float:
    """The degrees of freedom of a difference: the conservative Behrens–Fisher ``min(n₁, n₂) − 1`` at seed level."""
    return float(min(n1, n2) - 1) if level == SEED and min(n1, n2) > 1 else math.inf


def difference(best: LossScores, other: LossScores, level: str, confidence: float = 0.95) -> Difference:
    """``best − other`` with its standard error (image-paired bootstrap variance, plus at seed level each
    seed mean's variance), ``t(min(n₁, n₂) − 1)`` interval and two-sided p-value."""
    delta = best.estimate - other.estimate
    var = image_var_of_difference(best, other)
    if level == SEED:
        var += sum(v for v in (best.seed_var, other.seed_var) if not math.isnan(v))
    df = _df(best.n, other.n, level)
    if not var > 0:  # the same predictions: no difference, or a difference nothing blurs
        p = 1.0 if delta == 0 else 0.0
        return Difference(delta, delta, delta, 0.0, df, p)
    se = math.sqrt(var)
    p = float(2 * st.t.sf(abs(delta) / se, df))
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * se
    return Difference(delta, delta - half, delta + half, se, df, p)


# --- the best set --------------------------------------------------------------------------------


def beaten_p(scores_by_loss: Mapping[str, LossScores], level: str) -> tuple[list[str], np.ndarray]:
    """``(names, P)``: ``P[i, j]`` is the one-sided p-value of "loss ``j`` scores higher than loss ``i``"
    (Welch's standard error with the image-paired variance, ``t(min(n) − 1)`` at seed level, a normal at
    image level); 1 on the diagonal and where a score is undefined."""
    names = [k for k, s in scores_by_loss.items() if not math.isnan(s.estimate)]
    k = len(names)
    sc = [scores_by_loss[n] for n in names]
    est = np.array([s.estimate for s in sc])
    seed_var = np.array([s.seed_var if level == SEED and s.n > 1 else 0.0 for s in sc])
    ns = np.array([s.n for s in sc])
    if all(s.replicates is not None for s in sc) and k:
        reps = np.stack([s.replicates for s in sc], axis=1)  # [B, k]
        d = reps[:, :, None] - reps[:, None, :]
        with np.errstate(invalid="ignore"):
            image_var = np.nan_to_num(np.nanvar(d, axis=0, ddof=1))
    else:
        image_var = np.zeros((k, k))
    var = seed_var[:, None] + seed_var[None, :] + image_var
    gap = est[None, :] - est[:, None]  # gap[i, j] = μ̂_j − μ̂_i
    df = np.where(level == SEED, np.minimum(ns[:, None], ns[None, :]) - 1, np.inf).astype(float)
    df = np.where(df >= 1, df, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(var > 0, gap / np.sqrt(np.where(var > 0, var, 1)), np.where(gap > 0, np.inf, -np.inf))
    p = st.t.sf(t, df)
    np.fill_diagonal(p, 1.0)
    return names, p


@dataclass
class RuledOut:
    """A loss ruled out as the best: by which loss, with which family-wise (Holm) p-value."""

    by: str
    p: float


def best_set(scores_by_loss: Mapping[str, LossScores], level: str, alpha: float = 0.05,
             candidates: Sequence[str] | None = None) -> dict[str, RuledOut]:  # fmt: skip
    """The losses among ``candidates`` (default: all) that can be ruled out as the best at family-wise level ``alpha``.

    For each candidate ``i``: the Bonferroni-multiplied smallest p-value of another loss beating it (every loss
    with a score is a comparator, ruled out or not), then Holm's step-down over the candidates. What is not
    returned is the best set."""
    names, p = beaten_p(scores_by_loss, level)
    k = len(names)
    if k < 2:
        return {}
    pool = [n for n in (candidates if candidates is not None else names) if n in names]
    raw = {}
    by = {}
    for name in pool:
        i = names.index(name)
        j = int(np.argmin(p[i]))
        raw[name], by[name] = min(1.0, (k - 1) * float(p[i, j])), names[j]
    adjusted = holm(raw)
    return {n: RuledOut(by[n], adjusted[n]) for n in pool if adjusted[n] < alpha}


def race_alphas(seeds_per_round: Sequence[int], alpha: float = 0.05) -> list[float]:
    """The level each planned round of a race spends: ``α`` shared in proportion to the round's seeds per loss
    (later rounds, with more seeds, get more); they sum to ``α``, so by the union bound a loss that could be
    the best is ruled out in some round with probability at most ``α``."""
    total = float(sum(seeds_per_round))
    return [alpha * n / total for n in seeds_per_round]


# --- the comparison of a budget ------------------------------------------------------------------


@dataclass
class Comparison:
    """One statistic (mean IoU or focus IoU) of every loss: intervals, the best set, chances of being best."""

    level: str  # SEED or IMAGE: what the intervals and the best set account for
    estimate: dict[str, float]
    interval: dict[str, tuple[float, float]]
    best: str | None  # the highest estimate (a member of the best set, not "the" best)
    difference: dict[str, Difference]  # every other loss: best − loss (one comparison each, not corrected)
    ruled_out: dict[str, RuledOut]  # losses ruled out as the best (family-wise)
    in_best_set: dict[str, bool]  # cannot be ruled out as the best
    p_best: dict[str, float] = field(default_factory=dict)  # probability of being the best
    rank: dict[str, tuple[int, int]] = field(default_factory=dict)  # 95 % interval of the rank (1: best)
    alpha: float = 0.05

    @property
    def members(self) -> list[str]:
        """The best set: the highest estimate first, then by estimate."""
        return sorted((k for k, v in self.in_best_set.items() if v), key=lambda k: (-self.estimate[k], k))


def level_of(scores_by_loss: Mapping[str, LossScores]) -> str:
    """Seed level when every loss has at least :data:`SEED_LEVEL_MIN` seeds, else image level."""
    ns = [s.n for s in scores_by_loss.values() if not math.isnan(s.estimate)]
    return SEED if ns and min(ns) >= SEED_LEVEL_MIN else IMAGE


def compare(scores_by_loss: Mapping[str, LossScores], alpha: float = 0.05, level: str | None = None, seed: int = 0,
            ruled_out: Mapping[str, RuledOut] | None = None) -> Comparison:  # fmt: skip
    """Intervals for every loss, the best set (:func:`best_set`, or ``ruled_out`` decided elsewhere — a race's
    rounds), differences to the highest estimate, P(best) and ranks.

    A loss whose statistic is undefined (NaN) takes no part; when every value is 0 there is no best and no set.
    ``level`` defaults to :func:`level_of`.
    """
    level = level or level_of(scores_by_loss)
    estimates = {k: s.estimate for k, s in scores_by_loss.items()}
    intervals = {k: loss_interval(s, level) for k, s in scores_by_loss.items()}
    losses = [k for k, v in estimates.items() if not math.isnan(v)]
    if not losses or max(estimates[k] for k in losses) <= 0:
        return Comparison(level, estimates, intervals, None, {}, {}, {k: False for k in estimates}, alpha=alpha)
    top = max(estimates[k] for k in losses)
    best = sorted(k for k in losses if estimates[k] == top)[0]  # an exact tie goes to the first name
    diffs = {k: difference(scores_by_loss[best], scores_by_loss[k], level) for k in losses if k != best}
    out = dict(ruled_out) if ruled_out is not None else best_set({k: scores_by_loss[k] for k in losses}, level, alpha)
    in_set = {k: k in losses and k not in out for k in estimates}
    p_best, ranks = _chances({k: scores_by_loss[k] for k in losses}, level, seed)
    return Comparison(level, estimates, intervals, best, diffs, out, in_set, p_best, ranks, alpha)


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


# --- what the design can detect -------------------------------------------------------------------


def detectable_difference(seed_sd: float, seeds: int, losses: int, image_sd: float, alpha: float = 0.05,
                          power: float = 0.8) -> float:  # fmt: skip
    """The gap to the best at which a loss is ruled out with probability ``power``, in a suite of ``losses``
    losses with ``seeds`` seeds each whose runs spread by ``seed_sd`` and whose test images alone blur a
    difference by ``image_sd`` (its bootstrap standard deviation).

    The loss must be beaten at the first step of :func:`best_set`, one-sided at ``α / (k (k − 1))``; with
    ``se = sqrt(2 s² / n + image_sd²)`` the test statistic is a noncentral t with ``n − 1`` degrees of
    freedom (a normal without a seed spread) and noncentrality ``gap / se``, solved for ``power``. With
    ``seed_sd`` 0 (or ``seeds`` infinite) it is the test set's floor: what no number of seeds goes below."""
    k = max(losses, 2)
    level = alpha / (k * (k - 1))
    seed_part = 0.0 if seeds == math.inf or not seed_sd > 0 else 2 * seed_sd**2 / seeds
    se = math.sqrt(seed_part + image_sd**2)
    if not se > 0:
        return 0.0
    if seed_part == 0:
        return float((st.norm.isf(level) + st.norm.ppf(power)) * se)
    df = seeds - 1
    crit = st.t.isf(level, df)
    nc = optimize.brentq(lambda d: st.nct.sf(crit, df, d) - power, 0.0, 10 * crit + 50)
    return float(nc * se)
