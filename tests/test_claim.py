"""Claims: the rule that keeps two launchers from training one run, with real processes and files."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading

import pytest

from helpers.processes import HANG_S, dead_pid

from lossbench import claim
from lossbench.record import claim_path


def test_a_claim_is_whole_held_by_its_token_and_released_only_by_it(tmp_path):
    a, b = claim.me("compare"), claim.me("compare")
    assert claim.claim(tmp_path, a) is None
    data = json.loads(claim_path(tmp_path).read_text())
    assert data["token"] == a.token and data["pid"] == os.getpid() and data["host"] and data["pid_start"]
    assert claim.claim(tmp_path, b) == a  # alive: b sees the holder
    assert claim.claim(tmp_path, claim.me("train", a.token)) is None  # the token's holder owns it (compare's child)
    claim.release(tmp_path, b.token)
    assert claim.read_claim(tmp_path) == a  # not b's to release
    claim.release(tmp_path, a.token)
    assert claim.read_claim(tmp_path) is None
    assert claim.claim(tmp_path, b) is None


def test_a_claim_is_taken_over_only_when_its_owner_is_provably_gone(tmp_path, monkeypatch):
    gone = claim.me("compare", pid=dead_pid())
    assert claim.claim(tmp_path, gone) is None
    taker = claim.me("compare")
    assert claim.claim(tmp_path, taker) is None and claim.read_claim(tmp_path).token == taker.token

    reused = claim.Owner(**{**json.loads(claim_path(tmp_path).read_text()), "pid_start": 1, "token": "old"})
    claim_path(tmp_path).write_text(json.dumps(reused.__dict__))
    assert claim.claim(tmp_path, claim.me("compare")) is None  # this pid, but another process: gone

    elsewhere = claim.Owner("t-host", "another-host", dead_pid(), None, None, "compare", 0.0)
    claim_path(tmp_path).write_text(json.dumps(elsewhere.__dict__))
    assert claim.claim(tmp_path, claim.me("compare")) == elsewhere  # another host's pid cannot be checked: kept

    job = claim.Owner("t-job", "any", 1, None, "12345_0", "job", 0.0)
    claim_path(tmp_path).write_text(json.dumps(job.__dict__))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no squeue to ask: the job is not provably gone
    assert claim.claim(tmp_path, claim.me("compare")) == job


def _race(run_dir: str, barrier, results) -> None:
    barrier.wait()
    holder = claim.claim(run_dir, claim.me("compare"))
    results.put(holder is None)
    barrier.wait()  # stay alive until all have looked: a winner that exits is a gone owner, rightly taken over


def test_two_launchers_racing_for_one_stale_claim_take_it_over_once(tmp_path):
    for attempt in range(5):
        run_dir = tmp_path / f"run{attempt}"
        claim.claim(run_dir, claim.me("compare", pid=dead_pid()))
        ctx = mp.get_context("fork")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(run_dir), barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(HANG_S)
        won = [results.get(timeout=HANG_S) for _ in procs]  # hang guards: every racer puts its result before it exits
        assert sum(won) == 1, won


def test_a_launcher_whose_job_took_over_its_claim_hands_it_on(tmp_path):
    launcher = claim.me("compare")
    claim.claim(tmp_path, launcher)
    job = claim.held_by(launcher, job="77_3")
    assert claim.update(tmp_path, job) and claim.read_claim(tmp_path).job == "77_3"
    assert not claim.update(tmp_path, claim.me("job", job="78_0"))  # another token cannot rewrite it
    assert "SLURM job 77_3" in claim.read_claim(tmp_path).describe()


@pytest.mark.parametrize(
    "text",
    [
        '{"token": "x", "host"',  # truncated
        '{"token": "x", "host": "h", "pid": "abc", "pid_start": null, "job": null, "by": "compare", "time": "yesterday"}',
        "[1, 2, 3]",
    ],
    ids=["broken JSON", "mistyped fields", "not an object"],
)
def test_a_damaged_claim_is_named_and_taken_over_like_a_stale_one(tmp_path, text):
    # it used to make compare loop forever (broken JSON read as "released, try again") or crash with a TypeError
    claim_path(tmp_path).write_text(text)
    holder = claim.read_claim(tmp_path)
    assert holder.damaged and "damaged" in holder.describe() and not claim.Liveness().alive(holder)
    me, result = claim.me("compare"), []
    worker = threading.Thread(target=lambda: result.append(claim.claim(tmp_path, me)), daemon=True)
    worker.start()
    worker.join(timeout=HANG_S)  # a hang guard
    assert not worker.is_alive(), "claim() did not return on a damaged claim"
    assert result == [None] and claim.read_claim(tmp_path).token == me.token  # taken over
    rival = claim.me("compare")
    assert claim.claim(tmp_path, rival) == claim.read_claim(tmp_path)  # and now held, by a live owner


def test_a_claim_held_on_another_host_says_how_to_release_it_and_a_released_one_is_taken_over(tmp_path):
    # issue 30 (17): a claim held by another host whose run was interrupted blocked forever with no word on how
    # to release it (lossbench cannot see another host's processes)
    from dataclasses import replace

    from lossbench.config import load_config
    from lossbench.plan import plan_runs
    from lossbench.suite import _Elsewhere, _Progress
    from helpers.cli import SMOKE

    cfg = load_config(SMOKE, ["losses=[ce]"])
    (run,) = plan_runs(cfg, tmp_path, check=False)
    away = replace(claim.me("compare"), host="elsewhere.cluster", pid=4242)
    run.run_dir.mkdir(parents=True)
    assert claim.claim(run.run_dir, away) is None
    said = []
    elsewhere = _Elsewhere(said.append)
    elsewhere.add(run, claim.read_claim(run.run_dir))
    assert f"if pid 4242 there is gone, delete {claim_path(run.run_dir)} and the waiting compare takes" in said[0]
    progress = _Progress([run], 1, said.append)
    assert elsewhere.look(progress, 0) == []  # still held: waited for
    claim_path(run.run_dir).unlink()  # the user releases it
    elsewhere.next_look = 0.0
    assert elsewhere.look(progress, 0) == [run] and "taking it over" in said[-1]
    assert claim.release_hint(claim.me("compare"), run.run_dir) == ""  # this host's claims are checked, no hint
