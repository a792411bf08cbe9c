"""The comparison report: leaderboards, per-class tables, plots, ``results.csv`` and a W&B summary table.

``write_report(out, report_dir)`` reads every ``metrics.json`` under ``out`` (so runs trained on
several machines into one shared folder merge), keeps those that belong to the suite in
``out/suite.yaml`` (same resolved config hash), and writes into ``report_dir``:

* ``README.md``: leaderboards by mean IoU and by rare-class IoU (mean ± std over seeds, best in
  bold), per-class IoU / sensitivity / specificity tables, the loss-vs-seed spread on the rarest
  class, failed runs with their errors, and the suite's config;
* ``results.csv``: one row per (loss, seed, class);
* plots: ``iou_by_class.png``, ``rare_class_iou.png``, ``sensitivity_specificity.png``,
  ``learning_curves.png``.

The output depends only on the runs, so regenerating it from the same runs gives the same files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lossbench.config import config_hash, run_config
from lossbench.io import read_json, write_text_atomic
from lossbench.metrics import METRICS

RESULT_COLUMNS = ["loss", "seed", "class", *METRICS, "status", "epochs", "wall_s"]
PLOTS = {
    "iou_by_class.png": "Per-class test IoU by loss (mean over seeds)",
    "rare_class_iou.png": "Rare-class IoU of every run: spread across losses vs across seeds",
    "sensitivity_specificity.png": "Sensitivity vs specificity per class",
    "learning_curves.png": "Validation mean IoU and rare-class IoU per epoch",
}


# --- collecting ----------------------------------------------------------------------------------


def collect_runs(out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    """``(current, stale, suite_cfg)``: run records under ``out`` that match the suite, and the rest."""
    suite_path = out / "suite.yaml"
    suite_cfg = yaml.safe_load(suite_path.read_text()) if suite_path.exists() else None
    records = []
    for path in sorted(out.glob("*/*/metrics.json")):
        rec = read_json(path)
        if rec and "label" in rec and "seed" in rec:
            records.append(rec | {"run_dir": str(path.parent)})
    if suite_cfg is None:
        return records, [], None
    current, stale = [], []
    for rec in records:
        entry = {"name": rec["loss"], "params": rec.get("loss_params") or {}, "label": rec["label"]}
        expected = config_hash(run_config(suite_cfg, entry, rec["seed"]))
        (current if rec.get("config_hash") == expected else stale).append(rec)
    return current, stale, suite_cfg


def results_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Long table: one row per (loss, seed, class); runs without results get NaN metrics."""
    classes = next((r["classes"] for r in records if r.get("status") == "ok"), [])
    rows = []
    for rec in records:
        per_class = (rec.get("test") or {}).get("per_class", {})
        for name in rec.get("classes") or classes:
            values = per_class.get(name, {})
            rows.append(
                {
                    "loss": rec["label"],
                    "seed": rec["seed"],
                    "class": name,
                    **{m: values.get(m, math.nan) for m in METRICS},
                    "status": rec.get("status", "missing"),
                    "epochs": rec.get("epochs"),
                    "wall_s": rec.get("wall_s"),
                }
            )
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for m in METRICS:
        df[m] = pd.to_numeric(df[m]).astype(float)
    return df.sort_values(["loss", "seed"], kind="stable").reset_index(drop=True)


def rarest_class(records: list[dict[str, Any]]) -> str | None:
    """The class with the fewest training pixels."""
    for rec in records:
        if rec.get("status") == "ok" and rec.get("class_frequencies"):
            freqs = rec["class_frequencies"]
            return rec["classes"][int(np.argmin(freqs))]
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


def run_level(records: list[dict[str, Any]], rare: str | None) -> pd.DataFrame:
    """One row per successful run: loss, seed, mIoU, rare-class IoU and sensitivity, wall time."""
    rows = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        pc = rec["test"]["per_class"]
        rows.append(
            {
                "loss": rec["label"],
                "seed": rec["seed"],
                "miou": rec["test"]["miou"] if rec["test"]["miou"] is not None else math.nan,
                "rare_iou": pc[rare]["iou"] if rare and pc[rare]["iou"] is not None else math.nan,
                "rare_sens": pc[rare]["sensitivity"] if rare and pc[rare]["sensitivity"] is not None else math.nan,
                "wall_s": rec.get("wall_s") or math.nan,
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


def _plots(df: pd.DataFrame, runs: pd.DataFrame, records: list[dict], classes: list[str], rare: str, order: list[str], report: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["status"] == "ok"]
    colors = {loss: plt.get_cmap("tab20")(i % 20) for i, loss in enumerate(order)}

    # 1. heatmap of per-class IoU
    mat = np.array([[ok[(ok["loss"] == loss) & (ok["class"] == c)]["iou"].mean() for c in classes] for loss in order])
    fig, ax = plt.subplots(figsize=(1.6 * len(classes) + 2.5, 0.42 * len(order) + 1.5))
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(order)), order)
    for i in range(len(order)):
        for j in range(len(classes)):
            if not np.isnan(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.3f}", ha="center", va="center", color="white" if mat[i, j] < 0.6 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="test IoU")
    ax.set_title(PLOTS["iou_by_class.png"], fontsize=10)
    fig.tight_layout()
    fig.savefig(report / "iou_by_class.png", dpi=110)
    plt.close(fig)

    # 2. rare-class IoU of every run
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.5))
    for i, loss in enumerate(order):
        vals = runs[runs["loss"] == loss]["rare_iou"].dropna()
        ax.scatter(vals, [i] * len(vals), color=colors[loss], s=28, zorder=3)
        if len(vals):
            ax.plot([vals.mean()] * 2, [i - 0.3, i + 0.3], color="black", lw=1.5)
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set_xlabel(f"test IoU of the rarest class ({rare}); dots: seeds, bar: mean")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(PLOTS["rare_class_iou.png"], fontsize=10)
    fig.tight_layout()
    fig.savefig(report / "rare_class_iou.png", dpi=110)
    plt.close(fig)

    # 3. sensitivity vs specificity, one panel per class
    fig, axes = plt.subplots(1, len(classes), figsize=(3.2 * len(classes), 3.6), squeeze=False)
    for ax, c in zip(axes[0], classes):
        for loss in order:
            sel = ok[(ok["loss"] == loss) & (ok["class"] == c)]
            ax.scatter(sel["specificity"].mean(), sel["sensitivity"].mean(), color=colors[loss], s=30, label=loss)
        ax.set_title(c, fontsize=10)
        ax.set_xlabel("specificity")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("sensitivity")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(PLOTS["sensitivity_specificity.png"], fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    fig.savefig(report / "sensitivity_specificity.png", dpi=110)
    plt.close(fig)

    # 4. learning curves
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for loss in order:
        hist = [pd.DataFrame(r["history"]) for r in records if r["label"] == loss and r.get("status") == "ok" and r.get("history")]
        if not hist:
            continue
        h = pd.concat(hist).groupby("epoch").mean(numeric_only=True)
        axes[0].plot(h.index, h["val_miou"], color=colors[loss], label=loss)
        if f"val_iou/{rare}" in h:
            axes[1].plot(h.index, h[f"val_iou/{rare}"], color=colors[loss], label=loss)
    axes[0].set_ylabel("validation mean IoU")
    axes[1].set_ylabel(f"validation IoU, {rare}")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, frameon=False)
    fig.suptitle(PLOTS["learning_curves.png"] + " (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(report / "learning_curves.png", dpi=110)
    plt.close(fig)


# --- the report ----------------------------------------------------------------------------------


def _config_md(cfg: dict[str, Any] | None, records: list[dict[str, Any]]) -> str:
    if cfg is None:
        return "_No suite.yaml in the runs folder: the runs were not started by `lossbench compare`._"
    d, m, t, o = cfg["data"], cfg["model"], cfg["trainer"], cfg["optim"]
    freqs = next((r["class_frequencies"] for r in records if r.get("class_frequencies")), None)
    classes = next((r["classes"] for r in records if r.get("classes")), None)
    seeds = sorted({r["seed"] for r in records})
    lines = [f"- suite `{cfg['suite']}`; seeds {seeds}"]
    if d["kind"] == "synthetic":
        lines.append(
            f"- data: synthetic, {d['image_size']}×{d['image_size']}, {d['num_train']} train / {d['num_val']} val / "
            f"{d['num_test']} test images, imbalance {d['imbalance']}, noise {d['noise']}, data seed {d['seed']}"
        )
    else:
        lines.append(f"- data: folder `{d['path']}`, ignore index {d['ignore_index']}")
    if freqs and classes:
        total = sum(freqs)
        lines.append("- training pixels per class: " + ", ".join(f"{c} {100 * f / total:.2f} %" for c, f in zip(classes, freqs)))
    kwargs = f" {m['kwargs']}" if m.get("kwargs") else ""
    lines.append(f"- model: smp `{m['arch']}`, encoder `{m['encoder']}`{kwargs}, no pretrained weights")
    lines.append(
        f"- training: {t.get('max_epochs')} epochs, batch {d['batch_size']}, AdamW lr {o['lr']} "
        f"(cosine to 0), weight decay {o['weight_decay']}, precision {t.get('precision', 'auto')}"
    )
    params = [
        f"`{e['label']}`" + (f" {e['params']}" if e.get("params") else "")
        for e in (x if isinstance(x, dict) else {"label": x, "params": {}} for x in cfg["losses"])
    ]
    lines.append("- losses: " + ", ".join(params) + " — other parameters at their defaults (`lossbench losses`)")
    return "\n".join(lines)


def write_report(out: Path, report: Path, log_to_wandb: bool = True) -> Path:
    """Write the report of the runs under ``out`` into ``report``; return the README path."""
    out, report = Path(out), Path(report)
    records, stale, cfg = collect_runs(out)
    if not records:
        raise ValueError(f"no runs under {out}: run `lossbench compare` first")
    report.mkdir(parents=True, exist_ok=True)
    df = results_frame(records)
    write_text_atomic(report / "results.csv", df.to_csv(index=False, float_format="%.6g"))

    ok_records = [r for r in records if r.get("status") == "ok"]
    classes = ok_records[0]["classes"] if ok_records else []
    rare = rarest_class(records) or (classes[-1] if classes else "")
    runs = run_level(records, rare)
    lb = leaderboard(runs)
    order = lb.sort_values(["miou", "loss"], ascending=[False, True], kind="stable")["loss"].tolist() if len(lb) else []
    suite = cfg["suite"] if cfg else out.name

    parts = [
        f"# lossbench report: `{suite}`",
        "",
        "Generated by `lossbench report` from the runs in "
        f"`{out}`; do not edit by hand. Every number is a test-split metric pooled over all test pixels, "
        "as mean ± standard deviation over seeds; **bold** marks the best of each column.",
        "",
    ]
    if ok_records:
        sp = spread(runs)
        parts += [
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
        _plots(df, runs, records, classes, rare, order, report)

    failed = [r for r in records if r.get("status") != "ok"]
    parts += ["## Failed and unfinished runs", ""]
    if failed:
        rows = [[f"`{r['label']}`", r["seed"], r.get("status"), (r.get("error") or "still running or interrupted")[:300]] for r in sorted(failed, key=lambda r: (r["label"], r["seed"]))]
        parts.append(_md_table(["loss", "seed", "status", "error"], rows))
    else:
        parts.append("None.")
    if stale:
        parts += ["", f"{len(stale)} run(s) under `{out}` were trained with another config and are left out."]
    parts += ["", "## Suite", "", _config_md(cfg, records), "", "Regenerate: `lossbench report --out "
              f"{out} --report {report}`; data: `results.csv` (one row per loss, seed and class).", ""]
    readme = report / "README.md"
    write_text_atomic(readme, "\n".join(parts))
    if log_to_wandb and cfg is not None:
        log_summary_to_wandb(df, lb, cfg, out, report)
    return readme


def log_summary_to_wandb(df: pd.DataFrame, lb: pd.DataFrame, cfg: dict[str, Any], out: Path, report: Path) -> None:
    """Log the results and the leaderboard as ``wandb.Table``s (and the plots) in a summary run of the suite's group."""
    import re

    import wandb

    from lossbench.run import wandb_mode

    w = cfg["wandb"]
    run = wandb.init(
        project=w["project"],
        entity=w.get("entity"),
        group=cfg["suite"],
        name=f"{cfg['suite']}-summary",
        id=re.sub(r"[^A-Za-z0-9_-]", "-", f"{cfg['suite']}-summary"),
        resume="allow",
        job_type="report",
        dir=str(out),
        mode=wandb_mode(w),
        config={"suite": cfg["suite"], "losses": cfg["losses"], "seeds": cfg["seeds"]},
        reinit="finish_previous",
    )
    payload: dict[str, Any] = {
        "results": wandb.Table(dataframe=df.astype({"epochs": "float", "wall_s": "float"})),
        "leaderboard": wandb.Table(dataframe=lb),
    }
    for name in PLOTS:
        if (report / name).exists():
            payload[f"plots/{name.removesuffix('.png')}"] = wandb.Image(str(report / name))
    run.log(payload)
    run.finish()
