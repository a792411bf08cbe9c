"""The functional core shared by every loss: input checks, activation, one-hot, ignore mask, soft stats.

Every loss in lossbench is a short formula over what this module computes once:

* :func:`check_inputs` turns bad shapes, dtypes and labels into one-sentence ``ValueError``s;
* :class:`Prepared` holds the float32 logits flattened to ``[B, K, N]`` (``K = C`` for ``C >= 2``,
  ``K = 1`` for the binary case), the valid-pixel mask and the labels, and derives lazily the
  probabilities ``p``, the one-hot target ``g`` (zero on ignored pixels) and ``log p_t``;
* :func:`soft_stats` gives the soft ``TP_c = Σ m·p_c·g_c``, ``FP_c = Σ m·p_c·(1−g_c)`` and
  ``FN_c = Σ m·(1−p_c)·g_c`` per class (per image on request);
* :func:`pixel_mean`, :func:`class_mean` reduce per-pixel and per-class terms so that ignored
  pixels (and images with no valid pixel) count for nothing, without ever dividing by zero.

Binary (``C == 1``) and multi-class (``C >= 2``) share one representation: channel ``k`` of ``p``
is the sigmoid of the single logit (binary) or the softmax over classes, and ``g`` is the target
(binary) or its one-hot encoding. A binary region loss is therefore the same formula over one
foreground channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-7
"""Floor of denominators (as in smp) and of ``1 − p`` inside logarithms of softmax probabilities."""

POW_FLOOR = 1e-12
"""Floor of a base raised to a power below one, whose gradient at zero would be infinite."""


def check_inputs(logits: Tensor, target: Tensor, num_classes: int, ignore_index: int | None) -> None:
    """Raise a ``ValueError`` naming the problem if ``logits``/``target`` break the call contract.

    Args:
        logits: ``[B, C, *spatial]`` raw scores, floating point.
        target: ``[B, *spatial]`` integer class ids in ``[0, C)`` (``{0, 1}`` when ``C == 1``) or
            ``ignore_index``.
        num_classes: ``C`` the loss was built for.
        ignore_index: label of pixels to ignore, or ``None``.
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"a loss takes (logits, target) tensors, got ({type(logits).__name__}, {type(target).__name__})"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor of raw scores, got dtype {logits.dtype}")
    if target.is_floating_point() or target.is_complex():
        raise ValueError(
            f"target must be an integer tensor of class ids [B, *spatial], got dtype {target.dtype} "
            "(pass class ids, not probabilities or a one-hot mask)"
        )
    if logits.dim() < 3:
        raise ValueError(f"logits must have shape [B, C, *spatial], got {tuple(logits.shape)}")
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"logits have {logits.shape[1]} channels but the loss was built with num_classes={num_classes} "
            f"(logits shape {tuple(logits.shape)})"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}; "
            f"expected target [B, *spatial] = {expected}"
        )
    n_labels = 2 if num_classes == 1 else num_classes
    if target.numel() == 0:
        return
    valid = target if ignore_index is None else target.masked_fill(target == ignore_index, 0)
    lo, hi = torch.aminmax(valid)
    lo, hi = int(lo), int(hi)  # one device sync, for both bounds
    if lo < 0 or hi >= n_labels:
        bad = hi if hi >= n_labels else lo
        allowed = "0 or 1 (binary, num_classes=1)" if num_classes == 1 else f"in [0, {num_classes})"
        raise ValueError(
            f"target has label {bad} but labels must be {allowed} "
            f"(num_classes={num_classes}, ignore_index={ignore_index})"
        )


class Prepared:
    """Logits and target in the shared layout, with the derived tensors computed on first use.

    Attributes:
        logits: ``[B, K, N]`` float32 raw scores (``K = 1`` binary, else ``K = C``).
        labels: ``[B, N]`` int64 class ids, ignored pixels set to 0 (always read through ``mask``).
        mask: ``[B, N]`` float32, 1 on valid pixels, 0 on ignored ones.
        binary: True when ``C == 1``.
    """

    def __init__(self, logits: Tensor, target: Tensor, ignore_index: int | None = None):
        b, c = logits.shape[:2]
        self.binary = c == 1
        self.logits = logits.float().reshape(b, c, -1)
        labels = target.reshape(b, -1).long()
        if ignore_index is None:
            self.mask = torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
        else:
            valid = labels != ignore_index
            self.mask = valid.float()
            labels = labels * valid
        self.labels = labels

    @property
    def num_labels(self) -> int:
        """Number of distinct labels: 2 for binary, ``C`` otherwise."""
        return 2 if self.binary else self.logits.shape[1]

    @cached_property
    def num_valid(self) -> Tensor:
        """Scalar: how many pixels are not ignored."""
        return self.mask.sum()

    @cached_property
    def any_valid(self) -> Tensor:
        """Scalar 1.0 if any pixel is valid, else 0.0 (multiplying by it keeps the graph)."""
        return (self.num_valid > 0).float()

    @cached_property
    def probs(self) -> Tensor:
        """``[B, K, N]`` sigmoid (binary) or softmax probabilities."""
        if self.binary:
            return torch.sigmoid(self.logits)
        return torch.softmax(self.logits, dim=1)

    @cached_property
    def onehot(self) -> Tensor:
        """``[B, K, N]`` float target ``g``: the label itself (binary) or its one-hot code; 0 if ignored."""
        if self.binary:
            return (self.labels.float() * self.mask).unsqueeze(1)
        g = F.one_hot(self.labels, self.logits.shape[1]).permute(0, 2, 1).float()
        return g * self.mask.unsqueeze(1)

    @cached_property
    def log_pt(self) -> Tensor:
        """``[B, N]`` log-probability of the true class of each pixel, computed stably."""
        if self.binary:
            z = self.logits[:, 0]
            return F.logsigmoid(torch.where(self.labels.bool(), z, -z))
        return torch.log_softmax(self.logits, dim=1).gather(1, self.labels.unsqueeze(1)).squeeze(1)

    def log_p_pair(self) -> tuple[Tensor, Tensor]:
        """``(log p, log(1 − p))``, each ``[B, K, N]``: per channel, for one-vs-rest binary terms.

        Binary: exact, ``logsigmoid(±z)``. Multi-class: ``log_softmax`` and ``log(1 − p)`` with
        ``log p`` capped at ``log(1 − EPS)``, so ``log(1 − p) ≥ log(EPS) ≈ −16.1``.
        """
        if self.binary:
            return F.logsigmoid(self.logits), F.logsigmoid(-self.logits)
        logp = torch.log_softmax(self.logits, dim=1)
        return logp, log1mexp(logp.clamp_max(math.log1p(-EPS)))


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 − exp(x))`` for ``x < 0``, accurate on both sides of ``−ln 2`` (Mächler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def soft_stats(prep: Prepared, per_image: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Soft ``(TP, FP, FN)`` per class over valid pixels: each ``[K]``, or ``[B, K]`` per image."""
    dims = (2,) if per_image else (0, 2)
    pm = prep.probs * prep.mask.unsqueeze(1)
    g = prep.onehot
    tp = (pm * g).sum(dims)
    fp = pm.sum(dims) - tp
    fn = g.sum(dims) - tp
    return tp, fp, fn


def pixel_mean(values: Tensor, prep: Prepared, weight: Tensor | None = None) -> Tensor:
    """Mean of ``[B, N]`` per-pixel ``values`` over valid pixels, optionally a weighted mean.

    ``weight`` is per pixel (``[B, N]``): the result is ``Σ m·w·v / Σ m·w``. With no valid pixel
    the result is a zero that stays connected to ``values``.
    """
    w = prep.mask if weight is None else prep.mask * weight
    return (w * values).sum() / w.sum().clamp_min(EPS)


def class_mean(per_class: Tensor, prep: Prepared, include_background: bool = True) -> Tensor:
    """Mean of per-class terms ``[K]`` or ``[B, K]`` (per image: images with no valid pixel skipped).

    ``include_background=False`` drops class 0 when ``C >= 2`` (binary has only its foreground channel).
    """
    if not include_background and not prep.binary:
        per_class = per_class[..., 1:]
    if per_class.dim() == 1:
        return per_class.mean()
    has_valid = (prep.mask.sum(1) > 0).float()  # [B]
    per_image = per_class.mean(1)
    return (per_image * has_valid).sum() / has_valid.sum().clamp_min(1.0)


def weights_per_pixel(class_weights: Tensor | None, prep: Prepared) -> Tensor | None:
    """Gather a per-label weight vector (length ``num_labels``) at each pixel's label: ``[B, N]``."""
    if class_weights is None:
        return None
    return class_weights.to(prep.logits.device, torch.float32)[prep.labels]


def focal_term(prep: Prepared, gamma: float, alpha: float | Tensor | None) -> Tensor:
    """Per-pixel focal loss ``−α_t (1 − p_t)^γ log p_t``, ``[B, N]`` (Lin et al. 2017).

    ``alpha``: a float (binary: α on positives, 1 − α on negatives), a per-label tensor, or ``None``.
    """
    log_pt = prep.log_pt
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(POW_FLOOR if gamma < 1 else 0.0)
    loss = -(one_minus_pt**gamma) * log_pt
    if alpha is None:
        return loss
    if isinstance(alpha, Tensor):
        return loss * weights_per_pixel(alpha, prep)
    g = prep.labels.float()
    return loss * (alpha * g + (1.0 - alpha) * (1.0 - g))


def lovasz_grad(g_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss along the last dim (Berman et al. 2018).

    With ``G = Σ g``, ``I_i = G − cumsum(g)_i``, ``U_i = G + cumsum(1 − g)_i`` and
    ``J_i = 1 − I_i / U_i``, returns ``J_0, J_1 − J_0, J_2 − J_1, ...``.
    """
    total = g_sorted.sum(-1, keepdim=True)
    intersection = total - g_sorted.cumsum(-1)
    union = total + (1.0 - g_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union.clamp_min(EPS)
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def lovasz_rows(errors: Tensor, g: Tensor, valid: Tensor) -> Tensor:
    """Lovász extension of each row: ``dot(relu(errors sorted desc), lovasz_grad(g sorted alike))``.

    Args:
        errors: ``[R, N]`` per-element errors (hinge margins or ``|g − p|``).
        g: ``[R, N]`` binary ground truth, 0 where not valid.
        valid: ``[R, N]`` bool; invalid elements sort last and contribute nothing.

    Returns:
        ``[R]`` loss per row. All rows are sorted in one call (vectorized over classes and images).
    """
    keys = torch.where(valid, errors, torch.full_like(errors, -math.inf))
    keys_sorted, perm = torch.sort(keys, dim=-1, descending=True)
    grad = lovasz_grad(torch.gather(g, -1, perm))
    return (F.relu(keys_sorted) * grad).sum(-1)


def to_rows(x: Tensor, per_image: bool) -> Tensor:
    """``[B, K, N]`` → rows for :func:`lovasz_rows`: ``[B·K, N]`` per image, else ``[K, B·N]``."""
    b, k, n = x.shape
    if per_image:
        return x.reshape(b * k, n)
    return x.transpose(0, 1).reshape(k, b * n)


def as_label_vector(values: Sequence[float] | Tensor | None, num_labels: int, what: str) -> Tensor | None:
    """Validate a per-label vector (class weights, frequencies, focal alphas) and make it a tensor."""
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() != num_labels:
        raise ValueError(f"{what} must have {num_labels} entries (one per label), got {t.numel()}")
    if not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError(f"{what} must be finite and non-negative, got {t.tolist()}")
    return t
