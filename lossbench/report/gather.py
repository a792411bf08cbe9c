"""Gathering a runs folder for the report: which records belong to the suite, which are missing, the long table.

The suite is the one in the folder's ``suite.yaml`` (written by ``compare``): a record belongs to it
when its config hash is the one the suite gives that (loss, seed, budget); the runs the suite plans
(:func:`lossbench.plan.plan_runs`) that have no record are *missing*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lossbench.config import ReportConfig, LossEntry, SuiteConfig
from lossbench.identity import config_hash, run_config
from lossbench.metrics import BOUNDARY_METRICS, METRICS, focus_class
from lossbench.plan import DEFAULT, FINAL, SEARCH, plan_runs
from lossbench.record import DamagedRecord, RunRecord, load_suite, record_path, scan_runs

if TYPE_CHECKING:
    from lossbench.tune import LossSearch

OBJECT_COLUMNS = ["objects_recall", "objects_precision", "objects_f1", "objects_fp_per_image"]
RESULT_COLUMNS = ["loss", "seed", "budget", "class", *METRICS, *BOUNDARY_METRICS, "boundary_images", *OBJECT_COLUMNS, "status",
                  "epochs", "wall_s"]  # fmt: skip
"""The columns of ``results.csv``: one row per (loss, seed, budget, class)."""


@dataclass
class Tuning:
    """A tuned suite's search (each loss's points and the one selected) and its runs at the suite's own settings."""

    searches: list[LossSearch]
    search_records: list[RunRecord]
    default_records: list[RunRecord]
    unselected: list[LossSearch]  # losses with no selected point yet (search unfinished) or none at all


@dataclass
class Runs:
    """What a runs folder holds for the report."""

    current: list[RunRecord]  # records of this suite's config
    stale: list[RunRecord]  # records trained with another config
    damaged: list[DamagedRecord]  # metrics.json files that cannot be read
    missing: list[tuple[str, int, int]]  # (label, seed, budget) of runs the suite lists that have no record
    cfg: SuiteConfig | None
    tuning: Tuning | None = None  # a tuned suite's search and default point (``current``: its selected points)
    asked_seeds: int | None = None  # a report narrowed to what compare was asked (--losses/--seeds): seeds per loss
    not_asked: int = 0  # runs of the suite left out of a narrowed report that are not trained yet
    trained_report: ReportConfig | None = None  # the folder's own report: section when report --set changed it (the race's)

    @property
    def budgets(self) -> list[int]:
        if self.cfg is not None:
            return self.cfg.budget_list()
        return sorted({r.budget for r in self.current if r.budget is not None}) or [0]


def collect_runs(out: Path) -> Runs:
    """Every run record under ``out``, split into those that match the suite's config and the rest."""
    scan = scan_runs(out)
    untested = [r for r in scan.records if r.ok and not isinstance(r.test, dict)]
    if untested:  # P46: a record that says ok without test results cannot be reported: damaged, said, left out
        scan.damaged.extend(DamagedRecord(record_path(r.run_dir), "status ok but no test results (test is missing)")
                            for r in untested)  # fmt: skip
        scan.records[:] = [r for r in scan.records if r not in untested]
    cfg = load_suite(out)
    if cfg is None:
        for rec in scan.records:
            rec.budget = rec.budget or rec.epochs
        return Runs(scan.records, [], scan.damaged, [], None)
    if cfg.tune is not None:
        return _collect_tuned(cfg, scan, out)
    current, stale = [], []
    budgets = cfg.budget_list()
    for rec in scan.records:
        entry = LossEntry(name=rec.loss, params=rec.loss_params or {}, label=rec.label)
        expected = {config_hash(run_config(cfg, entry, rec.seed, b)): b for b in budgets}
        if rec.config_hash in expected:
            rec.budget = expected[rec.config_hash]
            current.append(rec)
        else:
            stale.append(rec)
    have = {(r.label, r.seed, r.budget) for r in current}
    damaged_dirs = {d.path.parent for d in scan.damaged}
    planned = plan_runs(cfg, out, check=False) if cfg.losses else []
    missing = [(run.label, run.seed, run.budget) for run in planned
               if (run.label, run.seed, run.budget) not in have and run.run_dir not in damaged_dirs]  # fmt: skip
    return Runs(current, stale, scan.damaged, missing, cfg)


def narrowed(found: Runs, labels: set[str], seeds: set[int]) -> Runs:
    """The report of what ``compare --losses/--seeds`` was asked: those losses and seeds only, the rest of the
    suite's untrained runs counted in one line (:attr:`Runs.not_asked`) instead of listed as missing."""
    def asked(label: str, seed: int) -> bool:
        return label.split(" [")[0] in labels and seed in seeds

    missing = [m for m in found.missing if asked(m[0], m[1])]
    return Runs([r for r in found.current if asked(r.label, r.seed)], found.stale, found.damaged, missing, found.cfg,
                found.tuning, len(seeds), len(found.missing) - len(missing))  # fmt: skip


def _collect_tuned(cfg: SuiteConfig, scan: Any, out: Path) -> Runs:
    """A tuned suite's records: the selected points (what the verdict is about), the search and the
    suite's own settings; the selection is made from the search records as ``compare`` makes it."""
    from lossbench.tune import search_results, select

    by_hash: dict[str, RunRecord] = {}
    for rec in scan.records:
        by_hash.setdefault(rec.config_hash, rec)
    first = plan_runs(cfg, out, check=False) if cfg.losses else []
    hashes = {run.run_dir: config_hash(run.run_cfg) for run in first}  # each run's hash, computed once
    searches = search_results(cfg, first, lambda run_dir: by_hash.get(hashes[run_dir]))
    planned = plan_runs(cfg, out, check=False, selection=select(searches)) if cfg.losses else []
    for run in planned:
        if run.run_dir not in hashes:
            hashes[run.run_dir] = config_hash(run.run_cfg)
    roles: dict[str, set[str]] = {}
    budget_of: dict[str, int] = {}
    for run in [*first, *planned]:
        h = hashes[run.run_dir]
        roles.setdefault(h, set()).add(run.role)
        budget_of[h] = run.budget
    groups: dict[str, list[RunRecord]] = {SEARCH: [], FINAL: [], DEFAULT: []}
    stale = []
    for rec in scan.records:
        if rec.config_hash not in roles:
            stale.append(rec)
            continue
        rec.budget = budget_of[rec.config_hash]
        for role in roles[rec.config_hash]:
            groups[role].append(rec)
    damaged_dirs = {d.path.parent for d in scan.damaged}
    shown = {SEARCH: " [{}]", FINAL: " [selected: {}]", DEFAULT: ""}
    missing = [(run.label + shown[run.role].format(run.point.describe()), run.seed, run.budget) for run in planned
               if hashes[run.run_dir] not in by_hash and run.run_dir not in damaged_dirs]  # fmt: skip
    tuning = Tuning(searches, groups[SEARCH], groups[DEFAULT], [s for s in searches if s.selected is None])
    return Runs(groups[FINAL], stale, scan.damaged, missing, cfg, tuning)


def results_frame(records: list[RunRecord]) -> pd.DataFrame:
    """Long table: one row per (loss, seed, class); runs without results get NaN metrics."""
    classes = next((r.classes for r in records if r.ok and r.classes), [])
    rows = []
    for rec in records:
        per_class = (rec.test or {}).get("per_class", {})
        for name in rec.classes or classes:
            if rec.ok and name not in per_class:
                continue  # a class left out of the metrics (it is the ignore index)
            values = per_class.get(name, {})
            objects = rec.objects if rec.ok and rec.objects and name == rec.focus else {}
            rows.append(
                {
                    "loss": rec.label,
                    "seed": rec.seed,
                    "budget": rec.budget,
                    "class": name,
                    **{m: values.get(m, math.nan) for m in (*METRICS, *BOUNDARY_METRICS, "boundary_images")},
                    **{c: objects.get(c.removeprefix("objects_"), math.nan) for c in OBJECT_COLUMNS},
                    "status": rec.status,
                    "epochs": rec.epochs,
                    "wall_s": rec.wall_s,
                }
            )
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for m in (*METRICS, *BOUNDARY_METRICS, "boundary_images", *OBJECT_COLUMNS):
        df[m] = pd.to_numeric(df[m]).astype(float)
    return df.sort_values(["loss", "seed", "budget"], kind="stable").reset_index(drop=True)


def focus_of(records: list[RunRecord], cfg: SuiteConfig | None) -> str | None:
    """The focus class: ``report.focus``, else what the runs recorded, else the class with the fewest training pixels."""
    if cfg is not None and cfg.report.focus:
        return cfg.report.focus
    recorded = sorted({r.focus for r in records if r.ok and r.focus})
    if len(recorded) == 1:
        return recorded[0]
    for rec in records:  # runs recorded before the focus was: the rule the runs apply
        if rec.ok and rec.class_frequencies and rec.test and rec.classes:
            scored = [i for i, c in enumerate(rec.classes) if c in rec.test["per_class"]]
            return rec.classes[focus_class(rec.classes, rec.class_frequencies, scored)] if scored else None
    return None
