"""``make bench``: speed and memory of every loss, and of the training loop, against references.

Everything is measured in one run and reported as ratios, because these machines are noisy:

* **Losses**: forward + backward time (best of many repeats, the cases interleaved round-robin so
  drift hits all alike) and peak memory of every registered loss beside the equivalent losses of
  segmentation-models-pytorch, MONAI and kornia, and beside the *floor* — softmax plus a sum,
  forward and backward, on the same tensor. Shapes: on CPU ``B=8, C=8`` at 128² and 256², and volumes
  ``B=2, C=4`` at 32×64×64; on a GPU ``B=16, C=19`` at 512² and volumes ``B=2, C=4`` at 96×128×128 (every
  registered loss at 3-D beside MONAI's, the references that have a volume form). Peak memory: on CPU the rise of the peak resident set (``VmHWM``, reset
  before each case) in a fresh process whose glibc mmap threshold is pinned so freed buffers go
  back to the system; on a GPU ``torch.cuda.max_memory_allocated``. Timings are taken first, in
  the normal allocator state.
* **Training loop**: images per second of the real ``lossbench train`` machinery (Lightning,
  W&B logger, checkpoints) against a plain PyTorch loop training the same model with the same loss
  on the same batches, and the share of the plain loop's time spent waiting for data.
* **The test's metrics**: per test image of a 360×480 street scene, the counts, HD95/NSD and objects every test
  image gets, against SciPy's distance transform for every class (:mod:`lossbench.bench.evaluation`).
* **Synthetic data**: the generator's time per image at 64² and 256² (targets ≤ 1 ms and ≤ 5 ms on one
  core: linear in the pixels, so a GPU-sized suite's data is ready in seconds).
* **Data pipeline**: a 480×360 RGB folder dataset — decoding into the cache, the training loader
  alone (resize, augmentation, crop, normalisation) and the training loop it feeds, with the target
  that the loop waits for data less than 5 % of its time.

The parts: :mod:`lossbench.bench.losses`, :mod:`lossbench.bench.training` (the loop and the data
pipeline), :mod:`lossbench.bench.report`. ``python -m lossbench.bench --report reports/bench [--quick]``
writes ``README.md`` and ``results.json`` there. ``--quick`` (used by the tests) runs tiny shapes and two-epoch trainings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from lossbench.bench.evaluation import bench_evaluation
from lossbench.bench.losses import LossBench, loss_verdicts, measure_memory
from lossbench.bench.report import write_bench_report
from lossbench.bench.training import bench_data, bench_synthetic, bench_training


def keep_other_devices(results: dict[str, Any], previous: Path) -> dict[str, Any]:
    """``results`` with the other devices' results of the report it replaces kept under ``other_devices``:
    ``make bench`` on a GPU adds its rows beside the CPU's, and on the CPU beside the GPU's."""
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        return results
    here = results["device"]
    others = {k: v for k, v in (old.get("other_devices") or {}).items() if k != here}
    old_device = old.get("device") or next((sh.get("device") for sh in old.get("losses", [])), None)
    if old_device and old_device != here:
        others[old_device] = {k: v for k, v in old.items() if k != "other_devices"}
    return results | ({"other_devices": others} if others else {})


def bench_cache_dir() -> Path:
    """Where the bench caches the data it generates: outside the working tree (which may be read-only, as on a lent
    GPU machine, and is not the bench's to fill with a ``data/`` folder)."""
    return Path(tempfile.gettempdir()) / "lossbench-bench-cache"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lossbench.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--report", default="reports/bench", help="output folder (README.md, results.json)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and two-epoch trainings: a smoke test of the script")
    p.add_argument("--no-training", action="store_true", help="skip the training-loop benchmark")
    p.add_argument("--from-results", metavar="JSON", help="re-render the report from a results.json, measuring nothing")
    args = p.parse_args(argv)
    if args.from_results:
        results = json.loads(Path(args.from_results).read_text())
        print(f"report: {write_bench_report(results, Path(args.report))}")
        return 0
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:  # (B, C, size, repeats, depth): depth None for images, else volumes [B, C, depth, size, size]
        shapes = [(2, 4, 32, 3, None), (1, 3, 16, 3, 8)]
    elif device.type == "cuda":
        shapes = [(16, 19, 512, 10, None), (2, 4, 128, 10, 96)]
    else:
        shapes = [(8, 8, 128, 30, None), (8, 8, 256, 15, None), (2, 4, 64, 10, 32)]
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs" + (f", {torch.cuda.get_device_name(0)}" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "losses": [],
        "notes": [
            "Notes:",
            "- `ce` and `weighted_ce` call torch's own `F.cross_entropy` kernel after one pass that checks the "
            "labels (the contract's clear errors: wrong labels get a sentence naming them), so against torch they "
            "can only tie; what is left is that pass.",
            "- At 128² a call takes 1.5–3 ms, and that label pass plus the fixed cost of a call (about 20 µs) is "
            "5–15 % of it: there `dice`, `generalized_dice` and `bce_dice` can trail MONAI by that much in a run, "
            "while at 256² they are at or ahead of it. The GPU shapes (B=16, C=19, 512²; volumes B=2, C=4, 96×128×128) run when a GPU is present.",
            "- `lovasz_softmax` sorts at most 2^19 elements per call on a CPU (and at least one row per thread) to bound "
            "the memory of its temporaries; that is why it needs less memory than smp's per-class loop and far "
            "less than kornia's all-at-once sort. On a GPU it sorts up to 2^24 a call (a segmented radix sort is fast "
            "only with many rows at once).",
            "- On a GPU the region and compound losses sum per class by a one-hot product and plain reductions, "
            "`recall_ce` likewise, and `ohem` takes its k-th largest from a radix sort (losses/functional.py, "
            "`cpu_kernels`); on a CPU they scatter into bins and select. Both paths are held equal by the tests.",
            "- `focal_dice`, `exp_log`, `combo`, `ohem`, `focal_tversky`, `log_cosh_dice`, `sensitivity_specificity`, "
            "`recall_ce` and multi-class `mcc` have no reference implementation of the same definition in these "
            "libraries; their cost is shown against the floor. `combo`'s one-vs-rest cross-entropy has its gradient "
            "written out and `ohem` selects its k-th largest pixel loss (`kthvalue`) instead of sorting them all: "
            "`ohem` came within 3× the floor (it was 8–10×), `combo` from 15× to about 6× — its cross-entropy over "
            "every class and its Dice term each cost at least the floor, so 3× needs a fused kernel.",
            "- Binary `focal` against smp: smp with `ignore_index` masks every pixel and is slow, smp without it is "
            "fast; both compute the same value on this target (nothing ignored), so both are references and the "
            "faster one is the bar. The earlier 0.84× was against the slow one only; against the fast one lossbench "
            "was 1.9–2.3×, until its binary focal formed its gradient in the forward pass (one fused autograd function).",
            "- `boundary`, `hausdorff_dt` and `cldice` against MONAI compute the same value (the same distance maps): "
            "on the CPU both use SciPy's exact distance transform, lossbench once per image mask with no other "
            "per-image Python work; on a GPU lossbench's own exact transform runs on the device (MONAI copies to the host).",
        ],
    }
    benches = []
    for b, c, size, repeats, depth in shapes:  # timings first: the memory probe below slows allocation
        where = f"{size}x{size}" if depth is None else f"{depth}x{size}x{size} (volumes)"
        print(f"losses at B={b} C={c} {where} on {device.type} ({repeats} repeats)...", flush=True)
        bench = LossBench(b, c, size, device, depth)
        benches.append((b, c, size, depth, bench, bench.times(repeats)))
    print("the test's metrics per image (360x480 street scenes)...", flush=True)
    results["evaluation"] = bench_evaluation(4 if args.quick else 24)
    print("synthetic data: generation time per image...", flush=True)
    results["synthetic"] = bench_synthetic([32] if args.quick else [64, 256], 20 if args.quick else 200)
    if not args.no_training:
        print("training loop: plain PyTorch vs lossbench train...", flush=True)
        if args.quick:
            results["training"] = bench_training("experiments/smoke.yaml", 2, ["data.cache_dir=" + tempfile.mkdtemp()])
        else:
            results["training"] = bench_training("experiments/default.yaml", 4, [f"data.cache_dir={bench_cache_dir()}"])
        print("data pipeline: folder dataset loader vs the training loop...", flush=True)
        if args.quick:
            results["data"] = bench_data("experiments/smoke.yaml", 8, (60, 80), (32, 32), 2)
        else:
            results["data"] = bench_data("experiments/default.yaml", 64, (360, 480), (192, 256), 3)
    print("peak memory...", flush=True)
    for b, c, size, depth, bench, rows in benches:
        for row, mib in zip(rows, measure_memory(b, c, size, device, depth)):
            row["mib"] = mib
        results["losses"].append({"b": b, "c": c, "size": size, "depth": depth, "device": device.type, "rows": rows,
                                  "verdicts": loss_verdicts(rows), "no_volume_form": bench.no_volume_form})  # fmt: skip
    results["device"] = device.type
    readme = write_bench_report(keep_other_devices(results, Path(args.report) / "results.json"), Path(args.report))
    print(f"report: {readme}")
    return 0
