"""The losses beyond the fourteen, against their independent references: MONAI and smp where they
define the same thing, the paper's formula computed by hand otherwise — value and gradient to 1e-5.
The call contract (ignore_index, absent classes, all-ignored batches, extreme logits, bf16) is
tested for them in test_losses.py, which runs over every registered loss."""

from __future__ import annotations

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from monai.losses import AsymmetricUnifiedFocalLoss, BoundaryLoss, HausdorffDTLoss, SoftDiceclDiceLoss
from scipy.ndimage import distance_transform_edt

from lossbench.losses import build_loss
from lossbench.losses.distance import _envelope, boundary_distances, squared_edt

TOL = {"rel": 1e-5, "abs": 1e-6}


def blobs(c: int, b: int = 3, h: int = 24, w: int = 20, seed: int = 0, d: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and a target of rectangles (boxes in volumes of depth ``d``: classes with real boundaries), one
    image without the rarest class."""
    g = torch.Generator().manual_seed(seed)
    spatial = (h, w) if d is None else (d, h, w)
    logits = torch.randn(b, c, *spatial, generator=g)
    target = torch.zeros(b, *spatial, dtype=torch.long)
    n = max(c, 2)
    for i in range(b):
        for k in range(1, n):
            if i == b - 1 and k == n - 1:
                continue  # absent from this image
            y, x = torch.randint(0, h - 6, (1,), generator=g).item(), torch.randint(0, w - 6, (1,), generator=g).item()
            if d is None:
                target[i, y : y + 3 + k, x : x + 4] = k
            else:
                z = torch.randint(0, d - 3, (1,), generator=g).item()
                target[i, z : z + 2 + k % 2, y : y + 3 + k, x : x + 4] = k
    return logits, target


dims = pytest.mark.parametrize("d", [None, 6], ids=["2d", "3d"])


def grads(fn, logits):
    x = logits.clone().requires_grad_(True)
    v = fn(x)
    v.backward()
    return v.detach(), x.grad


def probs_and_onehot(logits, target):
    if logits.shape[1] == 1:
        return torch.sigmoid, target.unsqueeze(1).float()
    return (lambda z: torch.softmax(z, 1)), F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()


def assert_same(ours_fn, ref_fn, logits):
    v1, g1 = grads(ours_fn, logits)
    v2, g2 = grads(ref_fn, logits)
    assert v1.item() == pytest.approx(v2.item(), **TOL)
    assert torch.allclose(g1, g2, rtol=1e-5, atol=1e-7), (g1 - g2).abs().max()


both = pytest.mark.parametrize("c", [1, 4], ids=["binary", "C4"])


# --- MONAI and smp define the same thing -------------------------------------------------------------


@pytest.mark.parametrize("c", [1, 2], ids=["binary", "C2"])
@dims
def test_unified_focal_equals_monais_asymmetric_unified_focal_loss(c, d):
    logits, target = blobs(c, d=d)
    act, onehot = probs_and_onehot(logits, target)
    ours = build_loss("unified_focal", num_classes=c)
    ref = AsymmetricUnifiedFocalLoss(weight=0.5, delta=0.6, gamma=0.5)  # takes probabilities
    assert_same(lambda z: ours(z, target), lambda z: ref(act(z), onehot), logits)


@both
@dims
def test_hausdorff_dt_equals_monais_hausdorff_dt_loss(c, d):
    logits, target = blobs(c, d=d)
    act, onehot = probs_and_onehot(logits * 3, target)
    ours = build_loss("hausdorff_dt", num_classes=c)
    ref = HausdorffDTLoss(alpha=2.0, sigmoid=c == 1, softmax=c > 1)
    assert_same(lambda z: ours(z, target), lambda z: ref(z, onehot), logits * 3)


@both
@dims
def test_cldice_equals_monais_soft_dice_cldice_loss(c, d):
    logits, target = blobs(c, d=d)
    _, onehot = probs_and_onehot(logits, target)
    ours = build_loss("cldice", num_classes=c)
    ref = SoftDiceclDiceLoss(iter_=3, alpha=0.5, smooth_nr=1.0, smooth_dr=1.0, sigmoid=c == 1, softmax=c > 1)
    assert_same(lambda z: ours(z, target), lambda z: ref(z, onehot), logits)


@both
@dims
def test_boundary_term_equals_monais_boundary_loss_and_alpha_mixes_in_generalized_dice(c, d):
    logits, target = blobs(c, d=d)
    _, onehot = probs_and_onehot(logits, target)
    pure = build_loss("boundary", num_classes=c, alpha=0.0, alpha_min=0.0)
    ref = BoundaryLoss(include_background=False, sigmoid=c == 1, softmax=c > 1)
    assert_same(lambda z: pure(z, target), lambda z: ref(z, onehot), logits)

    mixed = build_loss("boundary", num_classes=c, alpha=0.7, alpha_min=0.0)
    gdl = build_loss("generalized_dice", num_classes=c)
    assert_same(lambda z: mixed(z, target), lambda z: 0.7 * gdl(z, target) + 0.3 * ref(z, onehot), logits)


def test_mcc_equals_smps_mcc_loss_binary_and_one_vs_rest_per_class():
    logits, target = blobs(1)
    ref = smp.losses.MCCLoss()
    ours = build_loss("mcc", num_classes=1)
    assert_same(lambda z: ours(z, target), lambda z: ref(torch.sigmoid(z), target.unsqueeze(1).float()), logits)

    logits, target = blobs(4)
    ours = build_loss("mcc", num_classes=4)

    def one_vs_rest(z):
        p = torch.softmax(z, 1)
        return torch.stack([ref(p[:, k], (target == k).float()) for k in range(4)]).mean()

    assert_same(lambda z: ours(z, target), one_vs_rest, logits)


# --- the paper's formula, by hand -----------------------------------------------------------------------


def counts(p, g):
    tp = (p * g).sum((0, 2, 3))
    return tp, p.sum((0, 2, 3)) - tp, g.sum((0, 2, 3)) - tp


@both
def test_focal_tversky_and_log_cosh_dice_by_hand(c):
    logits, target = blobs(c)
    act, onehot = probs_and_onehot(logits, target)

    def focal_tversky(z):
        tp, fp, fn = counts(act(z), onehot)
        ti = (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1)
        return ((1 - ti) ** 0.75).mean()

    def log_cosh_dice(z):
        tp, fp, fn = counts(act(z), onehot)
        dice_loss = 1 - ((2 * tp + 1) / (2 * tp + fp + fn + 1)).mean()
        return torch.log(torch.cosh(dice_loss))

    assert_same(lambda z: build_loss("focal_tversky", num_classes=c)(z, target), focal_tversky, logits)
    assert_same(lambda z: build_loss("log_cosh_dice", num_classes=c)(z, target), log_cosh_dice, logits)


@both
def test_sensitivity_specificity_by_hand(c):
    logits, target = blobs(c)
    act, onehot = probs_and_onehot(logits, target)

    def ss(z):
        sq = (onehot - act(z)) ** 2
        sens = (sq * onehot).sum((0, 2, 3)) / (onehot.sum((0, 2, 3)) + 1e-5)
        spec = (sq * (1 - onehot)).sum((0, 2, 3)) / ((1 - onehot).sum((0, 2, 3)) + 1e-5)
        return (0.05 * sens + 0.95 * spec).mean()

    assert_same(lambda z: build_loss("sensitivity_specificity", num_classes=c)(z, target), ss, logits)


@both
def test_recall_ce_weighs_each_class_by_its_batch_miss_rate(c):
    logits, target = blobs(c)
    target[0, :2] = 255  # ignored pixels: neither counted in recall nor in the mean
    valid = target != 255
    labels = target.clamp_max(max(c, 2) - 1) * valid
    pred = (logits[:, 0] > 0).long() if c == 1 else logits.argmax(1)
    weight = torch.zeros(max(c, 2))
    for k in range(max(c, 2)):
        of_k = valid & (labels == k)
        if of_k.any():
            weight[k] = ((pred != k) & of_k).sum() / of_k.sum()  # 1 − recall, from numbers counted here

    def by_hand(z):
        if c == 1:
            nll = F.binary_cross_entropy_with_logits(z[:, 0], labels.float(), reduction="none")
        else:
            nll = F.cross_entropy(z, labels, reduction="none")
        return (weight[labels] * nll)[valid].mean()

    assert_same(lambda z: build_loss("recall_ce", num_classes=c, ignore_index=255)(z, target), by_hand, logits)
    assert 0 < weight.max() <= 1


def test_a_sum_recipe_is_the_weighted_sum_of_its_terms_with_their_params():
    logits, target = blobs(4)
    recipe = build_loss("sum", num_classes=4, terms=[{"name": "ce", "weight": 1}, {"name": "dice", "weight": 3, "params": {"smooth": 0.5}}])
    ce, dice = build_loss("ce", num_classes=4), build_loss("dice", num_classes=4, smooth=0.5)
    assert_same(lambda z: recipe(z, target), lambda z: ce(z, target) + 3 * dice(z, target), logits)
    freq = [100.0, 10.0, 5.0, 1.0]
    with_freq = build_loss("sum", num_classes=4, class_frequencies=freq, terms=[{"name": "exp_log"}])
    assert with_freq(logits, target).item() == pytest.approx(build_loss("exp_log", num_classes=4, class_frequencies=freq)(logits, target).item())


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ([], "needs terms: a list of"),
        ([{"name": "dcie"}], r"term 1: unknown loss 'dcie'; known losses \(closest first\): dice"),
        ([{"name": "ce"}, {"name": "dice", "params": {"smoth": 1}}], "term 2: loss 'dice' got unknown parameter"),
        ([{"name": "ce", "weight": "3"}], r"term 1 \(ce\): weight must be a number"),
        ([{"name": "ce", "wieght": 3}], r"term 1 \(ce\) has unknown key\(s\) wieght"),
    ],
)
def test_a_bad_recipe_is_one_sentence(terms, message):
    with pytest.raises(ValueError, match=message):
        build_loss("sum", num_classes=4, terms=terms)


def test_a_recipe_in_the_config_is_checked_hashed_and_labelled_like_any_loss(tmp_path):
    from helpers.cli import SMOKE

    from lossbench.config import ConfigError, load_config
    from lossbench.identity import config_hash, run_config
    from lossbench.plan import resolve_losses

    entry = "{name: sum, label: ce_dice_1_3, params: {terms: [{name: ce, weight: 1}, {name: dice, weight: 3}]}}"
    cfg = load_config(SMOKE, [f"losses=[ce, {entry}]"])
    (ce, recipe) = resolve_losses(cfg, num_classes=4)
    assert recipe.label == "ce_dice_1_3"
    other = load_config(SMOKE, [f"losses=[{entry.replace('weight: 3', 'weight: 2')}]"])
    (recipe2,) = resolve_losses(other, num_classes=4)
    assert config_hash(run_config(cfg, recipe, 0)) != config_hash(run_config(other, recipe2, 0))  # weights are identity
    bad = load_config(SMOKE, ["losses=[{name: sum, label: broken, params: {terms: [{name: dcie}]}}]"])
    with pytest.raises((ConfigError, ValueError), match="broken.*term 1: unknown loss 'dcie'"):
        resolve_losses(bad, num_classes=4)


# --- the training-progress hook ------------------------------------------------------------------------


def test_boundary_alpha_follows_the_schedule_set_each_epoch_also_inside_a_recipe():
    loss = build_loss("boundary", num_classes=4)
    assert loss.alpha == 1.0
    loss.set_epoch(10)
    assert loss.alpha == pytest.approx(0.9)
    loss.set_epoch(500)
    assert loss.alpha == 0.01  # the floor
    recipe = build_loss("sum", num_classes=4, terms=[{"name": "boundary", "params": {"alpha_step": 0.1}}, {"name": "ce"}])
    recipe.set_epoch(3)
    assert recipe.terms[0].alpha == pytest.approx(0.7)


# --- exact distance transforms ---------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.002, 0.05, 0.5, 0.97])
def test_the_torch_distance_transform_is_scipys_exactly(density):
    g = torch.Generator().manual_seed(int(density * 1000))
    for h, w in [(1, 1), (1, 17), (23, 1), (31, 29), (64, 48)]:
        mask = torch.rand(4, h, w, generator=g) < density
        got = squared_edt(mask)
        for i in range(4):
            if mask[i].any():
                want = distance_transform_edt(~mask[i].numpy()) ** 2
                np.testing.assert_allclose(got[i].numpy(), want, rtol=0, atol=1e-3)
            else:
                assert torch.isinf(got[i]).all()


def test_both_boundary_distance_paths_agree_and_blank_images_get_zeros():
    _, target = blobs(4, b=4, h=40, w=36)
    mask = target.unsqueeze(1) == torch.arange(4).view(1, 4, 1, 1)
    mask[0, 1] = False  # empty
    mask[1, 2] = True  # full
    out_cpu, in_cpu = boundary_distances(mask)  # SciPy on the CPU
    sq_out, sq_in = squared_edt(mask), squared_edt(~mask)  # the GPU path's algorithm, here on the CPU
    defined = ~((~mask).flatten(-2).all(-1) | mask.flatten(-2).all(-1))
    for (b, k) in defined.nonzero().tolist():
        assert torch.allclose(out_cpu[b, k], sq_out[b, k].sqrt(), atol=1e-5)
        assert torch.allclose(in_cpu[b, k], sq_in[b, k].sqrt(), atol=1e-5)
    assert (out_cpu[0, 1] == 0).all() and (in_cpu[1, 2] == 0).all()
    row = torch.tensor([[float("inf"), 4.0, float("inf"), 0.0, float("inf")]], dtype=torch.float64)
    assert _envelope(row).tolist() == [[5.0, 4.0, 1.0, 0.0, 1.0]]  # min_q (x − q)² + f(q), by hand


@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 1.0), (2.5, 0.7, 1.3)], ids=["voxels", "unit", "anisotropic"])
def test_the_3d_distance_transform_is_scipys_with_spacing(spacing):
    """The GPU transform's three passes (run here on the CPU) and the SciPy path, held to SciPy's ``sampling=``."""
    g = torch.Generator().manual_seed(3)
    for shape in [(1, 1, 1), (5, 1, 7), (9, 11, 6), (16, 12, 14)]:
        mask = torch.rand(3, *shape, generator=g) < 0.03
        mask[0] = False
        got = squared_edt(mask, dims=3, spacing=spacing)
        out, ins = boundary_distances(mask, dims=3, spacing=spacing)
        for i in range(3):
            m = mask[i].numpy()
            if not m.any():
                assert torch.isinf(got[i]).all() and (out[i] == 0).all()
                continue
            want = distance_transform_edt(~m, sampling=spacing)
            np.testing.assert_allclose(got[i].sqrt().numpy(), want, rtol=1e-6, atol=1e-5)
            if not m.all():
                np.testing.assert_allclose(out[i].numpy(), want, rtol=1e-6, atol=1e-5)
                np.testing.assert_allclose(ins[i].numpy(), distance_transform_edt(m, sampling=spacing), rtol=1e-6, atol=1e-5)


def test_distance_losses_measure_in_millimetres_with_the_voxel_spacing():
    """Boundary loss with ``spacing`` is Kervadec's φ with ``sampling=resolution``; Hausdorff-DT's distances scale too."""
    logits, target = blobs(3, d=6)
    spacing = (3.0, 0.8, 1.2)
    ours = build_loss("boundary", num_classes=3, alpha=0.0, alpha_min=0.0, spacing=list(spacing))(logits, target)
    p = torch.softmax(logits, 1)
    phi = torch.zeros_like(p)
    for b in range(target.shape[0]):
        for k in (1, 2):
            pos = (target[b] == k).numpy()
            if pos.any():
                neg = ~pos
                phi[b, k] = torch.from_numpy(distance_transform_edt(neg, sampling=spacing) * neg
                                             - (distance_transform_edt(pos, sampling=spacing) - 1) * pos).float()
    assert ours.item() == pytest.approx((phi[:, 1:] * p[:, 1:]).mean().item(), rel=1e-5)
    unit = build_loss("hausdorff_dt", num_classes=3)(logits * 3, target)
    doubled = build_loss("hausdorff_dt", num_classes=3, alpha=2.0, spacing=[2.0, 2.0, 2.0])(logits * 3, target)
    assert doubled.item() == pytest.approx(4 * unit.item(), rel=1e-5)  # every distance × 2, squared
    with pytest.raises(ValueError, match=r"spacing \[1.0, 1.0\] \(2 axes\) but its input has 3 spatial axes"):
        build_loss("hausdorff_dt", num_classes=3, spacing=[1, 1])(logits, target)


@pytest.mark.parametrize("ignore", [None, 255])
@pytest.mark.parametrize("d", [2, 3])
def test_the_gpu_path_of_every_loss_equals_its_cpu_path_in_value_and_gradient(monkeypatch, ignore, d):
    # issue 28: on a GPU the per-class sums are a one-hot product and plain reductions, on a CPU scattered into
    # bins; which one runs is the device's choice (functional.cpu_kernels). Forced both ways on this CPU,
    # every registered loss gives the same value and gradient (float32), with ignored pixels and absent classes.
    from lossbench.losses import functional, list_losses

    g = torch.Generator().manual_seed(d)
    spatial = (12, 16) if d == 2 else (4, 8, 8)
    for c in (1, 5):
        logits = torch.randn(3, c, *spatial, generator=g) * 3
        target = torch.randint(0, 2 if c == 1 else c - 1, (3, *spatial), generator=g)  # class c-1 absent
        targets = [target]
        if ignore is not None:
            target[0, :2] = ignore
            targets.append(torch.full_like(target, ignore))  # an all-ignored batch
        for name, target in ((n, t) for n in list_losses() for t in targets):
            kwargs = {"class_frequencies": [1.0 + i for i in range(max(c, 2))]} if name in ("weighted_ce", "exp_log") else {}
            if name == "sum":
                kwargs = {"terms": [{"name": "ce", "weight": 1}, {"name": "dice", "weight": 2}]}
            try:
                loss = build_loss(name, num_classes=c, ignore_index=ignore, **kwargs)
            except ValueError:
                continue  # a multi-class loss asked for binary, or the reverse
            values = []
            for scatter in (True, False):
                monkeypatch.setattr(functional, "cpu_kernels", lambda t, s=scatter: s)
                x = logits.clone().requires_grad_(True)
                value = loss(x, target)
                value.backward()
                values.append((value.detach(), x.grad))
            (v_cpu, g_cpu), (v_gpu, g_gpu) = values
            torch.testing.assert_close(v_gpu, v_cpu, rtol=1e-5, atol=1e-6, msg=f"{name} C={c}")
            torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-4, atol=1e-7, msg=f"{name} C={c} gradient")


def test_lovasz_rows_per_call_follow_the_gpu_chunk_not_the_host_threads(monkeypatch):
    # issue 35: on the GPU path the rows per call scaled with the CPU threads (16 threads: 67 M elements a call at
    # 512², four times LOVASZ_CHUNK_GPU); on a CPU at least one row per thread stays
    import torch

    from lossbench.losses import functional, lovasz

    logits, target = torch.randn(2, 19, 64, 64), torch.randint(0, 19, (2, 64, 64))
    prep = functional.Prepared(logits, target, None, True)
    values = torch.softmax(logits, 1).reshape(2, 19, -1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    monkeypatch.setattr(lovasz, "LOVASZ_CHUNK_GPU", 2 * 64 * 64 * 2)  # two rows a call on the "GPU"
    monkeypatch.setattr(functional, "cpu_kernels", lambda t: False)
    rows = [r.shape[0] for r, *_ in lovasz._row_chunks(prep, values, per_image=False)]
    assert max(rows) == 2 and sum(rows) == 19
    monkeypatch.setattr(functional, "cpu_kernels", lambda t: True)
    rows = [r.shape[0] for r, *_ in lovasz._row_chunks(prep, values, per_image=False)]
    assert rows[0] >= 16  # one row per thread at least
