from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.yaml"

# W&B never goes online from the tests, and stays quiet.
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One synthetic-data cache shared by the tests (generation is deterministic)."""
    return tmp_path_factory.mktemp("data-cache")


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
