"""A tuned suite's selection: for each loss, the point of its search with the best validation score.

The search (:func:`lossbench.plan.plan_runs`, role ``search``) trains every point of a loss on
``tune.seeds``. A point's score is the validation statistic ``tune.select_on`` — mean IoU, the focus
class's IoU or a named class's IoU — of each run's **last epoch** (the model that would be tested),
averaged over the search seeds. The point with the highest score is the loss's selected point; a
point with a failed or missing run is not eligible (a loss that diverges at a learning rate is not
credited with it), and equal scores go to the first point in the plan's order.

Only the validation history of a run record is read here — never its test results or evidence — so
the test set cannot leak into the choice. The verdict is then given on the test set for the selected
points, trained again on the suite's ``seeds`` (role ``final``); training them on other seeds than
the search keeps the selection's luck on its own seeds out of the reported numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lossbench.config import SuiteConfig
from lossbench.plan import SEARCH, PlannedRun, Point, Selection
from lossbench.record import FAILED, OK, RunRecord


@dataclass
class PointScore:
    """One point of a loss's search: its validation score on each search seed."""

    point: Point
    scores: dict[int, float] = field(default_factory=dict)  # search seed → last-epoch validation score
    failed: list[int] = field(default_factory=list)  # search seeds whose run failed
    missing: list[int] = field(default_factory=list)  # search seeds whose run has not finished

    @property
    def eligible(self) -> bool:
        return not self.failed and not self.missing and bool(self.scores)

    @property
    def mean(self) -> float:
        values = [v for v in self.scores.values() if not math.isnan(v)]
        return sum(values) / len(values) if values and len(values) == len(self.scores) else math.nan


@dataclass
class LossSearch:
    """A loss's search at one budget and the point it selected (``None`` until every search run has
    ended, or when no point is eligible)."""

    label: str
    budget: int
    points: list[PointScore]
    selected: Point | None

    @property
    def finished(self) -> bool:
        return not any(p.missing for p in self.points)

    def score_of(self, point: Point) -> float:
        return next((p.mean for p in self.points if p.point == point), math.nan)


def statistic(select_on: str, focus: str | None) -> str:
    """The history key a point is scored on: ``val_miou``, or ``val_iou/<class>``."""
    if select_on == "miou":
        return "val_miou"
    return f"val_iou/{focus if select_on == 'focus' else select_on}"


def validation_score(rec: RunRecord, key: str) -> float:
    """A finished run's last-epoch validation value of ``key`` (NaN when undefined). Reads the history only."""
    if not rec.history:
        return math.nan
    value = rec.history[-1].get(key)
    return math.nan if value is None else float(value)


def search_results(cfg: SuiteConfig, planned: list[PlannedRun], read: Callable[[Path], RunRecord | None]) -> list[LossSearch]:
    """Each loss's search, from the records ``read`` gives for the planned search runs."""
    tune = cfg.tune
    if tune is None:
        return []
    by_loss: dict[tuple[str, int], dict[Point, PointScore]] = {}
    focus = cfg.report.focus
    records: dict[Path, RunRecord | None] = {}
    for run in planned:
        if run.role != SEARCH:
            continue
        rec = records[run.run_dir] = read(run.run_dir)
        if focus is None and rec is not None and rec.status == OK and rec.focus:
            focus = rec.focus  # the rarest training class, as the runs found it
    key = statistic(tune.select_on, focus)
    for run in planned:
        if run.role != SEARCH:
            continue
        points = by_loss.setdefault((run.label, run.budget), {})
        score = points.setdefault(run.point, PointScore(run.point))
        rec = records[run.run_dir]
        if rec is not None and rec.status == OK:
            score.scores[run.seed] = validation_score(rec, key)
        elif rec is not None and rec.status == FAILED:
            score.failed.append(run.seed)
        else:
            score.missing.append(run.seed)
    out = []
    for (label, budget), points in by_loss.items():
        scores = list(points.values())
        done = not any(p.missing for p in scores)
        eligible = [p for p in scores if p.eligible and not math.isnan(p.mean)]
        best = max(eligible, key=lambda p: p.mean, default=None) if done else None  # max keeps the first of equals
        out.append(LossSearch(label, budget, scores, best.point if best else None))
    return out


def select(searches: list[LossSearch]) -> Selection:
    """``{(label, budget): selected point}`` of every loss whose search has ended with an eligible point."""
    return {(s.label, s.budget): s.selected for s in searches if s.selected is not None}


def describe_selection(searches: list[LossSearch], select_on: str) -> list[str]:
    """One line per loss: the point selected and its validation score, or why there is none."""
    lines = []
    for s in searches:
        if s.selected is not None:
            lines.append(f"{s.label}: {s.selected.describe()} (validation {select_on} {s.score_of(s.selected):.3f}, "
                         f"best of {len(s.points)} points)")  # fmt: skip
        elif not s.finished:
            lines.append(f"{s.label}: not selected yet ({sum(len(p.missing) for p in s.points)} search runs to finish)")
        else:
            lines.append(f"{s.label}: no point selected — every point has a failed run")
    return lines
