"""The report's Markdown: header, verdict, leaderboards, per-class tables, problems and the suite.

Every function here formats what :mod:`lossbench.report.analyse` computed; none computes a statistic.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lossbench.config import SuiteConfig
from lossbench.metrics import BOUNDARY_METRICS
from lossbench.record import RunRecord
import lossbench.report.stats as stats
from lossbench.report.analyse import Analysis, Budget
from lossbench.report.gather import Runs
from lossbench.report.plots import PLOTS, PlotData


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


def md_table(header: list[str], rows: list[list[str]]) -> str:
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
    return md_table(header, rows)


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
    return md_table(["loss", *classes], rows)


def boundary_md(df: pd.DataFrame, records: list[RunRecord], classes: list[str], order: list[str], title: str,
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


def _verdict_md(b: Budget, focus: str | None) -> list[str]:
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
        f"Holm-corrected over the comparisons; *tied*: not significantly different from the best at the {100 * b.alpha:g} % level. "
        "Objects: connected components (8-connectivity) of the focus class, found when a predicted component "
        "overlaps one with IoU ≥ the threshold (`report.object_iou`)."
    )


def config_md(cfg: SuiteConfig | None, records: list[RunRecord], focus: str | None) -> str:
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


def header_md(suite: str, out: Path) -> list[str]:
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


def budget_md(b: Budget, focus: str | None, several: bool) -> list[str]:
    """The verdict, the two leaderboards and the method note of one budget."""
    title = f" — {b.budget} epochs" if several else ""
    parts = [f"## Verdict{title}", "", *_verdict_md(b, focus), ""]
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


def problems_md(found: Runs, out: Path) -> list[str]:
    not_ok = sorted((r for r in found.current if not r.ok), key=lambda r: (r.label, r.seed, r.budget or 0))
    parts = ["## Failed and unfinished runs", ""]
    rows = [[f"`{r.label}`", r.seed, r.budget, r.status, (r.error or "still running, or killed")[:300]] for r in not_ok]
    rows += [[f"`{label}`", seed, budget, "missing", "not trained yet"] for label, seed, budget in found.missing]
    parts.append(md_table(["loss", "seed", "epochs", "status", "error"], rows) if rows else "None.")
    if found.damaged:
        parts += ["", "## Damaged run records", "", "These `metrics.json` files cannot be read; their runs are left out "
                  "and the next `lossbench compare` trains them again:", ""]  # fmt: skip
        parts += [f"- `{d.path}`: {d.why}" for d in found.damaged]
    if found.stale:
        parts += ["", f"{len(found.stale)} run(s) under `{out}` were trained with another config and are left out."]
    return parts


def readme_md(found: Runs, analysis: Analysis, plotted: PlotData | None, out: Path, report: Path) -> str:
    """The report's ``README.md``: per budget the verdict and leaderboards, then (at the last budget) the
    pictures and per-class tables, the problems, and the suite."""
    suite = found.cfg.suite if found.cfg else out.name
    focus, classes = analysis.focus, analysis.classes
    parts = header_md(suite, out)
    for b in analysis.budgets:
        parts += budget_md(b, focus, analysis.several_budgets)
    if plotted is not None:
        d = plotted
        title = f" ({d.b.budget} epochs)" if analysis.several_budgets else ""
        parts += [f"## Intervals{title}", "", "![intervals](intervals.png)", "", "![mean IoU vs focus IoU](miou_vs_focus.png)", ""]
        if (report / "predictions.png").exists():
            parts += [f"## Predictions{title}", "", "![predictions](predictions.png)", ""]
        for metric, name in (("iou", "IoU"), ("sensitivity", "Sensitivity (recall)"), ("precision", "Precision")):
            parts += [f"## Per-class {name}{title}", "", "Mean ± std over seeds; bold: the highest of a column "
                      "(none when it is 0).", "", per_class_md(d.df, metric, classes, d.order), ""]  # fmt: skip
        parts += boundary_md(d.df, d.records, classes, d.order, title, found.cfg)
        parts += ["## Plots", ""]
        parts += [f"![{t}]({n})\n" for n, t in PLOTS.items() if n not in ("intervals.png", "miou_vs_focus.png", "predictions.png")]
    parts += problems_md(found, out)
    parts += ["", "## Suite", "", config_md(found.cfg, found.current, focus), "", "Regenerate: `lossbench report --out "
              f"{out} --report {report}`; data: `results.csv` (one row per loss, seed, budget and class), "
              "`leaderboard.csv` (one row per budget and loss).", ""]  # fmt: skip
    return "\n".join(parts)
