"""The losses' speed and memory beside their references (smp, MONAI, kornia, torch) and the softmax floor."""

from __future__ import annotations

import ctypes
import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lossbench.losses import build_loss

REGION = ("dice", "iou", "tversky", "generalized_dice")
FLOOR_BOUND = (*REGION, "combo", "ohem")  # within 3× the softmax floor (issue 12's debt for combo and ohem)
MEMORY_RESOLUTION_MIB = 1.0  # peak-RSS readings move by about this much between identical calls


@dataclass
class Case:
    """One implementation of one definition: ``fn(logits, target) -> scalar``."""

    definition: str
    impl: str  # "lossbench", "smp", "monai", "kornia", "torch"
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    same: bool = True  # computes the same definition as lossbench's (else shown for information)
    binary: bool = False  # runs on C = 1 logits
    note: str = ""


def _freqs(c: int) -> list[float]:
    return [2.0 ** -(i % 6) for i in range(max(c, 2))]


def loss_cases(c: int, ignore_index: int, device: torch.device | str = "cpu") -> list[Case]:
    """Our losses and every reference for the same definition (all built once, outside the timing), every
    tensor they hold on ``device`` (the inputs' device: a CPU tensor handed to a CUDA kernel is an error)."""
    import segmentation_models_pytorch as smp

    ii = ignore_index
    ours = lambda name, c=c, **kw: build_loss(name, num_classes=c, ignore_index=ii, **kw)  # noqa: E731
    weight = (1.0 - torch.tensor(_freqs(c)) / sum(_freqs(c))).to(device)
    cases = [
        Case("ce", "lossbench", ours("ce")),
        Case("ce", "torch", lambda x, t: F.cross_entropy(x, t, ignore_index=ii)),
        Case("weighted_ce", "lossbench", ours("weighted_ce", class_frequencies=_freqs(c))),
        Case("weighted_ce", "torch", lambda x, t: F.cross_entropy(x, t, weight=weight, ignore_index=ii)),
        Case("focal", "lossbench", ours("focal")),
        Case("focal", "smp", smp.losses.FocalLoss("multiclass", ignore_index=ii), same=False,
             note="smp's multi-class focal is a sum of one-vs-rest sigmoid focal losses"),
        Case("dice", "lossbench", ours("dice")),
        Case("dice", "smp", smp.losses.DiceLoss("multiclass", smooth=0.5, ignore_index=ii)),
        Case("iou", "lossbench", ours("iou")),
        Case("iou", "smp", smp.losses.JaccardLoss("multiclass", smooth=1.0, ignore_index=ii)),
        Case("tversky", "lossbench", ours("tversky")),
        Case("tversky", "smp", smp.losses.TverskyLoss("multiclass", alpha=0.3, beta=0.7, smooth=1.0, ignore_index=ii)),
        Case("generalized_dice", "lossbench", ours("generalized_dice")),
        Case("bce_dice", "lossbench", ours("bce_dice")),
        Case("focal_dice", "lossbench", ours("focal_dice")),
        Case("exp_log", "lossbench", ours("exp_log", class_frequencies=_freqs(c))),
        Case("combo", "lossbench", ours("combo")),
        Case("ohem", "lossbench", ours("ohem")),
        Case("lovasz_softmax", "lossbench", ours("lovasz_softmax")),
        Case("lovasz_softmax", "smp", smp.losses.LovaszLoss("multiclass", ignore_index=ii)),
        Case("lovasz_softmax per image, all classes", "lossbench", ours("lovasz_softmax", per_image=True, classes="all")),
        Case("lovasz_hinge (binary)", "lossbench", ours("lovasz_hinge", c=1), binary=True),
        Case("lovasz_hinge (binary)", "smp", smp.losses.LovaszLoss("binary", per_image=False, ignore_index=ii), binary=True),
        Case("lovasz_hinge (binary, per image)", "lossbench", ours("lovasz_hinge", c=1, per_image=True), binary=True),
        Case("focal (binary)", "lossbench", ours("focal", c=1), binary=True),
        Case("focal (binary)", "smp", smp.losses.FocalLoss("binary", alpha=0.25, ignore_index=ii), binary=True,
             note="smp with ignore_index masks every pixel (its slow path)"),
        Case("focal (binary)", "smp", smp.losses.FocalLoss("binary", alpha=0.25), binary=True,
             note="smp without ignore_index (its fast path; the target here has no ignored pixel)"),
        Case("focal_tversky", "lossbench", ours("focal_tversky")),
        Case("log_cosh_dice", "lossbench", ours("log_cosh_dice")),
        Case("sensitivity_specificity", "lossbench", ours("sensitivity_specificity")),
        Case("recall_ce", "lossbench", ours("recall_ce")),
        Case("mcc", "lossbench", ours("mcc")),
        Case("mcc (binary)", "lossbench", ours("mcc", c=1), binary=True),
        Case("mcc (binary)", "smp", lambda x, t, m=smp.losses.MCCLoss(): m(torch.sigmoid(x), t.float()), binary=True),
        Case("unified_focal (binary)", "lossbench", ours("unified_focal", c=1), binary=True),
        Case("boundary (BL term, α = 0)", "lossbench", ours("boundary", alpha=0.0, alpha_min=0.0)),
        Case("hausdorff_dt", "lossbench", ours("hausdorff_dt")),
        Case("cldice", "lossbench", ours("cldice")),
        Case("sum (ce×1 + dice×3)", "lossbench", ours("sum", terms=[{"name": "ce", "weight": 1}, {"name": "dice", "weight": 3}])),
    ]  # fmt: skip
    cases += _monai_cases(ii) + _kornia_cases()
    return cases


def _monai_cases(ignore_index: int) -> list[Case]:
    try:
        import monai.losses as ml
    except ImportError:
        return []

    def wrap(loss):  # MONAI wants a [B, 1, H, W] target and has no ignore index (the bench ignores nothing)
        return lambda x, t: loss(x, t.unsqueeze(1))

    kw = {"to_onehot_y": True, "softmax": True, "batch": True}
    return [
        Case("dice", "monai", wrap(ml.DiceLoss(**kw, smooth_nr=1.0, smooth_dr=1.0))),
        Case("tversky", "monai", wrap(ml.TverskyLoss(**kw, alpha=0.3, beta=0.7, smooth_nr=1.0, smooth_dr=1.0))),
        Case("generalized_dice", "monai", wrap(ml.GeneralizedDiceLoss(**kw, smooth_nr=1e-5, smooth_dr=1e-5))),
        Case("bce_dice", "monai", wrap(ml.DiceCELoss(**kw, smooth_nr=1.0, smooth_dr=1.0))),
        Case("unified_focal (binary)", "monai",
             lambda x, t, m=ml.AsymmetricUnifiedFocalLoss(weight=0.5, delta=0.6, gamma=0.5): m(torch.sigmoid(x), t.unsqueeze(1).float()),
             binary=True, note="MONAI's takes probabilities"),
        Case("boundary (BL term, α = 0)", "monai", wrap(ml.BoundaryLoss(include_background=False, to_onehot_y=True, softmax=True))),
        Case("hausdorff_dt", "monai", wrap(ml.HausdorffDTLoss(alpha=2.0, to_onehot_y=True, softmax=True))),
        Case("cldice", "monai", wrap(ml.SoftDiceclDiceLoss(iter_=3, alpha=0.5, to_onehot_y=True, softmax=True))),
        Case("sum (ce×1 + dice×3)", "monai", wrap(ml.DiceCELoss(**kw, smooth_nr=1.0, smooth_dr=1.0, lambda_ce=1.0, lambda_dice=3.0))),
    ]  # fmt: skip


def _kornia_cases() -> list[Case]:
    try:
        import kornia.losses as kl
    except ImportError:
        return []
    return [
        Case("focal", "kornia", lambda x, t: kl.focal_loss(x, t, alpha=None, gamma=2.0, reduction="mean") * x.shape[1],
             note="kornia's mean also divides by C; multiplied back"),
        Case("dice", "kornia", lambda x, t: kl.dice_loss(x, t, average="macro"), same=False,
             note="kornia's Dice is per image over the classes present, without smoothing"),
        Case("tversky", "kornia", lambda x, t: kl.tversky_loss(x, t, alpha=0.3, beta=0.7), same=False,
             note="kornia's Tversky is per image over the classes present, without smoothing"),
        Case("lovasz_softmax per image, all classes", "kornia", kl.lovasz_softmax_loss),
        Case("lovasz_hinge (binary, per image)", "kornia", kl.lovasz_hinge_loss, binary=True),
    ]  # fmt: skip


def floor_case() -> Case:
    return Case("floor: softmax + sum", "torch", lambda x, t: torch.softmax(x, 1).sum())


# --- measuring -----------------------------------------------------------------------------------


def _pin_malloc() -> None:
    """Pin glibc's mmap threshold so large freed buffers return to the OS (peak RSS stays honest).

    It makes allocation slower for the rest of the process: take every timing before calling it.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_memory_mib(fn: Callable[[], None], device: torch.device) -> float:
    """Rise of peak memory while ``fn`` runs: CUDA allocator peak, or the process's peak RSS on CPU."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return math.nan
    base = _rss_kib("VmRSS")
    fn()
    return max(_rss_kib("VmHWM") - base, 0) / 1024


class LossBench:
    """Inputs and cases at one shape (volumes ``[B, C, depth, size, size]`` when ``depth`` is given);
    :meth:`times` and :meth:`memory` measure them.

    At 3-D a reference that has no volume form (it raises on a 5-D input: smp's Lovász, kornia's
    per-image losses) is left out and listed in :attr:`no_volume_form`.
    """

    def __init__(self, b: int, c: int, size: int, device: torch.device, depth: int | None = None):
        g = torch.Generator().manual_seed(0)
        self.device = device
        spatial = (size, size) if depth is None else (depth, size, size)
        self.shapes = {False: (b, c, *spatial), True: (b, 1, *spatial)}
        self.logits = {k: torch.randn(*s, generator=g).to(device) for k, s in self.shapes.items()}
        self.targets = {
            False: torch.randint(0, c, (b, *spatial), generator=g).to(device),
            True: torch.randint(0, 2, (b, *spatial), generator=g).to(device),
        }
        self.cases = loss_cases(c, ignore_index=255, device=device) + [floor_case()]
        for case in self.cases:
            if isinstance(case.fn, torch.nn.Module):
                case.fn.to(device)
        self.no_volume_form: list[str] = []
        if depth is not None:
            kept = []
            for case in self.cases:
                try:
                    self.once(case)
                    kept.append(case)
                except Exception as e:  # noqa: BLE001 — a reference without a 3-D form
                    if case.impl == "lossbench":
                        raise  # every registered loss has one (the contract tests hold it)
                    self.no_volume_form.append(f"{case.impl} `{case.definition}` ({type(e).__name__})")
            self.cases = kept

    def once(self, case: Case) -> None:
        x = self.logits[case.binary].clone().requires_grad_(True)
        case.fn(x, self.targets[case.binary]).backward()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def times(self, repeats: int, warmup: int = 2) -> list[dict[str, Any]]:
        """Best forward + backward time of every case over ``repeats``, cases interleaved round-robin.

        The minimum (as ``timeit`` recommends) is the statistic least moved by other work on the machine.
        """
        samples: list[list[float]] = [[] for _ in self.cases]
        for case in self.cases:
            for _ in range(warmup):
                self.once(case)
        for _ in range(repeats):  # every case sees the same machine noise
            for i, case in enumerate(self.cases):
                self._sync()
                t0 = time.perf_counter()
                self.once(case)
                self._sync()
                samples[i].append(time.perf_counter() - t0)
        rows = []
        for case, t in zip(self.cases, samples):
            with torch.no_grad():
                value = float(case.fn(self.logits[case.binary], self.targets[case.binary]))
            rows.append(
                {
                    "definition": case.definition,
                    "impl": case.impl,
                    "same": case.same,
                    "note": case.note,
                    "ms": 1000 * min(t),
                    "median_ms": 1000 * statistics.median(t),
                    "value": value,
                    "shape": list(self.shapes[case.binary]),
                }
            )
        return rows

    def memory(self) -> list[float]:
        """Peak memory (MiB) of each case; on CPU only meaningful in a fresh process after :func:`_pin_malloc`."""
        return [peak_memory_mib(lambda case=case: self.once(case), self.device) for case in self.cases]


def _memory_in_fresh_process(b: int, c: int, size: int, device: str, depth: int | None = None) -> list[float]:
    """Runs in a spawned process: pinned allocator from the start, so peak RSS is the real peak."""
    _pin_malloc()
    bench = LossBench(b, c, size, torch.device(device), depth)
    for case in bench.cases:  # warm up (first-call allocations of each library)
        bench.once(case)
    return bench.memory()


def measure_memory(b: int, c: int, size: int, device: torch.device, depth: int | None = None) -> list[float]:
    """Peak memory of every case; on CPU in a fresh process (a used heap hides allocations)."""
    if device.type == "cuda":
        return LossBench(b, c, size, device, depth).memory()
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_memory_in_fresh_process, (b, c, size, device.type, depth))


def loss_verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per definition: ours vs the fastest same-definition reference and vs the floor."""
    floor = next(r for r in rows if r["definition"].startswith("floor"))
    out = []
    for definition in dict.fromkeys(r["definition"] for r in rows if r["impl"] == "lossbench"):
        ours = next(r for r in rows if r["definition"] == definition and r["impl"] == "lossbench")
        refs = [r for r in rows if r["definition"] == definition and r["impl"] != "lossbench" and r["same"]]
        fastest = min(refs, key=lambda r: r["ms"]) if refs else None
        leanest = min(refs, key=lambda r: r["mib"]) if refs else None
        v = {
            "definition": definition,
            "ours_ms": ours["ms"],
            "ours_mib": ours["mib"],
            "ref": fastest["impl"] if fastest else None,
            "ref_ms": fastest["ms"] if fastest else None,
            "speed_ratio": ours["ms"] / fastest["ms"] if fastest else None,
            "mem_ratio": ours["mib"] / leanest["mib"] if leanest and leanest["mib"] > 0 else None,
            "mem_ref": leanest["impl"] if leanest else None,
            "floor_ratio": ours["ms"] / floor["ms"],
            "max_value_diff": max((abs(r["value"] - ours["value"]) for r in refs), default=None),
        }
        checks = []
        if fastest:
            checks.append(v["speed_ratio"] <= 1.0)
            checks.append(ours["mib"] <= leanest["mib"] + MEMORY_RESOLUTION_MIB)
        if definition in FLOOR_BOUND:
            checks.append(v["floor_ratio"] <= 3.0)
        v["met"] = all(checks) if checks else None
        out.append(v)
    return out
