"""The report's statistics: against direct computations, and calibrated on simulated suites (A/A and power)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers.simulate import suite_counts
from scipy import stats as st

from lossbench.metrics import object_counts, object_summary
from lossbench.report.stats import (
    IMAGE,
    SEED,
    LossScores,
    compare,
    holm,
    image_draws,
    replicate_scores,
    scores,
    seed_mean,
    seeds_to_separate,
)


def _counts(rng, n_seeds=2, n_images=12, classes=3, skill=0.8):
    """[S, N, C, 3] per-image TP/FP/FN of a model that gets ``skill`` of each class's pixels right."""
    support = rng.integers(0, 40, size=(n_images, classes))
    out = np.zeros((n_seeds, n_images, classes, 3), np.int64)
    for s in range(n_seeds):
        tp = np.floor(support * (skill + 0.05 * rng.standard_normal(support.shape)).clip(0, 1)).astype(np.int64)
        out[s, :, :, 0] = tp
        out[s, :, :, 2] = support - tp
        out[s, :, :, 1] = rng.integers(0, 6, size=support.shape)
    return out


def _direct(counts, weights, classes, focus):
    """Each seed's pooled IoU over each replicate's images, with loops."""
    out_m = np.zeros((weights.shape[0], counts.shape[0]))
    out_f = np.zeros_like(out_m)
    for b in range(weights.shape[0]):
        images = np.repeat(np.arange(counts.shape[1]), weights[b])
        for s in range(counts.shape[0]):
            pooled = counts[s, images].sum(0)  # [C, 3]
            ious = []
            for c in range(counts.shape[2]):
                tp, fp, fn = pooled[c]
                ious.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
            kept = [ious[c] for c in classes if not math.isnan(ious[c])]
            out_m[b, s] = sum(kept) / len(kept)
            out_f[b, s] = ious[focus]
    return out_m, out_f


def test_the_vectorised_image_bootstrap_equals_a_direct_computation():
    rng = np.random.default_rng(0)
    counts = _counts(rng, n_seeds=3)
    weights = image_draws(n_images=12, replicates=50, seed=3)
    assert (weights.sum(1) == 12).all()
    miou, focus = replicate_scores(counts, weights, classes=[0, 1, 2], focus=2)
    want_m, want_f = _direct(counts, weights, [0, 1, 2], 2)
    assert np.allclose(miou, want_m) and np.allclose(focus, want_f)
    # each seed's score on the whole test set is its pooled IoU
    point_m, point_f = scores(counts, [0, 1, 2], 2)
    per_seed = [np.mean([counts[s, :, c, 0].sum() / counts[s, :, c].sum() for c in range(3)]) for s in range(3)]
    assert point_m == pytest.approx(per_seed)
    # the same draws give the same numbers: the report is reproducible
    assert np.array_equal(replicate_scores(counts, image_draws(12, 50, seed=3), [0, 1, 2], 2)[0], miou)


def _loss_scores(counts, weights, focus=False):
    m, f = replicate_scores(counts, weights, [0, 1, 2], 2)
    pm, pf = scores(counts, [0, 1, 2], 2)
    return LossScores(pf, seed_mean(f)) if focus else LossScores(pm, seed_mean(m))


def test_seed_level_intervals_and_tests_are_welch_t_with_the_image_variance_added():
    rng = np.random.default_rng(1)
    a, b = _counts(rng, n_seeds=4, n_images=30, skill=0.85), _counts(rng, n_seeds=3, n_images=30, skill=0.6)
    w = image_draws(30, 400)
    sa, sb = _loss_scores(a, w), _loss_scores(b, w)
    c = compare({"a": sa, "b": sb})
    assert c.level == SEED and c.best == "a"
    # by hand: Welch's t on the seed means, with the bootstrap variance of the image-paired difference added
    va, vb = sa.per_seed.var(ddof=1) / 4, sb.per_seed.var(ddof=1) / 3
    vd = np.var(sa.replicates - sb.replicates, ddof=1)
    se = math.sqrt(va + vb + vd)
    df = (va + vb + vd) ** 2 / (va**2 / 3 + vb**2 / 2)
    d = c.difference["b"]
    assert d.delta == pytest.approx(sa.per_seed.mean() - sb.per_seed.mean())
    assert d.se == pytest.approx(se) and d.df == pytest.approx(df)
    assert d.p == pytest.approx(2 * st.t.sf(d.delta / se, df))
    half = st.t.ppf(0.975, df) * se
    assert (d.lo, d.hi) == pytest.approx((d.delta - half, d.delta + half))
    # a loss's interval: its seed mean ± t · sqrt(s²/n + v), Satterthwaite degrees of freedom
    total = va + np.var(sa.replicates, ddof=1)
    half_a = st.t.ppf(0.975, total**2 / (va**2 / 3)) * math.sqrt(total)
    assert c.interval["a"] == pytest.approx((sa.estimate - half_a, sa.estimate + half_a))
    assert sum(c.p_best.values()) == pytest.approx(1.0) and c.rank["a"][0] == 1
    # an IoU lies in [0, 1]: a loss that found a class on one seed in three has an interval from 0, not below
    spread = LossScores(np.array([0.0, 0.0, 0.3]), np.full(400, 0.1))
    assert compare({"a": sa, "spread": spread}).interval["spread"][0] == 0.0


def test_fewer_than_three_seeds_compare_at_image_level_only():
    rng = np.random.default_rng(2)
    a, b = _counts(rng, n_seeds=2, n_images=30, skill=0.8), _counts(rng, n_seeds=2, n_images=30, skill=0.8)
    w = image_draws(30, 300)
    c = compare({"a": _loss_scores(a, w), "b": _loss_scores(b, w)})
    assert c.level == IMAGE and c.difference[next(k for k in "ab" if k != c.best)].df == math.inf
    lo, hi = c.interval["a"]
    assert (lo, hi) == pytest.approx(np.quantile(_loss_scores(a, w).replicates, [0.025, 0.975]))


def test_the_same_predictions_tie_and_holm_steps_down():
    rng = np.random.default_rng(1)
    good = _counts(rng, n_seeds=3, n_images=40, skill=0.85)
    w = image_draws(40, 300)
    c = compare({"good": _loss_scores(good, w), "twin": _loss_scores(good.copy(), w)})
    assert c.tied == {"good": True, "twin": True} and c.p_holm["twin"] == 1.0
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    zeros = {"x": LossScores(np.zeros(3), np.zeros(10)), "y": LossScores(np.zeros(3), np.zeros(10))}
    assert compare(zeros).best is None and not any(compare(zeros).tied.values())  # a column of zeros crowns nobody


# --- calibration: simulated suites (tests/helpers/simulate.py) -----------------------------------------

ALPHA = 0.05
SIMULATIONS = 200


def _called_different(rng, means, seeds, focus=False):
    counts = suite_counts(rng, means, seeds)
    w = image_draws(next(iter(counts.values())).shape[1], 300)
    c = compare({k: _loss_scores(v, w, focus) for k, v in counts.items()}, ALPHA)
    return c, [not c.tied[k] for k in c.estimate if k != c.best]


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("focus", [False, True], ids=["mean IoU", "focus IoU"])
def test_a_a_equal_losses_are_called_different_in_at_most_alpha_of_comparisons(seeds, focus):
    # A/A: two losses drawn from one distribution (a seed effect on each run, image difficulty, run x image
    # noise). The report's old paired seed+image bootstrap called them different in 20 % of comparisons at
    # 3 seeds and 9 % at 5 (alpha 5 %): it could not see training randomness with few seeds.
    rng = np.random.default_rng(100 + seeds)
    calls = []
    for _ in range(SIMULATIONS):
        c, called = _called_different(rng, {"a": 0.0, "b": 0.0}, seeds, focus)
        assert c.level == SEED
        calls += called
    rate, mc_error = np.mean(calls), math.sqrt(ALPHA * (1 - ALPHA) / len(calls))
    assert rate <= ALPHA + 2 * mc_error, f"false-positive rate {rate:.3f} at {seeds} seeds"


def test_a_a_with_several_equal_losses_and_holm_stays_below_alpha():
    rng = np.random.default_rng(7)
    calls = []
    for _ in range(SIMULATIONS // 2):
        calls += _called_different(rng, dict.fromkeys("abcde", 0.0), 3)[1]
    assert np.mean(calls) <= ALPHA


def test_power_a_real_difference_is_found_at_five_seeds():
    # skill +0.4 on the logit scale: about 0.07 mean IoU, some 2.8 times the seed spread of mean IoU (about 0.025)
    rng = np.random.default_rng(11)
    found, gaps = [], []
    for _ in range(SIMULATIONS):
        c, called = _called_different(rng, {"better": 0.4, "worse": 0.0}, 5)
        found.append(c.best == "better" and called == [True])
        gaps.append(c.estimate["better"] - c.estimate["worse"])
    assert 0.05 < np.mean(gaps) < 0.09
    assert np.mean(found) >= 0.8, f"power {np.mean(found):.2f}"


def test_no_configuration_makes_significance_unreachable():
    # 100 replicates and five clearly separated losses: a bootstrap p-value floor of 2/101, Holm-multiplied
    # by 4, tied all five before; the t-test has no floor.
    rng = np.random.default_rng(3)
    counts = {k: _counts(rng, n_seeds=3, n_images=40, skill=s) for k, s in zip("abcde", (0.9, 0.7, 0.5, 0.3, 0.1))}
    w = image_draws(40, 100)
    c = compare({k: _loss_scores(v, w) for k, v in counts.items()})
    assert c.best == "a" and c.tied == {"a": True, "b": False, "c": False, "d": False, "e": False}
    assert c.p_best["a"] > 0.95 and c.rank["e"] == (5, 5)
    for seeds in (1, 2):  # at image level too
        sub = {k: _counts(rng, n_seeds=seeds, n_images=40, skill=s) for k, s in zip("abcde", (0.9, 0.7, 0.5, 0.3, 0.1))}
        c = compare({k: _loss_scores(v, w) for k, v in sub.items()})
        assert c.level == IMAGE and sum(c.tied.values()) == 1


def test_seeds_to_separate_follows_the_normal_approximation():
    assert seeds_to_separate(0.05, 0.05) == math.ceil(2 * (1.959964 + 0.841621) ** 2)  # 16 seeds for one SD
    assert seeds_to_separate(0.0, 0.05) is None and seeds_to_separate(0.05, math.nan) is None


def test_object_counts_on_a_hand_drawn_mask():
    target = np.zeros((12, 12), np.uint8)
    target[1:3, 1:3] = 1  # object A (4 px)
    target[3, 3] = 1  # touches A at a corner: the same object with 8-connectivity
    target[8:11, 8:11] = 1  # object B (9 px)
    target[1, 9] = 1  # object C (1 px)
    pred = np.zeros_like(target)
    pred[1:3, 1:3] = 1  # A found (IoU 4/5)
    pred[8, 8] = 1  # touches B with 1 of 9 px: IoU 1/9 ≥ 0.1, a hit
    pred[5:7, 0:2] = 1  # nothing there: a false positive
    assert object_counts(target, pred, cls=1, iou_threshold=0.1) == (3, 2, 3, 1)
    assert object_counts(target, pred, cls=1, iou_threshold=0.2) == (3, 1, 3, 2)  # B's overlap no longer counts
    assert object_counts(target, np.zeros_like(target), cls=1) == (3, 0, 0, 0)
    s = object_summary(np.array([[3, 2, 3, 1], [0, 0, 1, 1]]))
    assert s["recall"] == pytest.approx(2 / 3) and s["precision"] == pytest.approx(2 / 4) and s["fp_per_image"] == 1.0
    assert s["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
