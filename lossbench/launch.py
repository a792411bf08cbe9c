"""Where runs train: GPU placement on one machine, and SLURM jobs through submitit.

* :func:`place` decides, from the visible GPUs, ``trainer.devices``, ``jobs`` and ``jobs_per_gpu``, how
  many runs train at once and on which GPUs (each run pinned to its group through
  ``CUDA_VISIBLE_DEVICES``, several runs to one GPU when ``jobs_per_gpu`` says so; :func:`auto_per_gpu`
  sizes ``auto`` from a run's measured memory); :class:`Slots` hands the groups out as runs start and
  finish. All three are pure.
* The runs themselves train in warm workers (:mod:`lossbench.workers`): processes that imported
  what training needs once and take run after run; a DDP run gets a process of its own (:func:`one_process`).
* :func:`submit` sends every run that is not finished to SLURM as one job array (``--launcher
  slurm``), or to submitit's local executor (``--launcher submitit-local``: the same code path, job
  files, pickling and requeue protocol, with the jobs as processes of this machine). Each job is a
  :class:`RunJob`: it takes over the claim its launcher made, trains the run in-process (Lightning's
  SLURM environment turns a multi-task job into DDP), and when SLURM signals a preemption or the
  time limit, submitit requeues it and the next attempt resumes from ``last.ckpt``.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import submitit

from lossbench import claim
from lossbench.config import ConfigError, LauncherConfig, TrainerConfig
from lossbench.record import FAILED, OK, log_path, read_status, submitit_dir
from lossbench.progress import plural

if TYPE_CHECKING:
    from lossbench.plan import PlannedRun


# --- one machine: which runs train where ----------------------------------------------------------


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (as ``CUDA_VISIBLE_DEVICES`` names them, else 0..n-1); none without CUDA."""
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        return []
    given = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return given[:n] if len(given) >= n else [str(i) for i in range(n)]


@dataclass(frozen=True)
class Placement:
    """How ``compare`` runs its runs on this machine."""

    at_once: int  # runs training at the same time
    threads: int  # CPU threads per run (OMP_NUM_THREADS)
    gpu_slots: tuple[tuple[str, ...], ...] = ()  # the GPU groups runs are pinned to; empty: not placed on GPUs
    note: str | None = None  # said to the user when the config's wish cannot be met as asked
    on_gpu: bool = False  # the runs train on GPUs (placed in slots, or on the ids the config names)
    per_group: int = 1  # runs sharing one GPU group at once (jobs_per_gpu; a DDP run's group takes one)
    auto_per_gpu: bool = False  # jobs_per_gpu auto: per_group grows once a run has measured its GPU memory
    cap: int | None = None  # at most this many runs at once (a number of jobs), whatever per_group becomes
    cores: int = 0  # the CPU cores the placement was made for (0: not said)

    def describe(self) -> str:
        if self.gpu_slots:
            groups = " ".join(",".join(s) for s in self.gpu_slots)
            share = f"{self.per_group} per GPU" if self.per_group > 1 else "each on its own GPUs"
            auto = "; jobs_per_gpu auto: more per GPU once the first run has measured its memory" if self.auto_per_gpu else ""
            return f"{plural(self.at_once, 'run')} at once, {share} ({groups}), {plural(self.threads, 'CPU thread')} each{auto}"
        crowded = (f" — more runs than this machine's {plural(self.cores, 'CPU core')}: they share them, each slower"
                   if self.cores and not self.on_gpu and self.at_once > self.cores else "")  # --jobs 1000 on 2 cores
        return f"{plural(self.at_once, 'run')} at once, {plural(self.threads, 'CPU thread')} each{crowded}"

    def with_per_group(self, per_group: int, cores: int) -> Placement:
        """This placement with ``per_group`` runs on each GPU group (``jobs_per_gpu`` auto, once measured)."""
        at_once = len(self.gpu_slots) * per_group
        at_once = min(at_once, self.cap) if self.cap else at_once
        return replace(self, per_group=per_group, at_once=at_once, threads=max(1, cores // at_once), auto_per_gpu=False)


def runs_at_once(jobs: int, cores: int | None = None) -> int:
    """``jobs`` as a count: -1 is one run per CPU core (``cores``, default this machine's)."""
    return (cores or os.cpu_count() or 1) if jobs == -1 else jobs


def place(trainer: TrainerConfig, jobs: int | str, gpus: list[str], cores: int, jobs_per_gpu: int | str = 1) -> Placement:
    """The placement of a suite's runs: with G visible GPUs and ``d`` devices per run, G // d GPU groups, each
    training ``jobs_per_gpu`` runs at once when ``d`` is 1 (a DDP run keeps its group to itself; ``auto``: one
    until a run has measured its memory, :func:`auto_per_gpu`); ``jobs``, when a number, caps the runs at once.
    On the CPU ``jobs`` runs at once (``auto``: one), sharing the cores. Raises :class:`ConfigError` when a run
    needs more GPUs than there are."""
    devices = trainer.devices
    if gpus and trainer.wants_gpu:
        if isinstance(devices, list):  # the user named the GPU ids: one run at a time, on those
            return Placement(1, cores, note=f"trainer.devices={devices}: the runs train one at a time on those GPU ids", on_gpu=True)
        per_run = len(gpus) if devices in (-1, "-1", "auto") else int(devices)
        if per_run > len(gpus):
            raise ConfigError(
                f"trainer.devices={devices} asks for {per_run} GPUs per run, but {len(gpus)} are visible "
                f"({','.join(gpus)}); set trainer.devices to at most {len(gpus)}"
            )
        slots = tuple(tuple(gpus[i * per_run : (i + 1) * per_run]) for i in range(len(gpus) // per_run))
        auto = jobs_per_gpu == "auto" and per_run == 1
        per_group = 1 if per_run > 1 or jobs_per_gpu == "auto" else int(jobs_per_gpu)
        cap = None if jobs == "auto" else max(1, runs_at_once(int(jobs), cores))
        at_once = len(slots) * per_group if cap is None else min(cap, len(slots) * per_group)
        return Placement(at_once, max(1, cores // at_once), slots, on_gpu=True, per_group=per_group,
                         auto_per_gpu=auto and (cap is None or cap > at_once), cap=cap)  # fmt: skip
    at_once = 1 if jobs == "auto" else runs_at_once(int(jobs), cores)
    note = None
    if at_once > 1 and devices not in (1, "1", [0]):
        note, at_once = f"trainer.devices={devices!r} on the CPU: running one run at a time (jobs=1)", 1
    return Placement(at_once, max(1, cores // at_once), note=note)


CUDA_CONTEXT_MIB = 600
"""GPU memory a process holds before it allocates a tensor (its CUDA context, cuDNN and cuBLAS workspaces)."""
MAX_PER_GPU = 16
"""``jobs_per_gpu: auto`` never puts more runs than this on one GPU."""


def auto_per_gpu(peak_mib: float, free_mib: float, cores: int, groups: int, loader_workers: int,
                 running: int = 1, headroom: float = 0.85) -> int:  # fmt: skip
    """Runs per GPU for ``jobs_per_gpu: auto``, from one run's measured peak GPU memory (``peak_mib``, what
    torch's allocator reserved) and the memory free on its GPU while ``running`` runs were on it:

    * memory: each run costs its peak plus a CUDA context (:data:`CUDA_CONTEXT_MIB`); the runs added must fit
      in ``headroom`` of the free memory;
    * CPU: each run needs a core for its training loop and one per data-loader worker, and the ``cores`` are
      shared by the ``groups`` GPU groups — more runs than that would wait for data, not for the GPU;
    * never more than :data:`MAX_PER_GPU`, never fewer than 1.
    """
    per_run = max(peak_mib, 1.0) + CUDA_CONTEXT_MIB
    by_memory = running + int(max(free_mib, 0.0) * headroom // per_run)
    by_cpu = max(1, (cores // max(groups, 1)) // (1 + max(loader_workers, 0)))
    return max(1, min(by_memory, by_cpu, MAX_PER_GPU))


@dataclass
class Slots:
    """The GPU groups of a :class:`Placement`, each taking up to ``per_group`` runs at once: a starting run
    takes the group with the most room (the lowest on a tie), a finished run gives it back."""

    groups: list[tuple[str, ...]]
    per_group: int = 1
    busy: dict[tuple[str, ...], int] = field(init=False)

    def __post_init__(self) -> None:
        self.groups = sorted(self.groups, key=lambda s: [int(g) if g.isdigit() else g for g in s])
        self.busy = {g: 0 for g in self.groups}

    def take(self) -> tuple[str, ...] | None:
        """The group with the most room, or ``None`` when every group is full."""
        free = [g for g in self.groups if self.busy[g] < self.per_group]
        if not free:
            return None
        group = min(free, key=lambda g: self.busy[g])  # stable: the lowest group among the least busy
        self.busy[group] += 1
        return group

    def give(self, slot: tuple[str, ...]) -> None:
        if self.busy.get(slot, 0) <= 0:
            raise ValueError(f"GPU group {slot} was not taken")
        self.busy[slot] -= 1

    def grow(self, per_group: int) -> None:
        """Let each group take ``per_group`` runs at once (``jobs_per_gpu: auto``, once measured)."""
        self.per_group = max(self.per_group, per_group)


SCRATCH_PREFIX = "lossbench-"


def own_scratch() -> Path:
    """Give this launcher, and every run process it starts (the local launcher's: jobs outlive a detached
    ``compare`` and keep their own ``TMPDIR``), a temporary folder of their own (``TMPDIR``):
    what they leave there — W&B's ``tmp*wandb-*``, the runs' own temporary files — is removed with it.

    A launcher that exits removes its own (after stopping the fork server, whose W&B folder is in it);
    one that cannot (``kill -9``, a lost node) leaves it, and the next launcher on this host removes
    every such folder whose owner (pid and start time, named in the folder) is gone, with the owner's
    multiprocessing folder (``pymp-*``, which stays beside it: the fork server's socket address must
    be short, and a scratch folder's path can be too long for one).
    """
    import shutil
    import tempfile
    from multiprocessing import util

    base = Path(tempfile.gettempdir())
    host = _host_key()
    for old in base.glob(f"{SCRATCH_PREFIX}*"):
        parts = old.name.split("-")
        if len(parts) == 5 and parts[3] == host and parts[1].isdigit() and parts[2].isdigit():
            if not claim.pid_alive(int(parts[1]), int(parts[2]) or None):
                _remove_left_behind(old, base, shutil.rmtree)
    if len(str(base)) > SOCKET_BASE_MAX and Path("/tmp").is_dir():  # the fork server's socket path must stay short
        tempfile.tempdir = "/tmp"
    try:
        multiprocessing_dir = Path(util.get_temp_dir())  # made now, outside the scratch folder
    finally:
        tempfile.tempdir = None
    started = claim.process_start(os.getpid()) or 0
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-{started}-{host}-", dir=base))
    (path / SCRATCH_PYMP).write_text(str(multiprocessing_dir))
    os.environ["TMPDIR"] = str(path)
    tempfile.tempdir = None  # read TMPDIR again
    util.Finalize(None, _remove_scratch, args=(path, shutil.rmtree), exitpriority=-200)  # after multiprocessing's own (-100)
    return path


SCRATCH_PYMP = "pymp-folder"  # in a scratch folder: the path of its launcher's multiprocessing folder
SOCKET_BASE_MAX = 60  # a longer TMPDIR leaves no room for pymp-*/listener-* under the AF_UNIX limit (107 bytes)


def _remove_left_behind(scratch: Path, base: Path, rmtree: Callable[..., None]) -> None:
    """Remove a gone launcher's scratch folder and the ``pymp-*`` folder it names (only one directly in ``base``,
    or in ``/tmp`` where a long ``base`` sent it)."""
    try:
        named = Path((scratch / SCRATCH_PYMP).read_text().strip())
    except OSError:
        named = None
    if named is not None and named.parent in (base, Path("/tmp")) and named.name.startswith("pymp-"):
        rmtree(named, ignore_errors=True)
    rmtree(scratch, ignore_errors=True)


def _host_key() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _remove_scratch(path: Path, rmtree: Callable[..., None]) -> None:
    _stop_fork_server()
    rmtree(path, ignore_errors=True)


def _stop_fork_server(wait_s: float = 10.0) -> None:
    """Ask multiprocessing's fork server to exit (closing its "alive" pipe, as its own ``_stop`` does) and
    wait for it a little, so it has removed what it made before its scratch folder goes."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    pid, fd = getattr(server, "_forkserver_pid", None), getattr(server, "_forkserver_alive_fd", None)
    if pid is None or fd is None:
        return
    server._forkserver_pid = server._forkserver_alive_fd = None
    os.close(fd)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.05)


def die_with_parent() -> None:
    """In a run process: get SIGTERM when the process that started it dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def die_with(pid: int) -> None:
    """In a forked run process: get SIGTERM when process ``pid`` (its launcher, not its parent) ends,
    however it ends (a thread waits on a pidfd; Linux 5.3 or later)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        os.kill(os.getpid(), signal.SIGTERM)
        return
    except (AttributeError, OSError):
        return

    def wait() -> None:
        select.select([fd], [], [])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="lossbench: launcher watch", daemon=True).start()


def one_process(trainer: TrainerConfig, slot: tuple[str, ...] | None) -> bool:
    """Whether a run trains in one process — and so in a warm worker (:mod:`lossbench.workers`): one device
    (one GPU of its group, or the CPU) on one node. A DDP run starts its other ranks by running its command
    line again, so it gets a ``lossbench train`` process of its own."""
    if trainer.num_nodes != 1:
        return False
    if slot is not None:
        return len(slot) == 1
    devices = trainer.devices
    return devices in (1, "1", "auto") or (isinstance(devices, list) and len(devices) == 1)


# --- a cluster: one SLURM job per run -------------------------------------------------------------


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job: holds its launcher's claim token, trains, releases the claim when finished.

    ``checkpoint`` (submitit's requeue protocol) needs to save nothing: the run writes ``last.ckpt``
    after every epoch, and the requeued job resumes from it.
    """

    def __init__(self, run_dir: str, token: str, threads: int | None = None):
        self.run_dir, self.token, self.threads = str(run_dir), token, threads

    def __call__(self) -> str:
        from lossbench.run import train_run_dir

        if self.threads:  # local jobs share this machine's cores (on SLURM, the job's CPUs bound it)
            import torch

            torch.set_num_threads(self.threads)
        env = submitit.JobEnvironment()
        run_dir = Path(self.run_dir)
        if env.global_rank == 0:
            if not self._hold_claim(env):
                return "claimed elsewhere"
            _log_to(log_path(run_dir))
        elif not self._wait_for_claim(env):
            return "claimed elsewhere"
        try:
            status = train_run_dir(run_dir, progress=False, claim_token=self.token).status
        except Exception:  # the run recorded why; the job itself ends cleanly
            status = read_status(run_dir)
        if env.global_rank == 0 and status in (OK, FAILED):
            claim.release(run_dir, self.token)
        return status

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        from lossbench import run

        run.stop_reason = "stopped by the scheduler (preemption or time limit) and requeued; it resumes from its last checkpoint"
        return submitit.helpers.DelayedSubmission(RunJob(self.run_dir, self.token, self.threads))

    def _holder(self, env: Any) -> claim.Owner:
        if _is_slurm(env):
            return claim.held_by(claim.me("job", self.token), job=str(env.job_id))
        return claim.held_by(claim.me("job", self.token), job=None, pid=int(env.job_id))  # the local job's controller

    def _hold_claim(self, env: Any) -> bool:
        """Rank 0: make the claim this job's (its launcher made it with the token; a later launcher may
        have taken it over after the launcher went): False when another live owner holds the run."""
        owner = self._holder(env)
        if claim.claim(Path(self.run_dir), owner) is not None:
            return False
        claim.update(Path(self.run_dir), owner)
        return True

    def _wait_for_claim(self, env: Any, timeout_s: float = 300) -> bool:
        """Other ranks of a multi-task job: train once rank 0 holds the claim for this job."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            holder = claim.read_claim(Path(self.run_dir))
            if holder is not None and holder.token == self.token and holder.job == str(env.job_id):
                return True
            time.sleep(1)
        return False


def _is_slurm(env: Any) -> bool:
    return type(env).__name__.startswith("Slurm")


def _log_to(path: Path) -> None:
    """Send this process's stdout and stderr to the run's ``train.log`` (appended, like a local run's)."""

    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def devices_per_run(trainer: TrainerConfig, launcher: LauncherConfig) -> int:
    """Tasks per node of a run's job: one per device (Lightning's SLURM environment makes each a DDP rank)."""
    devices = trainer.devices
    if isinstance(devices, list):
        return len(devices)
    if devices in (-1, "-1", "auto"):
        if launcher.gpus_per_node is None:
            raise ConfigError(f"trainer.devices={devices!r} on SLURM: set launcher.gpus_per_node, or trainer.devices to a number")
        return launcher.gpus_per_node
    return int(devices)


def executor(kind: str, out: Path, suite: str, trainer: TrainerConfig, launcher: LauncherConfig) -> submitit.AutoExecutor:
    """A submitit executor for ``kind`` (``slurm`` or ``submitit-local``) with the run's resources."""
    tasks = devices_per_run(trainer, launcher)
    gpus = launcher.gpus_per_node
    if gpus is None:
        gpus = 0 if trainer.accelerator == "cpu" else tasks
    ex = submitit.AutoExecutor(
        folder=submitit_dir(out) / "%j",
        cluster="slurm" if kind == "slurm" else "local",
        slurm_max_num_timeout=launcher.max_requeues,
        local_max_num_timeout=launcher.max_requeues,
    )
    params: dict[str, Any] = {
        "name": f"lossbench-{suite}",
        "timeout_min": launcher.time_min,
        "nodes": trainer.num_nodes,
        "tasks_per_node": tasks,
        "gpus_per_node": gpus or None,
        "cpus_per_task": launcher.cpus_per_task,
        "mem_gb": launcher.mem_gb,
        "stderr_to_stdout": True,
        "slurm_partition": launcher.partition,
        "slurm_account": launcher.account,
        "slurm_qos": launcher.qos,
        "slurm_array_parallelism": launcher.array_parallelism,
        "slurm_additional_parameters": dict(launcher.sbatch) or None,
        "slurm_setup": list(launcher.setup) or None,
    }
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


@dataclass
class Submitted:
    run: PlannedRun
    job_id: str


def submit(kind: str, runs: list[PlannedRun], token: str, out: Path, suite: str, trainer: TrainerConfig,
           launcher: LauncherConfig, log: Callable[[str], None]) -> list[Submitted]:  # fmt: skip
    """Submit ``runs`` (claimed with ``token``) as one job array; the claims then name their jobs."""
    ex = executor(kind, out, suite, trainer, launcher)
    threads = None if kind == "slurm" else max(1, (os.cpu_count() or 1) // max(1, len(runs)))
    jobs = ex.submit_array([RunJob(str(run.run_dir), token, threads) for run in runs])
    submitted = []
    for run, job in zip(runs, jobs):
        owner = claim.read_claim(run.run_dir)
        if owner is not None and owner.token == token and owner.by == "compare":  # the job has not taken it yet
            if kind == "slurm":  # alive while SLURM lists the job, whether this launcher stays or not
                claim.update(run.run_dir, claim.held_by(owner, job=str(job.job_id), pid=owner.pid))
            else:  # a local job is its controller process
                claim.update(run.run_dir, claim.held_by(owner, job=None, pid=int(job.job_id)))
        submitted.append(Submitted(run, str(job.job_id)))
    if jobs:
        first = str(jobs[0].job_id).split("_")[0]
        where = "SLURM job array" if kind == "slurm" else "submitit local jobs from"
        log(f"submitted {plural(len(jobs), 'run')} as {where} {first} (job files and logs: {submitit_dir(out)}/<job>/)")
    return submitted
