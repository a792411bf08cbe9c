"""The loss library: the call contract, parametrized over every registered loss, and references.

A loss registered tomorrow is covered by the contract tests without anyone writing a test for it.
"""

from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from lossbench.losses import build_loss, get_loss_spec, list_losses, register_loss
from lossbench.losses.base import SegmentationLoss
from lossbench.losses.functional import lovasz_grad, soft_stats

IGNORE = 255
CLASS_COUNTS = {1: [900.0, 100.0], 5: [800.0, 120.0, 50.0, 20.0, 10.0]}

FOURTEEN = [
    "ce", "weighted_ce", "focal", "dice", "iou", "tversky", "generalized_dice", "bce_dice",
    "focal_dice", "exp_log", "lovasz_hinge", "lovasz_softmax", "combo", "ohem",
]  # fmt: skip


REQUIRED = {"sum": {"terms": [{"name": "ce", "weight": 1.0}, {"name": "boundary", "weight": 3.0, "params": {"alpha": 0.5}}]}}
"""Example values of the parameters a loss requires (a recipe needs its terms)."""


def make(name: str, c: int, **params):
    """Build a loss the way the harness does: class frequencies for losses that take them."""
    params = {**REQUIRED.get(name, {}), **params}
    if get_loss_spec(name).uses_class_frequencies and "class_frequencies" not in params:
        params["class_frequencies"] = CLASS_COUNTS[c]
    params.setdefault("ignore_index", IGNORE)
    return build_loss(name, num_classes=c, **params)


SPATIAL = {"depth": None}
"""The depth of :func:`batch`'s volumes, or ``None`` for images: set per test by :func:`spatial_dims`."""


@pytest.fixture(autouse=True, params=[2, 3], ids=["2d", "3d"])
def spatial_dims(request):
    """Every test of this file runs on images ``[B, C, H, W]`` and on volumes ``[B, C, D, H, W]`` (D = 4)."""
    SPATIAL["depth"] = None if request.param == 2 else 4
    yield request.param
    SPATIAL["depth"] = None


def batch(c: int, seed: int = 0, b: int = 2, h: int = 8, w: int = 8, ignore_frac: float = 0.2):
    """Random logits and a target in which every label occurs, with some pixels ignored
    (volumes of depth ``SPATIAL["depth"]`` when the test runs at 3-D)."""
    g = torch.Generator().manual_seed(seed)
    spatial = (h, w) if SPATIAL["depth"] is None else (SPATIAL["depth"], h, w)
    logits = torch.randn(b, c, *spatial, generator=g)
    n_labels = max(c, 2)
    n = b * math.prod(spatial)
    target = torch.arange(n).remainder(n_labels).reshape(b, *spatial)
    target = target.flatten()[torch.randperm(n, generator=g)].reshape(b, *spatial)
    target[torch.rand(b, *spatial, generator=g) < ignore_frac] = IGNORE
    return logits, target


def value_and_grad(loss, logits, target):
    x = logits.clone().requires_grad_(True)
    v = loss(x, target)
    v.backward()
    return v.detach(), x.grad


all_losses = pytest.mark.parametrize("name", list_losses())
both_modes = pytest.mark.parametrize("c", [1, 5], ids=["binary", "C5"])


def test_registry_holds_the_fourteen_losses_with_documented_formulas():
    assert set(FOURTEEN) <= set(list_losses())
    for name in FOURTEEN:
        doc = get_loss_spec(name).cls.__doc__
        assert doc and "Args:" in doc, name
        assert get_loss_spec(name).description, name


# --- the call contract, for every registered loss -------------------------------------------


@all_losses
@both_modes
def test_finite_with_a_class_absent_from_the_batch(name, c):
    logits, target = batch(c)
    target[target == (1 if c == 1 else 3)] = 0  # class absent (binary: no positive at all)
    v, grad = value_and_grad(make(name, c), logits, target)
    assert torch.isfinite(v) and torch.isfinite(grad).all()


@all_losses
@both_modes
def test_all_pixels_ignored_gives_a_connected_zero(name, c):
    logits, target = batch(c)
    target.fill_(IGNORE)
    x = logits.clone().requires_grad_(True)
    v = make(name, c)(x, target)
    assert v.requires_grad and v.item() == 0.0
    v.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@all_losses
@both_modes
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_stay_finite(name, c, scale):
    logits, target = batch(c)
    logits = torch.sign(logits) * scale  # saturated, some right and some wrong
    v, grad = value_and_grad(make(name, c), logits, target)
    assert torch.isfinite(v) and torch.isfinite(grad).all()


@all_losses
@both_modes
def test_bf16_autocast_computes_in_float32(name, c):
    logits, target = batch(c)
    loss = make(name, c)
    x = logits.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = loss(x, target)
    v.backward()
    assert v.dtype == torch.float32 and torch.isfinite(v) and torch.isfinite(x.grad.float()).all()
    reference = loss(logits.bfloat16().float(), target)  # same inputs, no autocast
    assert v.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-6)


@all_losses
@both_modes
def test_ignored_pixels_change_neither_value_nor_gradient(name, c):
    logits, target = batch(c)
    loss = make(name, c)
    v1, g1 = value_and_grad(loss, logits, target)
    other = logits.clone()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(other)
    other[ignored] = torch.randn(int(ignored.sum())) * 50
    v2, g2 = value_and_grad(loss, other, target)
    assert torch.allclose(v1, v2, atol=1e-6)
    assert torch.allclose(g1, g2, atol=1e-7)
    assert torch.all(g1[ignored] == 0)


@all_losses
@both_modes
def test_the_no_ignored_pixel_fast_path_equals_the_masked_path(name, c):
    from lossbench.losses.functional import Prepared

    logits, target = batch(c, ignore_frac=0.0)
    loss = make(name, c)
    fast, fast_grad = value_and_grad(loss, logits, target)  # check_inputs finds nothing ignored
    x = logits.clone().requires_grad_(True)
    masked = loss.compute(Prepared(x, target, IGNORE, all_valid=False))  # every mask product taken
    masked.backward()
    assert fast.item() == pytest.approx(masked.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(fast_grad, x.grad, rtol=1e-4, atol=1e-7)


@all_losses
@both_modes
def test_an_ignore_index_that_is_a_class_id_is_honoured_like_any_other(name, c):
    # issue 8: ignore_index=0 was only honoured by ce/weighted_ce (dice gave 0.7177 against 0.7548)
    logits, target = batch(c, seed=4, ignore_frac=0.0)
    ignored = 0
    relabelled = target.masked_fill(target == ignored, -1)
    v_in, g_in = value_and_grad(make(name, c, ignore_index=ignored), logits, target)
    v_out, g_out = value_and_grad(make(name, c, ignore_index=-1), logits, relabelled)
    assert torch.allclose(v_in, v_out, atol=1e-6), (v_in, v_out)
    assert torch.allclose(g_in, g_out, atol=1e-7)


@all_losses
def test_a_small_integer_target_with_a_negative_ignore_index_is_not_wrapped(name):
    # issue 8: a uint8 target with ignore_index=-1 compared as 255; ce raised a raw IndexError
    logits, target = batch(5, seed=5, ignore_frac=0.0)
    v_long = make(name, 5, ignore_index=-1)(logits, target)
    v_u8 = make(name, 5, ignore_index=-1)(logits, target.to(torch.uint8))
    assert torch.allclose(v_long, v_u8)
    with pytest.raises(ValueError, match="target has label 255"):
        make(name, 5, ignore_index=-1)(logits, torch.full_like(target, 255, dtype=torch.uint8))


@all_losses
@both_modes
def test_a_batch_of_zero_images_is_one_sentence(name, c):
    # bug 10: a raw "RuntimeError: cannot reshape tensor of 0 elements" from inside the preparation
    with pytest.raises(ValueError, match=r"the batch has no pixel to compute a loss over"):
        make(name, c)(torch.zeros(0, c, 8, 8), torch.zeros(0, 8, 8, dtype=torch.long))


@all_losses
@both_modes
def test_one_minus_infinite_logit_keeps_the_loss_finite(name, c):
    # issue 8: one −∞ logit made combo NaN
    logits, target = batch(c, seed=6)
    logits[0, 0].view(-1)[0] = -math.inf  # one pixel (voxel), with a label the −∞ does not contradict:
    target[0].view(-1)[0] = 0 if c == 1 else 1  # binary: p = 0 for the label 0; C5: class 0 gets p = 0, the label is 1
    value, grad = value_and_grad(make(name, c), logits, target)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def perfect_logits(target: torch.Tensor, c: int, margin: float = 12.0) -> torch.Tensor:
    t = target.clamp(0, max(c, 2) - 1)
    if c == 1:
        return ((2 * t - 1) * margin).float().unsqueeze(1)
    return F.one_hot(t, c).movedim(-1, 1).float() * 2 * margin - margin


@all_losses
@both_modes
def test_a_perfect_prediction_scores_lower_than_a_random_one(name, c):
    logits, target = batch(c)
    loss = make(name, c)
    assert loss(perfect_logits(target, c), target) < loss(logits, target)


@all_losses
@both_modes
def test_gradient_descent_on_the_logits_lowers_the_loss(name, c):
    logits, target = batch(c, seed=1)
    loss = make(name, c)
    x = logits.clone().requires_grad_(True)
    # a mean over 4× the pixels gives each logit a 4× smaller gradient: the step grows with the volume's depth
    opt = torch.optim.SGD([x], lr=(0.5 if "lovasz" in name else 2.0) * (SPATIAL["depth"] or 1))
    start = loss(x, target).item()
    for _ in range(20):
        opt.zero_grad()
        loss(x, target).backward()
        opt.step()
    assert loss(x, target).item() < start - 1e-3


@all_losses
@both_modes
def test_bad_input_raises_a_value_error_naming_the_problem(name, c):
    logits, target = batch(c)
    loss = make(name, c)
    with pytest.raises(ValueError, match="does not match"):
        loss(logits, target[:, :-1])
    with pytest.raises(ValueError, match="integer tensor of class ids"):
        loss(logits, target.float())
    with pytest.raises(ValueError, match=r"has label 7"):
        bad = target.clone()
        bad[0, 0, 0] = 7
        loss(logits, bad)
    with pytest.raises(ValueError, match=r"has label -1"):
        bad = target.clone()
        bad[0, 0, 0] = -1
        loss(logits, bad)
    with pytest.raises(ValueError, match=f"num_classes={c}"):
        loss(torch.randn(2, c + 2, 8, 8), target)


# --- registry ---------------------------------------------------------------------------------


def test_unknown_loss_lists_known_names_closest_first():
    with pytest.raises(ValueError, match=r"unknown loss 'dcie'; known losses \(closest first\): dice, ") as e:
        build_loss("dcie", num_classes=3)
    for name in list_losses():
        assert name in str(e.value)


def test_unknown_parameter_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"loss 'tversky' got unknown parameter\(s\) gama; it accepts: alpha=0.3, beta=0.7"):
        build_loss("tversky", num_classes=3, gama=2)


def test_losses_needing_frequencies_say_so():
    for name in ("weighted_ce", "exp_log"):
        with pytest.raises(ValueError, match="needs class_frequencies"):
            build_loss(name, num_classes=3)
        assert get_loss_spec(name).uses_class_frequencies
    assert not get_loss_spec("dice").uses_class_frequencies


def test_a_user_loss_registers_in_a_few_lines_and_is_built_by_name():
    @register_loss("test_plain_dice", description="Dice with no smoothing")
    class PlainDice(SegmentationLoss):
        def compute(self, prep):
            tp, fp, fn = soft_stats(prep)
            return 1 - (2 * tp / (2 * tp + fp + fn).clamp_min(1e-7)).mean()

    try:
        logits, target = batch(5)
        ours = build_loss("test_plain_dice", num_classes=5, ignore_index=IGNORE)(logits, target)
        ref = build_loss("dice", num_classes=5, smooth=0.0, ignore_index=IGNORE)(logits, target)
        assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
        with pytest.raises(ValueError, match="already registered"):
            register_loss("dice")(PlainDice)
    finally:
        from lossbench.losses import registry

        registry._REGISTRY.pop("test_plain_dice")


# --- independent references: segmentation-models-pytorch ---------------------------------------

SMP_EQUIVALENTS = [
    # (our name, our params, smp factory) — smp's Dice is Tversky(0.5, 0.5): its smooth s/2 is our s.
    ("dice", {}, lambda mode: smp.losses.DiceLoss(mode, smooth=0.5, ignore_index=IGNORE)),
    ("dice", {"smooth": 0.0}, lambda mode: smp.losses.DiceLoss(mode, smooth=0.0, ignore_index=IGNORE)),
    ("iou", {}, lambda mode: smp.losses.JaccardLoss(mode, smooth=1.0, ignore_index=IGNORE)),
    ("tversky", {}, lambda mode: smp.losses.TverskyLoss(mode, alpha=0.3, beta=0.7, smooth=1.0, ignore_index=IGNORE)),
    ("lovasz_softmax", {}, lambda mode: smp.losses.LovaszLoss("multiclass", ignore_index=IGNORE)),
    ("lovasz_softmax", {"per_image": True}, lambda mode: smp.losses.LovaszLoss("multiclass", per_image=True, ignore_index=IGNORE)),
]  # fmt: skip


@pytest.mark.parametrize("name,params,factory", SMP_EQUIVALENTS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("c", [1, 5], ids=["binary", "C5"])
def test_region_and_lovasz_softmax_losses_match_smp(name, params, factory, c):
    if name == "lovasz_softmax" and c == 1:
        pytest.skip("smp's Lovász-Softmax has no binary form (its C=1 branch scores label 0)")
    logits, target = batch(c, b=3, h=16, w=16)
    mode = "binary" if c == 1 else "multiclass"
    ours, our_grad = value_and_grad(make(name, c, **params), logits, target)
    ref, ref_grad = value_and_grad(factory(mode), logits, target)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    assert torch.allclose(our_grad, ref_grad, atol=1e-5)


@pytest.mark.parametrize("per_image", [False, True])
def test_binary_focal_and_lovasz_hinge_match_smp(per_image):
    logits, target = batch(1, b=3, h=16, w=16)
    hinge = make("lovasz_hinge", 1, per_image=per_image)(logits, target)
    assert hinge.item() == pytest.approx(
        smp.losses.LovaszLoss("binary", per_image=per_image, ignore_index=IGNORE)(logits, target).item(), abs=1e-5
    )
    focal = make("focal", 1)(logits, target)
    ref = smp.losses.FocalLoss("binary", alpha=0.25, gamma=2.0, ignore_index=IGNORE)(logits, target)
    assert focal.item() == pytest.approx(ref.item(), abs=1e-6)


def test_multiclass_lovasz_hinge_is_the_mean_of_one_vs_rest_smp_hinges():
    logits, target = batch(5, b=2, h=16, w=16)
    ours = make("lovasz_hinge", 5)(logits, target)
    valid = target != IGNORE
    per_class = [
        smp.losses.LovaszLoss("binary", per_image=False)(logits[:, k][valid], (target[valid] == k).long())
        for k in range(5)
    ]
    assert ours.item() == pytest.approx(torch.stack(per_class).mean().item(), abs=1e-5)


# --- independent references: by hand from LOSSES.md ---------------------------------------------


def test_worked_dice_example_of_document_004_with_its_arithmetic_corrected():
    probs = torch.tensor(
        [[0.5322, 0.4932, 0.1764], [0.3107, 0.5297, 0.1604], [0.3841, 0.3537, 0.3574], [0.3323, 0.8301, 0.6436]]
    )
    labels = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]])
    # |X∩Y| = 2.9012, |X| = 5.1038, |Y| = 6 (the document says 8), Dice = 6.8024 / 12.1038
    loss = build_loss("dice", num_classes=1, smooth=1.0)
    logits = torch.logit(probs.double()).float()[None, None]
    dice = 1 - loss(logits, labels[None])
    assert dice.item() == pytest.approx(0.5620, abs=5e-5)
    assert dice.item() == pytest.approx(6.8024 / 12.1038, abs=2e-5)


def _valid_flat(logits, target):
    c = logits.shape[1]
    x = logits.movedim(1, -1).reshape(-1, c)
    t = target.reshape(-1)
    keep = t != IGNORE
    return x[keep], t[keep]


def test_ce_and_weighted_ce_match_torch_cross_entropy():
    logits, target = batch(5)
    ce = make("ce", 5)(logits, target)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=IGNORE).item(), abs=1e-6)
    counts = torch.tensor(CLASS_COUNTS[5])
    w = (counts.sum() - counts) / counts.sum()  # w_c = (N - N_c)/N
    wce = make("weighted_ce", 5)(logits, target)
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE)
    assert wce.item() == pytest.approx(ref.item(), abs=1e-6)

    x, t = _valid_flat(*batch(1))
    bce = make("ce", 1)(*batch(1))
    assert bce.item() == pytest.approx(F.binary_cross_entropy_with_logits(x[:, 0], t.float()).item(), abs=1e-6)


def test_multiclass_focal_by_hand():
    logits, target = batch(5)
    alpha = [0.1, 0.2, 0.3, 0.2, 0.2]
    ours = make("focal", 5, gamma=2.0, alpha=alpha)(logits, target)
    x, t = _valid_flat(logits, target)
    terms = []
    for row, y in zip(x.tolist(), t.tolist()):
        p = math.exp(row[y]) / sum(math.exp(v) for v in row)
        terms.append(-alpha[y] * (1 - p) ** 2 * math.log(p))
    assert ours.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def _stats_by_hand(probs, onehot):
    """Per-class TP, FP, FN from flat [P, K] probabilities and one-hot targets."""
    tp = (probs * onehot).sum(0)
    return tp, (probs * (1 - onehot)).sum(0), ((1 - probs) * onehot).sum(0)


def _probs_onehot(logits, target):
    x, t = _valid_flat(logits, target)
    if logits.shape[1] == 1:
        return torch.sigmoid(x).double(), t[:, None].double()
    return torch.softmax(x.double(), 1), F.one_hot(t, logits.shape[1]).double()


def test_generalized_dice_by_hand_including_an_absent_class():
    logits, target = batch(5)
    target[target == 2] = 0
    ours = make("generalized_dice", 5)(logits, target)
    p, g = _probs_onehot(logits, target)
    tp, fp, fn = _stats_by_hand(p, g)
    n = g.sum(0)
    w = [1 / v**2 if v > 0 else None for v in n.tolist()]
    w_max = max(v for v in w if v is not None)
    w = torch.tensor([v if v is not None else w_max for v in w], dtype=torch.float64)
    ref = 1 - (2 * (w * tp).sum() + 1e-5) / ((w * (2 * tp + fp + fn)).sum() + 1e-5)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


@both_modes
def test_bce_dice_and_combo_by_hand(c):
    logits, target = batch(c)
    p, g = _probs_onehot(logits, target)
    tp, fp, fn = _stats_by_hand(p, g)
    dice_loss = 1 - ((2 * tp + 1) / (2 * tp + fp + fn + 1)).mean()
    ce = -(torch.log((p * g).sum(1)) if c > 1 else torch.log(torch.where(g[:, 0] > 0, p[:, 0], 1 - p[:, 0]))).mean()
    assert make("bce_dice", c)(logits, target).item() == pytest.approx((ce + dice_loss).item(), rel=1e-5)
    a, b = 0.6, 0.8
    wce = -(b * g * torch.log(p) + (1 - b) * (1 - g) * torch.log(1 - p)).mean()
    combo = make("combo", c, alpha=a, beta=b)(logits, target)
    assert combo.item() == pytest.approx((a * wce + (1 - a) * dice_loss).item(), rel=1e-5)


@both_modes
def test_focal_dice_and_exp_log_by_hand(c):
    logits, target = batch(c)
    p, g = _probs_onehot(logits, target)
    tp, fp, fn = _stats_by_hand(p, g)
    pt = (p * g).sum(1) if c > 1 else torch.where(g[:, 0] > 0, p[:, 0], 1 - p[:, 0])
    _, t = _valid_flat(logits, target)

    a, b, lam = 0.7, 0.3, 0.5
    region = (1 - tp / (tp + a * fn + b * fp)).mean()
    focal = (-((1 - pt) ** 2) * torch.log(pt)).mean()
    ours = make("focal_dice", c, alpha=a, beta=b, lam=lam)(logits, target)
    assert ours.item() == pytest.approx((region + lam * focal).item(), rel=1e-5)

    f = torch.tensor(CLASS_COUNTS[c], dtype=torch.float64)
    w = (f.sum() / f) ** 0.5
    dice = (2 * tp + 1) / (2 * tp + fp + fn + 1)
    ref = 0.8 * ((-torch.log(dice)) ** 0.3).mean() + 0.2 * (w[t] * (-torch.log(pt)) ** 0.3).mean()
    assert make("exp_log", c)(logits, target).item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("keep_ratio,min_kept", [(0.25, 1), (0.01, 10), (1.0, 1)])
def test_ohem_keeps_the_hardest_pixels(keep_ratio, min_kept):
    logits, target = batch(5)
    ours = make("ohem", 5, keep_ratio=keep_ratio, min_kept=min_kept)(logits, target)
    pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")[target != IGNORE]
    k = min(len(pixel), max(min_kept, math.ceil(keep_ratio * len(pixel))))
    assert ours.item() == pytest.approx(pixel.sort(descending=True).values[:k].mean().item(), rel=1e-6)


def test_tversky_reduces_to_dice_and_jaccard():
    logits, target = batch(5)
    tv = make("tversky", 5, alpha=0.5, beta=0.5, smooth=0.0)(logits, target)
    assert tv.item() == pytest.approx(make("dice", 5, smooth=0.0)(logits, target).item(), abs=1e-6)
    tv = make("tversky", 5, alpha=0.5, beta=0.5, smooth=0.5)(logits, target)
    assert tv.item() == pytest.approx(make("dice", 5, smooth=1.0)(logits, target).item(), abs=1e-6)
    tv = make("tversky", 5, alpha=1.0, beta=1.0, smooth=1.0)(logits, target)
    assert tv.item() == pytest.approx(make("iou", 5)(logits, target).item(), abs=1e-6)


def test_lovasz_grad_by_hand():
    g = torch.tensor([1.0, 0.0, 1.0, 0.0])
    # G=2: I = [1,1,0,0], U = [2,3,3,4], J = [1/2, 2/3, 1, 1]
    expected = torch.tensor([0.5, 2 / 3 - 0.5, 1 - 2 / 3, 0.0])
    assert torch.allclose(lovasz_grad(g), expected)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.0])
def test_softmax_focal_hand_written_backward_matches_autograd(gamma):
    from lossbench.losses.functional import _SoftmaxFocal

    g = torch.Generator().manual_seed(0)
    z = (torch.randn(2, 5, 30, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = torch.randint(0, 5, (2, 30), generator=g)
    assert torch.autograd.gradcheck(lambda z: _SoftmaxFocal.apply(z, y, gamma), (z,))
    log_pt = torch.log_softmax(z, 1).gather(1, y[:, None])[:, 0]
    reference = -((1 - log_pt.exp()) ** gamma) * log_pt
    assert torch.allclose(_SoftmaxFocal.apply(z, y, gamma), reference)


def test_focal_uses_per_pixel_pt_not_the_batch_mean():
    # Document 002 computed p_t = exp(-mean CE): one scalar for every pixel. Per pixel it differs.
    logits = torch.tensor([[[[4.0, -4.0]]]])  # one easy positive, one hard positive
    target = torch.tensor([[[1, 1]]])
    ours = build_loss("focal", num_classes=1, gamma=2.0, alpha=None)(logits, target)
    p = torch.sigmoid(torch.tensor([4.0, -4.0]))
    per_pixel = (-((1 - p) ** 2) * torch.log(p)).mean()
    assert ours.item() == pytest.approx(per_pixel.item(), rel=1e-6)
    bce = -torch.log(p).mean()
    assert abs(ours.item() - ((1 - torch.exp(-bce)) ** 2 * bce).item()) > 0.1


def test_iou_loss_is_non_negative_and_zero_when_perfect():
    # Document 003 returned −IoU; ours is 1 − IoU, ≥ 0 and exactly 0 for a perfect prediction.
    target = torch.tensor([[[0, 1], [2, 2]]])
    loss = build_loss("iou", num_classes=3)
    assert loss(perfect_logits(target, 3, margin=50), target).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(torch.randn(1, 3, 2, 2), target).item() >= 0


# --- the losses whose gradient is written out by hand: the same gradient as autograd's ---------------


def _grad_of(fn, logits):
    x = logits.clone().requires_grad_(True)
    v = fn(x)
    v.backward()
    return v.detach(), x.grad


def _same(ours, reference, logits, rel=1e-5):
    """Value and gradient of ``ours`` against autograd of ``reference``, float64 autograd being the truth:
    ours must be as close to it as float32 autograd of the formula (at very confident pixels neither
    is exact: ``1 − p`` loses digits)."""
    v1, g1 = _grad_of(ours, logits)
    v64, g64 = _grad_of(reference, logits.double())
    _, g32 = _grad_of(reference, logits)
    assert v1.item() == pytest.approx(v64.item(), rel=rel)
    ours_err, autograd_err = (g1.double() - g64).abs().max(), (g32.double() - g64).abs().max()
    assert ours_err <= 2 * autograd_err + 1e-9, (ours_err, autograd_err)


@pytest.mark.parametrize("ignore_frac", [0.0, 0.2])
def test_hand_written_gradients_equal_autograd_of_the_formula(ignore_frac):
    logits, target = batch(5, ignore_frac=ignore_frac, h=12, w=10)
    logits = logits * 4  # confident pixels too, where log(1 − p) is capped
    valid = target != IGNORE
    labels = target.masked_fill(~valid, 0)

    def combo_ref(z, beta=0.5):
        logp = torch.log_softmax(z, 1)
        log1mp = torch.log(-torch.expm1(logp.clamp_max(math.log1p(-1e-7))))
        g = F.one_hot(labels, 5).movedim(-1, 1).float()
        wce = -(beta * g * logp + (1 - beta) * (1 - g) * log1mp).mean(1)
        p = torch.softmax(z, 1) * valid.unsqueeze(1)
        g = g * valid.unsqueeze(1)
        dims = (0, *range(2, z.ndim))
        tp = (p * g).sum(dims)
        dice = ((2 * tp + 1) / (p.sum(dims) + g.sum(dims) + 1)).mean()
        return 0.5 * wce[valid].mean() + 0.5 * (1 - dice)

    combo = make("combo", 5)
    _same(lambda z: combo(z, target), combo_ref, logits)

    binary_logits, binary_target = batch(1, ignore_frac=ignore_frac, h=12, w=10)
    for gamma in (2.0, 0.5):
        ours = make("focal", 1, gamma=gamma, alpha=0.25)
        smp_focal = smp.losses.FocalLoss("binary", alpha=0.25, gamma=gamma, ignore_index=IGNORE)
        _same(lambda z: ours(z, binary_target), lambda z: smp_focal(z, binary_target), binary_logits * 4)

    ohem = make("ohem", 5, keep_ratio=0.3)
    pixel = lambda z: F.cross_entropy(z, target, ignore_index=IGNORE, reduction="none")[valid]  # noqa: E731
    k = math.ceil(0.3 * int(valid.sum()))
    _same(lambda z: ohem(z, target), lambda z: pixel(z).sort(descending=True).values[:k].mean(), logits)
