"""Compound losses: a pixel term plus a region term — BCE+Dice, Focal+Dice, Exponential Logarithmic,
Combo, asymmetric Unified Focal."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossbench.losses.base import SegmentationLoss
from lossbench.losses.functional import (
    EPS,
    POW_FLOOR,
    Prepared,
    as_label_vector,
    class_mean,
    focal_term,
    one_vs_rest_wce,
    pixel_mean,
    soft_stats,
    weights_per_pixel,
)
from lossbench.losses.region import dice_score
from lossbench.losses.registry import register_loss


def _dice_loss(prep: Prepared, smooth: float) -> Tensor:
    tp, fp, fn = soft_stats(prep)
    return 1.0 - dice_score(tp, fp, fn, smooth).mean()


@register_loss("bce_dice", description="CE (binary: BCE) + Dice, each with its weight")
class BCEDiceLoss(SegmentationLoss):
    """Cross-entropy plus Dice, as in the source documents' ``DiceBCELoss``.

    ``ce_weight · CE + dice_weight · (1 − mean_c Dice_c)``; CE is BCE with logits for ``C == 1`` and
    softmax cross-entropy for ``C >= 2``; Dice as the ``dice`` loss with smoothing ``s``.

    Args:
        num_classes: ``C`` (1 = binary).
        ce_weight: weight of the (B)CE term.
        dice_weight: weight of the Dice term.
        smooth: Dice smoothing ``s``.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        self.ce_weight, self.dice_weight, self.smooth = float(ce_weight), float(dice_weight), float(smooth)

    def compute(self, prep: Prepared) -> Tensor:
        ce = pixel_mean(-prep.log_pt, prep)
        return self.ce_weight * ce + self.dice_weight * _dice_loss(prep, self.smooth)


@register_loss("focal_dice", description="AnatomyNet: Σ_c[1 − TP/(TP+α·FN+β·FP)]/C + λ·focal (Zhu et al. 2018)")
class FocalDiceLoss(SegmentationLoss):
    """Dice-style term plus Focal term, after AnatomyNet (Zhu et al., Medical Physics 2018).

    ``mean_c [1 − (TP_c + ε) / (TP_c + α·FN_c + β·FP_c + ε)] + λ · mean_pixels[−(1 − p_t)^γ log p_t]``.
    Note α weighs false negatives and β false positives here, as in the paper. ``ε = 1e-7`` keeps a
    class that is neither present nor predicted at ratio 1 instead of 0/0.

    Args:
        num_classes: ``C`` (1 = binary).
        alpha: weight α of false negatives.
        beta: weight β of false positives.
        lam: weight λ of the focal term.
        gamma: focal exponent γ.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.5,
        beta: float = 0.5,
        lam: float = 1.0,
        gamma: float = 2.0,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        if alpha < 0 or beta < 0 or gamma < 0:
            raise ValueError(f"focal_dice alpha, beta, gamma must be >= 0, got {alpha}, {beta}, {gamma}")
        self.alpha, self.beta, self.lam, self.gamma = float(alpha), float(beta), float(lam), float(gamma)

    def compute(self, prep: Prepared) -> Tensor:
        tp, fp, fn = soft_stats(prep)
        ratio = (tp + EPS) / (tp + self.alpha * fn + self.beta * fp + EPS)
        focal = pixel_mean(focal_term(prep, self.gamma, None), prep)
        return (1.0 - ratio).mean() + self.lam * focal


@register_loss("exp_log", description="Exponential Logarithmic loss (Wong et al., MICCAI 2018)")
class ExpLogLoss(SegmentationLoss):
    """Exponential Logarithmic loss (Wong et al., "3D Segmentation with Exponential Logarithmic Loss
    for Highly Unbalanced Object Sizes", MICCAI 2018).

    ``w_dice · mean_c[(−ln Dice_c)^γ_dice] + w_cross · mean_pixels[w_y · (−ln p_y)^γ_cross]``,
    ``Dice_c = (2·TP_c + s)/(2·TP_c + FP_c + FN_c + s)`` and label weights
    ``w_l = ((Σ_k f_k) / f_l)^0.5`` from the class frequencies ``f``. The bases of the powers are
    floored at 1e-12 (a power < 1 has an infinite slope at 0).

    Args:
        num_classes: ``C`` (1 = binary).
        class_frequencies: pixel counts or fractions per label (``C``; 2 for binary), all > 0;
            the harness passes those of the training split.
        w_dice, w_cross: weights of the two terms.
        gamma_dice, gamma_cross: their exponents.
        smooth: Dice smoothing ``s``.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        class_frequencies: Sequence[float] | None = None,
        w_dice: float = 0.8,
        w_cross: float = 0.2,
        gamma_dice: float = 0.3,
        gamma_cross: float = 0.3,
        smooth: float = 1.0,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        if class_frequencies is None:
            raise ValueError("loss 'exp_log' needs class_frequencies (pixel counts per class of the training set)")
        f = as_label_vector(class_frequencies, self.num_labels, "class_frequencies")
        if (f <= 0).any():
            raise ValueError(f"exp_log needs every class frequency > 0 (weights (Σf/f)^0.5), got {f.tolist()}")
        self.register_buffer("label_weights", (f.sum() / f).sqrt(), persistent=False)
        self.w_dice, self.w_cross = float(w_dice), float(w_cross)
        self.gamma_dice, self.gamma_cross, self.smooth = float(gamma_dice), float(gamma_cross), float(smooth)

    def compute(self, prep: Prepared) -> Tensor:
        tp, fp, fn = soft_stats(prep)
        neg_log_dice = -dice_score(tp, fp, fn, self.smooth).log()
        dice_term = neg_log_dice.clamp_min(POW_FLOOR).pow(self.gamma_dice).mean()
        cross = (-prep.log_pt).clamp_min(POW_FLOOR).pow(self.gamma_cross)
        cross_term = pixel_mean(weights_per_pixel(self.label_weights, prep) * cross, prep)
        return self.w_dice * dice_term + self.w_cross * cross_term


@register_loss("combo", description="Combo: α·WCE_β + (1−α)·(1 − Dice) (Taghanaki et al. 2019)")
class ComboLoss(SegmentationLoss):
    """Combo loss (Taghanaki et al., "Combo loss: Handling input and output imbalance in multi-organ
    segmentation", CMIG 2019).

    ``α · WCE_β + (1 − α) · (1 − mean_c Dice_c)`` with
    ``WCE_β = −mean[β·g·ln p + (1 − β)·(1 − g)·ln(1 − p)]``. The paper subtracts the Dice score
    itself; ``1 − Dice`` has the same gradient and keeps the loss ≥ 0. For ``C >= 2`` the WCE is
    one-vs-rest on the softmax probabilities, averaged over classes and valid pixels.

    Args:
        num_classes: ``C`` (1 = binary).
        alpha: weight α of the WCE term (``1 − α`` goes to Dice).
        beta: β > 0.5 penalises false negatives more than false positives.
        smooth: Dice smoothing ``s``.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.5,
        beta: float = 0.5,
        smooth: float = 1.0,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        if not (0.0 <= alpha <= 1.0 and 0.0 <= beta <= 1.0):
            raise ValueError(f"combo alpha and beta must be in [0, 1], got alpha={alpha}, beta={beta}")
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)

    def compute(self, prep: Prepared) -> Tensor:
        if prep.binary:
            logp, log1mp = prep.log_p_pair()
            g = prep.onehot
            wce = -(self.beta * g * logp + (1.0 - self.beta) * (1.0 - g) * log1mp).mean(1)
        else:  # the same sum, with its gradient written out (a third of the time and memory)
            wce = one_vs_rest_wce(prep, self.beta)
        return self.alpha * pixel_mean(wce, prep) + (1.0 - self.alpha) * _dice_loss(prep, self.smooth)


@register_loss("unified_focal", description="asymmetric Unified Focal: w·aFL + (1−w)·aFTL (Yeung et al. 2022)")
class UnifiedFocalLoss(SegmentationLoss):
    """Asymmetric Unified Focal loss (Yeung et al., "Unified Focal loss: Generalising Dice and cross
    entropy-based losses to handle class imbalanced medical image segmentation", CMIG 2022).

    ``w · aFL + (1 − w) · aFTL``. Class 0 is the background, every other class is rare; the focal
    suppression applies to the background only ("asymmetric"):

    * ``aFL = mean over pixels and classes of`` ``(1 − δ)·(1 − p_0)^γ·(−g_0 log p_0)`` for the
      background and ``δ·(−g_c log p_c)`` for a rare class;
    * ``aFTL = mean over images and classes of`` ``1 − mTI_0`` for the background and
      ``(1 − mTI_c)^(1 − γ)`` for a rare class, with per image
      ``mTI_c = (TP_c + ε) / (TP_c + δ·FN_c + (1 − δ)·FP_c + ε)``.

    Binary (C = 1): the two channels ``1 − p`` and ``p``. This equals MONAI's
    ``AsymmetricUnifiedFocalLoss`` (binary and two-class, given probabilities), except that
    ``log p`` comes from the logits (log-softmax) where MONAI clamps ``p`` to [1e-7, 1 − 1e-7],
    which zeroes the gradient of confident mistakes.

    Args:
        num_classes: ``C`` (1 = binary).
        weight: ``w``, the share of the focal term.
        delta: ``δ``, the weight of rare-class errors (false negatives in aFTL).
        gamma: ``γ``, the focal exponent.
        epsilon: ``ε`` of the Tversky index.
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        weight: float = 0.5,
        delta: float = 0.6,
        gamma: float = 0.5,
        epsilon: float = 1e-7,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        if not (0.0 <= weight <= 1.0 and 0.0 <= delta <= 1.0 and 0.0 <= gamma < 1.0):
            raise ValueError(f"unified_focal needs weight, delta in [0, 1] and gamma in [0, 1), got {weight}, {delta}, {gamma}")
        self.weight, self.delta, self.gamma, self.epsilon = float(weight), float(delta), float(gamma), float(epsilon)

    def compute(self, prep: Prepared) -> Tensor:
        if prep.binary:  # two channels: background 1 − p, foreground p
            z = prep.logits[:, 0]
            logp = torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], 1)
            fg = prep.onehot[:, 0]
            g = torch.stack([prep.mask - fg if not prep.all_valid else 1.0 - fg, fg], 1)
        else:
            logp = torch.log_softmax(prep.logits, 1)
            g = prep.onehot
        p = logp.exp()
        if not prep.all_valid:
            p = p * prep.mask.unsqueeze(1)
        k = p.shape[1]
        # asymmetric focal: the background's CE suppressed by (1 − p_0)^γ, the rare classes' kept
        ce = -g * logp.clamp_min(torch.finfo(torch.float32).min)
        back = (1.0 - self.delta) * (1.0 - p[:, 0]).clamp_min(POW_FLOOR).pow(self.gamma) * ce[:, 0]
        rare = self.delta * ce[:, 1:].sum(1)
        afl = pixel_mean(back + rare, prep) / k
        # asymmetric focal Tversky, per image
        tp = (p * g).sum(2)
        fn = g.sum(2) - tp
        fp = p.sum(2) - tp
        mti = (tp + self.epsilon) / (tp + self.delta * fn + (1.0 - self.delta) * fp + self.epsilon)
        terms = torch.cat([1.0 - mti[:, :1], (1.0 - mti[:, 1:]).clamp_min(POW_FLOOR).pow(1.0 - self.gamma)], 1)
        aftl = class_mean(terms, prep)
        return self.weight * afl + (1.0 - self.weight) * aftl
