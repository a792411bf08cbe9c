"""A smoke test of the benchmark script (benchmarks are not tests: no timing is asserted here)."""

from __future__ import annotations

import json

import pytest

from lossbench.bench import main
from lossbench.losses import list_losses


@pytest.mark.slow
def test_bench_script_runs_and_reports_every_loss(tmp_path):
    assert main(["--quick", "--report", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (shape,) = results["losses"]
    measured = {r["definition"].split(" ")[0] for r in shape["rows"] if r["impl"] == "lossbench"}
    assert set(list_losses()) <= measured
    assert any(r["impl"] == "smp" for r in shape["rows"]) and any(r["definition"].startswith("floor") for r in shape["rows"])
    for v in shape["verdicts"]:
        if v["max_value_diff"] is not None:  # a same-definition reference computes the same number
            assert v["max_value_diff"] < 1e-4, v
    assert results["training"]["plain_images_per_s"] > 0 and results["training"]["lossbench_images_per_s"] > 0
    data = results["data"]
    assert data["decode_images_per_s"] > 0 and data["loader_images_per_s"] > 0 and 0 <= data["data_wait_share"] < 1
    readme = (tmp_path / "README.md").read_text()
    assert "## Losses at B=2, C=4, 32×32" in readme and "## Training loop" in readme and "## Verdict" in readme
    assert "## Data pipeline" in readme and "loop waiting for data" in readme
