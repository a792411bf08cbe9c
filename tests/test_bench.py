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
    images, volumes = results["losses"]
    assert images["depth"] is None and volumes["depth"] == 8
    for shape in (images, volumes):  # every loss at 2-D and at 3-D
        measured = {r["definition"].split(" ")[0] for r in shape["rows"] if r["impl"] == "lossbench"}
        assert set(list_losses()) <= measured
        assert any(r["definition"].startswith("floor") for r in shape["rows"])
        for v in shape["verdicts"]:
            if v["max_value_diff"] is not None:  # a same-definition reference computes the same number
                assert v["max_value_diff"] < 1e-4, v
    assert any(r["impl"] == "smp" for r in images["rows"])
    monai_3d = {r["definition"] for r in volumes["rows"] if r["impl"] == "monai"}
    assert {"dice", "hausdorff_dt", "cldice", "boundary (BL term, α = 0)"} <= monai_3d  # MONAI beside them at 3-D
    assert volumes["rows"][0]["shape"] == [1, 3, 8, 16, 16]
    assert results["training"]["plain_images_per_s"] > 0 and results["training"]["lossbench_images_per_s"] > 0
    data = results["data"]
    assert data["decode_images_per_s"] > 0 and data["loader_images_per_s"] > 0 and 0 <= data["data_wait_share"] < 1
    readme = (tmp_path / "README.md").read_text()
    assert "## Losses at B=2, C=4, 32×32" in readme and "## Losses at B=1, C=3, 8×16×16 volumes" in readme and "## Training loop" in readme and "## Verdict" in readme
    assert "## Data pipeline" in readme and "loop waiting for data" in readme
