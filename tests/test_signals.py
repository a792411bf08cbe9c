"""Signals a run process receives: SIGTERM stops it resumably, however often it comes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.processes import HANG_S


REPEATED_SIGTERM = """
import os, signal, sys
from lossbench.run import RunInterrupted, install_interrupt_handler

install_interrupt_handler()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10**8):  # the handler raises here
        pass
    sys.exit("the first SIGTERM raised nothing")
except RunInterrupted as e:
    os.kill(os.getpid(), signal.SIGTERM)  # the same stop again, while the run writes its record
    os.kill(os.getpid(), signal.SIGTERM)
    sum(range(10**6))
    with open(sys.argv[1], "w") as f:
        f.write(str(e))
"""


@pytest.mark.slow  # starts a process
def test_a_repeated_sigterm_does_not_cut_short_the_record_of_the_first(tmp_path):
    # A killed compare sent its run one parent-death SIGTERM per exiting thread; the second one,
    # arriving while the run wrote "interrupted", left its record saying "running".
    record = tmp_path / "record.txt"
    r = subprocess.run([sys.executable, "-c", REPEATED_SIGTERM, str(record)], capture_output=True, text=True, timeout=HANG_S)
    assert r.returncode == 0, r.stderr[-2000:]
    assert record.read_text() == "received signal SIGTERM"


def test_lightnings_own_sigterm_exception_ends_the_process_as_an_interrupt(tmp_path, monkeypatch, capsys):
    # Lightning raises SIGTERMException (a SystemExit with code 0) when its own handler saw the SIGTERM first:
    # the process exited 0, as if the run had finished, while its record said "interrupted"
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    import lossbench.run as run

    def stopped(*args, **kwargs):
        raise SIGTERMException()

    monkeypatch.setattr(run, "train_run", stopped)
    assert run.run_process(tmp_path, None, run_cfg=object()) == 130
    assert "interrupted (resumable" in capsys.readouterr().err


def test_an_interrupt_inside_a_checkpoint_write_is_an_interrupt_not_a_failure(tmp_path, monkeypatch, capsys):
    # issue 37, P38: SIGTERM just after `.last.ckpt.*.tmp` appeared recorded the run as failed — torch's zip writer
    # raised "unexpected pos" while the interrupt unwound and replaced it; the rerun said "1 failed before (kept)".
    # Here the interrupt is raised from inside a real checkpoint write, where the signal handler would raise it.
    import torch

    import lossbench.run as run

    class SignalArrives:
        def __reduce__(self):
            raise run.RunInterrupted("received signal SIGTERM")

    path = tmp_path / "checkpoints" / "last.ckpt"
    io = run.AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(4)}, path)
    before = path.read_bytes()
    with pytest.raises(BaseException) as caught:
        io.save_checkpoint({"epoch": 2, "w": torch.ones(1 << 16), "stop": SignalArrives()}, path)
    assert run._is_interrupt(caught.value), repr(caught.value)
    assert path.read_bytes() == before and not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    cut = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 20978112 vs 20978008")
    try:  # what torch raises when the zip writer closes while the interrupt unwinds
        try:
            raise run.RunInterrupted("received signal SIGTERM")
        except run.RunInterrupted:
            raise cut
    except RuntimeError as e:
        chained = e
    assert run._is_interrupt(chained) and not run._is_interrupt(RuntimeError("a real failure"))

    def stopped(*args, **kwargs):
        raise chained

    monkeypatch.setattr(run, "train_run", stopped)
    assert run.run_process(tmp_path, None, run_cfg=object()) == 130  # resumable, not failed
    assert "interrupted (resumable" in capsys.readouterr().err


def test_a_worker_whose_launcher_ended_as_it_started_leaves_without_a_traceback(tmp_path):
    # issue 37, P39: SIGTERM to compare while its first worker started removed the scratch folder under the worker,
    # which died with a traceback (FileNotFoundError: …wandb-media). The event itself: the scratch is gone when the
    # worker makes its own W&B media folder in it.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code = (
        "import multiprocessing as mp, os, tempfile\n"
        "from lossbench import workers\n"
        f"tempfile.tempdir = {str(scratch)!r}\n"
        f"os.rmdir({str(scratch)!r})  # the launcher ended and took its scratch folder\n"
        "a, b = mp.Pipe()\n"
        f"workers._serve(b, dict(os.environ, TMPDIR={str(scratch)!r}), os.getppid(), 1)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    # a worker whose start fails otherwise (its scratch still there) still says why
    scratch.mkdir()
    code = code.replace(f"os.rmdir({str(scratch)!r})", "workers._own_wandb_media_dir = lambda: 1 / 0")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert "ZeroDivisionError" in r.stderr
