"""One run: train one model with one loss and one seed, test it, and record it in its folder.

The folder layout and the record are :mod:`lossbench.record`'s. The record is written atomically,
by rank 0 only: ``running`` when the attempt starts (and after every epoch, with its progress),
then ``ok`` with the results, ``failed`` with the error and the rank it happened on, or
``interrupted`` (Ctrl-C, SIGTERM, preemption) — an interrupted run keeps its checkpoint and the
next attempt resumes from it. Results never depend on W&B.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import signal
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lossbench.config import GPU_ACCELERATORS, RunConfig, load_run_config
from lossbench.errors import DiskFull, exit_status
from lossbench.record import (
    FAILED,
    INTERRUPTED,
    LAST_CHECKPOINT,
    OK,
    DamagedRecord,
    PanelImage,
    Progress,
    RunRecord,
    checkpoint_dir,
    clear_rank_errors,
    config_path,
    fmt_time,
    last_checkpoint,
    machine_kind,
    predictions_dir,
    read_record,
    take_rank_error,
    write_evidence,
    write_rank_error,
    write_record,
    write_run_config,
)


class RunClaimed(RuntimeError):
    """Another live launcher holds the run's claim (:mod:`lossbench.claim`): it is not trained twice."""


class RunInterrupted(BaseException):
    """SIGTERM reached a run process (``timeout``, SLURM preemption, ``compare`` stopping): stop and stay resumable."""


_interrupted = False


def _raise_interrupted(signum, frame) -> None:  # noqa: ARG001
    """Raise :class:`RunInterrupted` once; later signals are ignored while the run records that it stopped.

    One stop can bring several: Linux sends the parent-death signal (``compare`` killed) once per thread
    of the dying parent that the run process is handed on from, and people and schedulers repeat a
    SIGTERM. A second raise would cut short the writing of the record that says "interrupted".
    """
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    raise RunInterrupted(f"received signal {signal.Signals(signum).name}")


def global_rank() -> int:
    """This process's rank as the launcher set it (0 outside distributed runs)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def resolve_precision(precision: str, accelerator: str) -> str:
    """``precision: auto`` → ``bf16-mixed`` on a CUDA GPU that supports it, else ``32-true``."""
    if precision != "auto":
        return precision
    import torch

    on_gpu = accelerator in GPU_ACCELERATORS and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def resolve_strategy(trainer_cfg: dict[str, Any]) -> Any:
    """``strategy: ddp`` for a run that has one device in one process (``devices: -1`` on a machine, or a GPU
    group, of one GPU) → ``auto``: DDP of one process computes the same gradients with a process group's
    cost, and a warm worker that trains run after run should not hold one. Anything else is kept."""
    strategy = trainer_cfg.get("strategy", "auto")
    if not (isinstance(strategy, str) and strategy.startswith("ddp")) or trainer_cfg.get("num_nodes", 1) != 1:
        return strategy
    devices = trainer_cfg.get("devices", 1)
    if devices in (-1, "-1", "auto"):
        import torch

        wants_gpu = trainer_cfg.get("accelerator", "auto") in GPU_ACCELERATORS
        count = torch.cuda.device_count() if wants_gpu and torch.cuda.is_available() else None
        devices = count if count is not None else (1 if devices == "auto" else os.cpu_count())
    one = devices in (1, "1") or (isinstance(devices, list) and len(devices) == 1)
    return "auto" if one else strategy


def quiet_lightning() -> None:
    """Keep a run's log to its own output: no Lightning hardware banners or tips, no warning that repeats."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",
        ".*`weights_only`.*",
        ".*Checkpoint directory .* exists and is not empty.*",
        ".*The number of training batches .* is smaller than the logging interval.*",
        ".*isinstance.*LeafSpec.*",
        ".*The `srun` command is available on your system but is not used.*",  # SLURM installed, run outside it
    ):
        warnings.filterwarnings("ignore", message=pattern)


# --- callbacks ------------------------------------------------------------------------------------


class FailureRecorder(Callback):
    """Writes ``errors/rank<k>.json`` the moment an exception reaches Lightning on this rank.

    It runs in Lightning's ``on_exception`` hook, before the process group is torn down, so the rank
    where a failure began has written its error before any other rank sees the connection close:
    rank 0 then records the real error and its rank, not ``Connection closed by peer``.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.exception: BaseException | None = None
        self.world_size = 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.world_size = trainer.world_size

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.exception = exception
        write_rank_error(self.run_dir, trainer.global_rank, _describe(exception), _traceback(exception),
                         interrupted=_is_interrupt(exception),
                         primary=getattr(exception, "on_this_rank", True))  # fmt: skip


class ProgressRecord(Callback):
    """Where the run is, in the record's ``progress`` and as lines on stdout (``train.log`` under ``compare``):
    after each epoch, and inside an epoch every ``trainer.log_every_n_steps`` batches or
    :data:`NOTE_EVERY_S` seconds, whichever comes first (step, batches a second, the epoch's ETA)."""

    def __init__(self, run_dir: Path, record: RunRecord):
        self.run_dir, self.record = run_dir, record
        self.fit_start = self.epoch_start = self.last_note = 0.0
        self.first_epoch = 0
        self.test_s = finished_test_s(Path(run_dir).parent.parent)  # the suite's finished runs say what a test costs
        self.val_s, self.val_start = 0.0, 0.0

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start, self.first_epoch = time.monotonic(), trainer.current_epoch

    @rank_zero_only
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_start = time.monotonic()

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_s = time.monotonic() - self.val_start

    def expected_test_s(self, trainer: L.Trainer) -> float | None:
        """The test's expected seconds: the suite's finished runs' median, else the last validation's pace per image
        over the test images (its boundary metrics and objects not counted: a floor)."""
        if self.test_s is not None:
            return self.test_s
        bundle = getattr(getattr(trainer, "datamodule", None), "bundle", None)
        if not self.val_s or bundle is None or not len(bundle.val):
            return None
        return self.val_s * len(bundle.test) / len(bundle.val)

    @rank_zero_only
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = self.last_note = time.monotonic()

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step, now = batch_idx + 1, time.monotonic()
        steps = trainer.num_training_batches if math.isfinite(trainer.num_training_batches) else None
        first = step == 1 and trainer.current_epoch == self.first_epoch  # status shows the run has started
        due = step % max(trainer.log_every_n_steps, 1) == 0 or now - self.last_note >= NOTE_EVERY_S
        if not (first or due) or step == steps:
            return  # the epoch's end says the rest
        self.last_note = now
        rate = step / max(now - self.epoch_start, 1e-9)
        done = self.record.progress
        self.record.progress = Progress(trainer.current_epoch, trainer.max_epochs, done.val_miou if done else None,
                                        step, steps, rate, done.epoch_s if done else None,
                                        done.gpu_peak_mib if done else None, done.gpu_free_mib if done else None,
                                        test_s=self.expected_test_s(trainer))  # fmt: skip
        write_record(self.run_dir, self.record)
        eta = f", epoch ETA {fmt_time((steps - step) / rate)}" if steps else ""
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: step {step}/{steps or '?'} ({rate:.2f} it/s{eta})", flush=True)

    @rank_zero_only
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = self.last_note = time.monotonic()

    @rank_zero_only
    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:  # fmt: skip
        """Scoring the test set can take minutes after the last epoch (whole volumes, boundary metrics): say so."""
        step, now = batch_idx + 1, time.monotonic()
        total = trainer.num_test_batches[0] if trainer.num_test_batches else None
        steps = int(total) if total is not None and math.isfinite(total) else None
        if step != 1 and now - self.last_note < NOTE_EVERY_S:
            return
        self.last_note = now
        done = self.record.progress
        rate = step / max(now - self.epoch_start, 1e-9)
        pace = rate if step > 1 else None  # the first batch's time holds the loader's start
        self.record.progress = replace(done, test_step=step, test_steps=steps, test_rate=pace) if done else Progress(
            trainer.current_epoch, trainer.max_epochs, None, test_step=step, test_steps=steps, test_rate=pace)  # fmt: skip
        write_record(self.run_dir, self.record)
        eta = f", ETA {fmt_time((steps - step) / rate)}" if steps and step > 1 else ""
        print(f"testing: batch {step}/{steps or '?'} ({rate:.2f} it/s{eta})", flush=True)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not pl_module.history:
            return
        last = pl_module.history[-1]
        epochs = max(last["epoch"] - self.first_epoch, 1)
        epoch_s = (time.monotonic() - self.fit_start) / epochs
        steps = trainer.num_training_batches if math.isfinite(trainer.num_training_batches) else None
        self.record.progress = Progress(last["epoch"], trainer.max_epochs, last["val_miou"], None, steps, None, epoch_s,
                                        *gpu_memory(pl_module.device), test_s=self.expected_test_s(trainer))  # fmt: skip
        write_record(self.run_dir, self.record)
        miou = last["val_miou"]
        print(
            f"epoch {last['epoch']}/{trainer.max_epochs}: train loss {last['train_loss']:.4f}, "
            f"val loss {last['val_loss']:.4f}, val mIoU {'—' if miou is None or math.isnan(miou) else f'{miou:.4f}'}",
            flush=True,
        )


def gpu_memory(device: Any) -> tuple[float | None, float | None]:
    """On a CUDA device: ``(peak MiB reserved by this process's allocator, free MiB on the device)``; else ``(None, None)``.
    What ``jobs_per_gpu: auto`` sizes the runs per GPU from."""
    import torch

    if getattr(device, "type", None) != "cuda":
        return None, None
    free, _ = torch.cuda.mem_get_info(device)
    return torch.cuda.max_memory_reserved(device) / 2**20, free / 2**20


NOTE_EVERY_S = 30.0
"""Inside a long epoch, a progress line at least this often (seconds)."""


FULL_BELOW = 64 << 20
"""Free space (bytes) below which an error in a write is taken for a full disk: torch's zip writer says "unexpected pos"
or "failed writing file", not ENOSPC, when a checkpoint no longer fits."""


def disk_full(exc: BaseException | None, where: Path) -> DiskFull | None:
    """The full disk behind ``exc`` (ENOSPC or EDQUOT in its chain, or a failed write while ``where``'s file system
    has less than :data:`FULL_BELOW` free), as one :class:`~lossbench.errors.DiskFull` sentence naming the path and
    the space; ``None`` when the disk is not the cause."""
    import errno
    import shutil

    seen, chain = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    full = any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in chain)
    writing = any(isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "failed writing" in str(e)) for e in chain)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    if not full and not (writing and free is not None and free < FULL_BELOW):
        return None
    space = f"{free / 2**20:.1f} MiB free" if free is not None else "no space"
    return DiskFull(errno.ENOSPC, f"the disk is full at {where} ({space}; a checkpoint of this run needs more): the suite "
                                  "stopped and every run is resumable — free space there (or choose another --out) and run "
                                  "the same command again")  # fmt: skip


def _is_interrupt(exc: BaseException | None) -> bool:
    """An interrupt, or an error raised while one unwound (torch's zip writer raises "unexpected pos" when a SIGTERM
    lands inside a checkpoint write: the interrupt is its ``__context__``). SystemExit: submitit's requeue on
    preemption or time limit exits the job from its signal handler."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (KeyboardInterrupt, RunInterrupted, SIGTERMException, SystemExit)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


stop_reason: str | None = None
"""Why this process is being stopped, when whoever stops it says (submitit's requeue: :mod:`lossbench.launch`)."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit) and stop_reason:
        return stop_reason
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=20))


# --- one run --------------------------------------------------------------------------------------


def train_run(run_cfg: RunConfig, run_dir: str | Path, progress: bool = True, claim_token: str | None = None) -> RunRecord:
    """Train, test and record one run; resume from its last checkpoint if it has one.

    A run whose record already says ``ok`` for this config is not retrained; its record is returned.
    The run is claimed first (:mod:`lossbench.claim`) — with ``claim_token`` when a launcher made the
    claim for this process, else anew and released at the end; a run another live launcher holds
    raises :class:`RunClaimed`. On failure or interruption the record says so and the exception is re-raised.
    """
    from lossbench import claim

    run_dir = Path(run_dir)
    if os.environ.get("LOSSBENCH_NO_TF32"):  # scripts/gpu-check.sh's fp32 arm: no TF32 in matmuls nor convolutions
        import torch

        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    rank0 = global_rank() == 0
    owner = claim.me("train", claim_token)
    if rank0:
        holder = claim.claim(run_dir, owner)
        if holder is not None:
            raise RunClaimed(f"{run_cfg.loss.label} seed {run_cfg.seed} is being trained by {holder.describe()}; not training it twice")
    try:
        return _train_claimed(run_cfg, run_dir, progress, rank0)
    finally:
        if rank0 and claim_token is None:  # a claim this process made is this process's to release
            claim.release(run_dir, owner.token)


def _train_claimed(run_cfg: RunConfig, run_dir: Path, progress: bool, rank0: bool) -> RunRecord:
    try:
        previous = read_record(run_dir)  # read after claiming: a launcher may have finished it meanwhile
    except DamagedRecord:
        previous = None
    record = RunRecord.start(run_cfg, attempts=(previous.attempts if previous else 0) + 1)
    if previous and previous.ok and previous.config_hash == record.config_hash:
        return previous
    record.placement = placement_now()
    record.machine = machine_now()
    if previous is not None and previous.machine and machine_kind(previous.machine) != machine_kind(record.machine):
        record.machine["earlier"] = sorted({machine_kind(previous.machine), *previous.machine.get("earlier", [])})
    if rank0:
        write_run_config(run_dir, run_cfg)
        clear_rank_errors(run_dir)
        write_record(run_dir, record)
    recorder = FailureRecorder(run_dir)
    try:
        result = _train(run_cfg, run_dir, record, recorder, progress)
    except BaseException as e:
        if rank0:
            write_record(run_dir, _failure(record, run_dir, recorder, e))
        raise
    if rank0:
        write_record(run_dir, result)
        if not run_cfg.trainer.keep_checkpoint:  # a finished run is never trained again: its weights are not needed
            for ckpt in checkpoint_dir(run_dir).glob("*.ckpt"):
                ckpt.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # and no empty folder left (one the user put a file in stays)
                checkpoint_dir(run_dir).rmdir()
    return result


def finished_test_s(out: Path) -> float | None:
    """The median seconds the finished runs of the suite in ``out`` took to test (``None`` before any has)."""
    import statistics

    from lossbench.record import scan_runs

    times = [r.test_s for r in scan_runs(out).records if r.ok and r.test_s is not None]
    return statistics.median(times) if times else None


def placement_now() -> dict[str, Any]:
    """Where this attempt runs, as its launcher placed it: host, SLURM job, the GPUs and CPU threads it was given."""
    import socket

    import torch

    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),  # the process that trained it (a warm worker trains several runs)
        "slurm_job": job,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "device_ids": None,  # filled in when training starts (trainer.device_ids)
        "load": [load_now()],  # the machine's 1-minute load average when it started; the end's is added when it ends
    }


def load_now() -> float | None:
    """The machine's 1-minute load average (``None`` where the OS does not say): what a wall time was measured under."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_now() -> dict[str, Any]:
    """The kind of machine this process trains on: the CPU model and the vector ISA torch dispatches to (AVX2 and
    AVX-512 give other numbers for the same seed), the GPU, and the torch, CUDA and oneDNN versions."""
    import re

    import torch

    cpu = None
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), None)  # fmt: skip
    except OSError:
        pass
    onednn = re.search(r"MKL-DNN v([\d.]+)|oneDNN v([\d.]+)", torch.__config__.show())
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__.split("+")[0],
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "onednn": next((g for g in onednn.groups() if g), None) if onednn else None,
    }


def train_run_dir(run_dir: str | Path, progress: bool = True, claim_token: str | None = None) -> RunRecord:
    """Train the run whose resolved config is ``<run_dir>/config.yaml`` (what ``compare`` starts)."""
    run_dir = Path(run_dir)
    return train_run(load_run_config(config_path(run_dir)), run_dir, progress, claim_token)


def run_process(run_dir: str | Path, token: str | None, progress: bool = False, run_cfg: RunConfig | None = None) -> int:
    """The body of one run's own process: ``lossbench train`` and the run processes ``compare`` forks alike.

    Trains the run in ``run_dir`` (its ``config.yaml``, or ``run_cfg``) holding the claim its launcher
    made with ``token`` (``None``: this process claims it), prints its test result, and returns the
    process's exit status (:func:`exit_status`). A run another live launcher holds is said and left
    alone (status 0); SIGTERM stops it resumably, as Ctrl-C does.
    """
    run_dir = Path(run_dir)
    install_interrupt_handler()
    try:
        record = train_run(run_cfg or load_run_config(config_path(run_dir)), run_dir, progress, token)
    except RunClaimed as e:  # another launcher trains it: nothing to do here
        print(f"lossbench: {e}")
        return 0
    except (RunInterrupted, SIGTERMException):  # SIGTERM, ours or Lightning's (a SystemExit whose code is 0): like Ctrl-C
        return exit_status(KeyboardInterrupt())
    except BaseException as e:  # noqa: BLE001 — the run recorded it; say it in one line
        full = disk_full(e, run_dir)
        return exit_status(full if full is not None else KeyboardInterrupt() if _is_interrupt(e) else e)
    if record.ok:
        print(f"{record.label} seed {record.seed}: test mIoU {record.miou:.4f} -> {run_dir}")
        for name, row in record.test["per_class"].items():
            print(f"  {name:>12}: IoU {_fmt(row['iou'])}  sensitivity {_fmt(row['sensitivity'])}  specificity {_fmt(row['specificity'])}")
    return 0


def _fmt(value: float | None) -> str:
    return "  —   " if value is None or value != value else f"{value:.4f}"


def _failure(record: RunRecord, run_dir: Path, recorder: FailureRecorder, exc: BaseException) -> RunRecord:
    """The record of a failed or interrupted attempt: the first error among the ranks, and its rank."""
    cause = recorder.exception or exc
    full = disk_full(cause, run_dir)
    record.status = INTERRUPTED if full is not None or _is_interrupt(cause) else FAILED  # a full disk: resumable
    record.finished_at = time.time()
    record.error, record.failed_rank, record.traceback = _describe(cause), None, _traceback(cause)
    if full is not None:
        record.error = str(full)
    if recorder.world_size > 1 and record.status == FAILED:
        take_rank_error(record, run_dir, recorder.world_size)
    return record


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writing made atomic on a local disk (:func:`lossbench.io.atomic_file`: a temporary
    file beside the checkpoint, fsynced, renamed over it). A disk that fills (or a kill) while it writes leaves
    the previous ``last.ckpt`` whole, never a truncated one that a resume would fail on."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        import torch

        from lossbench.io import atomic_file

        with atomic_file(path, "wb") as fh:
            torch.save(checkpoint, fh)


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from (not a complete ``torch.save`` zip: truncated,
    overwritten, empty), or ``None``. Reads every member's checksum: a resume is worth the second."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return f"its member {bad} is corrupt" if bad else None


@dataclass
class Components:
    """What one run is made of; built by :func:`build_components`, used by training and the benchmark."""

    trainer: Any
    module: Any
    datamodule: Any
    bundle: Any
    timer: Timer
    precision: str

    @property
    def wall_s(self) -> float:
        return self.timer.time_elapsed("train") + self.timer.time_elapsed("test")


def _datamodule(run_cfg: RunConfig, bundle: Any, module: Any) -> Any:
    from lossbench.data import SegmentationDataModule
    from lossbench.models import input_multiple

    dims = run_cfg.model.dims
    multiple = input_multiple(module.model) if dims == 2 else 1
    return SegmentationDataModule(bundle, run_cfg.data, run_cfg.seed, multiple=multiple, dims=dims, context=run_cfg.model.context)


def _module(run_cfg: RunConfig, bundle: Any) -> Any:
    from lossbench.module import LossbenchModule

    return LossbenchModule(
        model_cfg=run_cfg.model.model_dump(),
        loss_name=run_cfg.loss.name,
        loss_params=run_cfg.loss.params,
        loss_label=run_cfg.loss.label,
        class_names=bundle.class_names,
        ignore_index=bundle.loss_ignore_index,
        in_channels=bundle.in_channels,
        class_frequencies=bundle.class_frequencies,
        lr=run_cfg.optim.lr,
        weight_decay=run_cfg.optim.weight_decay,
        focus=run_cfg.report.focus,
        object_iou=run_cfg.report.object_iou,
        nsd_tolerance=run_cfg.report.nsd_tolerance,
        **_volume_settings(run_cfg, bundle),
    )


def _volume_settings(run_cfg: RunConfig, bundle: Any) -> dict[str, Any]:
    """The module's volume arguments: the mode, the patch, and the spacing the distance-based losses measure in."""
    if not bundle.is_volumes:
        return {}
    m, v = run_cfg.model, run_cfg.data.volumes
    spacing = bundle.median_spacing
    return {"dims": m.dims, "context": m.context, "patch": tuple(v.patch), "overlap": v.overlap, "volumes": True,
            "loss_spacing": spacing if m.dims == 3 else spacing[1:]}  # fmt: skip


def build_components(run_cfg: RunConfig, run_dir: Path, progress: bool = True, callbacks: list | None = None) -> Components:
    """Data, module, W&B logger, checkpointing and Trainer of one run, exactly as ``lossbench train`` uses them."""
    from lossbench.data import load_data
    from lossbench.plugins import load_plugins
    from lossbench.wandb_sink import run_logger

    quiet_lightning()
    load_plugins(run_cfg.plugins)
    L.seed_everything(run_cfg.seed, workers=True, verbose=False)
    bundle = load_data(run_cfg.data)
    module = _module(run_cfg, bundle)
    # Lightning's own checkpointing, once per epoch, one file (``save_top_k=1`` with no monitor keeps
    # the latest; ``save_last`` alone writes only when training ends, so it cannot resume a killed run).
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir(run_dir),
        filename=LAST_CHECKPOINT,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    timer = Timer(duration=None)
    trainer_cfg = run_cfg.trainer.kwargs()
    trainer_cfg["precision"] = resolve_precision(trainer_cfg["precision"], trainer_cfg["accelerator"])
    trainer_cfg["strategy"] = resolve_strategy(trainer_cfg)
    trainer_cfg.setdefault("enable_progress_bar", progress)
    if SLURMEnvironment.detect():  # SLURM jobs are requeued by submitit's protocol (lossbench.launch), not Lightning's
        trainer_cfg.setdefault("plugins", [SLURMEnvironment(auto_requeue=False)])
    trainer_cfg["plugins"] = [*(trainer_cfg.get("plugins") or []), AtomicCheckpointIO()]
    trainer = L.Trainer(
        **trainer_cfg,
        logger=run_logger(run_cfg, run_dir),
        callbacks=[checkpoint, timer, *(callbacks or [])],
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
    return Components(trainer, module, _datamodule(run_cfg, bundle, module), bundle, timer, trainer_cfg["precision"])


def _train(run_cfg: RunConfig, run_dir: Path, record: RunRecord, recorder: FailureRecorder, progress: bool) -> RunRecord:
    import torch

    from lossbench.wandb_sink import define_metrics, log_panel

    parts = build_components(run_cfg, run_dir, progress, callbacks=[recorder, ProgressRecord(run_dir, record)])
    trainer, module, datamodule, bundle = parts.trainer, parts.module, parts.datamodule, parts.bundle
    last = last_checkpoint(run_dir)
    # never resume from a broken checkpoint: every rank decides alike (a file moved aside meanwhile reads as broken)
    why = checkpoint_problem(last) if last.exists() else None
    if why and trainer.is_global_zero:
        aside = last.with_name(last.name + ".damaged")
        os.replace(last, aside)
        print(f"lossbench: the last checkpoint {last} cannot be read ({why}); kept as {aside.name}, training from the start", flush=True)
    resume = last.exists() and why is None
    define_metrics(trainer.logger)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
        if bundle.is_volumes:
            module.predictions_dir = predictions_dir(run_dir)
        trainer.test(module, datamodule=datamodule, verbose=False)
        if trainer.is_global_zero:
            evidence = module.test_evidence
            evidence.panel_index, evidence.panel, evidence.panel_slice = panel(module, datamodule, run_cfg.report.panel)
            log_panel(trainer.logger, evidence, bundle.class_names)
            write_evidence(run_dir, evidence)
    finally:
        if trainer.is_global_zero:
            import wandb

            wandb.finish(exit_code=0 if module.test_result is not None else 1)
    from lossbench.metrics import object_summary

    record.status, record.progress, record.finished_at = OK, None, time.time()
    record.classes, record.class_frequencies = bundle.class_names, bundle.class_frequencies
    record.test, record.history = module.test_result, module.history
    record.focus = bundle.class_names[module.focus]
    record.objects = {"iou_threshold": run_cfg.report.object_iou} | object_summary(module.test_evidence.objects)
    record.epochs, record.steps = trainer.current_epoch, trainer.global_step
    record.wall_s = round(parts.wall_s, 2)
    record.test_s = round(parts.timer.time_elapsed("test"), 2)
    record.resumed_after_epoch = module.resumed_after_epoch
    record.world_size, record.precision = trainer.world_size, parts.precision
    record.placement = (record.placement or {}) | {"device_ids": list(trainer.device_ids), "accelerator": type(trainer.accelerator).__name__,
                                                    "gpu_peak_mib": gpu_memory(module.device)[0],
                                                    "load": [*(record.placement or {}).get("load", [None])[:1], load_now()]}  # fmt: skip
    record.device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return record


def display_image(image: Any) -> Any:
    """An image tensor ``[C, H, W]`` (any range, any channels) as ``uint8 [H, W, 3]`` for the eye: the first three
    channels (a single one as gray), stretched between its 1st and 99th percentile."""
    import numpy as np

    from lossbench.data.transforms import as_float

    x = as_float(image).numpy()
    x = np.repeat(x[:1], 3, 0) if x.shape[0] < 3 else x[:3]
    lo, hi = np.percentile(x, [1, 99])
    x = np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return (x.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


def panel(module: Any, datamodule: Any, k: int) -> tuple[Any, list[PanelImage], Any]:
    """The ``k`` test images with the most focus-class pixels (ties: the earlier image) and this run's
    predictions of them, for the report: ``(their indices, the images, for volumes the slice shown of each —
    else None)``.

    The choice depends on the test set only, so every run of a suite stores the same images.
    """
    import numpy as np
    import torch

    from lossbench.metrics import FN, TP

    counts, index = module.test_evidence.counts, module.test_index
    focus_pixels = counts[:, module.focus, TP] + counts[:, module.focus, FN]
    chosen = index[np.lexsort((index, -focus_pixels))][:k]
    images, slices = [], []
    module.eval()
    for i in chosen.tolist():
        batch = datamodule.eval_collate([datamodule.test_set[i]])
        with torch.inference_mode():
            _, ((pred, target),) = module.predict_pairs({k: v.to(module.device) for k, v in batch.items()})
        image, target, pred = datamodule.bundle.test[i][0], target[0].cpu().numpy(), pred[0].cpu().numpy()
        if target.ndim == 3:  # a volume: its slice with the most focus-class voxels (ties: the first)
            d = int(np.argmax((target == module.focus).sum((1, 2))))
            image, target, pred = image[:, d], target[d], pred[d]
            slices.append(d)
        images.append(PanelImage(
            image=display_image(image), target=target.astype(np.int32), pred=pred.astype(np.int32),
        ))  # fmt: skip
    return np.asarray(chosen, np.int64), images, (np.asarray(slices, np.int64) if slices else None)


def install_interrupt_handler() -> None:
    """The first SIGTERM raises :class:`RunInterrupted` (Lightning's own handler runs first while it trains)."""
    global _interrupted
    _interrupted = False
    signal.signal(signal.SIGTERM, _raise_interrupted)


def evaluate_checkpoint(run_dir: str | Path, checkpoint: str | Path | None = None, **trainer_overrides: Any) -> tuple[dict, Any]:
    """Test the checkpoint of a finished run again (by default in one process): its metrics and its evidence.

    Used to check that a distributed evaluation equals a single-process one.
    """
    from lossbench.data import load_data
    from lossbench.module import LossbenchModule
    from lossbench.plugins import load_plugins

    run_dir = Path(run_dir)
    run_cfg = load_run_config(config_path(run_dir))
    load_plugins(run_cfg.plugins)
    bundle = load_data(run_cfg.data)
    module = LossbenchModule.load_from_checkpoint(str(checkpoint or last_checkpoint(run_dir)), map_location="cpu")
    datamodule = _datamodule(run_cfg, bundle, module)
    settings = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False}
    trainer = L.Trainer(**(settings | trainer_overrides), use_distributed_sampler=False, enable_model_summary=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return module.test_result, module.test_evidence

