"""Per-pixel losses: cross-entropy, class-weighted cross-entropy, Focal, online hard example mining, Recall loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossbench.losses import functional
from lossbench.losses.base import SegmentationLoss
from lossbench.losses.functional import EPS, Prepared, as_label_vector, focal_term, pixel_mean, weights_per_pixel
from lossbench.losses.registry import register_loss


@register_loss("ce", description="cross-entropy (binary: BCE with logits), optional class weights")
class CrossEntropyLoss(SegmentationLoss):
    """Cross-entropy: mean over valid pixels of ``−log p_y``; binary (C = 1): BCE with logits.

    With ``weight``, the weighted mean ``Σ w_y·(−log p_y) / Σ w_y`` (as ``torch.nn.CrossEntropyLoss``).

    Args:
        num_classes: ``C`` (1 = binary).
        weight: one weight per label (``C`` entries; 2 for binary: negative, positive), or ``None``.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(self, num_classes: int, weight: Sequence[float] | None = None, ignore_index: int | None = None):
        super().__init__(num_classes, ignore_index)
        self.register_buffer("weight", as_label_vector(weight, self.num_labels, "weight"), persistent=False)

    def pixel_losses(self, prep: Prepared) -> Tensor:
        """``[B, N]`` per-pixel ``−log p_y``."""
        return -prep.log_pt

    def compute(self, prep: Prepared) -> Tensor:
        if prep.binary:
            return pixel_mean(self.pixel_losses(prep), prep, weights_per_pixel(self.weight, prep))
        ignore = prep.ignore_index if prep.ignore_index is not None else -100
        if prep.all_valid:  # torch's own kernel computes exactly Σ w_y·(−log p_y) / Σ w_y
            return F.cross_entropy(prep.logits, prep.target, weight=self.weight, ignore_index=ignore)
        total = F.cross_entropy(prep.logits, prep.target, weight=self.weight, ignore_index=ignore, reduction="sum")
        if self.weight is None:
            return total / prep.num_valid.clamp_min(1.0)  # a connected 0 when everything is ignored
        return total / (weights_per_pixel(self.weight, prep) * prep.mask).sum().clamp_min(EPS)


def inverse_frequency_weights(class_frequencies: Sequence[float] | Tensor, num_labels: int) -> Tensor:
    """``w_c = (N − N_c) / N`` from per-class pixel counts (or fractions) ``N_c`` of the training set."""
    f = as_label_vector(class_frequencies, num_labels, "class_frequencies")
    if f.sum() <= 0:
        raise ValueError("class_frequencies sum to zero; pass pixel counts or fractions per class")
    return 1.0 - f / f.sum()


@register_loss("weighted_ce", description="cross-entropy weighted by w_c = (N − N_c)/N from class frequencies")
class WeightedCrossEntropyLoss(CrossEntropyLoss):
    """Class-weighted cross-entropy: ``Σ w_y·(−log p_y) / Σ w_y`` with ``w_c = (N − N_c) / N``.

    ``N_c`` is the number of pixels of class ``c`` in the training set and ``N`` all its pixels, so
    rare classes weigh close to 1 and a dominant background little. Binary: BCE with the weights of
    the negative and positive label.

    Args:
        num_classes: ``C`` (1 = binary).
        class_frequencies: pixel counts or fractions per label (``C`` entries, 2 for binary); the
            harness passes those of the training split.
        weight: explicit per-label weights instead (they win if both are given).
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        class_frequencies: Sequence[float] | None = None,
        weight: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ):
        labels = 2 if num_classes == 1 else num_classes
        if weight is None:
            if class_frequencies is None:
                raise ValueError(
                    "loss 'weighted_ce' needs class_frequencies (pixel counts per class of the training set) "
                    "or an explicit weight"
                )
            weight = inverse_frequency_weights(class_frequencies, labels)
        super().__init__(num_classes, weight=weight, ignore_index=ignore_index)


@register_loss("focal", description="Focal loss −α_t(1−p_t)^γ log p_t, per pixel (Lin et al. 2017)")
class FocalLoss(SegmentationLoss):
    """Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    ``mean over valid pixels of −α_t (1 − p_t)^γ log p_t``, ``p_t`` the probability of each pixel's
    own true class (computed per pixel, never from a batch mean).

    Args:
        num_classes: ``C`` (1 = binary).
        gamma: focusing parameter γ ≥ 0 (0 gives (α-weighted) cross-entropy).
        alpha: binary: weight α of positives, ``1 − α`` of negatives (RetinaNet's best: γ = 2, α = 0.25);
            multi-class: one weight per class. ``None`` disables it; ``"auto"`` (default) is 0.25 for
            binary and ``None`` for multi-class.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | str | None = "auto",
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        if isinstance(alpha, str):
            if alpha != "auto":
                raise ValueError(f"focal alpha must be a number, a per-class list, None or 'auto', got {alpha!r}")
            alpha = 0.25 if num_classes == 1 else None
        if num_classes == 1 and alpha is not None:
            if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
                raise ValueError(f"binary focal alpha must be a number in [0, 1] or None, got {alpha!r}")
            self.alpha: float | Tensor | None = float(alpha)
        elif alpha is not None:
            if isinstance(alpha, (int, float)):
                raise ValueError(
                    f"multi-class focal alpha must be None or a list of {num_classes} per-class weights, got {alpha!r}"
                )
            self.alpha = as_label_vector(alpha, num_classes, "focal alpha")
        else:
            self.alpha = None

    def pixel_losses(self, prep: Prepared) -> Tensor:
        return focal_term(prep, self.gamma, self.alpha)

    def compute(self, prep: Prepared) -> Tensor:
        return pixel_mean(self.pixel_losses(prep), prep)


_OHEM_BASES = {"ce": CrossEntropyLoss, "focal": FocalLoss}


@register_loss("ohem", description="online hard example mining: mean of the hardest keep_ratio of pixels")
class OhemLoss(SegmentationLoss):
    """Online hard example mining (Shrivastava et al., CVPR 2016, as used for segmentation).

    Computes a per-pixel base loss, keeps the ``k = clamp(ceil(keep_ratio · n_valid), min_kept, n_valid)``
    largest values over the valid pixels of the batch and returns their mean. The k-th largest is
    found by selection (``kthvalue``), not a sort; pixels tied with it share the remaining weight.

    Args:
        num_classes: ``C`` (1 = binary).
        base: per-pixel loss, ``"ce"`` or ``"focal"`` (with its defaults).
        keep_ratio: fraction of valid pixels kept, in ``(0, 1]``.
        min_kept: keep at least this many pixels (when there are that many).
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        base: str = "ce",
        keep_ratio: float = 0.25,
        min_kept: int = 1,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        if base not in _OHEM_BASES:
            raise ValueError(f"ohem base must be one of {sorted(_OHEM_BASES)}, got {base!r}")
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"ohem keep_ratio must be in (0, 1], got {keep_ratio}")
        if min_kept < 0:
            raise ValueError(f"ohem min_kept must be >= 0, got {min_kept}")
        self.base = _OHEM_BASES[base](num_classes, ignore_index=ignore_index)
        self.keep_ratio = float(keep_ratio)
        self.min_kept = int(min_kept)

    def compute(self, prep: Prepared) -> Tensor:
        losses = self.base.pixel_losses(prep).flatten()
        n_valid = prep.num_valid
        k = torch.minimum(torch.clamp(torch.ceil(n_valid * self.keep_ratio - 1e-6), min=self.min_kept), n_valid)
        if not functional.cpu_kernels(losses):
            return self._sorted(losses, prep, k)
        kk = int(k)
        if kk == 0:
            return losses.sum() * 0.0
        with torch.no_grad():  # the k-th largest by selection (no sort): the kept pixels are those above it,
            ranked = losses if prep.all_valid else losses.masked_fill(prep.mask.flatten() == 0, -1.0)
            threshold = ranked.kthvalue(ranked.numel() - kk + 1).values
            above = ranked > threshold
            tied = ranked == threshold  # ... and as many of those equal to it as make k, shared evenly
            weight = above.float().add_(tied.float().mul_((kk - above.sum()) / tied.sum()))
        return (losses * weight).sum() / k

    @staticmethod
    def _sorted(losses: Tensor, prep: Prepared, k: Tensor) -> Tensor:
        """The GPU path: the k-th largest from a radix sort (``kthvalue`` over one long row runs in one block
        there), with ``k`` kept on the device — no host round-trip; the same kept pixels and ties."""
        with torch.no_grad():
            ranked = losses if prep.all_valid else losses.masked_fill(prep.mask.flatten() == 0, -1.0)
            descending = ranked.sort(descending=True).values
            threshold = descending.gather(0, (k.long() - 1).clamp_min(0).view(1))
            above = ranked > threshold
            tied = ranked == threshold
            weight = above.float().add_(tied.float().mul_((k - above.sum()) / tied.sum().clamp_min(1)))
            weight.mul_((k > 0).float())  # k = 0 (nothing valid, min_kept 0): nothing kept
        return (losses * weight).sum() / k.clamp_min(1.0)


__all__ = ["CrossEntropyLoss", "WeightedCrossEntropyLoss", "FocalLoss", "OhemLoss", "inverse_frequency_weights"]


@register_loss("recall_ce", description="CE weighted per class by the batch's 1 − recall (Tian et al. 2022)")
class RecallCrossEntropyLoss(SegmentationLoss):
    """Recall loss (Tian et al., "Striking the Right Balance: Recall Loss for Semantic Segmentation",
    ICRA 2022): cross-entropy with each class weighted by how much of it the model misses now.

    ``Σ_i w_{y_i}·(−log p_{y_i}) / N`` over the ``N`` valid pixels, with ``w_c = FN_c / (TP_c + FN_c) =
    1 − recall_c`` of the batch's hard predictions (argmax; binary: ``p > 0.5``), no gradient through
    ``w``. A class the model finds everywhere weighs 0, one it misses entirely weighs 1. (The authors'
    code starts its counters at 1, so a fully recalled class keeps weight ``1 / |class|``; here it is 0.)

    Args:
        num_classes: ``C`` (1 = binary).
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        super().__init__(num_classes, ignore_index)

    def compute(self, prep: Prepared) -> Tensor:
        with torch.no_grad():  # missed: the label's score is not the highest (argmax over dim 1 is slow on the CPU)
            if prep.binary:
                missed = ((prep.logits[:, 0] > 0).long() != prep.labels).float()
            else:
                missed = (prep.logits.gather(1, prep.labels.unsqueeze(1)).squeeze(1) < prep.logits.amax(1)).float()
            missed = missed * prep.mask
            n = prep.num_labels
            labels = prep.labels.flatten()
            if functional.cpu_kernels(labels):
                fn = torch.bincount(labels, weights=missed.flatten(), minlength=n)
                support = torch.bincount(labels, weights=prep.mask.flatten(), minlength=n)
            else:  # a one-hot product and plain reductions (functional.cpu_kernels)
                is_class = (labels.unsqueeze(1) == torch.arange(n, device=labels.device)).float()  # [B·N, n]
                fn, support = missed.flatten() @ is_class, prep.mask.flatten() @ is_class
            weight = fn / support.clamp_min(1.0)
        return pixel_mean(weights_per_pixel(weight, prep) * -prep.log_pt, prep)
