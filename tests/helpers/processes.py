"""Processes for tests."""

from __future__ import annotations

import subprocess
import sys


def dead_pid() -> int:
    """The pid of a process that has ended (its owner is provably gone)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


HANG_S = 1800
"""How long a test waits for an event before calling it a hang: a guard against waiting forever, far
beyond what any event needs even on a heavily loaded machine — never a timing the test relies on."""


def wait_for(condition, proc=None, what: str = "the event", hang_s: float = HANG_S, poll_s: float = 0.1, log=None):
    """Wait until ``condition()`` is true (its value is returned). Fails at once if ``proc`` (a
    ``subprocess.Popen``) ends first — the event can no longer come; its output is quoted from ``log``
    (a file) or its stdout pipe — and after ``hang_s`` seconds."""
    import time

    import pytest

    deadline = time.monotonic() + hang_s
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = condition()  # it may have come just before the end
            if value:
                return value
            output = ""
            if log is not None:
                output = open(log).read()
            elif getattr(proc, "stdout", None) is not None:
                output = proc.stdout.read() or ""
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}: {str(output)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {hang_s:.0f} s: a hang")
        time.sleep(poll_s)
