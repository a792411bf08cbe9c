"""Files lossbench writes: whole or not at all, and readable as the user's umask says."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from lossbench import claim
from lossbench.io import write_json_atomic, write_text_atomic
from lossbench.record import Evidence, claim_path, evidence_path, write_evidence


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_result_files_respect_the_umask(tmp_path, mask, mode):
    # they were created 0600 whatever the umask, so colleagues sharing --out could not read them
    old = os.umask(mask)
    try:
        write_text_atomic(tmp_path / "README.md", "report\n")
        write_json_atomic(tmp_path / "metrics.json", {"status": "ok"})
        counts = np.zeros((2, 3, 3), np.int64)
        write_evidence(tmp_path, Evidence(counts, np.zeros((3, 3), np.int64), np.zeros((2, 4), np.int64)))
        claim.claim(tmp_path, claim.me("compare"))
    finally:
        os.umask(old)
    for path in (tmp_path / "README.md", tmp_path / "metrics.json", evidence_path(tmp_path), claim_path(tmp_path)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_an_unwritable_report_folder_is_named_before_any_work(tmp_path):
    # issue 30 (15): an unwritable --report gave a raw traceback, in compare only after all training
    from helpers.cli import SMOKE, lossbench_cli

    from lossbench.io import folder_problem

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert folder_problem(tmp_path / "new" / "deeper") is None  # missing folders are made later: fine
    assert "is a file, not a folder" in folder_problem(a_file)
    assert "is a file, so no folder can be made under it" in folder_problem(a_file / "report")
    r = lossbench_cli("compare", "--config", str(SMOKE), "--report", str(a_file / "report"), "--out", str(tmp_path / "runs"))
    assert r.returncode == 2 and not (tmp_path / "runs").exists()
    assert f"lossbench: error: --report {a_file / 'report'}: the report cannot be written there ({a_file} is a file" in r.stderr
