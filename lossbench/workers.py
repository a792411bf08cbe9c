"""Warm workers: long-lived processes that import what training needs once and then train run after run.

``compare`` on one machine starts each run in a :class:`Worker` of its :class:`Workers`. A worker is
a process that has imported torch, Lightning, smp, torchmetrics and W&B (and, on a GPU, made its
CUDA context) once; it takes the next run from the suite's queue through a pipe and starts training
it in a fraction of a second, where a fresh interpreter spends 10–20 s on imports and CUDA start-up.

* **How a worker is started.** On a GPU it is *spawned* (a fresh interpreter: a CUDA context does not
  survive a fork), with ``CUDA_VISIBLE_DEVICES`` pinning it to its GPU group before CUDA starts. On a
  CPU under Linux it is forked from multiprocessing's fork server, which has imported :data:`PRELOAD`
  once, so even a new worker starts at once. Everything else is the same.
* **Each run as in its own process.** Before each run the worker restores its environment, points
  its stdout and stderr at the run's ``train.log`` and calls :func:`lossbench.run.run_process`, the
  body of ``lossbench train``: claims, the record, SIGTERM (resumable) and the exit status are that
  function's, exactly as in a process of its own. The status goes back to the pool, which records a
  crash the run could not record itself.
* **Recycled.** A worker leaves after :data:`RUNS_PER_WORKER` runs (repeated ``Trainer.fit`` in one
  process leaks memory) and after any run whose status is not 0 (a failure may leave the process in
  a bad state); the pool starts a fresh one when the next run needs it. A worker that dies (``kill
  -9``, out of memory, a segfault) takes only its run with it.
* **Dies with its launcher.** A worker gets SIGTERM when the ``compare`` that started it ends, however
  it ends (:func:`lossbench.launch.die_with`): the run in progress records that it was interrupted and
  stays resumable.

A run of several processes (DDP: ``trainer.devices`` or ``num_nodes`` above one) cannot train in a
worker — Lightning starts its other ranks by running the command line again — and starts as a
``lossbench train --run-dir`` process of its own (:meth:`Workers.start` with ``warm=False``).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUNS_PER_WORKER = 8
"""Runs a worker trains before it is replaced by a fresh one."""

PRELOAD = ["lossbench.run", "lossbench.module", "lossbench.data", "lossbench.metrics", "lossbench.wandb_sink"]
"""What a worker imports before its first run (about 10 s on a 2-core CPU): the fork server's preload on a CPU."""


def _context(on_gpu: bool) -> Any:
    """Spawn on GPUs (and off Linux); on a Linux CPU, the fork server that has imported :data:`PRELOAD`."""
    if on_gpu or not sys.platform.startswith("linux"):
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # the server starts with the first worker
    return context


class Worker:
    """One warm worker process and the run it is training; the :class:`subprocess.Popen` methods the pool uses
    (``poll``, ``returncode``, ``terminate``, ``kill``, ``wait``) speak of that run."""

    def __init__(self, context: Any, env: dict[str, str], key: tuple[str, ...] | None, max_runs: int):
        self.key, self.env, self.max_runs = key, env, max_runs
        self.conn, child = context.Pipe()
        saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
        try:  # a spawned interpreter inherits this environment: its GPUs are pinned before anything starts CUDA
            for k in saved:
                if k in env:
                    os.environ[k] = env[k]
            self.process = context.Process(target=_serve, args=(child, env, os.getpid(), max_runs),
                                           name="lossbench worker", daemon=False)  # fmt: skip
            self.process.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        self.pid = self.process.pid
        from lossbench.claim import process_start

        self.pid_start = process_start(self.pid)  # the worker itself, should the fork server that made it die first
        self.runs = 0
        self.returncode: int | None = None  # of the run in progress, once it has ended
        self.run_dir: Path | None = None

    def give(self, run_dir: Path, token: str) -> None:
        """Start training ``run_dir`` (its claim held with ``token``)."""
        self.run_dir, self.returncode = run_dir, None
        self.runs += 1
        self.conn.send(("run", str(run_dir), token))

    def poll(self) -> int | None:
        """The run's exit status once it has ended (negative: the signal that killed the worker), else ``None``."""
        if self.returncode is not None:
            return self.returncode
        try:
            if self.conn.poll():
                _, status = self.conn.recv()
                self.returncode = int(status)
                return self.returncode
        except (EOFError, OSError):  # the worker is gone: its exit code says how
            self.process.join(5)
        if not self.process.is_alive() and not self._still_running():
            code = self.process.exitcode
            self.returncode = code if code not in (None, 0) else 1  # gone without a word: never "finished"
        return self.returncode

    def _still_running(self) -> bool:
        """Whether the worker process itself is alive although its handle says it ended: the fork server that made
        it was killed (its handle then reads exit 255) while the worker trains on, and will still send its result
        through the pipe — a run is recorded failed only once its process is gone (issue 37, P77)."""
        from lossbench.claim import pid_alive

        return self.pid_start is not None and pid_alive(self.pid, self.pid_start)

    @property
    def reusable(self) -> bool:
        """Whether the worker takes another run: its last one ended with 0 and it has runs left."""
        return self.returncode == 0 and self.runs < self.max_runs and self.process.is_alive()

    def _signal(self, signum: int) -> None:
        if self.process.is_alive():
            self.process.terminate() if signum == signal.SIGTERM else self.process.kill()
        elif self._still_running():  # orphaned by its fork server: signalled by its own pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.process.exitcode is not None and self._still_running() and self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("lossbench worker", timeout)
            time.sleep(0.1)  # an orphaned worker: its pipe brings the result, its pid its end
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired("lossbench worker", timeout)
        return self.poll() if self.returncode is None else self.returncode

    def stop(self) -> None:
        """Ask an idle worker to leave."""
        try:
            self.conn.send(("stop",))
        except (OSError, BrokenPipeError):
            pass


class Workers:
    """The warm workers of one ``compare``: an idle worker with the run's GPU group takes the run, else a new one is started."""

    def __init__(self, on_gpu: bool, max_runs: int = RUNS_PER_WORKER):
        self.context = _context(on_gpu)
        self.max_runs = max_runs
        self.idle: list[Worker] = []
        self.leaving: list[Worker] = []  # told to go, finishing their teardown (W&B's) on their own
        self.started = 0  # workers started, for the user's first-start note and the tests

    def start(self, run_dir: Path, env: dict[str, str], token: str, slot: tuple[str, ...] | None, warm: bool = True) -> Any:
        """The run started in a worker (or, with ``warm=False``, as a ``lossbench train`` process of its own)."""
        if not warm:
            return _own_process(run_dir, env)
        stale = [w for w in self.idle if w.key == slot and w.env != env]  # started before the placement changed
        for w in stale:  # (jobs_per_gpu auto: fewer threads a run): let them go, with what they hold on the GPU
            self.idle.remove(w)
            w.stop()
            self.leaving.append(w)
        worker = next((w for w in self.idle if w.key == slot), None)
        if worker is not None:
            self.idle.remove(worker)
        else:
            worker = Worker(self.context, env, slot, self.max_runs)
            self.started += 1
        worker.give(run_dir, token)
        return worker

    def ended(self, proc: Any) -> None:
        """A run has ended: its worker waits for the next run, or leaves (its runs are done, or the run failed)."""
        if not isinstance(proc, Worker):
            return
        if proc.reusable:
            self.idle.append(proc)
        else:  # it leaves by itself; the pool goes on without waiting for its teardown
            proc.stop()
            self.leaving.append(proc)
        self.leaving = [w for w in self.leaving if w.process.is_alive()]  # reaped (joined) by is_alive

    def close(self) -> None:
        """Let every worker go and wait for each to finish its W&B teardown (a minute at most, then it is killed)."""
        going, self.idle, self.leaving = self.idle + self.leaving, [], []
        for worker in going:
            worker.stop()
        for worker in going:
            worker.process.join(60)
            if worker.process.is_alive():
                worker.kill()
                worker.process.join()


def _own_process(run_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    """A run of several processes (DDP): ``lossbench train --run-dir``, its output in the run's ``train.log``."""
    from lossbench.launch import die_with_parent
    from lossbench.record import log_path

    argv = ["train", "--run-dir", str(run_dir), "--no-progress"]
    with open(log_path(run_dir), "a") as log_file:  # the child holds its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "lossbench.cli", *argv], stdout=log_file,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)  # fmt: skip


# --- inside a worker --------------------------------------------------------------------------------


def _serve(conn: Any, env: dict[str, str], launcher: int, max_runs: int) -> None:
    """A worker's life: set up as a fresh process would be, then train each run it is given until told to stop,
    after ``max_runs`` runs, or after a run whose status is not 0."""
    from lossbench.launch import die_with

    die_with(launcher)  # on a CPU its parent is the fork server, which outlives the launcher
    _set_environment(env)
    if "OMP_NUM_THREADS" in env:  # torch read it when it was imported: set it as a new process would
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    quiet = os.open(os.devnull, os.O_WRONLY)
    status, runs = 0, 0
    try:
        _own_wandb_media_dir()
        from lossbench.data.bundle import keep_last_data
        from lossbench.run import run_process

        keep_last_data()  # the next run of the same data does not read it again
        while status == 0 and runs < max_runs:
            try:
                message = conn.recv()
            except (EOFError, OSError, KeyboardInterrupt):
                break
            if message[0] != "run":
                break
            _, run_dir, token = message
            runs += 1
            _set_environment(env)  # whatever the last run set (Lightning's seed, ranks) is gone
            status = _train_one(Path(run_dir), token, run_process)
            _output_to(quiet)
            conn.send(("done", status))
    except (KeyboardInterrupt, SystemExit, BrokenPipeError, EOFError):  # told to stop between runs, or the pool is gone
        pass
    except BaseException:  # noqa: BLE001 — outside any run (its own start): said, then the worker leaves
        import tempfile
        import traceback

        if Path(tempfile.gettempdir()).is_dir():  # else its launcher ended as it started and took its scratch (P39): quiet
            traceback.print_exc()
    finally:
        _output_to(quiet)
        atexit._run_exitfuncs()  # what leaving the interpreter runs (W&B's teardown among them)
    os._exit(0)


def _train_one(run_dir: Path, token: str, run_process: Any) -> int:
    """One run, its output in its ``train.log``: the status ``lossbench train`` would exit with."""
    from lossbench.record import log_path

    fd = os.open(log_path(run_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _output_to(fd)
    os.close(fd)
    sys.argv = ["lossbench", "train", "--run-dir", str(run_dir), "--no-progress"]
    try:
        return run_process(run_dir, token)
    except BaseException as e:  # noqa: BLE001 — what would end the process: said in its log, the worker leaves
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)
        return 1
    finally:
        signal.signal(signal.SIGTERM, _stop_between_runs)
        _let_go_of_the_gpu()


def _let_go_of_the_gpu() -> None:
    """Between runs: hand the GPU memory the last run's allocator kept back to the device, so a waiting worker
    holds its CUDA context only — the memory ``jobs_per_gpu: auto`` counted on stays free for the others."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _stop_between_runs(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise SystemExit(130)


def _set_environment(env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)


def _output_to(fd: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def _own_wandb_media_dir() -> None:
    """Give this worker its own W&B media folder. W&B makes one temporary folder when it is imported — in
    the fork server, once — and removes it when a process exits: the first worker to leave removed it for
    every other, whose prediction images then failed to log (``FileNotFoundError``)."""
    import tempfile

    try:
        from wandb.sdk.data_types import _private
    except ImportError:  # a W&B without that folder: nothing shared
        return
    _private.MEDIA_TMP.name = tempfile.mkdtemp(suffix="wandb-media")  # every module holds this one object
