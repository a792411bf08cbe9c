"""Running the real ``lossbench`` command line from tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "experiments" / "smoke.yaml"


def lossbench_cli(*args: str, cwd: Path | None = None, timeout: int = 1800, env: dict | None = None):
    """Run the real ``lossbench`` command line in a subprocess (``timeout``: a hang guard, not a timing)."""
    return subprocess.run(
        [sys.executable, "-m", "lossbench.cli", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def sigterm_once_checkpointed(args: list[str], pattern: str, root: Path) -> tuple[int, str]:
    """Start ``python -m lossbench.cli *args``, send SIGTERM once ``root.glob(pattern)`` finds a checkpoint
    (however long that takes: the event, not a time; the process ending first fails the test)."""
    import tempfile

    from helpers.processes import HANG_S, wait_for

    with tempfile.TemporaryFile("w+") as output:  # a file, not a pipe: a chatty process never blocks on it
        proc = subprocess.Popen([sys.executable, "-m", "lossbench.cli", *args], cwd=ROOT, stdout=output,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            wait_for(lambda: list(root.glob(pattern)), proc, f"a checkpoint ({pattern})")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=HANG_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            output.seek(0)
            text = output.read()
    return proc.returncode, text
