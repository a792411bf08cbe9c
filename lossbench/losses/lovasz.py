"""Lovász losses (Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss", CVPR 2018).

Both are vectorized: every (class[, image]) row is sorted in one ``torch.sort`` call instead of a
Python loop over classes and images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lossbench.losses import functional
from lossbench.losses.base import SegmentationLoss
from lossbench.losses.functional import Prepared, lovasz_rows
from lossbench.losses.registry import register_loss


LOVASZ_CHUNK = 1 << 19
"""Elements sorted per call on a CPU: rows are batched up to this size (and at least one row per thread),
which keeps the speed of a vectorized sort while bounding the memory of the temporaries."""
LOVASZ_CHUNK_GPU = 1 << 24
"""Elements sorted per call on a GPU: a segmented radix sort is fast only when it has many rows to sort at
once, and each call is a launch (and a loop step in Python): per image, a B=16, C=19, 512² batch sorts in 6 calls,
not 16."""


def _row_chunks(prep: Prepared, values: Tensor, per_image: bool) -> Iterator[tuple[Tensor, Tensor, Tensor | None, Tensor]]:
    """Rows for the Lovász extension, chunk by chunk, built from the labels (no one-hot target).

    Yields ``(values [R, M], g [R, M] bool, valid [R, M] | None, class index [R])``: one row per class
    over the whole batch (``M = B·N``), or per (image, class) when ``per_image`` (``M = N``).
    """
    b, k, n = values.shape
    on_cpu = functional.cpu_kernels(values)
    chunk = LOVASZ_CHUNK if on_cpu else LOVASZ_CHUNK_GPU
    labels = prep.labels if prep.all_valid else prep.labels.masked_fill(prep.mask == 0, -1)
    classes = torch.arange(k, device=values.device)
    ids = torch.ones(1, dtype=labels.dtype, device=values.device) if prep.binary else classes  # binary: g = label
    if per_image:
        step = max(1, chunk // (k * n))
        for s in range(0, b, step):
            lab = labels[s : s + step]
            g = (lab.unsqueeze(1) == ids.view(1, -1, 1)).reshape(-1, n)
            valid = None if prep.all_valid else (lab >= 0).unsqueeze(1).expand(-1, k, -1).reshape(-1, n)
            yield values[s : s + step].reshape(-1, n), g, valid, classes.repeat(lab.shape[0])
    else:
        flat = labels.reshape(1, -1)
        # on a CPU rows are sorted in parallel, one per thread at least; a GPU's chunk is its own (16 host threads
        # made a call of 16 rows, 67 M elements at 512², four times LOVASZ_CHUNK_GPU)
        step = max(torch.get_num_threads() if on_cpu else 1, chunk // (b * n))
        for s in range(0, k, step):
            rows = values[:, s : s + step].transpose(0, 1).reshape(-1, b * n)
            valid = None if prep.all_valid else (flat >= 0).expand(rows.shape[0], -1)
            yield rows, flat == ids[s : s + step].view(-1, 1), valid, classes[s : s + step]


@register_loss(
    "lovasz_hinge",
    description="Lovász hinge on the logits (one-vs-rest per class for C ≥ 2)",
    caveat="a binary loss: for C ≥ 2 it trains each class's margin on its own, never against the other classes', so "
    "read by argmax, as every multi-class prediction is, a dominant class whose margin stays positive everywhere "
    "wins every pixel, even where a rare class's own margin is positive (on the default data at lr 0.003 the "
    "background margin is positive on every test pixel; read per class, the blob margin would score IoU 0.48, by "
    "argmax 0.00). For several classes use lovasz_softmax, its multi-class form.",
)
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
        total, count = prep.logits.new_zeros(()), prep.logits.new_zeros(())
        for z, g, valid, _ in _row_chunks(prep, prep.logits, self.per_image):
            losses = lovasz_rows(1.0 - z * (2.0 * g - 1.0), g.float(), valid, hinge=True)
            keep = torch.ones_like(losses) if valid is None else valid.any(-1).float()  # rows with a valid pixel
            total, count = total + (losses * keep).sum(), count + keep.sum()
        return total / count.clamp_min(1.0)


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
            ids = list(classes) if isinstance(classes, (list, tuple)) else [classes]
            if not ids or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < k for c in ids):
                raise ValueError(f"lovasz_softmax classes must be ids in [0, {k}), got {ids!r}")
            selected = torch.zeros(k)
            selected[ids] = 1.0
        self.classes = classes if isinstance(classes, str) else list(classes)
        self.per_image = bool(per_image)
        self.register_buffer("selected", selected, persistent=False)

    def compute(self, prep: Prepared) -> Tensor:
        total, count = prep.logits.new_zeros(()), prep.logits.new_zeros(())
        for p, g, valid, cls in _row_chunks(prep, prep.probs, self.per_image):
            losses = lovasz_rows(torch.where(g, 1.0 - p, p), g.float(), valid, hinge=False)  # |g − p|
            keep = self.selected[cls]
            if self.classes == "present":
                keep = keep * (g.sum(-1) > 0).float()
            elif valid is not None:
                keep = keep * valid.any(-1).float()
            total, count = total + (losses * keep).sum(), count + keep.sum()
        return total / count.clamp_min(1.0)
