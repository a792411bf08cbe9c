"""Boundary and topology losses: Boundary loss (Kervadec), Hausdorff distance-transform loss (Karimi),
soft clDice (Shit). Distances are exact Euclidean transforms of the masks (:mod:`lossbench.losses.distance`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossbench.losses.base import SegmentationLoss
from lossbench.losses.distance import boundary_distances
from lossbench.losses.functional import EPS, Prepared, class_mean, image_mean, pixel_mean, soft_stats
from lossbench.losses.region import GeneralizedDiceLoss, dice_score
from lossbench.losses.registry import register_loss


def _channels(prep: Prepared, include_background: bool) -> slice:
    return slice(0, None) if include_background or prep.binary else slice(1, None)


def _images(prep: Prepared, t: Tensor, loss: str) -> Tensor:
    if len(prep.spatial) not in (2, 3):
        raise ValueError(f"loss {loss!r} takes images [B, C, H, W] or volumes [B, C, D, H, W], got spatial shape {prep.spatial}")
    return prep.as_images(t)


def _spacing(spacing: Sequence[float] | None, loss: str) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    if isinstance(spacing, (str, bytes)) or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in spacing):
        raise ValueError(f"{loss} spacing must be a list of positive numbers (one per spatial axis), got {spacing!r}")
    return tuple(float(s) for s in spacing)


def _distances(prep: Prepared, mask: Tensor, spacing: tuple[float, ...] | None, loss: str) -> tuple[Tensor, Tensor]:
    dims = len(prep.spatial)
    if spacing is not None and len(spacing) != dims:
        raise ValueError(f"loss {loss!r} has spacing {list(spacing)} ({len(spacing)} axes) but its input has {dims} spatial axes {prep.spatial}")
    return boundary_distances(_images(prep, mask, loss), dims, spacing)


@register_loss("boundary", description="α·GDL + (1−α)·mean(φ_G·p), α scheduled over training (Kervadec et al. 2019)")
class BoundaryLoss(SegmentationLoss):
    """Boundary loss (Kervadec et al., "Boundary loss for highly unbalanced segmentation", MIDL 2019 /
    MedIA 2021), combined with the Generalized Dice loss as the paper trains it.

    ``α·GDL + (1 − α)·BL`` with ``BL = mean over valid pixels and foreground classes of φ_c·p_c``,
    where ``φ_c`` is the signed distance to the boundary of class ``c`` in the ground truth:
    the distance to the nearest pixel of the class outside it, ``−(d − 1)`` inside it, with ``d``
    the distance to the nearest pixel outside it (Kervadec's and MONAI's convention); 0 in an image
    where the class is absent or covers everything. ``α`` follows the paper's "rebalance" schedule:
    ``α = max(alpha_min, alpha − alpha_step·epoch)``, set by :meth:`set_epoch` at each epoch start
    (a resumed run resumes the schedule). BL alone equals MONAI's ``BoundaryLoss``
    (``include_background=False``) on images without ignored pixels.

    Args:
        num_classes: ``C`` (1 = binary: the foreground channel).
        alpha: α at epoch 0.
        alpha_step: decrease of α per epoch.
        alpha_min: floor of α.
        include_background: also apply BL to class 0 (multi-class).
        spacing: the grid step of each spatial axis (millimetres per voxel of a volume): φ in those units,
            as Kervadec's ``sampling=resolution``; ``None``: pixels. lossbench sets it from volume data.
        ignore_index: label to ignore, or ``None``; ignored pixels count as "not the class" in φ.
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 1.0,
        alpha_step: float = 0.01,
        alpha_min: float = 0.01,
        include_background: bool = False,
        spacing: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        self.spacing = _spacing(spacing, "boundary")
        if not (0.0 <= alpha_min <= alpha <= 1.0 and alpha_step >= 0):
            raise ValueError(f"boundary needs 0 <= alpha_min <= alpha <= 1 and alpha_step >= 0, got {alpha_min}, {alpha}, {alpha_step}")
        self.alpha0, self.alpha_step, self.alpha_min = float(alpha), float(alpha_step), float(alpha_min)
        self.alpha = self.alpha0
        self.include_background = bool(include_background)
        self.gdl = GeneralizedDiceLoss(num_classes, ignore_index=ignore_index)

    def set_epoch(self, epoch: int) -> None:
        self.alpha = max(self.alpha_min, self.alpha0 - self.alpha_step * epoch)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha}"

    def boundary_term(self, prep: Prepared) -> Tensor:
        ch = _channels(prep, self.include_background)
        g = prep.onehot[:, ch] > 0.5
        outside, inside = _distances(prep, g, self.spacing, "boundary")
        g = prep.as_images(g)
        phi = torch.where(g, 1.0 - inside, outside).flatten(2)
        p = prep.probs[:, ch]
        return pixel_mean((phi * p).mean(1), prep)  # mean over classes, then over valid pixels

    def compute(self, prep: Prepared) -> Tensor:
        bl = self.boundary_term(prep)
        if self.alpha == 0.0:
            return bl
        return self.alpha * self.gdl.compute(prep) + (1.0 - self.alpha) * bl


@register_loss("hausdorff_dt", description="Hausdorff distance-transform loss: mean((p−g)²·(d_p^α + d_g^α)) (Karimi & Salcudean 2019)")
class HausdorffDTLoss(SegmentationLoss):
    """Hausdorff distance loss, distance-transform form (Karimi & Salcudean, "Reducing the Hausdorff
    Distance in Medical Image Segmentation with Convolutional Neural Networks", IEEE TMI 2019).

    ``mean over images, classes and pixels of (p_c − g_c)²·(d_p^α + d_g^α)``, where ``d_g`` is the
    distance of each pixel to the boundary of class ``c`` in the ground truth (outside: to the
    nearest pixel of the class; inside: to the nearest pixel outside it) and ``d_p`` the same for
    the prediction ``p_c > 0.5``; both are 0 in an image where the mask is empty or full, and no
    gradient flows through them. Equal to MONAI's ``HausdorffDTLoss`` (its defaults: background
    left out, mean over images and classes). Ignored pixels are left out of the mean and of the
    predicted mask.

    Args:
        num_classes: ``C`` (1 = binary: the foreground channel).
        alpha: exponent α of the distances.
        include_background: also score class 0 (multi-class).
        spacing: the grid step of each spatial axis (millimetres per voxel); ``None``: pixels (MONAI's).
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 2.0,
        include_background: bool = False,
        spacing: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        self.spacing = _spacing(spacing, "hausdorff_dt")
        if alpha <= 0:
            raise ValueError(f"hausdorff_dt alpha must be > 0, got {alpha}")
        self.alpha, self.include_background = float(alpha), bool(include_background)

    def compute(self, prep: Prepared) -> Tensor:
        ch = _channels(prep, self.include_background)
        p, g = prep.probs[:, ch], prep.onehot[:, ch]
        valid = prep.mask.unsqueeze(1)
        with torch.no_grad():
            both = torch.cat([(p.detach() > 0.5) & (valid > 0), g > 0.5], 1)
            outside, inside = _distances(prep, both, self.spacing, "hausdorff_dt")
            d = (outside + inside).flatten(2).pow(self.alpha)
            k = p.shape[1]
            weight = d[:, :k] + d[:, k:]
        per_pixel = ((p - g) ** 2 * weight).mean(1)
        return image_mean((per_pixel * prep.mask).sum(1) / prep.mask.sum(1).clamp_min(1.0), prep)


def soft_erode(img: Tensor) -> Tensor:
    """Soft erosion of ``[B, K, H, W]`` or ``[B, K, D, H, W]``: the minimum over the axis-aligned 3-neighbourhoods (a cross)."""
    if img.ndim == 5:
        p1 = -F.max_pool3d(-img, (3, 1, 1), (1, 1, 1), (1, 0, 0))
        p2 = -F.max_pool3d(-img, (1, 3, 1), (1, 1, 1), (0, 1, 0))
        p3 = -F.max_pool3d(-img, (1, 1, 3), (1, 1, 1), (0, 0, 1))
        return torch.minimum(torch.minimum(p1, p2), p3)
    p1 = -F.max_pool2d(-img, (3, 1), (1, 1), (1, 0))
    p2 = -F.max_pool2d(-img, (1, 3), (1, 1), (0, 1))
    return torch.minimum(p1, p2)


def soft_dilate(img: Tensor) -> Tensor:
    """Soft dilation: the maximum over the 3×3 (3×3×3) neighbourhood."""
    if img.ndim == 5:
        return F.max_pool3d(img, (3, 3, 3), (1, 1, 1), (1, 1, 1))
    return F.max_pool2d(img, (3, 3), (1, 1), (1, 1))


def soft_skeleton(img: Tensor, iters: int) -> Tensor:
    """The soft skeleton of ``img`` ``[B, K, H, W]`` or ``[B, K, D, H, W]`` in [0, 1] (Shit et al. 2021): iterated soft
    erosions (min-pooling) minus their soft openings, accumulated."""
    skel = F.relu(img - soft_dilate(soft_erode(img)))
    for _ in range(iters):
        img = soft_erode(img)
        delta = F.relu(img - soft_dilate(soft_erode(img)))
        skel = skel + F.relu(delta - skel * delta)
    return skel


@register_loss("cldice", description="(1−α)·Dice + α·soft clDice, skeletons by iterated min/max pooling (Shit et al. 2021)")
class ClDiceLoss(SegmentationLoss):
    """Soft clDice combined with Dice (Shit et al., "clDice — a Novel Topology-Preserving Loss
    Function for Tubular Structure Segmentation", CVPR 2021), for thin structures.

    ``(1 − α)·L_dice + α·L_clDice``. Per image: ``L_dice`` is ``1 − (2·TP_c + s)/(2·TP_c + FP_c + FN_c + s)``
    averaged over classes; with soft skeletons ``S_p``, ``S_g`` of the prediction and the target
    (``iters`` erosions), topology precision ``T_prec = (Σ S_p·g + s) / (Σ S_p + s)`` and sensitivity
    ``T_sens = (Σ S_g·p + s) / (Σ S_g + s)`` summed over all classes and pixels of the image, and
    ``L_clDice = 1 − 2·T_prec·T_sens / (T_prec + T_sens + 1e-4)``; both averaged over images. Equal
    to MONAI's ``SoftDiceclDiceLoss``. Ignored pixels are zero in ``p`` and ``g`` before skeletonising.

    Args:
        num_classes: ``C`` (1 = binary: the foreground channel).
        iters: erosion iterations of the soft skeleton.
        alpha: α, the clDice share.
        smooth: ``s``.
        include_background: also score class 0 (multi-class).
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        iters: int = 3,
        alpha: float = 0.5,
        smooth: float = 1.0,
        include_background: bool = True,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
            raise ValueError(f"cldice iters must be an integer >= 0, got {iters!r}")
        if not 0.0 <= alpha <= 1.0 or smooth < 0:
            raise ValueError(f"cldice needs alpha in [0, 1] and smooth >= 0, got alpha={alpha}, smooth={smooth}")
        self.iters, self.alpha, self.smooth = iters, float(alpha), float(smooth)
        self.include_background = bool(include_background)

    def compute(self, prep: Prepared) -> Tensor:
        ch = _channels(prep, self.include_background)
        tp, fp, fn = soft_stats(prep, per_image=True)
        dice = class_mean(1.0 - dice_score(tp, fp, fn, self.smooth), prep, self.include_background)
        p, g = prep.probs[:, ch], prep.onehot[:, ch]
        if not prep.all_valid:
            p = p * prep.mask.unsqueeze(1)
        skel_p = soft_skeleton(_images(prep, p, "cldice"), self.iters).flatten(2)
        skel_g = soft_skeleton(_images(prep, g, "cldice"), self.iters).flatten(2)
        t_prec = ((skel_p * g).sum((1, 2)) + self.smooth) / (skel_p.sum((1, 2)) + self.smooth).clamp_min(EPS)
        t_sens = ((skel_g * p).sum((1, 2)) + self.smooth) / (skel_g.sum((1, 2)) + self.smooth).clamp_min(EPS)
        cl = 1.0 - 2.0 * t_prec * t_sens / (t_prec + t_sens + 1e-4)
        return (1.0 - self.alpha) * dice + self.alpha * image_mean(cl, prep)
