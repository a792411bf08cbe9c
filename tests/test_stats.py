"""The report's statistics against direct computations: the paired bootstrap, Holm ties, object counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossbench.metrics import object_counts, object_summary
from lossbench.report.stats import compare, draw, holm, replicate_scores, scores


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


def _direct(counts, draws, classes, focus):
    """The bootstrap statistic replicate by replicate, with loops: mean over drawn seeds of the pooled IoU over drawn images."""
    out_m, out_f = [], []
    for b in range(draws.replicates):
        seeds = np.repeat(np.arange(counts.shape[0]), draws.seed_weights[b])
        images = np.repeat(np.arange(counts.shape[1]), draws.image_weights[b])
        m_vals, f_vals = [], []
        for s in seeds:
            pooled = counts[s, images].sum(0)  # [C, 3]
            ious = []
            for c in range(counts.shape[2]):
                tp, fp, fn = pooled[c]
                ious.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
            kept = [ious[c] for c in classes if not math.isnan(ious[c])]
            m_vals.append(sum(kept) / len(kept))
            f_vals.append(ious[focus])
        out_m.append(np.mean(m_vals))
        out_f.append(np.nanmean(f_vals))
    return np.array(out_m), np.array(out_f)


def test_the_vectorised_bootstrap_equals_a_direct_computation():
    rng = np.random.default_rng(0)
    counts = _counts(rng)
    draws = draw(n_seeds=2, n_images=12, replicates=50, seed=3)
    assert (draws.seed_weights.sum(1) == 2).all() and (draws.image_weights.sum(1) == 12).all()
    miou, focus = replicate_scores(counts, draws, classes=[0, 1, 2], focus=2)
    want_m, want_f = _direct(counts, draws, [0, 1, 2], 2)
    assert np.allclose(miou, want_m) and np.allclose(focus, want_f)
    # the point estimate is each seed's pooled IoU, averaged over seeds
    point_m, point_f = scores(counts, [0, 1, 2], 2)
    per_seed = [np.mean([counts[s, :, c, 0].sum() / counts[s, :, c].sum() for c in range(3)]) for s in range(2)]
    assert point_m == pytest.approx(np.mean(per_seed))
    assert point_f == pytest.approx(np.mean([counts[s, :, 2, 0].sum() / counts[s, :, 2].sum() for s in range(2)]))
    # the same draws give the same numbers: the report is reproducible
    again = replicate_scores(counts, draw(2, 12, 50, seed=3), [0, 1, 2], 2)
    assert np.array_equal(again[0], miou)


def test_a_tie_and_a_clear_difference():
    rng = np.random.default_rng(1)
    good = _counts(rng, n_images=40, skill=0.85)
    twin = good.copy()  # the same predictions: no difference at all
    twin[:, :3, :, 1] += 1  # a few more false positives on three images: a hair worse, not significantly
    bad = _counts(np.random.default_rng(2), n_images=40, skill=0.45)
    bad[:, :, :, 0] = good[:, :, :, 0] // 2  # the same images, half the true positives
    bad[:, :, :, 2] = good[:, :, :, 0] + good[:, :, :, 2] - bad[:, :, :, 0]
    runs = {"good": good, "twin": twin, "bad": bad}
    draws = draw(2, 40, 2000, seed=0)
    est = {k: scores(v, [0, 1, 2], 2)[0] for k, v in runs.items()}
    reps = {k: replicate_scores(v, draws, [0, 1, 2], 2)[0] for k, v in runs.items()}
    c = compare(est, reps)
    assert c.best == "good" and c.tied == {"good": True, "twin": True, "bad": False}
    assert c.p_holm["bad"] < 0.01 and c.p_holm["twin"] > 0.05
    diff, lo, hi = c.difference["bad"]
    assert 0 < lo <= diff <= hi
    lo, hi = c.interval["good"]
    assert lo <= est["good"] <= hi


def test_holm_adjusts_step_down_and_no_best_among_zeros():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    zeros = compare({"x": 0.0, "y": 0.0}, {"x": np.zeros(10), "y": np.zeros(10)})
    assert zeros.best is None and not any(zeros.tied.values())  # a column of zeros crowns nobody


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
