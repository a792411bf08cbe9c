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
