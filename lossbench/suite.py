"""The suite runner behind ``lossbench compare``: every (loss, seed) in its own process, resumable.

* Each run is a ``lossbench train`` subprocess, so a crash or NaN in one loss is recorded (with its
  error) and the suite goes on, and ``strategy: ddp`` works (Lightning cannot loop ``fit`` under ddp).
* A run is keyed by the hash of its resolved config (its folder is ``<out>/<label>/seed<s>-<hash>``):
  a finished run is never retrained, a new loss or seed trains only itself, and an interrupted run
  resumes from its last checkpoint. Failed runs are kept as failed unless ``--retry-failed``.
* ``jobs`` runs at once (config key ``jobs`` or ``--jobs``); on a CPU each gets ``cores / jobs`` threads.
* Several machines may run disjoint ``--losses`` into one shared ``--out``; ``lossbench report``
  merges whatever finished runs are there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lossbench.config import ConfigError, config_hash, loss_entry, run_config
from lossbench.io import read_json, write_json_atomic, write_text_atomic
from lossbench.run import LAST_CKPT, METRICS_FILE, run_dir_for

SUITE_FILE = "suite.yaml"
LOG_FILE = "train.log"


@dataclass
class PlannedRun:
    label: str
    seed: int
    run_cfg: dict[str, Any]
    run_dir: Path

    @property
    def record(self) -> dict[str, Any] | None:
        return read_json(self.run_dir / METRICS_FILE)

    @property
    def status(self) -> str:
        rec = self.record
        return rec.get("status", "missing") if rec else "missing"

    def __str__(self) -> str:
        return f"{self.label} seed {self.seed}"


def select_losses(cfg: dict[str, Any], wanted: list[str] | None) -> list[dict[str, Any]]:
    """The suite's loss entries, or those named in ``wanted`` (labels or registry names)."""
    from lossbench.losses import get_loss_spec

    entries = [loss_entry(e) for e in cfg["losses"]]
    if wanted is None:
        if not entries:
            raise ConfigError("the config lists no losses: add them under losses: or pass --losses")
        chosen = entries
    else:
        chosen = []
        for name in wanted:
            match = [e for e in entries if e["label"] == name] or [e for e in entries if e["name"] == name]
            chosen.extend(match or [loss_entry(name)])
    for entry in chosen:
        get_loss_spec(entry["name"])  # unknown names fail now, listing the known ones
    return chosen


def plan_runs(cfg: dict[str, Any], out: Path, losses: list[str] | None = None, seeds: list[int] | None = None) -> list[PlannedRun]:
    """Every (loss, seed) run of the suite with its resolved config and folder."""
    runs = []
    for entry in select_losses(cfg, losses):
        for seed in seeds if seeds is not None else cfg["seeds"]:
            rc = run_config(cfg, entry, seed)
            runs.append(PlannedRun(entry["label"], seed, rc, run_dir_for(out, rc)))
    return runs


def _say(message: str) -> None:
    print(message, flush=True)  # progress must show even when stdout is a file or a pipe


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Terminate(Exception):
    pass


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Terminate()


def run_suite(
    cfg: dict[str, Any],
    config_path: str,
    overrides: list[str],
    out: Path,
    losses: list[str] | None = None,
    seeds: list[int] | None = None,
    jobs: int | None = None,
    retry_failed: bool = False,
    log=_say,
) -> list[PlannedRun]:
    """Train every run of the suite that has not finished; return the planned runs."""
    from lossbench.plugins import load_plugins

    load_plugins(cfg["plugins"])
    runs = plan_runs(cfg, out, losses, seeds)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / SUITE_FILE, yaml.safe_dump(cfg, sort_keys=False))

    statuses = [run.status for run in runs]  # one read of each metrics.json
    todo = []
    for run, status in zip(runs, statuses):
        if status == "ok" or (status == "failed" and not retry_failed):
            continue
        if status == "failed":  # a retry starts over: the failure may be in the checkpoint
            shutil.rmtree(run.run_dir / LAST_CKPT.parent, ignore_errors=True)
        todo.append(run)
    done = statuses.count("ok")
    failed_kept = statuses.count("failed") if not retry_failed else 0
    log(
        f"suite {cfg['suite']}: {len(runs)} runs — {done} already done, {failed_kept} failed before "
        f"(kept; --retry-failed reruns them), {len(todo)} to train -> {out}"
    )
    if not todo:
        return runs

    jobs = int(jobs or cfg.get("jobs") or 1)
    devices = cfg["trainer"].get("devices", 1)
    if jobs > 1 and devices not in (1, "1", [0]):
        log(f"note: trainer.devices={devices!r}: running one run at a time (jobs=1)")
        jobs = 1
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))

    base = [sys.executable, "-m", "lossbench.cli", "train", "--config", str(config_path), "--no-progress"]
    if overrides:
        base += ["--set", *overrides]
    pending, active, finished_times = list(todo), {}, []
    t0 = time.perf_counter()
    old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        while pending or active:
            while pending and len(active) < jobs:
                run = pending.pop(0)
                run.run_dir.mkdir(parents=True, exist_ok=True)
                logf = open(run.run_dir / LOG_FILE, "a")
                cmd = base + ["--loss", run.label, "--seed", str(run.seed), "--out", str(out)]
                resumed = (run.run_dir / LAST_CKPT).exists()
                proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
                active[proc] = (run, logf, time.perf_counter())
                n = len(todo) - len(pending)
                log(f"[{n}/{len(todo)}] start  {run}{' (resuming from its last checkpoint)' if resumed else ''}")
            time.sleep(0.2)
            for proc in [p for p in active if p.poll() is not None]:
                run, logf, started = active.pop(proc)
                logf.close()
                elapsed = time.perf_counter() - started
                finished_times.append(elapsed)
                rec = run.record or {}
                if proc.returncode != 0 and rec.get("status") != "failed":
                    rec = _record_crash(run, proc.returncode)
                left = len(pending) + len(active)
                mean = sum(finished_times) / len(finished_times)
                eta = mean * left / max(jobs, 1)
                if rec.get("status") == "ok":
                    what = f"ok in {_fmt_time(elapsed)}, test mIoU {rec['test']['miou']:.3f}"
                else:
                    what = f"FAILED in {_fmt_time(elapsed)}: {rec.get('error', '?')}"
                log(
                    f"[{len(finished_times)}/{len(todo)}] {what} — {run} · {left} left · "
                    f"{_fmt_time(mean)}/run so far · ETA {_fmt_time(eta)}"
                )
    except (KeyboardInterrupt, _Terminate):
        for proc, (run, logf, _) in active.items():
            proc.terminate()
        for proc, (run, logf, _) in active.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            logf.close()
        log("interrupted: rerun the same command to resume (finished runs are kept)")
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    log(f"suite {cfg['suite']}: trained {len(todo)} runs in {_fmt_time(time.perf_counter() - t0)}")
    return runs


def _record_crash(run: PlannedRun, returncode: int) -> dict[str, Any]:
    """A run whose process died without recording a failure (killed, segfault, out of memory)."""
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
    tail = ""
    log = run.run_dir / LOG_FILE
    if log.exists():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        tail = lines[-1][:300] if lines else ""
    rec = (run.record or {}) | {
        "status": "failed",
        "label": run.label,
        "loss": run.run_cfg["loss"]["name"],
        "seed": run.seed,
        "loss_params": run.run_cfg["loss"]["params"],
        "config_hash": config_hash(run.run_cfg),
        "error": f"process {how}" + (f": {tail}" if tail else "") + f" (log: {log})",
    }
    write_json_atomic(run.run_dir / METRICS_FILE, rec)
    return rec
