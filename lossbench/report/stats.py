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
from scipy import optimize, special, stats as st

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


# --- the seeds' variance, moderated -----------------------------------------------------------------


@dataclass(frozen=True)
class Prior:
    """What the losses' seed variances say together (Smyth 2004, limma's ``fitFDist``): a loss's true seed
    variance is drawn around ``var`` with ``df`` prior degrees of freedom (``inf``: they agree; ``0``: nothing
    is shared, each loss stands on its own seeds). ``cap``: the df of all the losses' variances pooled, the most
    a moderated variance can have."""

    var: float = math.nan
    df: float = 0.0
    cap: float = math.inf

    def moderate(self, s2: float, d: float) -> tuple[float, float]:
        """``(variance, df)`` of one loss's seed variance ``s2`` on ``d`` df, shrunk towards the prior:
        ``(d₀ s₀² + d s²) / (d₀ + d)`` on ``d₀ + d`` df (never more than the pooled df)."""
        if not self.df > 0 or math.isnan(self.var):
            return s2, d
        if math.isinf(self.df):
            return self.var, self.cap
        return (self.df * self.var + d * s2) / (self.df + d), min(self.df + d, self.cap)


NO_PRIOR = Prior()


def seed_prior(scores_by_loss: Mapping[str, LossScores]) -> Prior:
    """The empirical-Bayes prior of the losses' seed variances (Smyth 2004, §6.2): from the log variances of the
    losses with at least two seeds, corrected for their df, the prior df ``d₀`` from their excess spread and the
    prior variance ``s₀²``. With fewer than three such losses (or none with a spread) there is no prior; a loss
    whose seeds all agree (variance 0) is moderated but does not shape the prior."""
    pairs = [(s.seed_sd**2, s.n - 1) for s in scores_by_loss.values() if s.n > 1]
    cap = float(sum(d for _, d in pairs)) or math.inf
    used = [(v, d) for v, d in pairs if v > 0]
    if len(used) < 3:
        return Prior(cap=cap)
    s2 = np.array([v for v, _ in used])
    d = np.array([d for _, d in used], float)
    e = np.log(s2) - special.digamma(d / 2) + np.log(d / 2)
    mean = float(e.mean())
    excess = float(((e - mean) ** 2).sum() / (len(e) - 1) - special.polygamma(1, d / 2).mean())
    if excess <= 0:
        return Prior(float(math.exp(mean)), math.inf, cap)
    d0 = 2 * float(_trigamma_inverse_v(np.array(excess)))
    return Prior(float(math.exp(mean + special.digamma(d0 / 2) - math.log(d0 / 2))), d0, cap)


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


def _satterthwaite(parts: Sequence[tuple[float, float]], known: float) -> float:
    """The df of a t for ``Σ parts + known``: each part ``(variance, df)`` estimated, ``known`` (the image bootstrap's)
    not. Satterthwaite's df of the seed parts, divided by their share ``w`` of the whole: the seeds' own df when they
    are all the variance, a normal when the images are. (Satterthwaite's count over the whole, which divides by
    ``w²``, covered 92–94 % at 3 seeds on simulated suites: the share is estimated from the same seeds.)"""
    seed = sum(v for v, _ in parts)
    den = sum(v * v / d for v, d in parts if v > 0 and d < math.inf)
    if not den > 0:
        return math.inf
    return seed * seed / den * (seed + known) / seed
def mean_var(s: LossScores, level: str, prior: Prior = NO_PRIOR) -> tuple[float, float]:
    """``(variance, df)`` of a loss's seed mean from training randomness: its moderated seed variance over its
    seeds (:class:`Prior`) at seed level; ``(0, inf)`` at image level or with fewer than two seeds."""
    if level != SEED or s.n < 2:
        return 0.0, math.inf
    var, df = prior.moderate(s.seed_sd**2, s.n - 1)
    return var / s.n, df


def loss_interval(s: LossScores, level: str, confidence: float = 0.95, prior: Prior = NO_PRIOR) -> tuple[float, float]:
    """A loss's interval: at seed level ``estimate ± t(ν) · sqrt(s̃²/n + v)`` (``s̃²``: the seed variance moderated by
    ``prior``, ``v`` the image-bootstrap variance, ``ν`` Satterthwaite's df of the two with ``v`` known), kept within
    [0, 1] where IoU lies; at image level, or with fewer than two seeds, the bootstrap's percentiles."""
    if level == IMAGE or s.n < 2:
        return percentile_interval(s.replicates, confidence) if s.replicates is not None else (math.nan, math.nan)
    iv = 0.0 if math.isnan(s.image_var) else s.image_var
    var, df = mean_var(s, level, prior)
    half = st.t.ppf(0.5 + confidence / 2, _satterthwaite([(var, df)], iv)) * math.sqrt(var + iv)
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


def difference(best: LossScores, other: LossScores, level: str, confidence: float = 0.95,
               prior: Prior = NO_PRIOR) -> Difference:  # fmt: skip
    """``best − other`` with its standard error (image-paired bootstrap variance, plus at seed level each seed
    mean's moderated variance), Satterthwaite's df over the two seed parts, interval and two-sided p-value."""
    delta = best.estimate - other.estimate
    iv = image_var_of_difference(best, other)
    parts = [mean_var(s, level, prior) for s in (best, other)]
    var = iv + sum(v for v, _ in parts)
    df = _satterthwaite(parts, iv)
    if not var > 0:  # the same predictions: no difference, or a difference nothing blurs
        p = 1.0 if delta == 0 else 0.0
        return Difference(delta, delta, delta, 0.0, df, p)
    se = math.sqrt(var)
    p = float(2 * st.t.sf(abs(delta) / se, df))
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * se
    return Difference(delta, delta - half, delta + half, se, df, p)


# --- the best set --------------------------------------------------------------------------------

NULL_SUITES = 2000
NULL_MIX = 0.5
"""Suites simulated to calibrate the best set's p-values (fixed draws: the report is reproducible)."""


def judged(scores_by_loss: Mapping[str, LossScores], level: str) -> list[str]:
    """The losses a best set can judge: a score, and at seed level at least two seeds (one seed measures no spread:
    such a loss neither rules out nor is ruled out at seed level)."""
    return [k for k, s in scores_by_loss.items() if not math.isnan(s.estimate) and (level != SEED or s.n > 1)]


def _trigamma_inverse_v(y: np.ndarray) -> np.ndarray:
    """The ``x`` with ``ψ₁(x) = y`` (``ψ₁`` decreases from ∞ to 0), elementwise by limma's Newton iteration; ``inf``
    where ``y ≤ 0``."""
    y = np.asarray(y, float)
    pos = y > 0
    x = np.where(pos, y, 1.0)
    z = 0.5 + 1.0 / x
    for _ in range(60):
        tri = special.polygamma(1, z)
        step = tri * (1 - tri / x) / special.polygamma(2, z)
        z = np.maximum(z + step, 1e-8)
        if np.all(np.abs(step) < 1e-9 * z):
            break
    return np.where(pos, z, np.inf)


def _pair_t(est: np.ndarray, s2: np.ndarray, n: np.ndarray, image_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(t, df)``, each ``[..., i, j]``: the standardised lead of ``j`` over ``i`` and its Satterthwaite df, for a batch
    of suites: ``est`` and ``s2`` are ``[..., k]`` (seed means and raw seed variances), ``n`` ``[k]`` seeds,
    ``image_var`` ``[k, k]`` the image-paired variances of the differences; the seed variances are moderated across
    the losses as :func:`seed_prior` does (batched)."""
    d = (n - 1).astype(float)
    seeded = d > 0
    var, df = np.where(seeded, s2, 0.0), np.where(seeded, d, np.inf)
    if seeded.sum() >= 3:
        dd = np.where(seeded, d, 2.0)
        used = seeded & (s2 > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.where(used, np.log(np.where(used, s2, 1.0)) - special.digamma(dd / 2) + np.log(dd / 2), np.nan)
            cnt = used.sum(-1)
            mean = np.nanmean(e, -1)
            tri = np.where(used, special.polygamma(1, dd / 2), np.nan)
            excess = np.nansum((e - mean[..., None]) ** 2, -1) / np.maximum(cnt - 1, 1) - np.nanmean(tri, -1)
        d0 = 2 * _trigamma_inverse_v(excess)
        cap = float(d[seeded].sum())
        finite = np.isfinite(d0)
        d0f = np.where(finite, d0, 1.0)[..., None]
        s0 = np.exp(mean + np.where(finite, special.digamma(d0f[..., 0] / 2) - np.log(d0f[..., 0] / 2), 0.0))[..., None]
        ok = (cnt >= 3)[..., None] & seeded
        mod = np.where(finite[..., None], (d0f * s0 + d * s2) / (d0f + d), s0)
        var = np.where(ok, mod, var)
        df = np.where(ok, np.minimum(np.where(finite[..., None], d0f + d, cap), cap), df)
    mv = var / n
    total = mv[..., :, None] + mv[..., None, :] + image_var
    with np.errstate(divide="ignore", invalid="ignore"):
        part = np.where(mv > 0, mv**2 / df, 0.0)
        den = part[..., :, None] + part[..., None, :]
        seed = mv[..., :, None] + mv[..., None, :]
        pair_df = np.where(den > 0, seed * total / np.where(den > 0, den, 1), np.inf)  # as _satterthwaite
        gap = est[..., None, :] - est[..., :, None]
        t = np.where(total > 0, gap / np.sqrt(np.where(total > 0, total, 1)), np.where(gap > 0, np.inf, -np.inf))
    idx = np.arange(est.shape[-1])
    t[..., idx, idx] = -np.inf
    return t, pair_df


@dataclass
class Pairs:
    """Every ordered pair of the judged losses: ``p[i, j]`` the one-sided p-value of "``j`` beats ``i``" (seed
    variances moderated, image-paired variance added, Satterthwaite's df); ``null_t`` and ``null_df``, ``[R, i, j]``,
    the same tests in :data:`NULL_SUITES` suites of this design simulated with every loss level (:func:`pairs`)."""

    names: list[str]
    p: np.ndarray
    null_t: np.ndarray | None = None
    null_df: np.ndarray | None = None

    def calibrated(self, i: int, others: list[int]) -> float:
        """The share of the level suites in which some comparator in ``others`` leads ``i`` at least as surely as the
        surest lead seen (a smallest pairwise p-value at most the one observed)."""
        seen = float(self.p[i, others].min())
        t, df = self.null_t[:, i, others], self.null_df[:, i, others]
        grid = np.linspace(0.0, 1.0, 201)  # 1/df: df from 1 to inf, where the t's critical value is smooth
        crit = np.concatenate([[st.norm.isf(seen)], st.t.isf(seen, 1.0 / grid[1:])])
        with np.errstate(divide="ignore"):
            need = np.interp(np.clip(1.0 / df, 0.0, 1.0), grid, crit)
        return float(max(seen, np.mean((t >= need).any(-1))))


def pairs(scores_by_loss: Mapping[str, LossScores], level: str, null: bool = False) -> Pairs:
    """The pairwise tests of the judged losses (:func:`judged`); with ``null``, also :data:`NULL_SUITES` suites of
    the same design simulated with every loss level (each loss's seeds spread by its moderated seed variance, the
    test images by their bootstrap covariance): what the tests would give were no loss better."""
    names = judged(scores_by_loss, level)
    sc = [scores_by_loss[n] for n in names]
    k = len(names)
    est = np.array([s.estimate for s in sc])
    seeded = level == SEED
    n = np.array([s.n if seeded else 1 for s in sc])
    s2 = np.array([s.seed_sd**2 if seeded and s.n > 1 else 0.0 for s in sc])
    cov = np.zeros((k, k))
    if k and all(s.replicates is not None for s in sc):
        reps = np.stack([s.replicates for s in sc], axis=1)  # [B, k]
        reps = reps[np.isfinite(reps).all(1)]
        if len(reps) > 1:
            cov = np.cov(reps, rowvar=False).reshape(k, k)
    diag = np.diag(cov)
    image_var = np.clip(diag[:, None] + diag[None, :] - 2 * cov, 0, None)
    t, df = _pair_t(est, s2, n, image_var)
    p = st.t.sf(t, df)
    if not null or k < 2:
        return Pairs(names, p)
    rng = np.random.default_rng(20_061_207 + k)
    prior = seed_prior(dict(zip(names, sc)))
    moderated = np.array([mean_var(s, level, prior)[0] * s.n if seeded and s.n > 1 else 0.0 for s in sc])
    truth = NULL_MIX * s2 + (1 - NULL_MIX) * moderated
    w, v = np.linalg.eigh(cov)
    root = v * np.sqrt(np.clip(w, 0, None))
    e = rng.standard_normal((NULL_SUITES, k)) * np.sqrt(truth / n) + rng.standard_normal((NULL_SUITES, k)) @ root.T
    dof = np.maximum(n - 1, 1)
    s2_null = np.where(n > 1, truth * rng.chisquare(dof, size=(NULL_SUITES, k)) / dof, 0.0)
    return Pairs(names, p, *_pair_t(e, s2_null, n, image_var))


@dataclass
class RuledOut:
    """A loss ruled out as the best: by which loss (the one that leads it most surely), with which p-value."""

    by: str
    p: float


def best_set(scores_by_loss: Mapping[str, LossScores], level: str, alpha: float = 0.05,
             candidates: Sequence[str] | None = None, comparators: Sequence[str] | None = None) -> dict[str, RuledOut]:  # fmt: skip
    """The losses among ``candidates`` (default: all) ruled out as the best at level ``alpha`` (Hsu's criterion).

    A loss ``i`` is ruled out when the evidence says some other loss is better than it. Its p-value: the chance,
    in suites of the same design where every loss is level (:func:`pairs`' null), that some comparator leads ``i``
    at least as surely as the surest lead seen (the smallest pairwise p-value) — a max-t calibration that counts
    how many comparators there are, how their tests share ``i``'s error and the images, and what moderating the
    seed variances does to uneven spreads. ``comparators`` default to every judged loss. The true best is ruled
    out with probability at most ``alpha``, and so is each loss level with it, whatever the other losses do; a
    loss that is not returned is in the *best set*. At seed level a loss with one seed is not judged."""
    names = judged(scores_by_loss, level)
    if len(names) < 2:
        return {}
    pool = [n for n in (candidates if candidates is not None else names) if n in names]
    versus = set(comparators if comparators is not None else names)
    pr: Pairs | None = None
    out = {}
    for name in pool:
        if pr is None:
            pr = pairs(scores_by_loss, level)
        i = names.index(name)
        others = [j for j, n in enumerate(names) if n in versus and j != i]
        if not others or float(pr.p[i, others].min()) >= alpha:
            continue
        if pr.null_t is None:
            pr = pairs(scores_by_loss, level, null=True)
        p = pr.calibrated(i, others)
        if p < alpha:
            out[name] = RuledOut(names[min(others, key=lambda j: pr.p[i, j])], p)
    return out


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
    prior: Prior = NO_PRIOR  # the moderation of the seed variances

    @property
    def members(self) -> list[str]:
        """The best set: the highest estimate first, then by estimate."""
        return sorted((k for k, v in self.in_best_set.items() if v), key=lambda k: (-self.estimate[k], k))


def level_of(scores_by_loss: Mapping[str, LossScores]) -> str:
    """Seed level when some loss has at least :data:`SEED_LEVEL_MIN` seeds (a suite designed to measure training
    randomness; a failed or damaged run leaves its loss fewer, not the suite without a spread), else image level."""
    ns = [s.n for s in scores_by_loss.values() if not math.isnan(s.estimate)]
    return SEED if ns and max(ns) >= SEED_LEVEL_MIN else IMAGE


def compare(scores_by_loss: Mapping[str, LossScores], alpha: float = 0.05, level: str | None = None, seed: int = 0,
            ruled_out: Mapping[str, RuledOut] | None = None, learned: float = 0.0) -> Comparison:  # fmt: skip
    """Intervals for every loss, the best set (:func:`best_set`, or ``ruled_out`` decided elsewhere — a race's
    rounds), differences to the highest estimate, P(best) and ranks.

    A loss whose statistic is undefined (NaN) takes no part; when every value is 0, or below ``learned`` (a class no
    loss learned), there is no best and no set: a ranking there means nothing.
    ``level`` defaults to :func:`level_of`.
    """
    level = level or level_of(scores_by_loss)
    prior = seed_prior(scores_by_loss) if level == SEED else NO_PRIOR
    estimates = {k: s.estimate for k, s in scores_by_loss.items()}
    intervals = {k: loss_interval(s, level, prior=prior) for k, s in scores_by_loss.items()}
    losses = [k for k, v in estimates.items() if not math.isnan(v)]
    if not losses or max(estimates[k] for k in losses) <= 0 or max(estimates[k] for k in losses) < learned:
        return Comparison(level, estimates, intervals, None, {}, {}, {k: False for k in estimates}, alpha=alpha)
    top = max(estimates[k] for k in losses)
    best = sorted(k for k in losses if estimates[k] == top)[0]  # an exact tie goes to the first name
    diffs = {k: difference(scores_by_loss[best], scores_by_loss[k], level, prior=prior) for k in losses if k != best}
    out = (dict(ruled_out) if ruled_out is not None
           else best_set({k: scores_by_loss[k] for k in losses}, level, alpha))  # fmt: skip
    in_set = {k: k in losses and k not in out for k in estimates}
    p_best, ranks = _chances({k: scores_by_loss[k] for k in losses}, level, seed, prior)
    return Comparison(level, estimates, intervals, best, diffs, out, in_set, p_best, ranks, alpha, prior)


def _chances(scores_by_loss: Mapping[str, LossScores], level: str, seed: int,
             prior: Prior = NO_PRIOR) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:  # fmt: skip
    """Each loss's probability of being best and the 95 % interval of its rank, over the image draws plus
    (at seed level) a t-distributed draw of each seed mean's error (moderated variance and df); a loss without
    replicates is left out."""
    with_reps = {k: s for k, s in scores_by_loss.items() if s.replicates is not None}
    if not with_reps:
        return {}, {}
    rng = np.random.default_rng(seed)
    names = sorted(with_reps)
    draws = np.stack([np.nan_to_num(with_reps[k].replicates, nan=-np.inf) for k in names], axis=1)  # [B, L]
    if level == SEED:
        for j, k in enumerate(names):
            var, df = mean_var(with_reps[k], level, prior)
            if var > 0:
                draws[:, j] += math.sqrt(var) * (rng.standard_t(df, size=draws.shape[0]) if df < math.inf
                                                 else rng.standard_normal(draws.shape[0]))  # fmt: skip
    order = np.argsort(-draws, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(order.shape[0])[:, None], order] = np.arange(1, len(names) + 1)
    p_best = {k: float((rank[:, j] == 1).mean()) for j, k in enumerate(names)}
    ranks = {k: (int(np.quantile(rank[:, j], 0.025, method="lower")), int(np.quantile(rank[:, j], 0.975, method="higher")))
             for j, k in enumerate(names)}  # fmt: skip
    return p_best, ranks


# --- what the design can detect -------------------------------------------------------------------


def detectable_difference(seed_sd: float, seeds: int, losses: int, image_sd: float, alpha: float = 0.05,
                          power: float = 0.8, prior_df: float = 0.0) -> float:  # fmt: skip
    """The gap to the best at which a loss is ruled out with probability ``power``, in a suite of ``losses``
    losses with ``seeds`` seeds each whose runs spread by ``seed_sd`` and whose test images alone blur a
    difference by ``image_sd`` (its bootstrap standard deviation), judged at level ``alpha``.

    The best must lead the loss at one-sided ``α / (k − 1)`` (the best set's max-t calibration is a little less
    strict: this errs on the side of promising less); with ``se = sqrt(2 s² / n + image_sd²)`` the lead's t is
    noncentral with ``2 (n − 1 + d₀)`` degrees of freedom (``d₀``: the moderation's prior df; a normal without a
    seed spread) and noncentrality ``gap / se``, solved for ``power``. With ``seed_sd`` 0 (or ``seeds`` infinite)
    it is the test set's floor: what no number of seeds goes below."""
    k = max(losses, 2)
    level = alpha / (k - 1)
    seed_part = 0.0 if seeds == math.inf or not seed_sd > 0 else 2 * seed_sd**2 / seeds
    se = math.sqrt(seed_part + image_sd**2)
    if not se > 0:
        return 0.0
    df = 2 * (seeds - 1 + prior_df) if seed_part else math.inf
    if not df > 0:  # one seed measures no spread: no gap can be promised
        return math.inf
    if math.isinf(df):
        return float((st.norm.isf(level) + st.norm.ppf(power)) * se)
    crit = st.t.isf(level, df)
    nc = optimize.brentq(lambda d: st.nct.sf(crit, df, d) - power, 0.0, 10 * crit + 50)
    return float(nc * se)
