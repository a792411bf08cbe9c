"""``lossbench status --out DIR``: every run of a runs folder and where it stands, read from the folder alone.

A run's state comes from its record and its claim (:mod:`lossbench.claim`):

========== ===================================================================================
queued     claimed by a live owner (a SLURM job waiting, a launcher about to start it), not started
running    its record says running and its owner is alive
finished   its record says ok
failed     its record says failed (kept; ``compare --retry-failed`` trains it again)
interrupted stopped and resumable: the next ``compare`` (or its requeued job) resumes it
stalled    its record says running but its owner is gone: the next ``compare`` resumes it
unclaimed  set up, never started, no owner: the next ``compare`` trains it
damaged    its record cannot be read: the next ``compare`` trains it again
planned    in the suite (``suite.yaml``) but not set up yet: the next ``compare`` trains it
========== ===================================================================================

A raced suite (``race:``) plans its first seeds; the seeds a race adds are listed once a round has set them up.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lossbench import claim
from lossbench.config import ConfigError, SuiteConfig, load_run_config
from lossbench.plan import point_of
from lossbench.record import (
    DAMAGED,
    FAILED,
    INTERRUPTED,
    MISSING,
    OK,
    RUNNING,
    DamagedRecord,
    RunRecord,
    config_path,
    fmt_time,
    load_suite,
    planned_run_dirs,
    read_record,
)
from lossbench.progress import plural

STATES = ("queued", "running", "finished", "failed", "interrupted", "stalled", "unclaimed", "damaged", "planned")


@dataclass
class RunState:
    label: str
    seed: int
    budget: int | None
    state: str
    detail: str  # progress, result or error
    owner: str  # who holds its claim, if anyone
    attempts: int
    run_dir: Path
    point: str = ""  # a tuned suite's point (lr=0.01, gamma=3)


def _identity(run_dir: Path, rec: RunRecord | None, suite: SuiteConfig | None = None) -> tuple[str, int, int | None, str, str]:
    """``(label, seed, budget, problem, point)`` of a run: from its ``config.yaml``, else from its record, else
    from its folder's name (``<label>/seed<seed>-<hash>``); ``problem`` says why the config could not be used;
    ``point`` is the tuned ``suite``'s point the run trains."""
    try:
        cfg = load_run_config(config_path(run_dir))
        point = point_of(suite, cfg) if suite is not None else None
        return cfg.loss.label, cfg.seed, cfg.trainer.max_epochs, "", point.describe() if point else ""
    except ConfigError as e:
        problem = "no config.yaml" if not config_path(run_dir).exists() else f"config.yaml cannot be read ({e})"
    if rec is not None:
        return rec.label, rec.seed, rec.budget, problem, ""
    seed = re.match(r"seed(\d+)-", run_dir.name)
    return run_dir.parent.name, int(seed.group(1)) if seed else -1, None, problem, ""


def run_state(run_dir: Path, liveness: claim.Liveness, suite: SuiteConfig | None = None) -> RunState:
    why = ""
    try:
        rec = read_record(run_dir)
        status = rec.status if rec else MISSING
    except DamagedRecord as e:
        rec, status, why = None, DAMAGED, e.why
    label, seed, budget, problem, point = _identity(run_dir, rec, suite)
    holder = claim.read_claim(run_dir)
    alive = holder is not None and liveness.alive(holder)
    detail = ""
    if status == OK:
        state, detail = "finished", f"test mIoU {rec.miou:.3f}" if rec.miou is not None else "ok, but its record has no test results"
    elif status == FAILED:
        state, detail = "failed", (rec.error or "")[:120]
    elif status == RUNNING and alive:
        state = "running"
        detail = rec.progress.describe() if rec.progress else f"starting, epoch 0/{budget or '?'}"
        left = rec.progress.seconds_left() if rec.progress else None
        if left is not None:
            detail += f", about {fmt_time(left)} left"
    elif status == RUNNING:
        state, detail = "stalled", "its owner is gone; the next compare resumes it"
    elif status == INTERRUPTED:
        state, detail = ("queued" if alive else "interrupted"), (rec.error or "")[:120]
    elif status == DAMAGED:
        state, detail = "damaged", why
    else:
        state = "queued" if alive else "unclaimed"
    if holder is not None and holder.damaged:
        detail = (detail + "; " if detail else "") + "its claim.json is damaged: the next compare takes it over"
    if problem and status != OK and not alive:  # a live owner is about to write the config it claimed the run for
        state = "damaged" if state == "unclaimed" else state
        detail = (detail + "; " if detail else "") + problem
    owner = holder.describe() if holder is not None and alive else ""
    return RunState(label, seed, budget, state, detail, owner, rec.attempts if rec else 0, run_dir, point)


def folder_status(out: Path) -> list[RunState]:
    """The state of every run set up under ``out`` (one ``squeue`` call for all of them)."""
    liveness = claim.Liveness()
    try:
        suite = load_suite(out)
    except ConfigError:
        suite = None  # a damaged suite.yaml: the runs are still listed
    states = [run_state(run_dir, liveness, suite) for run_dir in planned_run_dirs(out)]
    return states + _not_set_up(out, suite, {s.run_dir for s in states})


def _not_set_up(out: Path, suite: SuiteConfig | None, seen: set[Path]) -> list[RunState]:
    """The suite's planned runs that have no folder yet (a tuned suite: its search and default-settings runs)."""
    if suite is None or not suite.losses:
        return []
    from lossbench.plan import plan_runs

    try:
        planned = plan_runs(suite, out, check=False)
    except (ConfigError, ValueError):
        return []
    return [RunState(run.label, run.seed, run.budget, "planned", "not started", "", 0, run.run_dir,
                     run.point.describe() if run.point else "") for run in planned if run.run_dir not in seen]  # fmt: skip


def race_line(suite: SuiteConfig | None, states: list[RunState]) -> str | None:
    """Between a race's rounds its next runs have no folder yet: what the next round trains, and when it is decided."""
    if suite is None or suite.race is None or not states:
        return None
    from lossbench.plan import race_schedule

    schedule = race_schedule(suite)
    per_loss = Counter(s.label for s in states)
    most = max(per_loss.values())
    later = [n for n in schedule if n > most]
    if not later:
        return f"race: its last round ({most} seeds a loss) is set up; no round follows"
    unfinished = sum(s.state != "finished" for s in states)
    when = (f"decided when the {plural(unfinished, 'run')} above not finished {'has' if unfinished == 1 else 'have'} ended"
            if unfinished else "decided by the next `lossbench compare`")
    return (f"race: rounds of {schedule} seeds a loss; the next round trains {later[0] - most} more seeds for each loss "
            f"still in the best set (at most {plural((later[0] - most) * len(per_loss), 'run')}), {when}")


def format_status(states: list[RunState], suite: SuiteConfig | None = None) -> str:
    if not states:
        return "no runs in this folder yet"
    counts = Counter(s.state for s in states)
    several_budgets = len({s.budget for s in states if s.budget is not None}) > 1
    rows = []
    for s in sorted(states, key=lambda s: (s.label, s.seed, s.budget or 0, s.point)):
        name = f"{s.label} seed {s.seed}" + (f" ({plural(s.budget, 'epoch')})" if several_budgets else "") + (f" [{s.point}]" if s.point else "")
        rows.append((name, s.state, s.detail, s.owner, str(s.attempts)))
    header = ("run", "state", "detail", "owner", "attempts")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    summary = ", ".join(f"{counts[k]} {k}" for k in STATES if counts[k])
    race = race_line(suite, states)
    return "\n".join([*lines, "", f"{plural(len(states), 'run')}: {summary}", *([race] if race else [])])
