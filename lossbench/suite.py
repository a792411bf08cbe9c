"""The suite runner behind ``lossbench compare``: every (loss, seed) in its own process, resumable.

* Each run is a ``lossbench train --run-dir`` subprocess given the resolved config the suite wrote
  into the run's folder, so a crash or NaN in one loss is recorded (with its error) and the suite
  goes on, and ``strategy: ddp`` works (Lightning cannot loop ``fit`` under ddp).
* A run is keyed by the hash of its resolved config (:func:`lossbench.record.run_dir_for`): a
  finished run is never retrained, a new loss or seed trains only itself, and an interrupted run
  resumes from its last checkpoint. Failed runs are kept as failed unless ``--retry-failed``.
* ``jobs`` runs at once; on a CPU each gets ``cores / jobs`` threads. Run processes die with the
  suite (SIGTERM on Linux when the suite's process goes, however it goes), so a killed suite never
  leaves a run training beside the next one.
* While runs train, a line per epoch shows each one's progress and latest validation mIoU.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from lossbench.config import (
    ConfigError,
    LossEntry,
    RunConfig,
    SuiteConfig,
    dump_yaml,
    resolve_losses,
    resolve_seeds,
    run_config,
    runs_at_once,
)
from lossbench.io import write_text_atomic
from lossbench.record import (
    DAMAGED,
    FAILED,
    MISSING,
    OK,
    RUNNING,
    DamagedRecord,
    RunRecord,
    checkpoint_dir,
    last_checkpoint,
    log_path,
    read_record,
    read_status,
    record_path,
    run_dir_for,
    suite_path,
    take_rank_error,
    write_record,
    write_run_config,
)


class SuiteError(RuntimeError):
    """The suite cannot go on (its folder cannot be written); finished runs are intact."""


@dataclass
class PlannedRun:
    """One (loss, seed, budget) of the suite: its entry, resolved config and folder."""

    entry: LossEntry
    seed: int
    run_cfg: RunConfig
    run_dir: Path
    several_budgets: bool = False

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def budget(self) -> int:
        return self.run_cfg.trainer.max_epochs

    def __str__(self) -> str:
        return f"{self.label} seed {self.seed}" + (f" ({self.budget} epochs)" if self.several_budgets else "")


def plan_runs(
    cfg: SuiteConfig, out: Path, losses: list[str] | None = None, seeds: list[int] | None = None, num_classes: int | None = None
) -> list[PlannedRun]:
    """Every (loss, seed, budget) run of the suite with its resolved config and folder (plugins loaded first)."""
    runs = []
    seeds = resolve_seeds(cfg, seeds)
    budgets = cfg.budget_list()
    for entry in resolve_losses(cfg, losses, num_classes=num_classes):
        for seed in seeds:
            for budget in budgets:
                rc = run_config(cfg, entry, seed, budget)
                runs.append(PlannedRun(entry, seed, rc, run_dir_for(out, rc), len(budgets) > 1))
    return runs


def _say(message: str) -> None:
    print(message, flush=True)  # progress must show even when stdout is a file or a pipe


def fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Terminate(Exception):
    pass


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Terminate()


def _writing(out: Path, what: Callable[[], object]) -> object:
    """Run a write under ``out``; a full disk or read-only folder becomes one :class:`SuiteError` sentence."""
    try:
        return what()
    except OSError as e:
        where = e.filename or out
        raise SuiteError(
            f"cannot write under {out} ({e.strerror or e} at {where}); the suite stopped, finished runs are intact"
        ) from None


def runs_to_train(runs: list[PlannedRun], retry_failed: bool, log: Callable[[str], None]) -> list[PlannedRun]:
    """The runs that are not finished: missing, running/interrupted (resumed), damaged, and failed if retried."""
    statuses = [read_status(run.run_dir) for run in runs]  # one read of each record
    todo = []
    for run, status in zip(runs, statuses):
        if status == OK or (status == FAILED and not retry_failed):
            continue
        if status == FAILED:  # a retry starts over: the failure may be in the checkpoint
            shutil.rmtree(checkpoint_dir(run.run_dir), ignore_errors=True)
        if status == DAMAGED:
            log(f"note: the record of {run} is damaged; training it again")
        todo.append(run)
    kept = statuses.count(FAILED) if not retry_failed else 0
    log(
        f"{len(runs)} runs — {statuses.count(OK)} already done, {kept} failed before "
        f"(kept; --retry-failed reruns them), {len(todo)} to train"
    )
    return todo


def run_suite(
    cfg: SuiteConfig,
    out: Path,
    losses: list[str] | None = None,
    seeds: list[int] | None = None,
    jobs: int | None = None,
    retry_failed: bool = False,
    log: Callable[[str], None] = _say,
) -> list[PlannedRun]:
    """Train every run of the suite that has not finished; return the planned runs."""
    from lossbench.plugins import load_plugins

    load_plugins(cfg.plugins)
    num_classes = prepare(cfg, log)
    runs = plan_runs(cfg, out, losses, seeds, num_classes)
    _writing(out, lambda: (out.mkdir(parents=True, exist_ok=True), write_text_atomic(suite_path(out), dump_yaml(cfg))))
    log(f"suite {cfg.suite} -> {out}")
    todo = runs_to_train(runs, retry_failed, log)
    if todo:
        n_jobs = _jobs(cfg, jobs, log)
        t0 = time.perf_counter()
        _Pool(todo, n_jobs, out, log).run()
        log(f"suite {cfg.suite}: trained {len(todo)} runs in {fmt_time(time.perf_counter() - t0)}")
    return runs


def prepare(cfg: SuiteConfig, log: Callable[[str], None] = _say) -> int:
    """Before any run starts: read the data once (building its cache and raising any problem with a
    file or item now, not in every run) and fetch pretrained encoder weights once; return the class count."""
    from lossbench.data import load_data
    from lossbench.module import build_model

    t0 = time.perf_counter()
    bundle = load_data(cfg.data)
    if time.perf_counter() - t0 > 5:
        log(f"data ready in {fmt_time(time.perf_counter() - t0)} ({cfg.data.kind}, {bundle.num_classes} classes)")
    if cfg.model.encoder_weights is not None:
        build_model(cfg.model.model_dump(), bundle.in_channels, bundle.num_classes)
    return bundle.num_classes


def _jobs(cfg: SuiteConfig, jobs: int | None, log: Callable[[str], None]) -> int:
    if jobs is not None and (jobs == 0 or jobs < -1):
        raise ConfigError(f"--jobs must be ≥ 1, or -1 for one run per CPU core, got {jobs}")
    n = runs_at_once(jobs) if jobs is not None else cfg.jobs_at_once()
    devices = cfg.trainer.devices
    if n > 1 and devices not in (1, "1", [0]):
        log(f"note: trainer.devices={devices!r}: running one run at a time (jobs=1)")
        n = 1
    return n


def _die_with_parent() -> None:
    """In a run process: get SIGTERM when the suite's process dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class _Active:
    run: PlannedRun
    log_file: IO[str]
    started: float
    epoch: int = 0
    seen: int = 0  # mtime of the record when last read


@dataclass
class _Pool:
    """Runs ``todo`` as ``lossbench train`` processes, ``jobs`` at once, and reports progress."""

    todo: list[PlannedRun]
    jobs: int
    out: Path
    log: Callable[[str], None]
    active: dict[subprocess.Popen, _Active] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)

    def run(self) -> None:
        pending = list(self.todo)
        env = dict(os.environ)
        if self.jobs > 1 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            while pending or self.active:
                while pending and len(self.active) < self.jobs:
                    self._start(pending.pop(0), env, len(self.todo) - len(pending))
                time.sleep(0.25)
                self._show_progress()
                for proc in [p for p in self.active if p.poll() is not None]:
                    self._finish(proc, left=len(pending) + len(self.active) - 1)
        except (KeyboardInterrupt, _Terminate):
            self._stop_all()
            self.log("interrupted: the runs in progress are resumable; rerun the same command to go on")
            raise KeyboardInterrupt from None
        except SuiteError:
            self._stop_all()
            raise
        finally:
            signal.signal(signal.SIGTERM, old_handler)

    def _start(self, run: PlannedRun, env: dict[str, str], n: int) -> None:
        def prepare() -> IO[str]:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(run.run_dir, run.run_cfg)
            return open(log_path(run.run_dir), "a")

        log_file = _writing(self.out, prepare)
        cmd = [sys.executable, "-m", "lossbench.cli", "train", "--run-dir", str(run.run_dir), "--no-progress"]
        resumed = last_checkpoint(run.run_dir).exists()
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        self.active[proc] = _Active(run, log_file, time.perf_counter())
        self.log(f"[{n}/{len(self.todo)}] start  {run}{' (resuming from its last checkpoint)' if resumed else ''}")

    def _show_progress(self) -> None:
        for state in self.active.values():
            try:
                mtime = record_path(state.run.run_dir).stat().st_mtime_ns
                if mtime == state.seen:
                    continue  # read a record only when the run has written it
                state.seen = mtime
                rec = read_record(state.run.run_dir)
            except (OSError, DamagedRecord):
                continue
            prog = rec.progress if rec and rec.status == RUNNING else None
            if prog and prog.get("epoch", 0) > state.epoch:
                state.epoch = prog["epoch"]
                miou = prog.get("val_miou")
                miou_text = "—" if miou is None else f"{miou:.3f}"
                self.log(
                    f"    {state.run}: epoch {prog['epoch']}/{prog.get('max_epochs', '?')}, val mIoU {miou_text} "
                    f"({fmt_time(time.perf_counter() - state.started)})"
                )

    def _finish(self, proc: subprocess.Popen, left: int) -> None:
        state = self.active.pop(proc)
        state.log_file.close()
        elapsed = time.perf_counter() - state.started
        self.durations.append(elapsed)
        try:
            rec = read_record(state.run.run_dir)
        except DamagedRecord:
            rec = None
        if proc.returncode != 0 and (rec is None or rec.status == RUNNING):
            rec = _writing(self.out, lambda: record_crash(state.run, proc.returncode, rec))
        mean = sum(self.durations) / len(self.durations)
        eta = mean * left / max(self.jobs, 1)
        if rec is not None and rec.ok:
            what = f"ok in {fmt_time(elapsed)}, test mIoU {rec.miou:.3f}"
        else:
            what = f"{(rec.status if rec else MISSING).upper()} in {fmt_time(elapsed)}: {rec.error if rec else '?'}"
        self.log(
            f"[{len(self.durations)}/{len(self.todo)}] {what} — {state.run} · {left} left · "
            f"{fmt_time(mean)}/run so far · ETA {fmt_time(eta)}"
        )

    def _stop_all(self) -> None:
        for proc in self.active:
            proc.terminate()
        for proc, state in self.active.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            state.log_file.close()
        self.active.clear()


def record_crash(run: PlannedRun, returncode: int, rec: RunRecord | None) -> RunRecord:
    """Record a run whose process died without recording why (killed, segfault, out of memory)."""
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
    tail = ""
    log = log_path(run.run_dir)
    if log.exists():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        tail = lines[-1][:300] if lines else ""
    rec = rec or RunRecord.start(run.run_cfg, attempts=1)
    rec.status, rec.finished_at, rec.progress = FAILED, time.time(), None
    if take_rank_error(rec, run.run_dir, wait_s=0):  # a DDP rank said what failed before the process went
        rec.error += f"; then the process {how}"
    else:
        rec.error = f"process {how}" + (f": {tail}" if tail else "") + f" (log: {log})"
    write_record(run.run_dir, rec)
    return rec
