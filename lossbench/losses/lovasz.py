"""Lovász losses (Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss", CVPR 2018).

Both are vectorized: every (class[, image]) row is sorted in one ``torch.sort`` call instead of a
Python loop over classes and images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lossbench.losses.base import SegmentationLoss
from lossbench.losses.functional import Prepared, lovasz_rows, to_rows
from lossbench.losses.registry import register_loss


def _row_valid(prep: Prepared, per_image: bool) -> Tensor | None:
    """``[R, N]`` validity of each row element, or ``None`` when no pixel is ignored."""
    if prep.all_valid:
        return None
    k = prep.logits.shape[1]
    return to_rows(prep.mask.unsqueeze(1).expand(-1, k, -1), per_image) > 0


def _row_has_valid(valid: Tensor | None, rows: int, prep: Prepared) -> Tensor:
    if valid is None:
        return torch.ones(rows, device=prep.logits.device)
    return valid.any(-1).float()


@register_loss("lovasz_hinge", description="Lovász hinge on the logits (one-vs-rest per class for C ≥ 2)")
class LovaszHingeLoss(SegmentationLoss):
    """Binary Lovász hinge loss; for ``C >= 2`` one-vs-rest on each channel's logits, averaged over classes.

    Per class: errors ``e = 1 − z·(2g − 1)`` sorted descending, loss ``dot(relu(e_sorted), lovasz_grad(g_sorted))``.
    With ``per_image=True`` the loss is computed per image and averaged over images with a valid pixel.

    Args:
        num_classes: ``C`` (1 = binary).
        per_image: one Lovász extension per image instead of one over the batch.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(self, num_classes: int, per_image: bool = False, ignore_index: int | None = None):
        super().__init__(num_classes, ignore_index)
        self.per_image = bool(per_image)

    def compute(self, prep: Prepared) -> Tensor:
        g = prep.onehot
        errors = 1.0 - prep.logits * (2.0 * g - 1.0)
        valid = _row_valid(prep, self.per_image)
        losses = lovasz_rows(to_rows(errors, self.per_image), to_rows(g, self.per_image), valid, hinge=True)
        keep = _row_has_valid(valid, losses.numel(), prep)  # rows (image, class) with a valid pixel
        return (losses * keep).sum() / keep.sum().clamp_min(1.0)


@register_loss("lovasz_softmax", description="Lovász-Softmax: Lovász extension of |g − p| per class")
class LovaszSoftmaxLoss(SegmentationLoss):
    """Lovász-Softmax loss: per class, errors ``|g_c − p_c|`` sorted descending, dotted with
    ``lovasz_grad(g_sorted)``; mean over the selected classes. Binary: the sigmoid foreground channel.

    Args:
        num_classes: ``C`` (1 = binary).
        classes: ``"present"`` (classes with a pixel in the batch — per image when ``per_image``),
            ``"all"``, or a list of class ids.
        per_image: one Lovász extension per image, averaged.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        classes: str | Sequence[int] = "present",
        per_image: bool = False,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        k = 1 if num_classes == 1 else num_classes
        if isinstance(classes, str):
            if classes not in ("present", "all"):
                raise ValueError(f"lovasz_softmax classes must be 'present', 'all' or a list of ids, got {classes!r}")
            selected = torch.ones(k)
        else:
            ids = list(classes)
            if not ids or any(not isinstance(c, int) or not 0 <= c < k for c in ids):
                raise ValueError(f"lovasz_softmax classes must be ids in [0, {k}), got {ids!r}")
            selected = torch.zeros(k)
            selected[ids] = 1.0
        self.classes = classes if isinstance(classes, str) else list(classes)
        self.per_image = bool(per_image)
        self.register_buffer("selected", selected, persistent=False)

    def compute(self, prep: Prepared) -> Tensor:
        g = prep.onehot
        valid = _row_valid(prep, self.per_image)
        g_rows = to_rows(g, self.per_image)
        losses = lovasz_rows(to_rows((g - prep.probs).abs(), self.per_image), g_rows, valid, hinge=False)
        rows_per_class = losses.numel() // self.selected.numel()
        keep = self.selected.repeat(rows_per_class) if self.per_image else self.selected.clone()
        if self.classes == "present":
            keep = keep * (g_rows.sum(-1) > 0).float()
        else:
            keep = keep * _row_has_valid(valid, losses.numel(), prep)
        return (losses * keep).sum() / keep.sum().clamp_min(1.0)
