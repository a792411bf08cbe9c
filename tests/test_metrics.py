"""Per-class metrics from one confusion matrix, against torchmetrics."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex, MulticlassRecall, MulticlassSpecificity

from lossbench.metrics import confusion_matrix_metric, per_class_metrics


def test_per_class_metrics_match_torchmetrics_with_ignore_index_and_an_absent_class():
    g = torch.Generator().manual_seed(0)
    c, ignore = 5, 255
    target = torch.randint(0, c, (4, 32, 32), generator=g)
    target[target == 3] = 0  # class 3 absent from the target...
    preds = torch.randint(0, c, (4, 32, 32), generator=g)  # ...but predicted
    target[:, :5] = ignore
    cm = confusion_matrix_metric(c, ignore)
    cm.update(preds[:2], target[:2])
    cm.update(preds[2:], target[2:])
    ours = per_class_metrics(cm.compute(), [f"c{i}" for i in range(c)])

    kw = {"num_classes": c, "average": None, "ignore_index": ignore}
    refs = {
        "iou": MulticlassJaccardIndex(**kw)(preds, target),
        "sensitivity": MulticlassRecall(**kw)(preds, target),
        "specificity": MulticlassSpecificity(**kw)(preds, target),
    }
    for metric, ref in refs.items():
        for i in range(c):
            value = ours["per_class"][f"c{i}"][metric]
            if metric == "sensitivity" and i == 3:
                assert math.isnan(value)  # TP + FN = 0: undefined (torchmetrics reports its zero_division 0)
                assert ref[i] == 0
            else:
                assert value == pytest.approx(ref[i].item(), abs=1e-6), (metric, i)
    assert ours["per_class"]["c3"]["iou"] == 0.0  # absent but predicted: a defined 0
    assert ours["pixels"] == int((target != ignore).sum())
    assert ours["miou"] == pytest.approx(refs["iou"].mean().item(), abs=1e-6)


def test_an_ignore_index_that_is_a_class_id_is_not_a_class_of_the_metrics():
    # issue 8 (losses and metrics): ignore_index=0 with 4 classes — class 0 gets no row and no part in the mean
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (2, 16, 16), generator=g)
    preds = torch.randint(0, 4, (2, 16, 16), generator=g)
    cm = confusion_matrix_metric(4, 0)
    cm.update(preds, target)
    names = ["void", "a", "b", "c"]
    ours = per_class_metrics(cm.compute(), names, ignore_index=0)
    assert list(ours["per_class"]) == ["a", "b", "c"]
    assert ours["pixels"] == int((target != 0).sum())
    # the same pixels relabelled to an out-of-range ignore index give the same table
    relabelled = target.masked_fill(target == 0, 255)
    cm2 = confusion_matrix_metric(4, 255)
    cm2.update(preds, relabelled)
    ref = per_class_metrics(cm2.compute(), names)
    for name in ("a", "b", "c"):
        assert ours["per_class"][name] == ref["per_class"][name]
    assert ref["per_class"]["void"]["iou"] == 0.0  # what used to drag the mean down
    assert ours["miou"] == pytest.approx(sum(ref["per_class"][n]["iou"] for n in "abc") / 3)
    assert not math.isnan(ours["miou"])


def test_boundary_scores_are_hd95_and_nsd_of_torchmetrics_surfaces_at_brute_force_distances():
    # The surfaces are torchmetrics' (mask_edges); the distances brute force. (torchmetrics' own
    # edge_surface_distance was the reference first, but its default "pytorch" distance transform
    # returned 0 for a pixel 26.9 pixels from the nearest edge — its "scipy" engine agrees with us.)
    import numpy as np
    from torchmetrics.functional.segmentation.utils import mask_edges

    from lossbench.metrics import boundary_scores

    rng = np.random.default_rng(0)
    target = np.zeros((40, 48), np.int64)
    target[5:20, 6:30] = 1
    target[25:28, 10:14] = 2  # a small spot
    target[30:31, 2:40] = 3  # a thin curve
    target[0, :] = 255  # ignored
    pred = target.copy()
    pred[rng.random(pred.shape) < 0.05] = 1  # scattered false positives
    pred[6:22, 8:33] = 1
    pred[25:28, 10:14] = 0  # the spot missed
    pred[31:32, 2:44] = 3  # the curve one pixel off, too long
    got = boundary_scores(pred, target, 5, 255, tolerance=1.0)
    valid = target != 255

    def distances(a, b):  # from each pixel of edge a to the nearest pixel of edge b
        pa, pb = np.argwhere(a), np.argwhere(b)
        return np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(1)

    for c in (1, 3):
        ep, et = (e.numpy()[1:-1, 1:-1] for e in mask_edges(torch.from_numpy((pred == c) & valid), torch.from_numpy((target == c) & valid)))
        d_pt, d_tp = distances(ep, et), distances(et, ep)
        assert got[c, 0] == pytest.approx(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)), rel=1e-9)
        assert got[c, 1] == pytest.approx(((d_pt <= 1).sum() + (d_tp <= 1).sum()) / (len(d_pt) + len(d_tp)), rel=1e-9)
    # predicted nowhere: the worst case (Metrics Reloaded), HD95 the image diagonal, NSD 0 — not left out
    assert got[2, 0] == pytest.approx(np.hypot(39, 47)) and got[2, 1] == 0.0
    only_pred = boundary_scores(np.full((10, 20), 2), np.zeros((10, 20), np.int64), 3, None, tolerance=1.0)
    assert only_pred[2, 0] == pytest.approx(np.hypot(9, 19)) and only_pred[2, 1] == 0.0  # predicted where there is none
    assert np.isnan(got[4]).all()  # in neither mask: undefined
    assert 0 < got[3, 1] < 1.0 and got[3, 0] >= 1.0


@pytest.mark.parametrize("seed", range(4))
def test_the_k_d_tree_and_the_distance_transform_give_the_same_boundary_scores_bit_for_bit(seed, monkeypatch):
    # issue 36 (2): few edge pixels in a large box take a k-d tree; the scores must not depend on the path taken
    import numpy as np

    import lossbench.metrics as metrics

    rng = np.random.default_rng(seed)
    target = np.zeros((90, 120), np.int64)
    target[10:60, 5:70] = 1
    target[70:74, 100:103] = 2
    target[80, 3:110] = 3
    pred = np.roll(target, (2, -3), axis=(0, 1))
    pred[rng.random(pred.shape) < 0.01 * seed] = rng.integers(0, 4)
    scores = {}
    for path, per_point in (("kd", 0.0), ("edt", 1e9)):
        monkeypatch.setattr(metrics, "KD_PER_POINT", per_point)
        scores[path] = metrics.boundary_scores(pred, target, 4, None, tolerance=2.0)
    np.testing.assert_array_equal(scores["kd"], scores["edt"])
