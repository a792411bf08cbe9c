"""The suite runner behind ``lossbench compare``: every (loss, seed) in its own process, resumable.

* Each run is a ``lossbench train --run-dir`` process given the resolved config the suite wrote
  into the run's folder, so a crash or NaN in one loss is recorded (with its error) and the suite
  goes on, and ``strategy: ddp`` works (Lightning cannot loop ``fit`` under ddp). It trains in a warm
  worker (:mod:`lossbench.workers`): a process that imported what training needs once and trains run
  after run, recycled after a few runs or any failure; a DDP run gets a process of its own.
* A run is keyed by the hash of its resolved config (:func:`lossbench.record.run_dir_for`): a
  finished run is never retrained, a new loss or seed trains only itself, and an interrupted run
  resumes from its last checkpoint. Failed runs are kept as failed unless ``--retry-failed``.
* Where runs train is :mod:`lossbench.launch`'s: on this machine, G // d GPU groups on G visible GPUs
  with ``trainer.devices: d`` (each run pinned to its group through ``CUDA_VISIBLE_DEVICES``; with
  ``d = 1``, ``jobs_per_gpu`` runs share a GPU, ``auto`` sized from a run's measured memory), or
  ``jobs`` at once on the CPU, each with ``cores / jobs`` threads; with ``--launcher slurm``, one
  SLURM job per run, submitted as one job array. Run processes die with the suite (SIGTERM on Linux
  when the suite's process goes, however it goes), so a killed suite never leaves a run training
  beside the next one; SLURM jobs go on without it.
* A run is claimed before it trains (:mod:`lossbench.claim`): two launchers on one runs folder —
  two ``compare`` processes, or a ``compare`` and a SLURM array — train every run once; a launcher
  waits for the runs another one holds, and takes a run over only when its owner is gone.
* While runs train, a line per epoch shows each one's progress, latest validation mIoU and the suite's
  ETA; inside a long epoch a line a minute shows its step (the run's ``train.log`` has one every
  ``trainer.log_every_n_steps`` batches).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lossbench import claim
from lossbench.config import LAUNCHERS, ConfigError, SuiteConfig, check_jobs, dump_yaml
from lossbench.errors import DISK_FULL, SuiteError
from lossbench.io import write_text_atomic
from lossbench.plan import PlannedRun, plan_runs, resolve_seeds
from lossbench.progress import plural
from lossbench.record import (
    DAMAGED,
    FAILED,
    MISSING,
    OK,
    RUNNING,
    DamagedRecord,
    Progress,
    RunRecord,
    checkpoint_dir,
    fmt_time,
    last_checkpoint,
    log_path,
    read_record,
    read_status,
    record_path,
    suite_path,
    take_rank_error,
    write_record,
    write_run_config,
)


def _say(message: str) -> None:
    print(message, flush=True)  # progress must show even when stdout is a file or a pipe


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


def runs_to_train(runs: list[PlannedRun], retry_failed: bool, log: Callable[[str], None]) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """The runs that are not finished — missing, running/interrupted (resumed), damaged, and failed if
    ``retry_failed`` — and, of those, the failed ones. It only reads (``compare --dry-run`` asks it too)."""
    statuses = [read_status(run.run_dir) for run in runs]  # one read of each record
    todo, retried = [], []
    for run, status in zip(runs, statuses):
        if status == OK or (status == FAILED and not retry_failed):
            continue
        if status == FAILED:
            retried.append(run)
        if status == DAMAGED:
            log(f"note: the record of {run} is damaged; training it again")
        todo.append(run)
    kept = statuses.count(FAILED) if not retry_failed else 0
    log(
        f"{plural(len(runs), 'run')} — {statuses.count(OK)} already done, {kept} failed before "
        f"(kept; --retry-failed reruns them), {len(todo)} to train"
    )
    return todo, retried


def checked_plan(cfg: SuiteConfig, out: Path, losses: list[str] | None = None, seeds: list[int] | None = None,
                 log: Callable[[str], None] = _say) -> list[PlannedRun]:  # fmt: skip
    """Every check ``compare`` makes before it trains — plugins loaded, the data read once (its cache built, a
    problem with any file raised now), each loss built and called — and then the suite's runs."""
    from lossbench.plugins import load_plugins

    check_one_suite(cfg, out)
    log(f"suite {cfg.suite}: checking the data and the losses before anything trains …")
    load_plugins(cfg.plugins)
    return plan_runs(cfg, out, losses, seeds, prepare(cfg, log))


def suite_differences(cfg: SuiteConfig, folder: SuiteConfig) -> list[str]:
    """What makes ``cfg`` another suite than the one a runs folder holds: its name, losses, seeds, budgets, tune and
    race sections, or what its runs train (data, model, optim, trainer, by a run's config hash)."""
    from lossbench.config import LossEntry
    from lossbench.identity import config_hash, run_config

    differs = [key for key in ("suite", "losses", "seeds", "budgets", "tune", "race") if getattr(cfg, key) != getattr(folder, key)]
    probe = LossEntry(name="ce")
    if config_hash(run_config(cfg, probe, 0)) != config_hash(run_config(folder, probe, 0)):
        differs.append("what its runs train (data, model, optim or trainer)")
    return differs


def check_one_suite(cfg: SuiteConfig, out: Path) -> None:
    """One ``--out`` holds one suite: refuse, before anything trains, a compare of another suite (by name) on a folder
    that holds one, and a compare that would train otherwise than the folder's suite while another live process
    trains there (it would rewrite ``suite.yaml`` under that compare, whose report would then find no runs of its own)."""
    from lossbench.record import load_suite, scan_runs

    try:
        folder = load_suite(out)
    except ConfigError:
        return  # a damaged suite file: the runs' own configs decide, as before
    if folder is None:
        return
    if folder.suite != cfg.suite:
        raise ConfigError(f"{out} holds the runs of suite {folder.suite!r} ({suite_path(out)}), not of {cfg.suite!r}: one "
                          f"--out holds one suite; give {cfg.suite!r} its own --out (the default is runs/{cfg.suite})")  # fmt: skip
    differs = suite_differences(cfg, folder)
    if not differs or differs == ["losses"] or set(differs) <= {"losses", "seeds"}:
        return  # more losses or seeds for the same runs: the folder's suite grows
    liveness, me = claim.Liveness(), os.getpid()
    for rec in scan_runs(out).records:
        owner = claim.read_claim(rec.run_dir) if rec.run_dir is not None else None
        if owner is not None and owner.pid != me and liveness.alive(owner):
            raise ConfigError(f"{out} is in use: {owner.by} (pid {owner.pid} on {owner.host}) trains {rec.label} seed "
                              f"{rec.seed} of suite {folder.suite!r} as {suite_path(out)} says, and this config differs in "
                              f"{', '.join(differs)}; wait for it to end, or give this config its own --out")  # fmt: skip


def run_suite(
    cfg: SuiteConfig,
    out: Path,
    losses: list[str] | None = None,
    seeds: list[int] | None = None,
    jobs: int | str | None = None,
    retry_failed: bool = False,
    launcher: str | None = None,
    detach: bool = False,
    log: Callable[[str], None] = _say,
) -> list[PlannedRun]:
    """Train every run of the suite that has not finished (here, or as SLURM jobs with ``launcher``);
    return the planned runs. With ``detach``, return once the jobs are submitted."""
    from lossbench.plugins import load_plugins

    load_plugins(cfg.plugins)
    kind = launcher or cfg.launcher.kind
    if kind not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {kind!r}; expected {', '.join(LAUNCHERS)}")
    if kind == "slurm" and shutil.which("sbatch") is None:  # before anything is claimed or submitted
        raise ConfigError("--launcher slurm needs SLURM's sbatch on the PATH, and this machine has none: run compare on "
                          "the cluster's login node, or use --launcher local (or submitit-local to try the job path here)")  # fmt: skip
    placement = None
    if kind == "local":
        placement = _placement(cfg, jobs)  # a config that asks for GPUs it cannot have fails before any work
    runs = checked_plan(cfg, out, losses, seeds, log)
    _writing(out, lambda: (out.mkdir(parents=True, exist_ok=True), write_text_atomic(suite_path(out), dump_yaml(cfg))))
    log(f"suite {cfg.suite} -> {out}")
    if cfg.tune is not None:
        log(f"tuned suite: each loss's search on seeds {cfg.tune.seeds}, selected on validation {cfg.tune.select_on}; "
            f"the selected points then train on seeds {resolve_seeds(cfg, seeds)}")  # fmt: skip
    if not _train(runs, cfg, out, kind, placement, retry_failed, detach, log):
        return runs
    if cfg.tune is None:
        return runs
    from lossbench.tune import describe_selection, search_results, select

    searches = search_results(cfg, runs, _record_or_none)
    log(f"selected on validation ({cfg.tune.select_on}, last epoch, mean over seeds {cfg.tune.seeds}):")
    for line in describe_selection(searches, cfg.tune.select_on):
        log(f"    {line}")
    searched = {run.run_dir for run in runs}
    runs = plan_runs(cfg, out, losses, seeds, check=False, selection=select(searches))
    log("the selected points on the suite's seeds:")
    _train([run for run in runs if run.run_dir not in searched], cfg, out, kind, placement, retry_failed, detach, log)
    return runs


def _train(runs: list[PlannedRun], cfg: SuiteConfig, out: Path, kind: str, placement: Any, retry_failed: bool,
           detach: bool, log: Callable[[str], None]) -> bool:  # fmt: skip
    """Train the unfinished ``runs``; False when detached with jobs still to run."""
    todo, retried = runs_to_train(runs, retry_failed, log)
    for run in retried:  # a retry starts over: the failure may be in the checkpoint
        shutil.rmtree(checkpoint_dir(run.run_dir), ignore_errors=True)
    if not todo:
        return True
    t0 = time.perf_counter()
    if placement is not None:
        if placement.note:
            log(f"note: {placement.note}")
        log(placement.describe())
        _Pool(todo, placement, out, log).run()
    elif not _Cluster(todo, kind, cfg, out, log).run(detach):
        return False
    log(f"suite {cfg.suite}: trained {plural(len(todo), 'run')} in {fmt_time(time.perf_counter() - t0)}")
    return True


def _placement(cfg: SuiteConfig, jobs: int | str | None) -> Any:
    from lossbench.launch import place, visible_gpus

    if jobs is not None:
        try:
            jobs = check_jobs(jobs)
        except ValueError as e:
            raise ConfigError(f"--jobs: {e}") from None
    import dataclasses

    cores = os.cpu_count() or 1
    placement = place(cfg.trainer, cfg.jobs if jobs is None else jobs, visible_gpus(), cores, cfg.jobs_per_gpu)
    return dataclasses.replace(placement, cores=cores)


def prepare(cfg: SuiteConfig, log: Callable[[str], None] = _say) -> int:
    """Before any run starts: read the data once (building its cache and raising any problem with a
    file or item now, not in every run) and fetch pretrained encoder weights once; return the class count."""
    from lossbench.data import load_data
    from lossbench.models import build_model

    t0 = time.perf_counter()
    bundle = load_data(cfg.data)
    if time.perf_counter() - t0 > 5:
        log(f"data ready in {fmt_time(time.perf_counter() - t0)} ({cfg.data.kind}, {bundle.num_classes} classes)")
    if cfg.model.encoder_weights is not None:
        build_model(cfg.model.model_dump(), bundle.in_channels, bundle.num_classes)
    return bundle.num_classes


@dataclass
class _Watched:
    run: PlannedRun
    started: float
    epoch: int = 0
    seen: int = 0  # mtime of the record when last read
    progress: Progress | None = None  # as last read
    noted: float = 0.0  # when the console last showed this run inside an epoch
    testing: bool = False  # the console has said the run is scoring its test set


CONSOLE_EVERY_S = 60.0
"""Inside a long epoch, compare shows a run's step at most this often (seconds); its train.log has more."""


ETA_STEP = 0.3
"""How far each new estimate moves the suite ETA shown (the rest: the last one shown, less the time since)."""


class _Progress:
    """The lines that show runs training: one per epoch with its validation mIoU and the suite's ETA,
    one every :data:`CONSOLE_EVERY_S` inside a long epoch, one when a run starts scoring its test set, one
    when a run ends. The suite ETA is smoothed (:data:`ETA_STEP`) so consecutive lines do not jump."""

    def __init__(self, todo: list[PlannedRun], at_once: int, log: Callable[[str], None]):
        self.total, self.at_once, self.log = len(todo), at_once, log
        self.epochs_left = sum(run.budget for run in todo)  # the budgets of the runs not ended yet
        self.durations: list[tuple[float, int]] = []  # (seconds, budget) of each run ended
        self.shown: tuple[float, float] | None = None  # (ETA shown, when)

    def _per_epoch(self) -> float | None:
        """Seconds a run took per epoch of its budget, its start-up and test included, over the runs ended: a
        suite of 8- and 24-epoch runs (``budgets:``) expects the 24-epoch ones to take three times as long."""
        if not self.durations:
            return None
        return sum(s for s, _ in self.durations) / max(sum(b for _, b in self.durations), 1)

    def _smooth(self, eta: float) -> float:
        now = time.perf_counter()
        if self.shown is not None:
            before = max(self.shown[0] - (now - self.shown[1]), 0.0)
            eta = before + ETA_STEP * (eta - before)
        self.shown = (eta, now)
        return eta

    def epochs(self, watched: list[_Watched], queued: list[PlannedRun] = ()) -> None:
        for state in watched:
            try:
                mtime = record_path(state.run.run_dir).stat().st_mtime_ns
                if mtime == state.seen:
                    continue  # read a record only when the run has written it
                state.seen = mtime
                rec = read_record(state.run.run_dir)
            except (OSError, DamagedRecord):
                continue
            prog = rec.progress if rec and rec.status == RUNNING else None
            if prog is None:
                continue
            state.progress = prog
            now = time.perf_counter()
            if prog.epoch > state.epoch:
                state.epoch, state.noted = prog.epoch, now
                eta = self.suite_eta(watched, queued)
                ended = Progress(prog.epoch, prog.max_epochs, prog.val_miou)  # the epoch that ended, whatever came since
                self.log(f"    {state.run}: {ended.describe()} ({fmt_time(now - state.started)})"
                         + (f" · suite ETA {fmt_time(eta)}" if eta is not None else ""))  # fmt: skip
            elif prog.test_step is not None and (not state.testing or now - state.noted >= CONSOLE_EVERY_S):
                state.testing, state.noted = True, now
                self.log(f"    {state.run}: {prog.describe()} ({fmt_time(now - state.started)})")
            elif prog.step is not None and now - max(state.noted, state.started) >= CONSOLE_EVERY_S:
                state.noted = now
                self.log(f"    {state.run}: {prog.describe()} ({fmt_time(now - state.started)})")

    def suite_eta(self, watched: list[_Watched], queued: list[PlannedRun]) -> float | None:
        """Seconds until the runs training and queued here are done (smoothed): from whole runs once one has ended —
        their test included, per epoch of budget — else from the epochs timed so far and the test each run expects
        (:meth:`lossbench.record.Progress.seconds_left`)."""
        now = time.perf_counter()
        per_epoch = self._per_epoch()
        if per_epoch is not None:
            def left_of(w: _Watched) -> float:
                expected = per_epoch * w.run.budget
                own = w.progress.seconds_left() if w.progress is not None else None  # its epochs still to go
                return max(expected - (now - w.started), own or 0.0, 0.05 * expected)

            left = sum(left_of(w) for w in watched) + per_epoch * sum(run.budget for run in queued)
        else:
            timed = [w.progress.epoch_s for w in watched if w.progress is not None and w.progress.epoch_s]
            if not timed:
                return None
            per_epoch = sum(timed) / len(timed)
            tests = [w.progress.test_s for w in watched if w.progress is not None and w.progress.test_s]
            test = sum(tests) / len(tests) if tests else 0.0  # a run's test, as the runs under way expect it
            left = sum((w.progress.seconds_left() or 0.0) if w.progress and w.progress.epoch_s else per_epoch * w.run.budget + test
                       for w in watched)  # fmt: skip
            left += sum(per_epoch * run.budget + test for run in queued)
        return self._smooth(left / max(min(self.at_once, len(watched) + len(queued)), 1))

    def ended(self, state: _Watched, rec: RunRecord | None, left: int, where: str = "") -> None:
        elapsed = time.perf_counter() - state.started
        self.durations.append((elapsed, state.run.budget))
        self.epochs_left = max(self.epochs_left - state.run.budget, 0)
        mean = sum(s for s, _ in self.durations) / len(self.durations)
        eta = self._smooth((self._per_epoch() or 0.0) * self.epochs_left / max(self.at_once, 1))
        if rec is not None and rec.ok:
            what = f"ok in {fmt_time(elapsed)}, test mIoU {rec.miou:.3f}"
        else:
            what = f"{(rec.status if rec else MISSING).upper()} in {fmt_time(elapsed)}: {rec.error if rec else '?'}"
        self.log(
            f"[{len(self.durations)}/{self.total}] {what} — {state.run}{where} · {left} left · "
            f"{fmt_time(mean)}/run so far · ETA {fmt_time(eta)}"
        )


class _Elsewhere:
    """Runs another launcher holds: waited for until they finish, taken over when their owner is gone."""

    def __init__(self, log: Callable[[str], None]):
        self.runs: list[_Watched] = []
        self.log = log
        self.liveness = claim.Liveness()
        self.next_look = 0.0

    def add(self, run: PlannedRun, holder: claim.Owner) -> None:
        hint = claim.release_hint(holder, run.run_dir)
        self.log(f"       {run}: being trained by {holder.describe()}; waiting for it" + (f" ({hint})" if hint else ""))
        self.runs.append(_Watched(run, time.perf_counter()))

    def look(self, progress: _Progress, left: int) -> list[PlannedRun]:
        """Every few seconds: report the runs finished elsewhere; return those whose owner has gone."""
        if not self.runs or time.monotonic() < self.next_look:
            return []
        self.next_look = time.monotonic() + 2.0
        self.liveness.refresh()
        orphans = []
        for state in list(self.runs):
            holder = claim.read_claim(state.run.run_dir)
            if holder is not None and self.liveness.alive(holder):
                continue
            self.runs.remove(state)
            rec = _record_or_none(state.run.run_dir)
            if holder is None and rec is not None and rec.status in (OK, FAILED):
                progress.ended(state, rec, left + len(self.runs), " (trained by another launcher)")
            else:
                self.log(f"       {state.run}: its owner is gone without finishing it; taking it over")
                orphans.append(state.run)
        return orphans


@dataclass
class _Active:
    watched: _Watched
    slot: tuple[str, ...] | None


class _Pool:
    """Runs ``todo`` on this machine in warm workers (:class:`~lossbench.workers.Workers`), as the
    :class:`~lossbench.launch.Placement` says (GPU groups, several runs to a GPU, or CPU threads), claiming
    each run first; reports progress. With ``jobs_per_gpu: auto`` it puts more runs on each GPU once a
    run has measured its GPU memory (:func:`~lossbench.launch.auto_per_gpu`)."""

    def __init__(self, todo: list[PlannedRun], placement: Any, out: Path, log: Callable[[str], None],
                 max_runs: int | None = None):  # fmt: skip
        from lossbench.launch import Slots
        from lossbench.workers import RUNS_PER_WORKER, Workers

        self.todo, self.placement, self.out, self.log = todo, placement, out, log
        self.owner = claim.me("compare")
        self.slots = Slots(list(placement.gpu_slots), placement.per_group) if placement.gpu_slots else None
        self.workers = Workers(placement.on_gpu, max_runs or RUNS_PER_WORKER)
        self.active: dict[Any, _Active] = {}  # a worker (or a DDP run's own process) → the run it trains
        self.progress = _Progress(todo, placement.at_once, log)
        self.elsewhere = _Elsewhere(log)
        self.started = 0
        self.cores = os.cpu_count() or 1

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[claim.TOKEN_ENV] = self.owner.token
        if self.placement.at_once > 1 and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(self.placement.threads)
        return env

    def run(self) -> None:
        pending = list(self.todo)
        old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            while pending or self.active or self.elsewhere.runs:
                while pending and len(self.active) < self.placement.at_once:
                    self._claim_and_start(pending.pop(0), self._env())
                time.sleep(0.1)
                self.progress.epochs([a.watched for a in self.active.values()], pending)
                self._size_from_memory()
                for proc in [p for p in self.active if p.poll() is not None]:
                    self._finish(proc, left=len(pending) + len(self.active) - 1 + len(self.elsewhere.runs))
                pending[:0] = self.elsewhere.look(self.progress, len(pending) + len(self.active))
        except (KeyboardInterrupt, _Terminate):
            self._stop_all()
            self.log("interrupted: the runs in progress are resumable; rerun the same command to go on")
            raise KeyboardInterrupt from None
        except SuiteError:
            self._stop_all()
            raise
        finally:
            signal.signal(signal.SIGTERM, old_handler)
            self.workers.close()

    def _size_from_memory(self) -> None:
        """``jobs_per_gpu: auto``: once a run on a GPU has finished an epoch and measured its peak memory, put as
        many runs on each GPU as fit in the free memory and the cores can feed."""
        if not self.placement.auto_per_gpu:
            return
        measured = [a for a in self.active.values() if a.watched.progress and a.watched.progress.gpu_peak_mib]
        if not measured:
            return
        from lossbench.data import num_workers
        from lossbench.launch import auto_per_gpu

        first = measured[0]
        prog, run = first.watched.progress, first.watched.run
        running = sum(1 for a in self.active.values() if a.slot == first.slot)
        per_gpu = auto_per_gpu(prog.gpu_peak_mib, prog.gpu_free_mib or 0.0, self.cores, len(self.placement.gpu_slots),
                               num_workers(run.run_cfg.data, accelerated=True), running=running)  # fmt: skip
        self.placement = self.placement.with_per_group(per_gpu, self.cores)
        self.slots.grow(per_gpu)
        self.progress.at_once = self.placement.at_once
        self.log(f"jobs_per_gpu auto: {run} peaked at {prog.gpu_peak_mib:.0f} MiB of GPU memory with {prog.gpu_free_mib or 0:.0f} MiB "
                 f"free: {per_gpu} runs per GPU from now on ({self.placement.describe()})")  # fmt: skip

    def _claim_and_start(self, run: PlannedRun, env: dict[str, str]) -> None:
        holder = _writing(self.out, lambda: claim.claim(run.run_dir, self.owner, self.elsewhere.liveness))
        if holder is not None:
            self.elsewhere.add(run, holder)
            return
        rec = _record_or_none(run.run_dir)
        if rec is not None and rec.ok:  # finished by another launcher since the plan was made
            claim.release(run.run_dir, self.owner.token)
            self.progress.ended(_Watched(run, time.perf_counter()), rec, 0, " (trained by another launcher)")
            return

        from lossbench.launch import one_process

        def prepare() -> None:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(run.run_dir, run.run_cfg)
            log_path(run.run_dir).touch()

        _writing(self.out, prepare)
        slot = self.slots.take() if self.slots else None
        run_env = env if slot is None else {**env, "CUDA_VISIBLE_DEVICES": ",".join(slot)}
        resumed = last_checkpoint(run.run_dir).exists()
        warm = one_process(run.run_cfg.trainer, slot)
        self.started += 1
        where = f" on GPU {','.join(slot)}" if slot else ""
        self.log(f"[{self.started}/{len(self.todo)}] start  {run}{where}{' (resuming from its last checkpoint)' if resumed else ''}")
        before = self.workers.started
        proc = self.workers.start(run.run_dir, run_env, self.owner.token, slot, warm)
        if warm and self.workers.started == 1 and before == 0:
            self.log("       (a new worker imports torch and Lightning once, then trains run after run)")
        self.active[proc] = _Active(_Watched(run, time.perf_counter()), slot)

    def _finish(self, proc: Any, left: int) -> None:
        state = self.active.pop(proc)
        if state.slot is not None:
            self.slots.give(state.slot)
        run = state.watched.run
        rec = _record_or_none(run.run_dir)
        if proc.returncode == DISK_FULL:  # the run stopped resumably; stop the suite rather than fail run after run
            claim.release(run.run_dir, self.owner.token)
            self.workers.ended(proc)
            raise SuiteError(rec.error if rec is not None and rec.error else
                             f"the disk is full under {self.out}: the suite stopped and every run is resumable — free "
                             "space there (or choose another --out) and run the same command again")  # fmt: skip
        if proc.returncode != 0 and (rec is None or rec.status == RUNNING):
            rec = _writing(self.out, lambda: record_crash(run, how_ended(proc.returncode), rec))
        claim.release(run.run_dir, self.owner.token)
        self.workers.ended(proc)
        self.progress.ended(state.watched, rec, left)
        for line in wandb_problems(run.run_dir):  # W&B is a sink, but a failing one is said where the user looks
            self.log(f"       {run}: {line}")

    def _stop_all(self) -> None:
        for proc in self.active:
            proc.terminate()
        for proc, state in self.active.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            claim.release(state.watched.run.run_dir, self.owner.token)
        self.active.clear()


class _Cluster:
    """Runs ``todo`` as submitit jobs (SLURM, or submitit's local executor): claims them, submits those
    it holds as one job array, then — unless detached — shows progress until every run has ended."""

    def __init__(self, todo: list[PlannedRun], kind: str, cfg: SuiteConfig, out: Path, log: Callable[[str], None]):
        self.todo, self.kind, self.cfg, self.out, self.log = todo, kind, cfg, out, log
        self.owner = claim.me("compare")
        self.progress = _Progress(todo, len(todo), log)
        self.elsewhere = _Elsewhere(log)
        self.mine: list[_Watched] = []
        self.jobs: dict[Path, str] = {}

    def run(self, detach: bool) -> bool:
        """True once every run has ended; False when detached with jobs still to run."""
        self._submit(self.todo)
        if detach:
            self.log(f"detached: the jobs train on; `lossbench status --out {self.out}` shows them, "
                     "and the same compare again waits for them and writes the report")  # fmt: skip
            return False
        try:
            while self.mine or self.elsewhere.runs:
                time.sleep(1.0)
                self.progress.epochs(self.mine)
                self._look()
                orphans = self.elsewhere.look(self.progress, len(self.mine))
                if orphans:
                    self._submit(orphans)
        except KeyboardInterrupt:
            self.log(f"stopped watching: the jobs go on; `lossbench status --out {self.out}` shows them, "
                     "and the same compare again waits for them and writes the report")  # fmt: skip
            raise
        return True

    def _submit(self, runs: list[PlannedRun]) -> None:
        from lossbench.launch import submit

        held = []
        for run in runs:
            holder = _writing(self.out, lambda run=run: claim.claim(run.run_dir, self.owner, self.elsewhere.liveness))
            if holder is not None:
                self.elsewhere.add(run, holder)
                continue
            _writing(self.out, lambda run=run: (run.run_dir.mkdir(parents=True, exist_ok=True), write_run_config(run.run_dir, run.run_cfg)))
            held.append(run)
        for sub in submit(self.kind, held, self.owner.token, self.out, self.cfg.suite, self.cfg.trainer, self.cfg.launcher, self.log):
            self.jobs[sub.run.run_dir] = sub.job_id
            self.mine.append(_Watched(sub.run, time.perf_counter()))

    def _look(self) -> None:
        """Report the runs that ended: finished (claim released), or their job gone without finishing."""
        liveness = self.elsewhere.liveness
        liveness.refresh()
        for state in list(self.mine):
            run = state.run
            holder = claim.read_claim(run.run_dir)
            if holder is not None and holder.token == self.owner.token and liveness.alive(holder):
                continue
            if holder is not None and holder.token != self.owner.token:  # taken over: another launcher's now
                self.mine.remove(state)
                self.elsewhere.add(run, holder)
                continue
            rec = _record_or_none(run.run_dir)
            self.mine.remove(state)
            if rec is None or rec.status == RUNNING:  # the job went without a word: killed, out of memory, node lost
                rec = _writing(self.out, lambda: record_crash(run, f"of job {self.jobs[run.run_dir]} ended without recording why", rec))
            claim.release(run.run_dir, self.owner.token)
            self.progress.ended(state, rec, len(self.mine) + len(self.elsewhere.runs), f" (job {self.jobs[run.run_dir]})")


def wandb_problems(run_dir: Path) -> list[str]:
    """The lines a run process wrote to its ``train.log`` when W&B failed it (the run itself went on)."""
    try:
        lines = log_path(run_dir).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.startswith(("lossbench: W&B", "lossbench: the prediction images were not logged"))]


def _record_or_none(run_dir: Path) -> RunRecord | None:
    """The run's record; ``None`` when it has none yet or it cannot be read."""
    try:
        return read_record(run_dir)
    except DamagedRecord:
        return None


def how_ended(returncode: int) -> str:
    return f"killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"


def record_crash(run: PlannedRun, how: str, rec: RunRecord | None) -> RunRecord:
    """Record a run whose process or job died without recording why (killed, segfault, out of memory):
    ``how`` it ended, e.g. ``killed by signal 9``."""
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
