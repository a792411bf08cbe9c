"""Test settings: W&B offline and quiet, and the fixtures the tests share (helpers live in ``tests/helpers/``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# W&B never goes online from the tests, and stays quiet.
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One synthetic-data cache shared by the tests (generation is deterministic)."""
    return tmp_path_factory.mktemp("data-cache")
