"""``scripts/gpu-check.sh``: lossbench's own acceptance check on a GPU machine (no network, about 8 minutes).

What it measures, each beside its target (issue 27):

* **the default suite** (``experiments/default.yaml``, 42 runs) through ``lossbench compare``: its wall
  time including start-up (target ≤ 2 minutes on one H200-class GPU) and the GPU's average utilisation
  over it, sampled by ``nvidia-smi`` every half second (target ≥ 60 %);
* **bf16 against fp32**: three losses of that suite again in fp32 (``trainer.precision=32-true``); each
  loss's mean test mIoU over its seeds must agree with the bf16 runs' within seed noise (two standard
  errors of the difference);
* **``experiments/full.yaml``**: four of its losses for one epoch — the seconds from ``compare`` starting to
  the first training step (target ≤ 60 s, the 5,500 synthetic 256² images generated first) and the
  training images per second of each run while they share the GPU;
* **``make bench`` at its GPU shapes**, into ``reports/bench`` beside the CPU rows (``results.json``
  with device ``cuda``).

It writes ``reports/gpu-check.json`` and a dated GPU entry in ``reports/HISTORY.md``. Without a GPU it says
so in one sentence and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FP32_LOSSES = ["ce", "dice", "lovasz_softmax"]
FULL_LOSSES = ["ce", "dice", "focal", "lovasz_softmax"]


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the check (one sentence), or ``None`` when it has a CUDA GPU."""
    if shutil.which("nvidia-smi") is None:
        return "gpu-check: no GPU here (nvidia-smi is not on the PATH), so there is nothing to measure; run it on a machine with an NVIDIA GPU"
    try:
        import torch
    except ImportError:
        return "gpu-check: torch is not installed in this Python; run `make install` first"
    if not torch.cuda.is_available():
        return "gpu-check: no GPU here (torch.cuda.is_available() is False with this torch build), so there is nothing to measure"
    return None


class Sampler:
    """``nvidia-smi`` utilisation and memory every half second while a step runs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (utilisation %, memory used MiB), summed over GPUs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                rows = [[float(v) for v in line.split(",")] for line in out.strip().splitlines() if line.strip()]
                if rows:
                    self.samples.append((statistics.mean(r[0] for r in rows), sum(r[1] for r in rows)))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.5)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        util = [s[0] for s in self.samples]
        return {"samples": len(util), "mean_util_pct": statistics.mean(util) if util else None,
                "peak_memory_mib": max((s[1] for s in self.samples), default=None)}  # fmt: skip


def compare(args: list[str], log: Path, timeout_s: float) -> tuple[int, float]:
    """``lossbench compare ARGS`` with its output in ``log``: (exit status, wall seconds)."""
    t0 = time.monotonic()
    with log.open("w") as fh:
        try:
            code = subprocess.run([sys.executable, "-m", "lossbench.cli", "compare", *args], cwd=ROOT, stdout=fh,
                                  stderr=subprocess.STDOUT, timeout=timeout_s).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = 124
    return code, time.monotonic() - t0


def records(out: Path) -> list[dict[str, Any]]:
    found = []
    for path in out.glob("*/*/metrics.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return found


def mean_miou(recs: list[dict[str, Any]]) -> dict[str, list[float]]:
    by_loss: dict[str, list[float]] = {}
    for r in recs:
        if r.get("status") == "ok":
            by_loss.setdefault(r["label"], []).append(float(r["test"]["miou"]))
    return by_loss


def precision_check(bf16: dict[str, list[float]], fp32: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Per loss: the difference of the mean test mIoU (bf16 − fp32) and whether it is within two standard
    errors of the difference (each side's seed spread)."""
    rows = []
    for loss, b in bf16.items():
        f = fp32.get(loss)
        if not f or len(b) < 2 or len(f) < 2:
            continue
        se = math.sqrt(statistics.variance(b) / len(b) + statistics.variance(f) / len(f))
        diff = statistics.mean(b) - statistics.mean(f)
        rows.append({"loss": loss, "bf16": statistics.mean(b), "fp32": statistics.mean(f), "diff": diff,
                     "two_se": 2 * se, "within_noise": abs(diff) <= max(2 * se, 1e-3)})  # fmt: skip
    return rows


def first_step_s(out: Path, t0: float, stop: threading.Event) -> dict[str, Any]:
    """Watch ``out`` from wall time ``t0``: the seconds until the first run reports a training step."""
    seen: dict[str, Any] = {"first_step_s": None}
    while not stop.is_set():
        for r in records(out):
            prog = r.get("progress") or {}
            if prog.get("step") or prog.get("epoch") or r.get("status") == "ok":
                seen["first_step_s"] = time.time() - t0
                return seen
        stop.wait(0.2)
    return seen


def run_check(work: Path, report_root: Path, quick_bench: bool = False) -> dict[str, Any]:
    import torch

    env_note = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "cores": os.cpu_count(),
                "torch": torch.__version__}  # fmt: skip
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": env_note}
    cache = work / "data-cache"
    common = ["--no-wandb", "--set", f"data.cache_dir={cache}"]

    print("gpu-check 1/4: the default suite (42 runs) …", flush=True)
    with Sampler() as smi:
        code, wall = compare(["--config", "experiments/default.yaml", "--out", str(work / "default"), "--report",
                              str(work / "default-report"), *common], work / "default.log", 300)  # fmt: skip
    bf16 = mean_miou(records(work / "default"))
    result["default_suite"] = {"exit": code, "wall_s": wall, "runs_ok": sum(len(v) for v in bf16.values()), **smi.summary(),
                               "targets": {"wall_s": 120, "mean_util_pct": 60}}  # fmt: skip

    print("gpu-check 2/4: bf16 against fp32 on three of its losses …", flush=True)
    code, wall = compare(["--config", "experiments/default.yaml", "--losses", ",".join(FP32_LOSSES), "--out", str(work / "fp32"),
                          "--report", str(work / "fp32-report"), *common, "trainer.precision=32-true"], work / "fp32.log", 180)  # fmt: skip
    result["precision"] = {"exit": code, "wall_s": wall, "losses": precision_check(bf16, mean_miou(records(work / "fp32")))}

    print("gpu-check 3/4: experiments/full.yaml — time to the first step, images per second …", flush=True)
    stop, watched = threading.Event(), {}
    t0 = time.time()
    watcher = threading.Thread(target=lambda: watched.update(first_step_s(work / "full", t0, stop)), daemon=True)
    watcher.start()
    with Sampler() as smi:
        code, wall = compare(["--config", "experiments/full.yaml", "--losses", ",".join(FULL_LOSSES), "--out", str(work / "full"),
                              "--report", str(work / "full-report"), *common, "seeds=[0]", "trainer.max_epochs=1"],
                             work / "full.log", 240)  # fmt: skip
    stop.set()
    watcher.join()
    per_run = []
    for r in records(work / "full"):
        if r.get("status") == "ok" and r.get("wall_s"):
            images = r["steps"] * 16  # full.yaml: batch 16 per run
            per_run.append({"loss": r["label"], "images_per_s": images / r["wall_s"], "wall_s": r["wall_s"],
                            "gpu_peak_mib": (r.get("placement") or {}).get("gpu_peak_mib")})  # fmt: skip
    result["full"] = {"exit": code, "wall_s": wall, **watched, "runs": per_run, **smi.summary(), "targets": {"first_step_s": 60}}

    print("gpu-check 4/4: make bench at its GPU shapes …", flush=True)
    bench_args = [sys.executable, "-m", "lossbench.bench", "--report", str(report_root / "bench")] + (["--quick"] if quick_bench else [])
    t = time.monotonic()
    with (work / "bench.log").open("w") as fh:
        result["bench"] = {"exit": subprocess.run(bench_args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode,
                           "wall_s": time.monotonic() - t}  # fmt: skip
    return result


def history_entry(r: dict[str, Any]) -> str:
    d, f, m = r["default_suite"], r["full"], r["machine"]
    util = f"{d['mean_util_pct']:.0f} %" if d.get("mean_util_pct") is not None else "—"
    rates = ", ".join(f"{x['loss']} {x['images_per_s']:.0f}" for x in f["runs"]) or "—"
    prec = ", ".join(f"{x['loss']} {x['diff']:+.3f} (±{x['two_se']:.3f})" for x in r["precision"]["losses"]) or "—"
    first = f"{f['first_step_s']:.0f} s" if f.get("first_step_s") is not None else "not reached"
    return (f"- {r['date']}, {m['gpu']} ×{m['gpus']}, {m['cores']} cores (`scripts/gpu-check.sh`): default suite "
            f"{d['wall_s']:.0f} s wall (target ≤ 120), GPU utilisation {util} (target ≥ 60 %); full.yaml first step "
            f"{first} (target ≤ 60), images/s per run while sharing the GPU: {rates}; bf16 − fp32 mean mIoU: {prec}.\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gpu-check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--reports", default=str(ROOT / "reports"), help="where gpu-check.json, bench/ and HISTORY.md are")
    p.add_argument("--work", default=None, help="a scratch folder for the runs (default: a new temporary one)")
    args = p.parse_args(argv)
    reason = no_gpu_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    reports = Path(args.reports)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lossbench-gpu-check-"))
    result = run_check(work, reports)
    (reports / "gpu-check.json").write_text(json.dumps(result, indent=2) + "\n")
    history = reports / "HISTORY.md"
    entry = history_entry(result)
    text = history.read_text() if history.exists() else "# History\n"
    if "\n## GPU checks\n" not in text:
        text = text.rstrip("\n") + "\n\n## GPU checks\n\n"
    history.write_text(text.rstrip("\n") + "\n" + entry)
    print(entry, end="")
    print(f"gpu-check: wrote {reports / 'gpu-check.json'}, {reports / 'bench'} and {history}; runs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
