"""The comparison report: leaderboards, per-class tables, plots, ``results.csv`` and a W&B summary table.

``write_report(out, report_dir)`` reads every run record under ``out`` (so runs trained on several
machines into one shared folder merge; see :mod:`lossbench.record`), keeps those that belong to the
suite in the folder's suite file (same resolved config hash), and writes into ``report_dir``:

* ``README.md``: a verdict, then per budget the leaderboards by mean IoU and by the focus class's
  IoU — each figure with its 95 % paired bootstrap interval, the difference to the best with its
  interval, the losses *tied* with the best (Holm-corrected), focus-class object detection, and
  flags (degenerate, unstable, budget-bound, incomplete) — the qualitative panel, per-class tables,
  failed, interrupted and missing runs, damaged records, and the suite's config;
* ``results.csv``: one row per (loss, seed, budget, class), with the focus class's object metrics;
* ``leaderboard.csv``: one row per (budget, loss) with the intervals, ties and flags;
* plots: ``intervals.png``, ``miou_vs_focus.png``, ``predictions.png``, ``precision_recall.png``,
  ``iou_by_class.png``, ``rare_class_iou.png``, ``learning_curves.png``.

The statistics are computed from each run's ``evidence.npz`` (:mod:`lossbench.stats`), never by
retraining; a run without one is shown without intervals. The output depends only on the runs
(the bootstrap has a fixed seed), so regenerating it from the same runs gives the same files.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossbench.config import (
    LossEntry,
    SuiteConfig,
    config_hash,
    read_yaml_mapping,
    resolve_losses,
    run_config,
    validate_config,
)
from lossbench import stats
from lossbench.io import write_text_atomic
from lossbench.metrics import BOUNDARY_METRICS, METRICS, focus_class
from lossbench.record import DamagedRecord, RunRecord, read_evidence, run_dir_for, scan_runs, suite_path

OBJECT_COLUMNS = ["objects_recall", "objects_precision", "objects_f1", "objects_fp_per_image"]
RESULT_COLUMNS = ["loss", "seed", "budget", "class", *METRICS, *BOUNDARY_METRICS, *OBJECT_COLUMNS, "status", "epochs", "wall_s"]
LEADERBOARD_COLUMNS = ["budget", "loss", "seeds", "miou", "miou_lo", "miou_hi", "focus_iou", "focus_lo", "focus_hi",
                       "tied_with_best", "focus_tied_with_best", "objects_recall", "objects_fp_per_image", "objects_f1",
                       "flags", "wall_s"]  # fmt: skip
PLOTS = {
    "intervals.png": "Mean IoU and focus-class IoU with 95 % bootstrap intervals",
    "miou_vs_focus.png": "Mean IoU vs focus-class IoU (95 % intervals)",
    "predictions.png": "Test images with the most focus-class pixels: ground truth and every loss's prediction",
    "precision_recall.png": "Precision vs recall per class (mean over seeds)",
    "iou_by_class.png": "Per-class test IoU by loss (mean over seeds)",
    "rare_class_iou.png": "Focus-class IoU of every run: spread across losses vs across seeds",
    "learning_curves.png": "Validation mean IoU and focus-class IoU per epoch",
}


# --- collecting ----------------------------------------------------------------------------------


@dataclass
class Runs:
    """What a runs folder holds for the report."""

    current: list[RunRecord]  # records of this suite's config
    stale: list[RunRecord]  # records trained with another config
    damaged: list[DamagedRecord]  # metrics.json files that cannot be read
    missing: list[tuple[str, int, int]]  # (label, seed, budget) of runs the suite lists that have no record
    cfg: SuiteConfig | None

    @property
    def budgets(self) -> list[int]:
        if self.cfg is not None:
            return self.cfg.budget_list()
        return sorted({r.budget for r in self.current if r.budget is not None}) or [0]


def load_suite(out: Path) -> SuiteConfig | None:
    """The suite config in ``<out>/suite.yaml`` (as ``compare`` writes it, or a config file copied there)."""
    path = suite_path(out)
    if not path.exists():
        return None
    raw = read_yaml_mapping(path)
    raw.setdefault("suite", Path(out).name)
    return validate_config(raw, f"suite file {str(path)!r}")


def collect_runs(out: Path) -> Runs:
    """Every run record under ``out``, split into those that match the suite's config and the rest."""
    scan = scan_runs(out)
    cfg = load_suite(out)
    if cfg is None:
        for rec in scan.records:
            rec.budget = rec.budget or rec.epochs
        return Runs(scan.records, [], scan.damaged, [], None)
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
    missing = []
    for entry in resolve_losses(cfg, check=False) if cfg.losses else []:
        for seed in cfg.seeds:
            for b in budgets:
                run_dir = run_dir_for(out, run_config(cfg, entry, seed, b))
                if (entry.label, seed, b) not in have and run_dir not in damaged_dirs:
                    missing.append((entry.label, seed, b))
    return Runs(current, stale, scan.damaged, missing, cfg)


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
                    **{m: values.get(m, math.nan) for m in (*METRICS, *BOUNDARY_METRICS)},
                    **{c: objects.get(c.removeprefix("objects_"), math.nan) for c in OBJECT_COLUMNS},
                    "status": rec.status,
                    "epochs": rec.epochs,
                    "wall_s": rec.wall_s,
                }
            )
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for m in (*METRICS, *BOUNDARY_METRICS, *OBJECT_COLUMNS):
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


# --- statistics ----------------------------------------------------------------------------------


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
    images: int | None
    seeds: list[int]
    no_evidence: list[str]  # labels of losses shown without intervals


def _evidence_counts(records: list[RunRecord], seeds: list[int]) -> tuple[np.ndarray | None, np.ndarray]:
    """``[S, N, C, 3]`` counts of one loss over the suite's seeds (zeros where absent) and which seeds are present."""
    arrays: dict[int, np.ndarray] = {}
    for rec in records:
        ev = read_evidence(rec.run_dir) if rec.run_dir is not None else None
        if ev is None or "counts" not in ev:
            return None, np.zeros(len(seeds), bool)
        arrays[rec.seed] = ev["counts"]
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
    rep = cfg.report if cfg is not None else None
    n_boot, alpha = (rep.bootstrap, rep.alpha) if rep else (2000, 0.05)

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
    return Budget(budget, table, cmp_m, cmp_f, n_boot, images, seeds, sorted(no_evidence))


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


def _flag_text(row: Any) -> str:
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


# --- tables ------------------------------------------------------------------------------------


def _mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.dropna()
    if v.empty:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


def _cell(mean: float, std: float, best: bool = False) -> str:
    if math.isnan(mean):
        return "—"
    text = f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"
    return f"**{text}**" if best else text


def _ci(value: float, lo: float, hi: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.3f}" + ("" if math.isnan(lo) else f" [{lo:.3f}, {hi:.3f}]")


def _fmt(value: float, spec: str = ".2f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _tie_mark(comparison: stats.Comparison | None, loss: str) -> str:
    if comparison is None or comparison.best is None or loss not in comparison.estimate:
        return "—"
    if loss == comparison.best:
        return "best"
    return "tied" if comparison.tied.get(loss) else ""


def _vs_best(comparison: stats.Comparison | None, loss: str) -> str:
    if comparison is None or loss not in comparison.difference:
        return "—" if comparison is None or loss != comparison.best else "0"
    d, lo, hi = comparison.difference[loss]
    p = comparison.p_holm.get(loss, math.nan)
    return f"−{d:.3f} [{-hi:+.3f}, {-lo:+.3f}], p={_fmt(p, '.3f')}"


def leaderboard_md(b: Budget, sort_by: str, focus: str | None) -> str:
    t = b.table.sort_values([sort_by, "loss"], ascending=[False, True], kind="stable")
    main = b.miou if sort_by == "miou" else b.focus
    rows = []
    for i, r in enumerate(t.to_dict("records"), 1):
        rows.append([
            i, f"`{r['loss']}`", _tie_mark(main, r["loss"]),
            _ci(r["miou"], r["miou_lo"], r["miou_hi"]), _ci(r["focus_iou"], r["focus_lo"], r["focus_hi"]),
            _vs_best(main, r["loss"]),
            f"{_fmt(r['objects_recall'])} / {_fmt(r['objects_fp_per_image'])} / {_fmt(r['objects_f1'])}",
            r["flags"] or "—", r["seeds"], f"{r['wall_s']:.0f}",
        ])  # fmt: skip
    what = "mean IoU" if sort_by == "miou" else f"{focus} IoU"
    header = ["#", "loss", "tie group", "mean IoU [95 % CI]", f"`{focus}` IoU [95 % CI]", f"{what}: vs best [95 % CI], Holm p",
              f"`{focus}` objects: found / false per image / F1", "flags", "seeds", "s/run"]  # fmt: skip
    return _md_table(header, rows)


def per_class_md(df: pd.DataFrame, metric: str, classes: list[str], order: list[str], lower_is_better: bool = False) -> str:
    """Mean ± std over seeds per loss and class; the best of a column in bold, unless it is 0 (nothing to crown)."""
    ok = df[df["status"] == "ok"]
    stats_ = {(loss, c): _mean_std(g[metric]) for (loss, c), g in ok.groupby(["loss", "class"])}
    pick = min if lower_is_better else max
    best = {c: pick((stats_[(loss, c)][0] for loss in order if (loss, c) in stats_ and not math.isnan(stats_[(loss, c)][0])),
                    default=math.nan) for c in classes}  # fmt: skip
    rows = []
    for loss in order:
        cells = []
        for c in classes:
            mean, std = stats_.get((loss, c), (math.nan, math.nan))
            crown = not math.isnan(mean) and mean == best[c] and (lower_is_better or best[c] > 0)
            cells.append(_cell(mean, std, crown))
        rows.append([f"`{loss}`", *cells])
    return _md_table(["loss", *classes], rows)


def _boundary_md(df: pd.DataFrame, records: list[RunRecord], classes: list[str], order: list[str], title: str,
                 cfg: SuiteConfig | None) -> list[str]:  # fmt: skip
    """The per-class boundary tables: HD95 (lower is better) and NSD, from the runs that recorded them."""
    if df[list(BOUNDARY_METRICS)].isna().all().all():
        return []  # runs tested before boundary metrics existed
    used = sorted({r.test.get("nsd_tolerance") for r in records if r.ok and r.test and r.test.get("nsd_tolerance") is not None})
    tol = ", ".join(f"{t:g}" for t in used)
    note = ""
    if cfg is not None and used and used != [cfg.report.nsd_tolerance]:
        note = (f" The config now says report.nsd_tolerance={cfg.report.nsd_tolerance:g}; the runs were tested at {tol} "
                "(it is measured when a run is tested, and changes no run's identity).")  # fmt: skip
    how = ("Per test image, then the mean over the images where it is defined (both masks present for HD95; either "
           "for NSD); mean ± std over seeds. Region overlap hides boundary errors on thin curves and small spots.")
    return [
        f"## Per-class HD95{title}", "", f"95th-percentile Hausdorff distance in pixels. {how} Bold: the lowest of a column.", "",
        per_class_md(df, "hd95", classes, order, lower_is_better=True), "",
        f"## Per-class NSD{title}", "", f"Normalised surface Dice at a tolerance of {tol} pixels. {how} Bold: the highest of a column.{note}", "",
        per_class_md(df, "nsd", classes, order), "",
    ]  # fmt: skip


def _verdict_md(b: Budget, focus: str | None, several: bool) -> list[str]:
    t = b.table.set_index("loss")
    out = []
    for name, cmp_, col in (("mean IoU", b.miou, "miou"), (f"`{focus}` IoU", b.focus, "focus_iou")):
        if cmp_ is None:
            continue
        if cmp_.best is None:
            out.append(f"- **{name}**: every loss scores 0 — nothing to choose between.")
            continue
        tied = [k for k in sorted(cmp_.tied) if cmp_.tied[k] and k != cmp_.best]
        flag = t.at[cmp_.best, "flags"]
        lo, hi = cmp_.interval[cmp_.best]
        line = (f"- **{name}**: highest `{cmp_.best}` {t.at[cmp_.best, col]:.3f} [{lo:.3f}, {hi:.3f}]"
                + (f" — flagged: {flag}" if flag else ""))  # fmt: skip
        if tied:
            line += f"; statistically tied with it: {', '.join(f'`{k}`' for k in tied)} ({len(tied) + 1} of {len(cmp_.estimate)} losses)"
        else:
            line += f"; better than every other loss beyond the uncertainty ({len(cmp_.estimate)} losses)"
        out.append(line + ".")
    flagged = [(r["loss"], r["flags"]) for r in b.table.to_dict("records") if r["flags"]]
    if flagged:
        out.append("- Flags: " + "; ".join(f"`{k}` {v}" for k, v in flagged) + ".")
    if b.no_evidence:
        out.append(f"- Shown without intervals (runs without `evidence.npz`, or tested on other images): {', '.join(b.no_evidence)}.")
    return out


def _method_md(b: Budget) -> str:
    seeds = f"{len(b.seeds)} seeds, then " if len(b.seeds) > 1 else ""
    return (
        f"Intervals: 95 % percentile intervals of a paired bootstrap — {b.replicates} replicates resampling "
        f"{seeds}the {b.images} test images with replacement, the same draws for every loss (bootstrap seed 0). "
        "A replicate's score is the mean over its seeds of the IoU pooled over its images. *vs best*: the "
        "difference to the loss with the highest estimate, its interval, and a two-sided bootstrap p-value "
        "Holm-corrected over the comparisons; *tied*: not significantly different from the best at the 5 % level. "
        "Objects: connected components (8-connectivity) of the focus class, found when a predicted component "
        "overlaps one with IoU ≥ the threshold (`report.object_iou`)."
    )


# --- plots -------------------------------------------------------------------------------------

CLASS_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
                 "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94"]  # fmt: skip


@dataclass
class _PlotData:
    df: pd.DataFrame  # results_frame, at the plotted budget
    b: Budget
    records: list[RunRecord]  # at the plotted budget
    classes: list[str]
    focus: str
    order: list[str]  # losses, best mean IoU first

    @cached_property
    def colors(self) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        return {loss: plt.get_cmap("tab20")(i % 20) for i, loss in enumerate(sorted(self.order))}

    @property
    def ok(self) -> pd.DataFrame:
        return self.df[self.df["status"] == "ok"]

    @cached_property
    def _flagged(self) -> set[str]:
        return set(self.b.table.loc[self.b.table["flags"] != "", "loss"])

    def flagged(self, loss: str) -> bool:
        return loss in self._flagged


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _plot_intervals(d: _PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    t = d.b.table.set_index("loss")
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.36 * len(d.order) + 1.6), sharey=True)
    for ax, (col, lo, hi, cmp_, title) in zip(axes, (("miou", "miou_lo", "miou_hi", d.b.miou, "mean IoU"),
                                                      ("focus_iou", "focus_lo", "focus_hi", d.b.focus, f"{d.focus} IoU"))):  # fmt: skip
        for i, loss in enumerate(d.order):
            v, a, b_ = t.at[loss, col], t.at[loss, lo], t.at[loss, hi]
            tied = cmp_ is not None and cmp_.tied.get(loss, False)
            colour = "#d62728" if d.flagged(loss) else "black"
            if not math.isnan(a):
                ax.plot([a, b_], [i, i], color=colour, lw=2 if tied else 1)
            ax.scatter([v], [i], color=colour if tied else "white", edgecolor=colour, zorder=3, s=30)
        if cmp_ is not None and cmp_.best is not None:
            ax.axvspan(*cmp_.interval[cmp_.best], color="#2ca02c", alpha=0.12, lw=0)
        ax.set_xlabel(f"test {title}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(d.order)), d.order)
    axes[0].invert_yaxis()
    fig.suptitle(PLOTS["intervals.png"] + "\nfilled: tied with the best · red: flagged · green band: the best's interval", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _plot_miou_vs_focus(d: _PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    t = d.b.table.set_index("loss")
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for loss in d.order:
        x, y = t.at[loss, "miou"], t.at[loss, "focus_iou"]
        xerr = [[x - t.at[loss, "miou_lo"]], [t.at[loss, "miou_hi"] - x]] if not math.isnan(t.at[loss, "miou_lo"]) else None
        yerr = [[y - t.at[loss, "focus_lo"]], [t.at[loss, "focus_hi"] - y]] if not math.isnan(t.at[loss, "focus_lo"]) else None
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", color=d.colors[loss], ms=5, capsize=2, lw=1)
        ax.annotate(loss + (" ⚑" if d.flagged(loss) else ""), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("test mean IoU")
    ax.set_ylabel(f"test IoU, {d.focus}")
    ax.grid(alpha=0.3)
    ax.set_title(PLOTS["miou_vs_focus.png"] + " — ⚑ flagged", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _plot_precision_recall(d: _PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    ok = d.ok
    fig, axes = plt.subplots(1, len(d.classes), figsize=(3.2 * len(d.classes), 3.8), squeeze=False)
    for ax, c in zip(axes[0], d.classes):
        for loss in d.order:
            sel = ok[(ok["loss"] == loss) & (ok["class"] == c)]
            ax.scatter(sel["sensitivity"].mean(), sel["precision"].mean(), color=d.colors[loss], s=30, label=loss)
        ax.set_title(c, fontsize=10)
        ax.set_xlabel("recall (sensitivity)")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("precision")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(PLOTS["precision_recall.png"], fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    _save(fig, path)


def _overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, skip: int | None) -> np.ndarray:
    """``image`` (``[H, W, 3]`` uint8) with each class painted in its colour at 50 %; ignored pixels and the
    ``skip`` class (the most frequent one, the background) left as they are."""
    from matplotlib.colors import to_rgb

    out = image.astype(np.float64) / 255.0
    gray = out.mean(-1, keepdims=True).repeat(3, -1)
    for c in range(num_classes):
        on = mask == c
        if c != skip and on.any():
            out[on] = 0.5 * gray[on] + 0.5 * np.array(to_rgb(CLASS_COLOURS[c % len(CLASS_COLOURS)]))
    return out


def _plot_predictions(d: _PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = {}
    for loss in d.order:  # the first seed of each loss
        runs = sorted((r for r in d.records if r.ok and r.label == loss and r.run_dir is not None), key=lambda r: r.seed)
        ev = read_evidence(runs[0].run_dir) if runs else None
        if ev is not None and "panel_index" in ev and len(ev["panel_index"]):
            panels[loss] = ev
    if not panels:
        return
    first = next(iter(panels.values()))
    k = len(first["panel_index"])
    names = d.records[0].classes or d.classes
    freqs = d.records[0].class_frequencies or []
    skip = int(np.argmax(freqs)) if freqs else None
    cols = ["image", "ground truth", *panels]
    fig, axes = plt.subplots(k, len(cols), figsize=(1.55 * len(cols), 1.65 * k + 0.9), squeeze=False)
    for row in range(k):
        image = first[f"panel_image_{row}"]
        views = [image / 255.0, _overlay(image, first[f"panel_target_{row}"], len(names), skip)]
        views += [_overlay(image, ev[f"panel_pred_{row}"], len(names), skip) for ev in panels.values()]
        for col, (ax, view) in enumerate(zip(axes[row], views)):
            ax.imshow(view, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[col], fontsize=7)
        axes[row][0].set_ylabel(f"test {int(first['panel_index'][row])}", fontsize=7)
    legend = [Patch(color=CLASS_COLOURS[i % len(CLASS_COLOURS)], label=n) for i, n in enumerate(names) if i != skip]
    if skip is not None:
        legend.append(Patch(facecolor="none", edgecolor="gray", label=f"{names[skip]}: unpainted"))
    fig.legend(handles=legend, loc="lower center", ncol=min(len(names), 8), fontsize=7, frameon=False)
    fig.suptitle(PLOTS["predictions.png"] + " (seed " + str(min(d.b.seeds)) + ")", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    _save(fig, path)


def _plot_iou_heatmap(d: _PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    ok = d.ok
    mat = np.array([[ok[(ok["loss"] == loss) & (ok["class"] == c)]["iou"].mean() for c in d.classes] for loss in d.order])
    fig, ax = plt.subplots(figsize=(1.6 * len(d.classes) + 2.5, 0.42 * len(d.order) + 1.5))
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(d.classes)), d.classes)
    ax.set_yticks(range(len(d.order)), d.order)
    for i in range(len(d.order)):
        for j in range(len(d.classes)):
            if not np.isnan(mat[i, j]):
                color = "white" if mat[i, j] < 0.6 else "black"
                ax.text(j, i, f"{mat[i, j]:.3f}", ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(im, ax=ax, label="test IoU")
    ax.set_title(PLOTS["iou_by_class.png"], fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _plot_rare_iou(d: _PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    ok = d.ok
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(d.order) + 1.5))
    for i, loss in enumerate(d.order):
        vals = ok[(ok["loss"] == loss) & (ok["class"] == d.focus)]["iou"].dropna()
        ax.scatter(vals, [i] * len(vals), color=d.colors[loss], s=28, zorder=3)
        if len(vals):
            ax.plot([vals.mean()] * 2, [i - 0.3, i + 0.3], color="black", lw=1.5)
    ax.set_yticks(range(len(d.order)), d.order)
    ax.invert_yaxis()
    ax.set_xlabel(f"test IoU of the focus class ({d.focus}); dots: seeds, bar: mean")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(PLOTS["rare_class_iou.png"], fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _plot_learning_curves(d: _PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for loss in d.order:
        hist = [pd.DataFrame(r.history) for r in d.records if r.label == loss and r.ok and r.history]
        if not hist:
            continue
        h = pd.concat(hist).groupby("epoch").mean(numeric_only=True)
        axes[0].plot(h.index, h["val_miou"], color=d.colors[loss], label=loss)
        if f"val_iou/{d.focus}" in h:
            axes[1].plot(h.index, h[f"val_iou/{d.focus}"], color=d.colors[loss], label=loss)
    axes[0].set_ylabel("validation mean IoU")
    axes[1].set_ylabel(f"validation IoU, {d.focus}")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, frameon=False)
    fig.suptitle(PLOTS["learning_curves.png"] + " (mean over seeds)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


_PLOTTERS = {
    "intervals.png": _plot_intervals,
    "miou_vs_focus.png": _plot_miou_vs_focus,
    "predictions.png": _plot_predictions,
    "precision_recall.png": _plot_precision_recall,
    "iou_by_class.png": _plot_iou_heatmap,
    "rare_class_iou.png": _plot_rare_iou,
    "learning_curves.png": _plot_learning_curves,
}


def write_plots(d: _PlotData, report: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "lossbench"
    for name, plot in _PLOTTERS.items():
        plot(d, report / name)


# --- the report ----------------------------------------------------------------------------------


def _config_md(cfg: SuiteConfig | None, records: list[RunRecord], focus: str | None) -> str:
    if cfg is None:
        return "_No suite.yaml in the runs folder: the runs were not started by `lossbench compare`._"
    d, m, t, o = cfg.data, cfg.model, cfg.trainer, cfg.optim
    freqs = next((r.class_frequencies for r in records if r.class_frequencies), None)
    classes = next((r.classes for r in records if r.classes), None)
    seeds = sorted({r.seed for r in records})
    lines = [f"- suite `{cfg.suite}`; seeds {seeds}; focus class `{focus}`" + (" (the rarest)" if not cfg.report.focus else "")]
    if d.kind == "synthetic":
        lines.append(
            f"- data: synthetic, {d.image_size}×{d.image_size}, {d.num_train} train / {d.num_val} val / "
            f"{d.num_test} test images, imbalance {d.imbalance}, noise {d.noise}, data seed {d.seed}"
        )
    else:
        lines.append(f"- data: {d.kind} `{d.path or d.target}`, ignore index {d.ignore_index}, resize {d.resize}, crop {d.crop}, "
                     f"augment {d.augment.model_dump() if d.augment else None}, normalize {d.normalize}")  # fmt: skip
    if freqs and classes:
        total = sum(freqs) or 1
        lines.append("- training pixels per class: " + ", ".join(f"{c} {100 * f / total:.2f} %" for c, f in zip(classes, freqs)))
    kwargs = f" {m.kwargs}" if m.kwargs else ""
    weights = f"pretrained encoder ({m.encoder_weights})" if m.encoder_weights else "no pretrained weights"
    lines.append(f"- model: smp `{m.arch}`, encoder `{m.encoder}`{kwargs}, {weights}")
    lines.append(
        f"- training: {', '.join(map(str, cfg.budget_list()))} epochs, batch {d.batch_size}, AdamW lr {o.lr} "
        f"(cosine to 0), weight decay {o.weight_decay}, precision {t.precision}"
    )
    params = [f"`{e.label}`" + (f" ({e.name} {e.params})" if e.params or e.label != e.name else "") for e in cfg.losses]
    lines.append("- losses: " + ", ".join(params) + " — other parameters at their defaults (`lossbench losses`)")
    return "\n".join(lines)


def _header_md(suite: str, out: Path) -> list[str]:
    return [
        f"# lossbench report: `{suite}`",
        "",
        f"Generated by `lossbench report` from the runs in `{out}`; do not edit by hand. Every number is a "
        "test-split metric pooled over all test pixels (IoU of each class at each mask's own resolution), with its "
        "95 % interval in brackets. Losses are not ranked by a bold number: a loss is *best* when it has the "
        "highest estimate and *tied* when its difference to the best is not significant — read the tie group, "
        "and the flags.",
        "",
    ]


def _budget_md(b: Budget, df: pd.DataFrame, focus: str | None, several: bool) -> list[str]:
    title = f" — {b.budget} epochs" if several else ""
    parts = [f"## Verdict{title}", "", *_verdict_md(b, focus, several), ""]
    if not several:
        parts += [
            f"All runs trained for {b.budget} epochs (one budget). Whether these conclusions hold with more training "
            "is not tested by this suite: list several `budgets:` to see which conclusions move (flag *budget-bound*).",
            "",
        ]
    parts += [f"### Leaderboard by mean IoU{title}", "", leaderboard_md(b, "miou", focus), ""]
    if focus:
        parts += [f"### Leaderboard by `{focus}` IoU (the focus class){title}", "", leaderboard_md(b, "focus_iou", focus), ""]
    parts += [_method_md(b), ""] if b.images else []
    return parts


def _problems_md(found: Runs, out: Path) -> list[str]:
    not_ok = sorted((r for r in found.current if not r.ok), key=lambda r: (r.label, r.seed, r.budget or 0))
    parts = ["## Failed and unfinished runs", ""]
    rows = [[f"`{r.label}`", r.seed, r.budget, r.status, (r.error or "still running, or killed")[:300]] for r in not_ok]
    rows += [[f"`{label}`", seed, budget, "missing", "not trained yet"] for label, seed, budget in found.missing]
    parts.append(_md_table(["loss", "seed", "epochs", "status", "error"], rows) if rows else "None.")
    if found.damaged:
        parts += ["", "## Damaged run records", "", "These `metrics.json` files cannot be read; their runs are left out "
                  "and the next `lossbench compare` trains them again:", ""]  # fmt: skip
        parts += [f"- `{d.path}`: {d.why}" for d in found.damaged]
    if found.stale:
        parts += ["", f"{len(found.stale)} run(s) under `{out}` were trained with another config and are left out."]
    return parts


def leaderboard_frame(results: list[Budget]) -> pd.DataFrame:
    """``leaderboard.csv``: one row per (budget, loss)."""
    frames = []
    for b in results:
        t = b.table.copy()
        t["flags"] = t["flags"].str.replace("`", "")
        frames.append(t[LEADERBOARD_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LEADERBOARD_COLUMNS)


def write_report(out: Path, report: Path, log_to_wandb: bool = True) -> Path:
    """Write the report of the runs under ``out`` into ``report``; return the README path."""
    out, report = Path(out), Path(report)
    found = collect_runs(out)
    records = found.current
    if not records and not found.damaged:
        raise ValueError(f"no runs under {out}: run `lossbench compare` first")
    report.mkdir(parents=True, exist_ok=True)
    df = results_frame(records)
    write_text_atomic(report / "results.csv", df.to_csv(index=False, float_format="%.6g"))

    ok_records = [r for r in records if r.ok]
    classes = list(ok_records[0].test["per_class"]) if ok_records else []
    focus = focus_of(records, found.cfg) or (classes[-1] if classes else None)
    budgets = [b for b in found.budgets if any(r.budget == b for r in ok_records)]
    seeds = len(found.cfg.seeds) if found.cfg else len({r.seed for r in ok_records})
    results = [analyse_budget(records, b, found.cfg, focus, seeds) for b in budgets]
    flag_budgets(results)
    for b in results:
        b.table["flags"] = [_flag_text(r) for r in b.table.to_dict("records")]
    lb = leaderboard_frame(results)
    write_text_atomic(report / "leaderboard.csv", lb.to_csv(index=False, float_format="%.6g"))
    suite = found.cfg.suite if found.cfg else out.name

    parts = _header_md(suite, out)
    for b in results:
        parts += _budget_md(b, df, focus, len(results) > 1)
    if results:
        last = results[-1]
        order = last.table.sort_values(["miou", "loss"], ascending=[False, True], kind="stable")["loss"].tolist()
        at_last = [r for r in records if r.budget == last.budget]
        d = _PlotData(df[df["budget"] == last.budget], last, at_last, classes, focus, order)
        write_plots(d, report)
        title = f" ({last.budget} epochs)" if len(results) > 1 else ""
        parts += [f"## Intervals{title}", "", "![intervals](intervals.png)", "", "![mean IoU vs focus IoU](miou_vs_focus.png)", ""]
        if (report / "predictions.png").exists():
            parts += [f"## Predictions{title}", "", "![predictions](predictions.png)", ""]
        for metric, name in (("iou", "IoU"), ("sensitivity", "Sensitivity (recall)"), ("precision", "Precision")):
            parts += [f"## Per-class {name}{title}", "", "Mean ± std over seeds; bold: the highest of a column "
                      "(none when it is 0).", "", per_class_md(d.df, metric, classes, order), ""]  # fmt: skip
        parts += _boundary_md(d.df, at_last, classes, order, title, found.cfg)
        parts += ["## Plots", ""]
        parts += [f"![{t}]({n})\n" for n, t in PLOTS.items() if n not in ("intervals.png", "miou_vs_focus.png", "predictions.png")]
    parts += _problems_md(found, out)
    parts += ["", "## Suite", "", _config_md(found.cfg, records, focus), "", "Regenerate: `lossbench report --out "
              f"{out} --report {report}`; data: `results.csv` (one row per loss, seed, budget and class), "
              "`leaderboard.csv` (one row per budget and loss).", ""]  # fmt: skip
    readme = report / "README.md"
    write_text_atomic(readme, "\n".join(parts))
    if log_to_wandb and found.cfg is not None:
        log_summary_to_wandb(df, lb, found.cfg, out, report)
    return readme


def log_summary_to_wandb(df: pd.DataFrame, lb: pd.DataFrame, cfg: SuiteConfig, out: Path, report: Path) -> None:
    """Log the results and the leaderboard (with intervals) as ``wandb.Table``s, and the plots, in a summary run
    of the suite's group.

    W&B is a sink: if it cannot log (online without a login, no network), say so once and go on.
    """
    try:
        _log_summary(df, lb, cfg, out, report)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"lossbench: the W&B summary was not logged ({type(e).__name__}: {first}); the report is complete",
              file=sys.stderr, flush=True)  # fmt: skip


def _log_summary(df: pd.DataFrame, lb: pd.DataFrame, cfg: SuiteConfig, out: Path, report: Path) -> None:
    import re

    import wandb

    from lossbench.run import wandb_mode

    w = cfg.wandb
    run = wandb.init(
        project=w.project,
        entity=w.entity,
        group=cfg.suite,
        name=f"{cfg.suite} · summary",
        id=re.sub(r"[^A-Za-z0-9_-]", "-", f"{cfg.suite}-summary"),
        resume="allow",
        job_type="report",
        tags=[*w.tags, f"suite:{cfg.suite}", "summary"],
        dir=str(out),
        mode=wandb_mode(w.mode),
        config={"suite": cfg.suite, "losses": [e.label for e in cfg.losses], "seeds": cfg.seeds, "budgets": cfg.budget_list()},
        reinit="finish_previous",
    )
    try:
        payload: dict[str, Any] = {
            "results": wandb.Table(dataframe=df.astype({"epochs": "float", "wall_s": "float", "budget": "float"})),
            "leaderboard": wandb.Table(dataframe=lb.astype({"tied_with_best": "str", "focus_tied_with_best": "str"})),
        }
        for name in PLOTS:
            if (report / name).exists():
                payload[f"plots/{name.removesuffix('.png')}"] = wandb.Image(str(report / name))
        run.log(payload)
    finally:
        run.finish()
