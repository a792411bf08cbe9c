"""The comparison report: leaderboards, per-class tables, plots, ``results.csv`` and a W&B summary table.

``write_report(out, report_dir)`` reads every run record under ``out`` (so runs trained on several
machines into one shared folder merge; see :mod:`lossbench.record`), keeps those that belong to the
suite in the folder's suite file (same resolved config hash), and writes into ``report_dir``:

* ``README.md``: leaderboards by mean IoU and by rare-class IoU (mean ± std over seeds, best in
  bold), per-class IoU / sensitivity / specificity tables, the loss-vs-seed spread on the rarest
  class, failed, interrupted and missing runs with their errors, damaged records by path, and the
  suite's config;
* ``results.csv``: one row per (loss, seed, class);
* plots: ``iou_by_class.png``, ``rare_class_iou.png``, ``sensitivity_specificity.png``,
  ``learning_curves.png``.

The output depends only on the runs, so regenerating it from the same runs gives the same files.
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
from lossbench.io import write_text_atomic
from lossbench.metrics import METRICS
from lossbench.record import DamagedRecord, RunRecord, run_dir_for, scan_runs, suite_path

RESULT_COLUMNS = ["loss", "seed", "class", *METRICS, "status", "epochs", "wall_s"]
PLOTS = {
    "iou_by_class.png": "Per-class test IoU by loss (mean over seeds)",
    "rare_class_iou.png": "Rare-class IoU of every run: spread across losses vs across seeds",
    "sensitivity_specificity.png": "Sensitivity vs specificity per class",
    "learning_curves.png": "Validation mean IoU and rare-class IoU per epoch",
}


# --- collecting ----------------------------------------------------------------------------------


@dataclass
class Runs:
    """What a runs folder holds for the report."""

    current: list[RunRecord]  # records of this suite's config
    stale: list[RunRecord]  # records trained with another config
    damaged: list[DamagedRecord]  # metrics.json files that cannot be read
    missing: list[tuple[str, int]]  # (label, seed) of runs the suite lists that have no record
    cfg: SuiteConfig | None


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
        return Runs(scan.records, [], scan.damaged, [], None)
    current, stale = [], []
    for rec in scan.records:
        entry = LossEntry(name=rec.loss, params=rec.loss_params or {}, label=rec.label)
        expected = config_hash(run_config(cfg, entry, rec.seed))
        (current if rec.config_hash == expected else stale).append(rec)
    have = {(r.label, r.seed) for r in current}
    damaged_dirs = {d.path.parent for d in scan.damaged}
    missing = []
    for entry in resolve_losses(cfg, check=False) if cfg.losses else []:
        for seed in cfg.seeds:
            run_dir = run_dir_for(out, run_config(cfg, entry, seed))
            if (entry.label, seed) not in have and run_dir not in damaged_dirs:
                missing.append((entry.label, seed))
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
            rows.append(
                {
                    "loss": rec.label,
                    "seed": rec.seed,
                    "class": name,
                    **{m: values.get(m, math.nan) for m in METRICS},
                    "status": rec.status,
                    "epochs": rec.epochs,
                    "wall_s": rec.wall_s,
                }
            )
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for m in METRICS:
        df[m] = pd.to_numeric(df[m]).astype(float)
    return df.sort_values(["loss", "seed"], kind="stable").reset_index(drop=True)


def rarest_class(records: list[RunRecord]) -> str | None:
    """The class with the fewest training pixels (among the classes the metrics report)."""
    for rec in records:
        if rec.ok and rec.class_frequencies and rec.test:
            reported = rec.test["per_class"]
            pairs = [(f, c) for c, f in zip(rec.classes or [], rec.class_frequencies) if c in reported]
            return min(pairs)[1] if pairs else None
    return None


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


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_level(records: list[RunRecord], rare: str | None) -> pd.DataFrame:
    """One row per successful run: loss, seed, mIoU, rare-class IoU and sensitivity, wall time."""

    def num(value: Any) -> float:
        return math.nan if value is None else float(value)

    rows = []
    for rec in records:
        if not rec.ok:
            continue
        pc = rec.test["per_class"]
        rare_row = pc.get(rare, {}) if rare else {}
        rows.append(
            {
                "loss": rec.label,
                "seed": rec.seed,
                "miou": num(rec.miou),
                "rare_iou": num(rare_row.get("iou")),
                "rare_sens": num(rare_row.get("sensitivity")),
                "wall_s": num(rec.wall_s),
            }
        )
    return pd.DataFrame(rows, columns=["loss", "seed", "miou", "rare_iou", "rare_sens", "wall_s"])


def leaderboard(runs: pd.DataFrame) -> pd.DataFrame:
    """Per loss: mean and std over seeds of mIoU, rare-class IoU and sensitivity; seeds; time."""
    rows = []
    for loss, g in runs.groupby("loss", sort=True):
        row: dict[str, Any] = {"loss": loss, "seeds": len(g)}
        for col in ("miou", "rare_iou", "rare_sens"):
            row[col], row[f"{col}_std"] = _mean_std(g[col])
        row["wall_s"] = float(g["wall_s"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _leaderboard_md(lb: pd.DataFrame, sort_by: str, rare: str) -> str:
    lb = lb.sort_values([sort_by, "loss"], ascending=[False, True], kind="stable")
    best = {c: lb[c].max() for c in ("miou", "rare_iou", "rare_sens")}
    fastest = lb["wall_s"].min()
    rows = []
    for i, r in enumerate(lb.itertuples(), 1):
        rows.append(
            [
                i,
                f"`{r.loss}`",
                _cell(r.miou, r.miou_std, r.miou == best["miou"]),
                _cell(r.rare_iou, r.rare_iou_std, r.rare_iou == best["rare_iou"]),
                _cell(r.rare_sens, r.rare_sens_std, r.rare_sens == best["rare_sens"]),
                r.seeds,
                f"**{r.wall_s:.0f}**" if r.wall_s == fastest else f"{r.wall_s:.0f}",
            ]
        )
    header = ["#", "loss", "mean IoU", f"{rare} IoU", f"{rare} sensitivity", "seeds", "train+test s/run"]
    return _md_table(header, rows)


def per_class_md(df: pd.DataFrame, metric: str, classes: list[str], order: list[str]) -> str:
    ok = df[df["status"] == "ok"]
    stats = {(loss, c): _mean_std(g[metric]) for (loss, c), g in ok.groupby(["loss", "class"])}
    best = {c: max((stats[(loss, c)][0] for loss in order if (loss, c) in stats), default=math.nan) for c in classes}
    rows = []
    for loss in order:
        cells = []
        for c in classes:
            mean, std = stats.get((loss, c), (math.nan, math.nan))
            cells.append(_cell(mean, std, not math.isnan(mean) and mean == best[c]))
        rows.append([f"`{loss}`", *cells])
    return _md_table(["loss", *classes], rows)


def spread(runs: pd.DataFrame) -> dict[str, float]:
    """Rare-class IoU: spread across losses (std of per-loss means) vs across seeds (pooled std)."""
    g = runs.dropna(subset=["rare_iou"]).groupby("loss")["rare_iou"]
    means, variances = g.mean(), g.var(ddof=1).dropna()
    across_losses = float(means.std(ddof=1)) if len(means) > 1 else math.nan
    across_seeds = float(math.sqrt(variances.mean())) if len(variances) else math.nan
    return {"across_losses": across_losses, "across_seeds": across_seeds, "losses": len(means)}


# --- plots -------------------------------------------------------------------------------------


@dataclass
class _PlotData:
    df: pd.DataFrame  # results_frame
    runs: pd.DataFrame  # run_level
    records: list[RunRecord]
    classes: list[str]
    rare: str
    order: list[str]  # losses, best mean IoU first

    @cached_property
    def colors(self) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        return {loss: plt.get_cmap("tab20")(i % 20) for i, loss in enumerate(self.order)}

    @property
    def ok(self) -> pd.DataFrame:
        return self.df[self.df["status"] == "ok"]


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)


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

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(d.order) + 1.5))
    for i, loss in enumerate(d.order):
        vals = d.runs[d.runs["loss"] == loss]["rare_iou"].dropna()
        ax.scatter(vals, [i] * len(vals), color=d.colors[loss], s=28, zorder=3)
        if len(vals):
            ax.plot([vals.mean()] * 2, [i - 0.3, i + 0.3], color="black", lw=1.5)
    ax.set_yticks(range(len(d.order)), d.order)
    ax.invert_yaxis()
    ax.set_xlabel(f"test IoU of the rarest class ({d.rare}); dots: seeds, bar: mean")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(PLOTS["rare_class_iou.png"], fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _plot_sensitivity_specificity(d: _PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    ok = d.ok
    fig, axes = plt.subplots(1, len(d.classes), figsize=(3.2 * len(d.classes), 3.6), squeeze=False)
    for ax, c in zip(axes[0], d.classes):
        for loss in d.order:
            sel = ok[(ok["loss"] == loss) & (ok["class"] == c)]
            ax.scatter(sel["specificity"].mean(), sel["sensitivity"].mean(), color=d.colors[loss], s=30, label=loss)
        ax.set_title(c, fontsize=10)
        ax.set_xlabel("specificity")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("sensitivity")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(PLOTS["sensitivity_specificity.png"], fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
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
        if f"val_iou/{d.rare}" in h:
            axes[1].plot(h.index, h[f"val_iou/{d.rare}"], color=d.colors[loss], label=loss)
    axes[0].set_ylabel("validation mean IoU")
    axes[1].set_ylabel(f"validation IoU, {d.rare}")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, frameon=False)
    fig.suptitle(PLOTS["learning_curves.png"] + " (mean over seeds)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


_PLOTTERS = {
    "iou_by_class.png": _plot_iou_heatmap,
    "rare_class_iou.png": _plot_rare_iou,
    "sensitivity_specificity.png": _plot_sensitivity_specificity,
    "learning_curves.png": _plot_learning_curves,
}


def write_plots(d: _PlotData, report: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    for name, plot in _PLOTTERS.items():
        plot(d, report / name)


# --- the report ----------------------------------------------------------------------------------


def _config_md(cfg: SuiteConfig | None, records: list[RunRecord]) -> str:
    if cfg is None:
        return "_No suite.yaml in the runs folder: the runs were not started by `lossbench compare`._"
    d, m, t, o = cfg.data, cfg.model, cfg.trainer, cfg.optim
    freqs = next((r.class_frequencies for r in records if r.class_frequencies), None)
    classes = next((r.classes for r in records if r.classes), None)
    seeds = sorted({r.seed for r in records})
    lines = [f"- suite `{cfg.suite}`; seeds {seeds}"]
    if d.kind == "synthetic":
        lines.append(
            f"- data: synthetic, {d.image_size}×{d.image_size}, {d.num_train} train / {d.num_val} val / "
            f"{d.num_test} test images, imbalance {d.imbalance}, noise {d.noise}, data seed {d.seed}"
        )
    else:
        lines.append(f"- data: folder `{d.path}`, ignore index {d.ignore_index}")
    if freqs and classes:
        total = sum(freqs) or 1
        lines.append("- training pixels per class: " + ", ".join(f"{c} {100 * f / total:.2f} %" for c, f in zip(classes, freqs)))
    kwargs = f" {m.kwargs}" if m.kwargs else ""
    lines.append(f"- model: smp `{m.arch}`, encoder `{m.encoder}`{kwargs}, no pretrained weights")
    lines.append(
        f"- training: {t.max_epochs} epochs, batch {d.batch_size}, AdamW lr {o.lr} "
        f"(cosine to 0), weight decay {o.weight_decay}, precision {t.precision}"
    )
    params = [f"`{e.label}`" + (f" ({e.name} {e.params})" if e.params or e.label != e.name else "") for e in cfg.losses]
    lines.append("- losses: " + ", ".join(params) + " — other parameters at their defaults (`lossbench losses`)")
    return "\n".join(lines)


def _header_md(suite: str, out: Path) -> list[str]:
    return [
        f"# lossbench report: `{suite}`",
        "",
        "Generated by `lossbench report` from the runs in "
        f"`{out}`; do not edit by hand. Every number is a test-split metric pooled over all test pixels, "
        "as mean ± standard deviation over seeds; **bold** marks the best of each column.",
        "",
    ]


def _results_md(df: pd.DataFrame, runs: pd.DataFrame, lb: pd.DataFrame, classes: list[str], rare: str, order: list[str]) -> list[str]:
    sp = spread(runs)
    parts = [
        "## Leaderboard by mean IoU",
        "",
        _leaderboard_md(lb, "miou", rare),
        "",
        f"## Leaderboard by rare-class IoU (`{rare}`, the class with the fewest training pixels)",
        "",
        _leaderboard_md(lb, "rare_iou", rare),
        "",
        "## Do the losses separate on the rarest class?",
        "",
    ]
    if math.isnan(sp["across_seeds"]) or math.isnan(sp["across_losses"]):
        parts.append("Needs at least two losses and two seeds per loss to tell.")
    else:
        ratio = sp["across_losses"] / sp["across_seeds"] if sp["across_seeds"] > 0 else math.inf
        verdict = "yes" if ratio > 1 else "no"
        parts.append(
            f"Spread of `{rare}` IoU across losses (standard deviation of the {sp['losses']} per-loss means): "
            f"**{sp['across_losses']:.3f}**; across seeds (pooled within-loss standard deviation): "
            f"**{sp['across_seeds']:.3f}** — ratio {ratio:.1f}. The losses separate beyond seed noise: **{verdict}**."
        )
    parts += ["", "![rare-class IoU](rare_class_iou.png)", ""]
    for metric, title in (("iou", "IoU"), ("sensitivity", "Sensitivity (recall)"), ("specificity", "Specificity")):
        parts += [f"## Per-class {title}", "", per_class_md(df, metric, classes, order), ""]
    parts += ["## Plots", ""]
    parts += [f"![{title}]({name})\n" for name, title in PLOTS.items() if name != "rare_class_iou.png"]
    return parts


def _problems_md(found: Runs, out: Path) -> list[str]:
    not_ok = sorted((r for r in found.current if not r.ok), key=lambda r: (r.label, r.seed))
    parts = ["## Failed and unfinished runs", ""]
    rows = [[f"`{r.label}`", r.seed, r.status, (r.error or "still running, or killed")[:300]] for r in not_ok]
    rows += [[f"`{label}`", seed, "missing", "not trained yet"] for label, seed in found.missing]
    parts.append(_md_table(["loss", "seed", "status", "error"], rows) if rows else "None.")
    if found.damaged:
        parts += ["", "## Damaged run records", "", "These `metrics.json` files cannot be read; their runs are left out "
                  "and the next `lossbench compare` trains them again:", ""]  # fmt: skip
        parts += [f"- `{d.path}`: {d.why}" for d in found.damaged]
    if found.stale:
        parts += ["", f"{len(found.stale)} run(s) under `{out}` were trained with another config and are left out."]
    return parts


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
    rare = rarest_class(records) or (classes[-1] if classes else "")
    runs = run_level(records, rare)
    lb = leaderboard(runs)
    order = lb.sort_values(["miou", "loss"], ascending=[False, True], kind="stable")["loss"].tolist() if len(lb) else []
    suite = found.cfg.suite if found.cfg else out.name

    parts = _header_md(suite, out)
    if ok_records:
        parts += _results_md(df, runs, lb, classes, rare, order)
        write_plots(_PlotData(df, runs, records, classes, rare, order), report)
    parts += _problems_md(found, out)
    parts += ["", "## Suite", "", _config_md(found.cfg, records), "", "Regenerate: `lossbench report --out "
              f"{out} --report {report}`; data: `results.csv` (one row per loss, seed and class).", ""]  # fmt: skip
    readme = report / "README.md"
    write_text_atomic(readme, "\n".join(parts))
    if log_to_wandb and found.cfg is not None:
        log_summary_to_wandb(df, lb, found.cfg, out, report)
    return readme


def log_summary_to_wandb(df: pd.DataFrame, lb: pd.DataFrame, cfg: SuiteConfig, out: Path, report: Path) -> None:
    """Log the results and the leaderboard as ``wandb.Table``s (and the plots) in a summary run of the suite's group.

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
        name=f"{cfg.suite}-summary",
        id=re.sub(r"[^A-Za-z0-9_-]", "-", f"{cfg.suite}-summary"),
        resume="allow",
        job_type="report",
        dir=str(out),
        mode=wandb_mode(w.mode),
        config={"suite": cfg.suite, "losses": [e.label for e in cfg.losses], "seeds": cfg.seeds},
        reinit="finish_previous",
    )
    try:
        payload: dict[str, Any] = {
            "results": wandb.Table(dataframe=df.astype({"epochs": "float", "wall_s": "float"})),
            "leaderboard": wandb.Table(dataframe=lb),
        }
        for name in PLOTS:
            if (report / name).exists():
                payload[f"plots/{name.removesuffix('.png')}"] = wandb.Image(str(report / name))
        run.log(payload)
    finally:
        run.finish()
