"""The report's analysis at each training budget: estimates, intervals, ties with the best, objects and flags.

:func:`analyse_budget` computes every statistic a leaderboard shows from the runs' records and
evidence (:mod:`lossbench.report.stats`); :func:`flag_budgets` and :func:`flag_text` add the flags
(degenerate, unstable, budget-bound, incomplete); :func:`leaderboard_frame` is ``leaderboard.csv``.
Settings come from the suite's ``report:`` section (its defaults when the folder has no suite file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lossbench.config import ReportConfig, SuiteConfig
from lossbench.record import RunRecord, read_evidence
import lossbench.report.stats as stats
from lossbench.report.gather import Runs, focus_of, results_frame

LEADERBOARD_COLUMNS = ["budget", "loss", "seeds", "miou", "miou_lo", "miou_hi", "focus_iou", "focus_lo", "focus_hi",
                       "tied_with_best", "focus_tied_with_best", "objects_recall", "objects_fp_per_image", "objects_f1",
                       "flags", "wall_s"]  # fmt: skip
"""The columns of ``leaderboard.csv``: one row per (budget, loss)."""


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass
class Budget:
    """The comparison at one training budget: intervals, ties, objects and flags of every loss."""

    budget: int
    table: pd.DataFrame  # one row per loss (LEADERBOARD_COLUMNS and more)
    miou: stats.Comparison | None
    focus: stats.Comparison | None
    replicates: int
    alpha: float  # the level of the tie test
    images: int | None
    seeds: list[int]
    no_evidence: list[str]  # labels of losses shown without intervals


def _evidence_counts(records: list[RunRecord], seeds: list[int]) -> tuple[np.ndarray | None, np.ndarray]:
    """``[S, N, C, 3]`` counts of one loss over the suite's seeds (zeros where absent) and which seeds are present."""
    arrays: dict[int, np.ndarray] = {}
    for rec in records:
        ev = read_evidence(rec.run_dir) if rec.run_dir is not None else None
        if ev is None:
            return None, np.zeros(len(seeds), bool)
        arrays[rec.seed] = ev.counts
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        return None, np.zeros(len(seeds), bool)
    (shape,) = shapes
    out = np.zeros((len(seeds), *shape), np.int64)
    present = np.zeros(len(seeds), bool)
    for i, seed in enumerate(seeds):
        if seed in arrays:
            out[i], present[i] = arrays[seed], True
    return out, present


def _degenerate(records: list[RunRecord]) -> list[str]:
    """Classes present in the test set that a run of this loss never predicts, or gets IoU 0 on."""
    bad = []
    for rec in records:
        for name, row in rec.test["per_class"].items():
            if (row.get("support") or 0) > 0 and (_num(row.get("iou")) == 0 or math.isnan(_num(row.get("precision")))):
                if name not in bad:
                    bad.append(name)
    return bad


def analyse_budget(records: list[RunRecord], budget: int, cfg: SuiteConfig | None, focus: str | None,
                   expected_seeds: int) -> Budget:  # fmt: skip
    """Every statistic of the report at one budget, from the runs' records and evidence."""
    ok = [r for r in records if r.ok and r.budget == budget]
    labels = sorted({r.label for r in ok})
    seeds = sorted({r.seed for r in ok})
    classes = list(ok[0].test["per_class"]) if ok else []
    names = ok[0].classes if ok else []
    class_ids = [names.index(c) for c in classes]
    focus_id = names.index(focus) if focus in (names or []) else None
    rep = cfg.report if cfg is not None else ReportConfig()
    n_boot, alpha = rep.bootstrap, rep.alpha

    counts, present, no_evidence = {}, {}, []
    for label in labels:
        c, p = _evidence_counts([r for r in ok if r.label == label], seeds)
        if c is None:
            no_evidence.append(label)
        else:
            counts[label], present[label] = c, p
    n_images = {c.shape[1] for c in counts.values()}
    images = n_images.pop() if len(n_images) == 1 else None
    if images is None and counts:  # runs tested on different test sets cannot be paired
        no_evidence += sorted(counts)
        counts, present = {}, {}
    draws = stats.draw(len(seeds), images, n_boot, seed=0) if counts else None

    est_m, est_f, rep_m, rep_f = {}, {}, {}, {}
    for label in labels:
        runs = [r for r in ok if r.label == label]
        est_m[label] = float(np.mean([_num(r.miou) for r in runs]))
        focus_values = [v for v in (_num(r.test["per_class"].get(focus, {}).get("iou")) for r in runs) if not math.isnan(v)]
        est_f[label] = float(np.mean(focus_values)) if focus and focus_values else math.nan
        if label in counts:
            c, here = counts[label], present[label]
            if not here.all():  # a missing seed: its draws never count (scores average over the drawn seeds there are)
                c, d = c[here], stats.Draws(draws.seed_weights[:, here], draws.image_weights)
            else:
                d = draws
            rep_m[label], rep_f[label] = stats.replicate_scores(c, d, class_ids, focus_id)
        else:
            rep_m[label] = rep_f[label] = np.full(1, math.nan)
    with_ev = [k for k in labels if k in counts]
    cmp_m = stats.compare({k: est_m[k] for k in with_ev}, rep_m, alpha) if with_ev else None
    cmp_f = stats.compare({k: est_f[k] for k in with_ev}, rep_f, alpha) if with_ev and focus_id is not None else None

    rows = []
    for label in labels:
        runs = [r for r in ok if r.label == label]
        objs = [r.objects for r in runs if r.objects and r.focus == focus]
        obj = {k: float(np.mean([_num(o.get(k)) for o in objs])) if objs else math.nan for k in ("recall", "fp_per_image", "f1")}
        mi = cmp_m.interval.get(label, (math.nan, math.nan)) if cmp_m else (math.nan, math.nan)
        fi = cmp_f.interval.get(label, (math.nan, math.nan)) if cmp_f else (math.nan, math.nan)
        rows.append({
            "budget": budget, "loss": label, "seeds": len(runs),
            "miou": est_m[label], "miou_lo": mi[0], "miou_hi": mi[1],
            "focus_iou": est_f[label], "focus_lo": fi[0], "focus_hi": fi[1],
            "tied_with_best": bool(cmp_m.tied[label]) if cmp_m and cmp_m.best and label in cmp_m.tied else None,
            "focus_tied_with_best": bool(cmp_f.tied[label]) if cmp_f and cmp_f.best and label in cmp_f.tied else None,
            "objects_recall": obj["recall"], "objects_fp_per_image": obj["fp_per_image"], "objects_f1": obj["f1"],
            "miou_std": float(np.std([_num(r.miou) for r in runs], ddof=1)) if len(runs) > 1 else math.nan,
            "focus_std": float(np.std([_num(r.test["per_class"].get(focus, {}).get("iou")) for r in runs], ddof=1))
            if len(runs) > 1 and focus else math.nan,
            "degenerate": _degenerate(runs),
            "incomplete": len(runs) < expected_seeds,
            "wall_s": float(np.mean([_num(r.wall_s) for r in runs])),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if len(table):
        _flag_unstable(table)
    return Budget(budget, table, cmp_m, cmp_f, n_boot, alpha, images, seeds, sorted(no_evidence))


def _flag_unstable(table: pd.DataFrame) -> None:
    """*unstable*: a loss whose seed spread (std over seeds) exceeds the spread across losses (std of their means)."""
    unstable = []
    for stat, spread_col in (("miou", "miou_std"), ("focus_iou", "focus_std")):
        across = float(table[stat].std(ddof=1)) if table[stat].notna().sum() > 1 else math.nan
        unstable.append(table[spread_col] > across if not math.isnan(across) else pd.Series(False, index=table.index))
    table["unstable"] = unstable[0] | unstable[1]


def flag_budgets(results: list[Budget]) -> None:
    """*budget-bound*: a loss whose tie with the best, or whose focus-class IoU interval, moves between budgets."""
    for b in results:
        b.table["budget_bound"] = False
    if len(results) < 2:
        return
    first, last = results[0].table.set_index("loss"), results[-1].table.set_index("loss")
    for b in results:
        for i, row in b.table.iterrows():
            loss = row["loss"]
            if loss not in first.index or loss not in last.index:
                continue
            moved = any(first.at[loss, c] != last.at[loss, c] for c in ("tied_with_best", "focus_tied_with_best"))
            lo1, hi1, lo2, hi2 = (first.at[loss, "focus_lo"], first.at[loss, "focus_hi"], last.at[loss, "focus_lo"],
                                  last.at[loss, "focus_hi"])  # fmt: skip
            if not any(map(math.isnan, (lo1, hi1, lo2, hi2))) and (hi1 < lo2 or hi2 < lo1):
                moved = True
            b.table.at[i, "budget_bound"] = moved


def flag_text(row: Any) -> str:
    """The flags of one leaderboard row as text (kept in the table's ``flags`` column)."""
    flags = []
    if row["degenerate"]:
        flags.append("degenerate (" + ", ".join(f"`{c}`" for c in row["degenerate"]) + " never found on some seed)")
    if row.get("unstable"):
        flags.append("unstable (seed spread > spread across losses)")
    if row.get("budget_bound"):
        flags.append("budget-bound (moves between budgets)")
    if row["incomplete"]:
        flags.append("incomplete (seeds missing or failed)")
    return "; ".join(flags)


def leaderboard_frame(results: list[Budget]) -> pd.DataFrame:
    """``leaderboard.csv``: one row per (budget, loss)."""
    frames = []
    for b in results:
        t = b.table.copy()
        t["flags"] = t["flags"].str.replace("`", "")
        frames.append(t[LEADERBOARD_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LEADERBOARD_COLUMNS)


@dataclass
class Analysis:
    """Everything the report shows, computed once from the gathered runs."""

    results: pd.DataFrame  # results.csv (gather.RESULT_COLUMNS)
    classes: list[str]  # the scored classes
    focus: str | None  # the focus class
    budgets: list[Budget]  # one comparison per training budget with finished runs
    leaderboard: pd.DataFrame  # leaderboard.csv

    @property
    def several_budgets(self) -> bool:
        return len(self.budgets) > 1


def analyse(found: Runs) -> Analysis:
    """The report's analysis of a gathered runs folder: per budget the estimates, intervals, ties and flags."""
    records = found.current
    df = results_frame(records)
    ok_records = [r for r in records if r.ok]
    classes = list(ok_records[0].test["per_class"]) if ok_records else []
    focus = focus_of(records, found.cfg) or (classes[-1] if classes else None)
    budgets = [b for b in found.budgets if any(r.budget == b for r in ok_records)]
    seeds = len(found.cfg.seeds) if found.cfg else len({r.seed for r in ok_records})
    results = [analyse_budget(records, b, found.cfg, focus, seeds) for b in budgets]
    flag_budgets(results)
    for b in results:
        b.table["flags"] = [flag_text(r) for r in b.table.to_dict("records")]
    return Analysis(df, classes, focus, results, leaderboard_frame(results))
