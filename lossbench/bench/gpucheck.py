"""``scripts/gpu-check.sh --out DIR``: lossbench's own acceptance check on a lent GPU machine — at most 7 minutes,
no network, reporting after every step.

Steps, each with its own budget (seconds) under one deadline (:data:`STEPS`; ``--dry-run`` prints them):

0. **preflight** (under 30 s): every import the steps need, said in one sentence when one is missing (with the
   ``pip download`` line for the carried wheels); then one smoke run on the GPU whose record must say CUDA and bf16;
1. **the default suite** (``experiments/default.yaml``, 42 runs, no race) through ``lossbench compare`` with the
   packing the GPU allows (``jobs`` and ``jobs_per_gpu`` auto): wall time including start-up (target ≤ 120 s on one
   H200) and the utilisation of the GPUs the runs used, sampled by ``nvidia-smi`` while they trained (target ≥ 60 %);
2. **bf16 against fp32** on three of its losses, paired by seed (the fp32 arm with TF32 off in matmuls and cuDNN
   convolutions: ``LOSSBENCH_NO_TF32=1``);
3. **``experiments/full.yaml``** for one epoch of four losses: seconds from ``compare`` starting to the first training
   step (target ≤ 60 s) and each run's training images per second;
4. **the bench's GPU code paths** (``python -m lossbench.bench --quick --no-training``: every loss's device path at
   small shapes; the full GPU shapes compute MONAI's host-side distance-transform references for about 30 minutes).

``DIR`` receives ``gpu-check.json`` (rewritten after every step, with each step's status) and, for a step that
failed, ``<step>.log`` (the tail of its output) — a few files, one folder deep, what a lent machine brings back.
``--wheels WHEELS`` installs carried wheels (no network, no dependencies) into a scratch site first. Nothing is
written into the working tree. Without a GPU it says so in one sentence and exits with 2.
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


def records(out: Path) -> list[dict[str, Any]]:
    found = []
    for path in out.glob("*/*/metrics.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return found


def precision_check(bf16: dict[str, dict[int, float]], fp32: dict[str, dict[int, float]]) -> list[dict[str, Any]]:
    """Per loss, paired by seed: the mean of the seeds' differences of test mIoU (bf16 − fp32) and whether it is within
    two standard errors of those differences (the same seed, so the same initial weights and batches)."""
    rows = []
    for loss, b in bf16.items():
        seeds = sorted(set(b) & set(fp32.get(loss, {})))
        if len(seeds) < 2:
            continue
        d = [b[s] - fp32[loss][s] for s in seeds]
        se = statistics.stdev(d) / math.sqrt(len(d))
        rows.append({"loss": loss, "seeds": seeds, "diff": statistics.mean(d), "two_se": 2 * se,
                     "within_noise": abs(statistics.mean(d)) <= max(2 * se, 1e-3)})  # fmt: skip
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


STEPS: list[tuple[str, int, str]] = [
    ("preflight", 30, "import every package the steps need"),
    ("smoke", 45, "lossbench train --config smoke --loss ce (1 epoch on the GPU: record must say CUDA, bf16)"),
    ("default", 140, "lossbench compare --config default --set jobs=auto jobs_per_gpu=auto race=null"),
    ("precision", 60, f"lossbench compare --config default --losses {','.join(FP32_LOSSES)} --set trainer.precision=32-true"),
    ("full", 60, f"lossbench compare --config full --losses {','.join(FULL_LOSSES)} --set seeds=[0] trainer.max_epochs=1"),
    ("bench", 55, "python -m lossbench.bench --quick --no-training"),
]
"""Each step: (name, budget in seconds, what it runs). The budgets add up to :data:`DEADLINE_S` or less."""

DEADLINE_S = 420
"""The whole check's wall time: 7 minutes of a lent GPU's 10."""

NEEDED = ["torch", "lightning", "torchmetrics", "segmentation_models_pytorch", "timm", "pydantic", "yaml", "wandb",
          "pandas", "scipy", "matplotlib", "torchvision", "monai", "kornia"]  # fmt: skip
"""What the steps import (submitit and nibabel are not needed: no SLURM, no NIfTI)."""

WHEELS_HINT = ("pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps -d wheels "
               "segmentation-models-pytorch pydantic pydantic-core annotated-types typing-inspection wandb monai kornia kornia-rs "
               "huggingface-hub safetensors")  # fmt: skip


class Check:
    """The check's state: its result so far, written to ``out/gpu-check.json`` after every step."""

    def __init__(self, out: Path, work: Path, deadline: float):
        self.out, self.work, self.deadline = out, work, deadline
        self.result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "steps": {}}

    def left(self, budget: int) -> float:
        return max(0.0, min(float(budget), self.deadline - time.monotonic()))

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "gpu-check.json.tmp"
        tmp.write_text(json.dumps(self.result, indent=2, default=str) + "\n")
        tmp.replace(self.out / "gpu-check.json")

    def step(self, name: str, status: str, log: Path | None = None, **figures: Any) -> None:
        """Record a step's outcome; a failed step's log tail goes to ``out/<name>.log`` and to stdout."""
        self.result["steps"][name] = {"status": status, **figures}
        if status != "ok" and log is not None and log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-80:])
            (self.out / f"{name}.log").write_text(tail + "\n")
            print(f"gpu-check: {name} {status}; the end of its log:\n{tail}", flush=True)
        self.save()
        print(f"gpu-check: {name}: {status} {json.dumps(figures, default=str)[:400]}", flush=True)


def preflight() -> str | None:
    """One sentence naming every package the steps need that does not import, or ``None``."""
    import importlib

    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 — a broken install counts as missing
            missing.append(name)
    if missing:
        return (f"gpu-check: this Python lacks {', '.join(missing)}; bring them as wheels (on a machine with network: "
                f"{WHEELS_HINT}) and pass --wheels DIR")  # fmt: skip
    return None


def run_check(check: Check) -> dict[str, Any]:
    import torch

    r = check.result
    r["machine"] = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "cuda": torch.version.cuda}  # fmt: skip
    work = check.work
    cache = work / "data-cache"
    common = ["--no-wandb", "--set", f"data.cache_dir={cache}"]

    log = work / "smoke.log"
    code, wall = compare_cli(["train", "--config", "smoke", "--loss", "ce", "--seed", "0", "--out", str(work / "smoke"),
                              "--no-progress", "--set", f"data.cache_dir={cache}", "trainer.max_epochs=1"], log,
                             check.left(45))  # fmt: skip
    rec = next(iter(records(work / "smoke")), {})
    on_gpu = "cuda" in str(rec.get("placement", {}).get("accelerator", "")).lower() or bool((rec.get("machine") or {}).get("gpu"))
    bf16 = str(rec.get("precision", "")).startswith("bf16")
    check.step("smoke", "ok" if code == 0 and on_gpu and bf16 else "failed", log, wall_s=wall, precision=rec.get("precision"),
               accelerator=(rec.get("placement") or {}).get("accelerator"))  # fmt: skip
    if r["steps"]["smoke"]["status"] != "ok":
        return r

    log = work / "default.log"
    with Sampler() as smi:
        code, wall = compare_cli(["compare", "--config", "default", "--out", str(work / "default"), "--report",
                                  str(work / "default-report"), *common, "jobs=auto", "jobs_per_gpu=auto", "race=null"],
                                 log, check.left(140))  # fmt: skip
    ok_default = [x for x in records(work / "default") if x.get("status") == "ok"]
    peaks = [(x.get("placement") or {}).get("gpu_peak_mib") for x in ok_default]
    check.step("default", "ok" if code == 0 else ("timed out" if code == 124 else "failed"), log, wall_s=wall,
               runs_ok=len(ok_default), **smi.summary(), gpu_peak_mib_per_run=max((p for p in peaks if p), default=None),
               targets={"wall_s": 120, "mean_util_pct": 60})  # fmt: skip

    log = work / "precision.log"
    code, wall = compare_cli(["compare", "--config", "default", "--losses", ",".join(FP32_LOSSES), "--out", str(work / "fp32"),
                              "--report", str(work / "fp32-report"), *common, "trainer.precision=32-true", "race=null"],
                             log, check.left(60), env={"LOSSBENCH_NO_TF32": "1"})  # fmt: skip
    check.step("precision", "ok" if code == 0 else "failed", log, wall_s=wall, arm="fp32, TF32 off (matmuls and convolutions)",
               losses=precision_check(by_seed(ok_default), by_seed(records(work / "fp32"))))  # fmt: skip

    log = work / "full.log"
    stop, watched = threading.Event(), {}
    t0 = time.time()
    watcher = threading.Thread(target=lambda: watched.update(first_step_s(work / "full", t0, stop)), daemon=True)
    watcher.start()
    with Sampler() as smi:
        code, wall = compare_cli(["compare", "--config", "full", "--losses", ",".join(FULL_LOSSES), "--out", str(work / "full"),
                                  "--report", str(work / "full-report"), *common, "seeds=[0]", "trainer.max_epochs=1"],
                                 log, check.left(60))  # fmt: skip
    stop.set()
    watcher.join()
    per_run = [{"loss": x["label"], "images_per_s": x["steps"] * 16 / x["wall_s"], "wall_s": x["wall_s"]}
               for x in records(work / "full") if x.get("status") == "ok" and x.get("wall_s")]  # fmt: skip
    check.step("full", "ok" if watched.get("first_step_s") is not None else "failed", log, wall_s=wall, **watched,
               runs=per_run, **smi.summary(), targets={"first_step_s": 60})  # fmt: skip

    log = work / "bench.log"
    code, wall = compare_cli(None, log, check.left(55), module=["lossbench.bench", "--quick", "--no-training", "--report",
                                                                  str(work / "bench")])  # fmt: skip
    results = work / "bench" / "results.json"
    if results.exists():
        shutil.copy(results, check.out / "bench-results.json")
    check.step("bench", "ok" if code == 0 else "failed", log, wall_s=wall)
    return r


def compare_cli(args: list[str] | None, log: Path, timeout_s: float, env: dict[str, str] | None = None,
                module: list[str] | None = None) -> tuple[int, float]:  # fmt: skip
    """``python -m lossbench.cli ARGS`` (or ``-m MODULE…``) with its output in ``log``: (exit status, wall seconds); 124
    when it ran past ``timeout_s``."""
    t0 = time.monotonic()
    if timeout_s <= 0:
        log.write_text("skipped: the check's deadline had passed\n")
        return 124, 0.0
    command = [sys.executable, "-m", *(module or ["lossbench.cli", *args])]
    with log.open("w") as fh:
        try:
            code = subprocess.run(command, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s,
                                  env=os.environ | (env or {})).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = 124
    return code, time.monotonic() - t0


def by_seed(recs: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """``{loss: {seed: test mIoU}}`` of the runs that ended ok."""
    out: dict[str, dict[int, float]] = {}
    for x in recs:
        if x.get("status") == "ok":
            out.setdefault(x["label"], {})[int(x["seed"])] = float(x["test"]["miou"])
    return out


def history_entry(r: dict[str, Any]) -> str:
    s, m = r["steps"], r.get("machine", {})
    d, f = s.get("default", {}), s.get("full", {})
    util = f"{d['mean_util_pct']:.0f} %" if d.get("mean_util_pct") is not None else "—"
    rates = ", ".join(f"{x['loss']} {x['images_per_s']:.0f}" for x in f.get("runs", [])) or "—"
    prec = ", ".join(f"{x['loss']} {x['diff']:+.3f} (±{x['two_se']:.3f})" for x in s.get("precision", {}).get("losses", [])) or "—"
    first = f"{f['first_step_s']:.0f} s" if f.get("first_step_s") is not None else "not reached"
    wall = f"{d['wall_s']:.0f} s" if d.get("wall_s") is not None else "not run"
    steps = ", ".join(f"{k} {v['status']}" for k, v in s.items())
    return (f"- {r['date']}, {m.get('gpu')} ×{m.get('gpus')}, {m.get('cores')} cores (`scripts/gpu-check.sh`): default suite "
            f"{wall} wall (target ≤ 120), GPU utilisation {util} (target ≥ 60 %); full.yaml first step {first} (target ≤ 60), "
            f"images/s per run while sharing the GPU: {rates}; bf16 − fp32 (TF32 off) mean mIoU, paired by seed: {prec}; "
            f"steps: {steps}.\n")


def install_wheels(wheels: Path, site: Path) -> str | None:
    """Install every wheel in ``wheels`` into ``site`` without network or dependencies, and put it first on the path
    of this process and its children; one sentence when pip fails."""
    found = sorted(wheels.glob("*.whl"))
    if not found:
        return f"gpu-check: --wheels {wheels} holds no .whl file"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", "--target", str(site),
                        *map(str, found)], capture_output=True, text=True)  # fmt: skip
    if r.returncode:
        return f"gpu-check: pip could not install the wheels in {wheels}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gpu-check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu-check-out", help="where gpu-check.json and failed steps' logs go (few files, one level)")
    p.add_argument("--wheels", default=None, help="a folder of carried wheels to install (no network, no dependencies) first")
    p.add_argument("--work", default=None, help="a scratch folder for the runs (default: a new temporary one)")
    p.add_argument("--dry-run", action="store_true", help="print each step's command and budget and the total, then stop")
    args = p.parse_args(argv)
    if args.dry_run:
        for name, budget, what in STEPS:
            print(f"{name:>10}  {budget:>4} s  {what}")
        total = sum(b for _, b, _ in STEPS)
        print(f"{'total':>10}  {total:>4} s  (deadline {DEADLINE_S} s = {DEADLINE_S / 60:g} min)")
        return 0
    reason = no_gpu_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    started = time.monotonic()
    out = Path(args.out)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lossbench-gpu-check-"))
    check = Check(out, work, started + DEADLINE_S)
    if args.wheels:
        problem = install_wheels(Path(args.wheels), work / "site")
        if problem:
            check.step("preflight", "failed", None, why=problem)
            print(problem, file=sys.stderr)
            return 2
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    missing = preflight()
    check.step("preflight", "failed" if missing else "ok", None, wall_s=time.monotonic() - started, why=missing)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    try:
        run_check(check)
    except Exception as e:  # noqa: BLE001 — whatever broke, what was measured is already in gpu-check.json
        check.step("error", "failed", None, why=f"{type(e).__name__}: {e}")
    check.result["wall_s"] = time.monotonic() - started
    check.save()
    (out / "HISTORY-entry.md").write_text(history_entry(check.result))
    print(history_entry(check.result), end="")
    print(f"gpu-check: wrote {out / 'gpu-check.json'} in {check.result['wall_s']:.0f} s; runs in {work}")
    return 0 if all(v["status"] == "ok" for v in check.result["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
