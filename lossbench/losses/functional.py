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


def check_inputs(logits: Tensor, target: Tensor, num_classes: int, ignore_index: int | None) -> bool:
    """Raise a ``ValueError`` naming the problem if ``logits``/``target`` break the call contract.

    Returns True when no pixel is ignored (every label is a class id), which lets the losses skip
    masking. One pass over the labels (and one device sync) in that common case, two otherwise.

    Args:
        logits: ``[B, C, *spatial]`` raw scores, floating point.
        target: ``[B, *spatial]`` int64 class ids in ``[0, C)`` (``{0, 1}`` when ``C == 1``) or
            ``ignore_index`` — which may itself be a class id: those pixels are ignored all the same.
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
        raise ValueError(
            f"the batch has no pixel to compute a loss over (logits shape {tuple(logits.shape)}); "
            "a loss needs at least one image with at least one pixel"
        )
    if target.device.type == "meta":  # a tensor without values (shape and device tracing): nothing to check
        return ignore_index is None
    lo, hi = (int(v) for v in torch.aminmax(target))  # one device sync, for both bounds
    if 0 <= lo and hi < n_labels:
        if ignore_index is None or not 0 <= ignore_index < n_labels:
            return True  # every label is a class id: nothing is ignored
        return not bool((target == ignore_index).any())  # an ignore index that is also a class id
    if ignore_index is not None:
        lo, hi = (int(v) for v in torch.aminmax(target.masked_fill(target == ignore_index, 0)))
    if lo < 0 or hi >= n_labels:
        bad = hi if hi >= n_labels else lo
        allowed = "0 or 1 (binary, num_classes=1)" if num_classes == 1 else f"in [0, {num_classes})"
        raise ValueError(
            f"target has label {bad} but labels must be {allowed} "
            f"(num_classes={num_classes}, ignore_index={ignore_index})"
        )
    return False


class Prepared:
    """Logits and target in the shared layout, with the derived tensors computed on first use.

    Attributes:
        logits: ``[B, K, N]`` float32 raw scores (``K = 1`` binary, else ``K = C``).
        target: ``[B, N]`` int64 labels as given (ignored pixels keep ``ignore_index``).
        ignore_index: the label of ignored pixels, or ``None``.
        all_valid: True when no pixel is ignored; losses may then skip every mask product.
        binary: True when ``C == 1``.
        spatial: the input's spatial shape (``[B, K, N]`` tensors reshape to ``[B, K, *spatial]``).
    """

    def __init__(self, logits: Tensor, target: Tensor, ignore_index: int | None = None, all_valid: bool | None = None):
        b, c = logits.shape[:2]
        self.spatial = tuple(logits.shape[2:])
        self.binary = c == 1
        self.logits = logits.float().reshape(b, c, -1)
        self.target = target.reshape(b, -1).long()
        self.ignore_index = ignore_index
        if all_valid is None:
            all_valid = ignore_index is None or not bool((self.target == ignore_index).any())
        self.all_valid = all_valid

    def as_images(self, t: Tensor) -> Tensor:
        """``[B, K, N]`` back to ``[B, K, *spatial]`` (for the losses that look at neighbourhoods)."""
        return t.reshape(*t.shape[:2], *self.spatial)

    @cached_property
    def mask(self) -> Tensor:
        """``[B, N]`` float32, 1 on valid pixels, 0 on ignored ones."""
        if self.all_valid:
            return torch.ones(self.target.shape, dtype=torch.float32, device=self.target.device)
        return (self.target != self.ignore_index).float()

    @cached_property
    def labels(self) -> Tensor:
        """``[B, N]`` int64 class ids with ignored pixels set to 0 (always read through ``mask``)."""
        if self.all_valid:
            return self.target
        return self.target.masked_fill(self.target == self.ignore_index, 0)

    @property
    def num_labels(self) -> int:
        """Number of distinct labels: 2 for binary, ``C`` otherwise."""
        return 2 if self.binary else self.logits.shape[1]

    @cached_property
    def num_valid(self) -> Tensor:
        """Scalar: how many pixels are not ignored."""
        if self.all_valid:
            return torch.tensor(float(self.target.numel()), device=self.target.device)
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
            g = self.labels.float() if self.all_valid else self.labels.float() * self.mask
            return g.unsqueeze(1)
        g = torch.zeros_like(self.logits).scatter_(1, self.labels.unsqueeze(1), 1.0)
        return g if self.all_valid else g * self.mask.unsqueeze(1)

    @cached_property
    def log_pt(self) -> Tensor:
        """``[B, N]`` log-probability of the true class of each pixel, computed stably."""
        if self.binary:
            z = self.logits[:, 0]
            return F.logsigmoid(torch.where(self.labels.bool(), z, -z))
        return -F.cross_entropy(self.logits, self.labels, reduction="none")  # log_softmax + gather, one kernel

    def log_p_pair(self) -> tuple[Tensor, Tensor]:
        """``(log p, log(1 − p))``, each ``[B, K, N]``: per channel, for one-vs-rest binary terms.

        Binary: exact, ``logsigmoid(±z)``. Multi-class: ``log_softmax`` and :func:`log1m_softmax`,
        floored at ``log(EPS) ≈ −16.1``.
        """
        floor = torch.finfo(torch.float32).min  # a −∞ logit gives log p = −∞, and 0·(−∞) would be NaN
        if self.binary:
            return F.logsigmoid(self.logits).clamp_min(floor), F.logsigmoid(-self.logits).clamp_min(floor)
        logp = torch.log_softmax(self.logits, dim=1)
        return logp.clamp_min(floor), log1m_softmax(logp)


class _OneVsRestWCE(torch.autograd.Function):
    """Per pixel, ``−[β·log p_y + (1 − β)·Σ_{k≠y} log(1 − p_k)] / K`` of softmax logits ``[B, K, N]`` → ``[B, N]``:
    the one-vs-rest weighted cross-entropy of Combo, with ``log(1 − p)`` from :func:`log1m_softmax`.

    With odds ``r_k = p_k / (1 − p_k)`` (0 where the floor holds) and ``R = Σ_{k≠y} r_k``,
    ``∂T/∂z_j = β·(δ_jy − p_j) + (1 − β)·(p_j·R − r_j·[j ≠ y])``. Two ``[B, K, N]`` tensors are kept
    (``log p``, ``log(1 − p)``) and the backward works in place: on the CPU, where every fresh
    buffer costs page faults, that is most of the saving over autograd's seven temporaries.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, beta: float) -> Tensor:
        logp = torch.log_softmax(logits, 1)
        log1mp = log1m_softmax(logp)
        idx = labels.unsqueeze(1)
        own = beta * logp.gather(1, idx) + (1.0 - beta) * (log1mp.sum(1, keepdim=True) - log1mp.gather(1, idx))
        ctx.save_for_backward(logp, log1mp, labels)
        ctx.beta = beta
        return -own.squeeze(1) / logits.shape[1]

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        logp, log1mp, labels = ctx.saved_tensors
        beta, k = ctx.beta, logp.shape[1]
        idx = labels.unsqueeze(1)
        r = torch.sub(logp, log1mp).exp_().masked_fill_(log1mp <= math.log(EPS), 0.0)  # no gradient where floored
        r_own = r.gather(1, idx)
        a = (r.sum(1, keepdim=True) - r_own).mul_(1.0 - beta).sub_(beta)
        grad = logp.exp().mul_(a).sub_(r.mul_(1.0 - beta))  # the j ≠ y form everywhere ...
        grad.scatter_add_(1, idx, r_own.mul_(1.0 - beta).add_(beta))  # ... and the label's own correction
        return grad.mul_((-grad_out / k).unsqueeze(1)), None, None


def log1m_softmax(logp: Tensor, p: Tensor | None = None) -> Tensor:
    """``log(1 − p)`` of softmax probabilities ``[B, K, N]`` (``logp`` their log), floored at ``log(EPS)``.

    Only a pixel's most probable class can have ``p > 1/2``, where ``1 − p`` would cancel: there it
    is the sum of the other classes' probabilities; elsewhere ``1 − p ≥ 1/2`` is exact enough. Every
    step is a vectorised kernel (``expm1``/``log1p`` are not, on the CPU) and works in place.
    """
    p = logp.exp() if p is None else p.clone()
    over_half = p > 0.5  # at most one class per pixel
    rest = p.masked_fill(over_half, 0.0).sum(1, keepdim=True)  # Σ of the other classes where one is over 1/2
    out = p.neg_().add_(1.0).log_()
    return torch.where(over_half, rest.log_(), out, out=out).clamp_min_(math.log(EPS))


def one_vs_rest_wce(prep: Prepared, beta: float) -> Tensor:
    """``[B, N]`` per-pixel one-vs-rest weighted cross-entropy of ``C >= 2`` softmax logits (Combo's WCE)."""
    return _OneVsRestWCE.apply(prep.logits, prep.labels, beta)


def cpu_kernels(t: Tensor) -> bool:
    """Whether the losses take their CPU-tuned path on ``t``'s device — the one rule that picks a path.

    On a CPU, sums into a few bins (``index_add``, ``bincount``) and selection (``kthvalue``) win: one pass,
    no ``[B, C, N]`` temporary. On a GPU the atomics of millions of elements landing in a few bins serialise
    (a third of ``dice``'s CUDA time, profiled on an H200) and ``kthvalue`` over one long row runs in a
    single block, so there the losses take one-hot products, plain reductions and a radix sort — what the
    fast references (MONAI) do. The tests hold both paths equal, forcing each on the CPU."""
    return t.device.type == "cpu"


def soft_stats(prep: Prepared, per_image: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Soft ``(TP, FP, FN)`` per class over valid pixels: each ``[K]``, or ``[B, K]`` per image.

    On a CPU no one-hot target is formed: ``TP_c`` adds each valid pixel's own-class probability into
    its class's bin, ``Σ g_c`` is a bincount, and the mask products are skipped when nothing is ignored.
    Elsewhere (a GPU) they are a one-hot product and plain reductions (:func:`cpu_kernels`).
    """
    p = prep.probs
    b, k, _ = p.shape
    if not prep.all_valid:
        p = p * prep.mask.unsqueeze(1)
    if prep.binary:
        g = prep.onehot[:, 0]
        dims = (1,) if per_image else (0, 1)
        tp, psum, gsum = ((p[:, 0] * g).sum(dims), p[:, 0].sum(dims), g.sum(dims))
        return tuple(t.unsqueeze(-1) for t in (tp, psum - tp, gsum - tp))  # type: ignore[return-value]
    if not cpu_kernels(p):
        g = prep.onehot  # 0 on ignored pixels
        dims = 2 if per_image else (0, 2)
        tp, psum, gsum = (p * g).sum(dims), p.sum(dims), g.sum(dims)
        return tp, psum - tp, gsum - tp
    labels = prep.labels
    p_own = p.gather(1, labels.unsqueeze(1)).squeeze(1)  # [B, N], 0 on ignored pixels
    bins = labels + (torch.arange(b, device=p.device) * k).unsqueeze(1) if per_image else labels
    size = b * k if per_image else k
    tp = torch.zeros(size, device=p.device, dtype=p.dtype).index_add(0, bins.flatten(), p_own.flatten())
    weights = None if prep.all_valid else prep.mask.flatten()
    gsum = torch.bincount(bins.flatten(), weights=weights, minlength=size).to(p.dtype)
    psum = p.sum(2) if per_image else p.sum((0, 2))
    if per_image:
        tp, gsum = tp.view(b, k), gsum.view(b, k)
    return tp, psum - tp, gsum - tp


def pixel_mean(values: Tensor, prep: Prepared, weight: Tensor | None = None) -> Tensor:
    """Mean of ``[B, N]`` per-pixel ``values`` over valid pixels, optionally a weighted mean.

    ``weight`` is per pixel (``[B, N]``): the result is ``Σ m·w·v / Σ m·w``. With no valid pixel
    the result is a zero that stays connected to ``values``.
    """
    if weight is None:
        if prep.all_valid:
            return values.mean()
        return (prep.mask * values).sum() / prep.num_valid.clamp_min(1.0)
    w = weight if prep.all_valid else prep.mask * weight
    return (w * values).sum() / w.sum().clamp_min(EPS)


def class_mean(per_class: Tensor, prep: Prepared, include_background: bool = True) -> Tensor:
    """Mean of per-class terms ``[K]`` or ``[B, K]`` (per image: images with no valid pixel skipped).

    ``include_background=False`` drops class 0 when ``C >= 2`` (binary has only its foreground channel).
    """
    if not include_background and not prep.binary:
        per_class = per_class[..., 1:]
    if per_class.dim() == 1:
        return per_class.mean()
    return image_mean(per_class.mean(1), prep)


def image_mean(per_image: Tensor, prep: Prepared) -> Tensor:
    """Mean of a ``[B]`` per-image term over the images that have a valid pixel."""
    has_valid = (prep.mask.sum(1) > 0).float()
    return (per_image * has_valid).sum() / has_valid.sum().clamp_min(1.0)


def weights_per_pixel(class_weights: Tensor | None, prep: Prepared) -> Tensor | None:
    """Gather a per-label weight vector (length ``num_labels``) at each pixel's label: ``[B, N]``."""
    if class_weights is None:
        return None
    return class_weights.to(prep.logits.device, torch.float32)[prep.labels]


class _SoftmaxFocal(torch.autograd.Function):
    """Per-pixel ``−(1 − p_t)^γ log p_t`` of softmax logits ``[B, C, N]``, labels ``[B, N]`` → ``[B, N]``.

    The backward is written out, ``∂ℓ/∂z_k = ℓ'(log p_t)·(δ_{k,y} − p_k)``, and recomputes the softmax
    into the gradient buffer, so nothing of size ``[B, C, N]`` is kept between forward and backward.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, gamma: float) -> Tensor:
        log_pt = -F.cross_entropy(logits, labels, reduction="none")
        ctx.save_for_backward(logits, labels, log_pt)
        ctx.gamma = gamma
        return -_one_minus(log_pt, gamma).pow(gamma) * log_pt

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        logits, labels, log_pt = ctx.saved_tensors
        gamma = ctx.gamma
        q = _one_minus(log_pt, gamma)
        d_log_pt = -q.pow(gamma)  # dℓ/d log p_t = −q^γ + γ q^(γ−1) p_t log p_t
        if gamma > 0:
            d_log_pt = d_log_pt + gamma * q.pow(gamma - 1) * log_pt.exp() * log_pt
        coef = (grad_out * d_log_pt).unsqueeze(1)
        grad = torch.softmax(logits, dim=1).mul_(-coef)
        return grad.scatter_add_(1, labels.unsqueeze(1), coef), None, None


class _BinaryFocal(torch.autograd.Function):
    """Per-pixel ``−w_t (1 − p_t)^γ log p_t`` of one logit ``z`` per pixel (sigmoid), labels in {0, 1} → ``[B, N]``.

    With ``s = ±z`` (the label's sign), ``p_t = σ(s)`` and ``q = 1 − p_t = σ(−s)``, the derivative is
    ``∂ℓ/∂s = w·q^γ·(γ·p_t·log p_t − q)``; it is formed in the forward pass, where every term is at
    hand, so the backward is one product and nothing else of the forward is kept.
    """

    @staticmethod
    def forward(ctx, z: Tensor, labels: Tensor, gamma: float, alpha: float | None) -> Tensor:
        sign = labels.to(z.dtype).mul_(2.0).sub_(1.0)
        s = z * sign
        log_pt = F.logsigmoid(s)
        q = torch.sigmoid(-s)
        qg = q * q if gamma == 2.0 else _floored(q, gamma).pow(gamma)
        loss = -(qg * log_pt)
        if alpha is not None:
            w = labels.to(z.dtype).mul_(2.0 * alpha - 1.0).add_(1.0 - alpha)  # α on positives, 1 − α on negatives
            loss = loss * w
            sign = sign * w
        if ctx.needs_input_grad[0]:
            p_t = 1.0 - q
            ctx.save_for_backward(qg.mul_(log_pt.mul_(p_t).mul_(gamma).sub_(q)).mul_(sign))
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None, None]:
        (d,) = ctx.saved_tensors
        return grad_out * d, None, None, None


def _one_minus(log_pt: Tensor, gamma: float) -> Tensor:
    """``1 − p_t``, floored when ``γ < 1``."""
    return _floored(-torch.expm1(log_pt), gamma)


def _floored(q: Tensor, gamma: float) -> Tensor:
    """The base ``q`` of a power ``q^γ``, floored at :data:`POW_FLOOR` when ``γ < 1`` (its slope at 0 would be infinite)."""
    return q.clamp_min(POW_FLOOR if gamma < 1 else 0.0)


def focal_term(prep: Prepared, gamma: float, alpha: float | Tensor | None) -> Tensor:
    """Per-pixel focal loss ``−α_t (1 − p_t)^γ log p_t``, ``[B, N]`` (Lin et al. 2017).

    ``alpha``: a float (binary: α on positives, 1 − α on negatives), a per-label tensor, or ``None``.
    """
    if prep.binary:
        if alpha is None or isinstance(alpha, float):
            return _BinaryFocal.apply(prep.logits[:, 0], prep.labels, gamma, alpha)
        log_pt = prep.log_pt
        loss = -_one_minus(log_pt, gamma).pow(gamma) * log_pt
    else:
        loss = _SoftmaxFocal.apply(prep.logits, prep.labels, gamma)
    if alpha is None:
        return loss
    if isinstance(alpha, Tensor):
        return loss * weights_per_pixel(alpha, prep)
    g = prep.labels.float()
    return loss * (alpha * g + (1.0 - alpha) * (1.0 - g))


@torch.no_grad()
def lovasz_grad(g_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss along the last dim (Berman et al. 2018).

    With ``G = Σ g``, ``I_i = G − cumsum(g)_i``, ``U_i = G + cumsum(1 − g)_i`` and
    ``J_i = 1 − I_i / U_i``, returns ``J_0, J_1 − J_0, J_2 − J_1, ...``. It depends on the labels
    only, so no gradient flows through it; it is computed in place with a single cumsum.
    """
    cum_g = g_sorted.cumsum(-1)
    total = cum_g[..., -1:].clone()
    rank = torch.arange(1, g_sorted.shape[-1] + 1, device=g_sorted.device, dtype=g_sorted.dtype)
    intersection = total - cum_g
    union = cum_g.neg_().add_(total).add_(rank)  # G + cumsum(1 − g) = G + i − cumsum(g)
    jaccard = intersection.div_(union.clamp_min_(EPS)).neg_().add_(1.0)
    jaccard[..., 1:] = jaccard[..., 1:] - jaccard[..., :-1]
    return jaccard


def lovasz_rows(errors: Tensor, g: Tensor, valid: Tensor | None, hinge: bool) -> Tensor:
    """Lovász extension of each row: ``dot(relu(errors sorted desc), lovasz_grad(g sorted alike))``.

    The extension is linear in the errors once their order is fixed, so the order and the weights
    are computed without autograd and scattered back to each element's place; autograd then sees
    only ``Σ errors·weights`` and keeps one float per element instead of the sort's indices.

    Args:
        errors: ``[R, N]`` per-element errors (hinge margins, or ``|g − p|`` which are ≥ 0).
        g: ``[R, N]`` binary ground truth (float), 0 where not valid.
        valid: ``[R, N]`` bool, or ``None`` when every element is valid; invalid elements sort last
            and weigh nothing.
        hinge: errors may be negative (``relu`` applies); False for ``|g − p|``.

    Returns:
        ``[R]`` loss per row; all rows of the call are sorted together.
    """
    with torch.no_grad():
        keys = errors if valid is None else errors.masked_fill(~valid, -math.inf)
        perm = keys.argsort(dim=-1, descending=True)
        # perm is a permutation of every place in its row: the scatter writes each element, so nothing is zeroed first
        weights = torch.empty_like(errors).scatter_(-1, perm, lovasz_grad(g.gather(-1, perm)))
        if valid is not None:
            weights.mul_(valid)
    return ((F.relu(errors) if hinge else errors) * weights).sum(-1)


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
