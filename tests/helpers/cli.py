"""Running the real ``lossbench`` command line from tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "experiments" / "smoke.yaml"


def lossbench_cli(*args: str, cwd: Path | None = None, timeout: int = 300, env: dict | None = None):
    """Run the real ``lossbench`` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "lossbench.cli", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def sigterm_once_checkpointed(args: list[str], pattern: str, root: Path, timeout: int = 120) -> tuple[int, str]:
    """Start ``python -m lossbench.cli *args``, send SIGTERM once ``root.glob(pattern)`` finds a checkpoint."""
    proc = subprocess.Popen([sys.executable, "-m", "lossbench.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + timeout
    while not list(root.glob(pattern)) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    return proc.returncode, output
