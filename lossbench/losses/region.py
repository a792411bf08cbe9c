"""Region (overlap) losses over soft TP/FP/FN: Dice, IoU/Jaccard, Tversky, Generalized Dice, Focal
Tversky, Log-Cosh Dice, Matthews correlation, sensitivity-specificity."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lossbench.losses.base import SegmentationLoss
from lossbench.losses.functional import EPS, POW_FLOOR, Prepared, class_mean, soft_stats
from lossbench.losses.registry import register_loss


def dice_score(tp: Tensor, fp: Tensor, fn: Tensor, smooth: float) -> Tensor:
    """Soft Dice per class: ``(2·TP + s) / (2·TP + FP + FN + s)``."""
    return (2 * tp + smooth) / (2 * tp + fp + fn + smooth).clamp_min(EPS)


def iou_score(tp: Tensor, fp: Tensor, fn: Tensor, smooth: float) -> Tensor:
    """Soft Jaccard per class: ``(TP + s) / (TP + FP + FN + s)``."""
    return (tp + smooth) / (tp + fp + fn + smooth).clamp_min(EPS)


def tversky_score(tp: Tensor, fp: Tensor, fn: Tensor, alpha: float, beta: float, smooth: float) -> Tensor:
    """Tversky index per class: ``(TP + s) / (TP + α·FP + β·FN + s)``."""
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp_min(EPS)


class RegionLoss(SegmentationLoss):
    """``1 − mean_c score_c(TP_c, FP_c, FN_c)``; subclasses define :meth:`score`.

    Stats are summed over the batch and all valid pixels, or per image when ``per_image=True``
    (then averaged over images that have a valid pixel). ``include_background=False`` leaves class 0
    out of the mean (multi-class only).
    """

    def __init__(
        self,
        num_classes: int,
        smooth: float = 1.0,
        include_background: bool = True,
        per_image: bool = False,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.per_image = bool(per_image)

    def score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        raise NotImplementedError

    def compute(self, prep: Prepared) -> Tensor:
        tp, fp, fn = soft_stats(prep, per_image=self.per_image)
        return 1.0 - class_mean(self.score(tp, fp, fn), prep, self.include_background)


@register_loss("dice", description="soft Dice: 1 − mean_c (2TP+s)/(2TP+FP+FN+s)")
class DiceLoss(RegionLoss):
    """Soft Dice loss (Milletari et al., V-Net, 3DV 2016).

    ``1 − mean_c (2·TP_c + s) / (2·TP_c + FP_c + FN_c + s)``; binary: one foreground channel.

    Args:
        num_classes: ``C`` (1 = binary).
        smooth: ``s``, added to numerator and denominator.
        include_background: average over class 0 too (multi-class).
        per_image: compute TP/FP/FN per image and average, instead of over the whole batch.
        ignore_index: label to ignore, or ``None``.
    """

    def score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        return dice_score(tp, fp, fn, self.smooth)


@register_loss("iou", description="soft Jaccard: 1 − mean_c (TP+s)/(TP+FP+FN+s)")
class IoULoss(RegionLoss):
    """Soft IoU / Jaccard loss (Rahman & Wang, ISVC 2016).

    ``1 − mean_c (TP_c + s) / (TP_c + FP_c + FN_c + s)`` — a loss ≥ 0, smoothed against 0/0.

    Args:
        num_classes: ``C`` (1 = binary).
        smooth: ``s``, added to numerator and denominator.
        include_background: average over class 0 too (multi-class).
        per_image: compute TP/FP/FN per image and average.
        ignore_index: label to ignore, or ``None``.
    """

    def score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        return iou_score(tp, fp, fn, self.smooth)


@register_loss("tversky", description="Tversky: 1 − mean_c (TP+s)/(TP+α·FP+β·FN+s); α weighs FP, β FN")
class TverskyLoss(RegionLoss):
    """Tversky loss (Salehi et al., MLMI 2017).

    ``1 − mean_c (TP_c + s) / (TP_c + α·FP_c + β·FN_c + s)``. With ``s = 0``, α = β = 0.5 is Dice and
    α = β = 1 is Jaccard; β > α penalises missed pixels more, favouring recall on rare classes.

    Args:
        num_classes: ``C`` (1 = binary).
        alpha: weight α of false positives.
        beta: weight β of false negatives.
        smooth: ``s``.
        include_background: average over class 0 too (multi-class).
        per_image: compute TP/FP/FN per image and average.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        include_background: bool = True,
        per_image: bool = False,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, smooth, include_background, per_image, ignore_index)
        if alpha < 0 or beta < 0:
            raise ValueError(f"tversky alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        return tversky_score(tp, fp, fn, self.alpha, self.beta, self.smooth)


@register_loss("generalized_dice", description="Generalized Dice, class weights 1/(Σg_c)² (Sudre et al. 2017)")
class GeneralizedDiceLoss(SegmentationLoss):
    """Generalized Dice loss (Sudre et al., DLMIA 2017).

    ``1 − (2·Σ_c w_c·TP_c + s) / (Σ_c w_c·(2·TP_c + FP_c + FN_c) + s)``, ``w_c = 1 / (Σ g_c)²`` over the
    batch's valid pixels. Absent classes: a class with no pixel in the batch would get ``w_c = ∞``;
    it gets the largest weight of the present classes instead (MONAI's rule), so predicting it is
    still penalised as strongly as the rarest present class. If no class is present (every pixel
    ignored) the loss is 0.

    Args:
        num_classes: ``C`` (1 = binary: one foreground channel).
        smooth: ``s``, added to numerator and denominator.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(self, num_classes: int, smooth: float = 1e-5, ignore_index: int | None = None):
        super().__init__(num_classes, ignore_index)
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = float(smooth)

    def compute(self, prep: Prepared) -> Tensor:
        tp, fp, fn = soft_stats(prep)
        weights = generalized_dice_weights((tp + fn).detach())
        numerator = 2 * (weights * tp).sum() + self.smooth
        denominator = (weights * (2 * tp + fp + fn)).sum() + self.smooth
        return 1.0 - numerator / denominator.clamp_min(EPS)


def generalized_dice_weights(class_pixels: Tensor) -> Tensor:
    """``1 / n_c²`` per class; classes with ``n_c = 0`` get the largest finite weight (0 if none)."""
    present = class_pixels > 0
    w = 1.0 / class_pixels.clamp_min(1.0) ** 2
    w_max = torch.where(present, w, torch.zeros_like(w)).max()
    return torch.where(present, w, w_max)


@register_loss("focal_tversky", description="Focal Tversky: mean_c (1 − TI_c)^(1/γ) (Abraham & Khan 2019)")
class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham & Khan, "A Novel Focal Tversky Loss Function with Improved
    Attention U-Net for Lesion Segmentation", ISBI 2019).

    ``mean_c (1 − TI_c)^(1/γ)`` with the Tversky index ``TI_c = (TP_c + s) / (TP_c + α·FP_c + β·FN_c + s)``.
    With γ > 1 the exponent is below 1, which lifts small ``1 − TI`` (well-segmented classes)
    relatively more than large ones; the paper's γ = 4/3 (exponent 0.75) keeps the gradient
    large on classes that are nearly right, such as small lesions. The base is floored at 1e-12 (the
    power's slope at 0 would be infinite).

    Args:
        num_classes: ``C`` (1 = binary).
        alpha: weight α of false positives.
        beta: weight β of false negatives.
        gamma: γ; the exponent is ``1/γ``.
        smooth: ``s``.
        include_background: average over class 0 too (multi-class).
        per_image: compute TP/FP/FN per image and average.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4 / 3,
        smooth: float = 1.0,
        include_background: bool = True,
        per_image: bool = False,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, alpha, beta, smooth, include_background, per_image, ignore_index)
        if gamma <= 0:
            raise ValueError(f"focal_tversky gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)

    def compute(self, prep: Prepared) -> Tensor:
        tp, fp, fn = soft_stats(prep, per_image=self.per_image)
        term = (1.0 - self.score(tp, fp, fn)).clamp_min(POW_FLOOR).pow(1.0 / self.gamma)
        return class_mean(term, prep, self.include_background)


@register_loss("log_cosh_dice", description="log(cosh(Dice loss)) (Jadon 2020)")
class LogCoshDiceLoss(DiceLoss):
    """Log-Cosh Dice loss (Jadon, "A survey of loss functions for semantic segmentation", CIBCB 2020).

    ``log(cosh(L_dice))`` with ``L_dice`` the ``dice`` loss (``1 − mean_c Dice_c``): a smoothed Dice
    loss whose gradient is ``tanh(L_dice)`` times Dice's.

    Args:
        num_classes: ``C`` (1 = binary).
        smooth: Dice smoothing ``s``.
        include_background: average over class 0 too (multi-class).
        per_image: compute TP/FP/FN per image and average.
        ignore_index: label to ignore, or ``None``.
    """

    def compute(self, prep: Prepared) -> Tensor:
        x = super().compute(prep)
        return x + torch.nn.functional.softplus(-2.0 * x) - math.log(2.0)  # log cosh x, stable


@register_loss("mcc", description="1 − Matthews correlation of soft counts (Abhishek & Hamarneh 2021)")
class MCCLoss(SegmentationLoss):
    """Matthews correlation coefficient loss (Abhishek & Hamarneh, "Matthews Correlation Coefficient
    Loss for Deep Convolutional Networks: Application to Skin Lesion Segmentation", ISBI 2021).

    Per class ``c``, over the batch's valid pixels, with soft counts each plus ``ε``:
    ``MCC_c = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``; the loss is ``1 − mean_c MCC_c``
    (binary: the foreground channel alone, as smp's ``MCCLoss``, which it equals).

    Args:
        num_classes: ``C`` (1 = binary).
        eps: ``ε`` added to each count (smp's default).
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(self, num_classes: int, eps: float = 1e-5, ignore_index: int | None = None):
        super().__init__(num_classes, ignore_index)
        if eps <= 0:
            raise ValueError(f"mcc eps must be > 0, got {eps}")
        self.eps = float(eps)

    def compute(self, prep: Prepared) -> Tensor:
        tp, fp, fn = soft_stats(prep)
        tn = prep.num_valid - tp - fp - fn
        tp, fp, fn, tn = (t + self.eps for t in (tp, fp, fn, tn))
        mcc = (tp * tn - fp * fn) / ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)).sqrt()
        return 1.0 - mcc.mean()


@register_loss("sensitivity_specificity", description="Sensitivity-specificity: r·Σ(g−p)²g/Σg + (1−r)·Σ(g−p)²(1−g)/Σ(1−g) (Brosch et al. 2015)")
class SensitivitySpecificityLoss(SegmentationLoss):
    """Sensitivity-specificity loss (Brosch et al., "Deep Convolutional Encoder Networks for Multiple
    Sclerosis Lesion Segmentation", MICCAI 2015).

    Per class ``c`` over the batch's valid pixels, then averaged over classes:
    ``r · Σ(g_c − p_c)²·g_c / (Σ g_c + s) + (1 − r) · Σ(g_c − p_c)²·(1 − g_c) / (Σ(1 − g_c) + s)`` —
    the mean squared error on the class's pixels (its sensitivity) weighted by ``r``, and on the
    other pixels (its specificity) by ``1 − r``.

    Args:
        num_classes: ``C`` (1 = binary).
        r: weight of the sensitivity term (the paper's 0.05).
        smooth: ``s``, added to the denominators (a class absent from the batch adds 0).
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(self, num_classes: int, r: float = 0.05, smooth: float = 1e-5, ignore_index: int | None = None):
        super().__init__(num_classes, ignore_index)
        if not 0.0 <= r <= 1.0 or smooth < 0:
            raise ValueError(f"sensitivity_specificity needs r in [0, 1] and smooth >= 0, got r={r}, smooth={smooth}")
        self.r, self.smooth = float(r), float(smooth)

    def compute(self, prep: Prepared) -> Tensor:
        p, g = prep.probs, prep.onehot
        sq = (g - p) ** 2
        if not prep.all_valid:
            sq = sq * prep.mask.unsqueeze(1)
        on_class = (sq * g).sum((0, 2))
        off_class = sq.sum((0, 2)) - on_class
        g_sum = g.sum((0, 2))
        sens = on_class / (g_sum + self.smooth).clamp_min(EPS)
        spec = off_class / (prep.num_valid - g_sum + self.smooth).clamp_min(EPS)
        return (self.r * sens + (1.0 - self.r) * spec).mean()
