"""The report's plots: intervals, mean IoU vs focus IoU, predictions, precision-recall, per-class IoU,
the focus class across seeds, learning curves. Each is one function of :class:`PlotData`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossbench.record import DamagedEvidence, RunRecord, read_evidence
from lossbench.report.analyse import Analysis, Budget
from lossbench.progress import plural

PLOTS = {
    "intervals.png": "Mean IoU and focus-class IoU with 95 % intervals",
    "miou_vs_focus.png": "Mean IoU vs focus-class IoU (95 % intervals)",
    "predictions.png": "Test images with the most focus-class pixels: ground truth and every loss's prediction",
    "precision_recall.png": "Precision vs recall per class (mean over seeds)",
    "iou_by_class.png": "Per-class test IoU by loss (mean over seeds)",
    "rare_class_iou.png": "Focus-class IoU of every run: spread across losses vs across seeds",
    "learning_curves.png": "Validation mean IoU and focus-class IoU per epoch",
}
"""Every plot file the report writes, with its title."""

BUILTIN_ORDER = ("ce", "weighted_ce", "focal", "dice", "iou", "tversky", "generalized_dice", "bce_dice", "focal_dice",
                 "exp_log", "lovasz_hinge", "lovasz_softmax", "combo", "ohem", "focal_tversky", "log_cosh_dice",
                 "sensitivity_specificity", "mcc", "boundary", "hausdorff_dt", "cldice", "recall_ce", "unified_focal", "sum")  # fmt: skip
"""Losses with a colour of their own in every plot of every report (the documents' losses first)."""


def loss_colour(name: str) -> Any:
    """A loss's colour, fixed by its name — the same in every plot and every report, whatever else the suite holds:
    the losses of :data:`BUILTIN_ORDER` each their own of 40 colours (tab20, then tab20b), any other name one of the
    rest by a hash of its name."""
    import zlib

    import matplotlib.pyplot as plt

    palette = [*plt.get_cmap("tab20").colors, *plt.get_cmap("tab20b").colors]
    if name in BUILTIN_ORDER:
        return palette[BUILTIN_ORDER.index(name)]
    rest = palette[len(BUILTIN_ORDER) :]
    return rest[zlib.crc32(name.encode()) % len(rest)]


CLASS_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
                 "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94"]  # fmt: skip


@dataclass
class PlotData:
    df: pd.DataFrame  # results_frame, at the plotted budget
    b: Budget
    records: list[RunRecord]  # at the plotted budget
    classes: list[str]
    focus: str
    order: list[str]  # losses, best mean IoU first

    @cached_property
    def colors(self) -> dict[str, Any]:
        return {loss: loss_colour(loss) for loss in self.order}

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


def _plot_intervals(d: PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    t = d.b.table.set_index("loss")
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.36 * len(d.order) + 1.6), sharey=True)
    for ax, (col, lo, hi, cmp_, title) in zip(axes, (("miou", "miou_lo", "miou_hi", d.b.miou, "mean IoU"),
                                                      ("focus_iou", "focus_lo", "focus_hi", d.b.focus, f"{d.focus} IoU"))):  # fmt: skip
        for i, loss in enumerate(d.order):
            v, a, b_ = t.at[loss, col], t.at[loss, lo], t.at[loss, hi]
            in_set = cmp_ is not None and cmp_.in_best_set.get(loss, False)
            colour = "#d62728" if d.flagged(loss) else "black"
            if not math.isnan(a):
                ax.plot([a, b_], [i, i], color=colour, lw=2 if in_set else 1)
            ax.scatter([v], [i], color=colour if in_set else "white", edgecolor=colour, zorder=3, s=30)
        if cmp_ is not None and cmp_.best is not None:
            ax.axvspan(*cmp_.interval[cmp_.best], color="#2ca02c", alpha=0.12, lw=0)
        ax.set_xlabel(f"test {title}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(d.order)), d.order)
    axes[0].invert_yaxis()
    fig.suptitle(PLOTS["intervals.png"] + "\nfilled: in the best set (cannot be ruled out at 95 %) · red: flagged · green band: the highest's interval", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _plot_miou_vs_focus(d: PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    t = d.b.table.set_index("loss")
    fig, ax = plt.subplots(figsize=(9.5, 6))
    markers = "osD^v<>phX*"
    for i, loss in enumerate(d.order):  # named in the legend, not beside the points: close losses would overlap
        x, y = t.at[loss, "miou"], t.at[loss, "focus_iou"]
        xerr = [[x - t.at[loss, "miou_lo"]], [t.at[loss, "miou_hi"] - x]] if not math.isnan(t.at[loss, "miou_lo"]) else None
        yerr = [[y - t.at[loss, "focus_lo"]], [t.at[loss, "focus_hi"] - y]] if not math.isnan(t.at[loss, "focus_lo"]) else None
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=markers[i % len(markers)], color=d.colors[loss], ms=6, capsize=2,
                    lw=1, label=loss + (" ⚑" if d.flagged(loss) else ""))  # fmt: skip
    ax.set_xlabel("test mean IoU")
    ax.set_ylabel(f"test IoU, {d.focus}")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_title(PLOTS["miou_vs_focus.png"] + " — ⚑ flagged", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _plot_precision_recall(d: PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    ok = d.ok
    cols = min(PANELS_PER_ROW, len(d.classes))
    rows = math.ceil(len(d.classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 1.6, 3.4 * rows + 0.4), squeeze=False)
    for ax, c in zip(axes.flat, d.classes):
        for loss in d.order:
            sel = ok[(ok["loss"] == loss) & (ok["class"] == c)]
            ax.scatter(sel["sensitivity"].mean(), sel["precision"].mean(), color=d.colors[loss], s=30, label=loss)
        ax.set_title(c, fontsize=10)
        ax.set_xlabel("recall (sensitivity)")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("precision")
    for ax in list(axes.flat)[len(d.classes) :]:
        ax.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(PLOTS["precision_recall.png"], fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / (3.2 * cols + 1.6), 1))
    _save(fig, path)


PANELS_PER_ROW = 4
"""Panels in a row of a per-class figure: more classes wrap into more rows."""


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


PANEL_PX = 170  # a panel's width at _save's dpi (1.55 in × 110): a larger image is cropped, not shrunk


def panel_crop(target: np.ndarray, focus: int, most: int = PANEL_PX) -> tuple[slice, slice]:
    """The window of a panel image shown at its own pixels: the whole image when it fits ``most`` pixels a side;
    else a window of the image's aspect, ``most`` wide, centred on the focus class's pixels (grown to hold all of
    them, with a margin) — a pole or a cyclist of a few pixels stays visible, where a shrunk 360×480 street
    scene loses it."""
    h, w = target.shape
    if h <= most and w <= most:
        return slice(0, h), slice(0, w)
    cw = min(w, most)
    ch = min(h, max(1, round(cw * h / w)))
    ys, xs = np.nonzero(target == focus)
    if not len(ys):
        return slice(0, h), slice(0, w)
    margin = 8
    y0, y1, x0, x1 = ys.min() - margin, ys.max() + 1 + margin, xs.min() - margin, xs.max() + 1 + margin
    ch, cw = min(h, max(ch, y1 - y0)), min(w, max(cw, x1 - x0))

    def window(lo: int, hi: int, size: int, n: int) -> slice:
        start = min(max(0, (lo + hi - size) // 2), n - size)
        return slice(start, start + size)

    return window(y0, y1, ch, h), window(x0, x1, cw, w)


def _plot_predictions(d: PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = {}
    for loss in d.order:  # the first seed of each loss
        runs = sorted((r for r in d.records if r.ok and r.label == loss and r.run_dir is not None), key=lambda r: r.seed)
        try:
            ev = read_evidence(runs[0].run_dir) if runs else None
        except DamagedEvidence:  # named in the verdict
            ev = None
        if ev is not None and ev.panel:
            panels[loss] = ev
    if not panels:
        return
    first = next(iter(panels.values()))
    k = len(first.panel)
    names = d.records[0].classes or d.classes
    freqs = d.records[0].class_frequencies or []
    skip = int(np.argmax(freqs)) if freqs else None
    focus = names.index(d.focus) if d.focus in names else -1
    crops = [panel_crop(p.target, focus) for p in first.panel]
    cropped = any((c[0].stop - c[0].start, c[1].stop - c[1].start) != p.target.shape for c, p in zip(crops, first.panel))
    col_w = max(1.55, max(c[1].stop - c[1].start for c in crops) / 110 + 0.35)  # room for the axes and labels
    row_h = max(1.65, max(c[0].stop - c[0].start for c in crops) / 110 + 0.35)
    cols = ["image", "ground truth", *panels]
    fig, axes = plt.subplots(k, len(cols), figsize=(col_w * len(cols), row_h * k + 0.9), squeeze=False)
    for row in range(k):
        box = crops[row]
        image = first.panel[row].image[box]
        views = [image / 255.0, _overlay(image, first.panel[row].target[box], len(names), skip)]
        views += [_overlay(image, ev.panel[row].pred[box], len(names), skip) for ev in panels.values()]
        for col, (ax, view) in enumerate(zip(axes[row], views)):
            ax.imshow(view, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[col], fontsize=7)
        where = f"test {int(first.panel_index[row])}"
        if first.panel_slice is not None:
            where = f"volume {int(first.panel_index[row])}\nslice {int(first.panel_slice[row])}"
        if (box[0].stop - box[0].start, box[1].stop - box[1].start) != first.panel[row].target.shape:
            where += f"\nrows {box[0].start}–{box[0].stop - 1}\ncols {box[1].start}–{box[1].stop - 1}"
        axes[row][0].set_ylabel(where, fontsize=7)
    legend = [Patch(color=CLASS_COLOURS[i % len(CLASS_COLOURS)], label=n) for i, n in enumerate(names) if i != skip]
    if skip is not None:
        legend.append(Patch(facecolor="none", edgecolor="gray", label=f"{names[skip]}: unpainted"))
    fig.legend(handles=legend, loc="lower center", ncol=min(len(names), 8), fontsize=7, frameon=False)
    title = PLOTS["predictions.png"] + f" (seed {min(d.b.seeds)})"
    if first.panel_slice is not None:
        title = ("Test volumes with the most focus-class voxels, each at its slice with the most: ground truth and every "
                 f"loss's prediction (seed {min(d.b.seeds)})")  # fmt: skip
    if cropped:
        title += f"; each cropped around the {d.focus} pixels and shown at its own pixels (rows and cols: the window)"
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(title, max(40, int(14 * col_w * len(cols))))), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    _save(fig, path)


def _plot_iou_heatmap(d: PlotData, path: Path) -> None:
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


def _plot_rare_iou(d: PlotData, path: Path) -> None:
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


def _plot_learning_curves(d: PlotData, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = 0
    for loss in d.order:
        hist = [pd.DataFrame(r.history) for r in d.records if r.label == loss and r.ok and r.history]
        if not hist:
            continue
        h = pd.concat(hist).groupby("epoch").mean(numeric_only=True)
        epochs = max(epochs, len(h))
        axes[0].plot(h.index, h["val_miou"], "o-", color=d.colors[loss], label=loss, ms=3)
        if f"val_iou/{d.focus}" in h:
            axes[1].plot(h.index, h[f"val_iou/{d.focus}"], "o-", color=d.colors[loss], label=loss, ms=3)
    axes[0].set_ylabel("validation mean IoU")
    axes[1].set_ylabel(f"validation IoU, {d.focus}")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, frameon=False)
    one = " — one epoch: a point per loss, no curve yet (train longer, or list budgets:)" if epochs == 1 else ""
    fig.suptitle(PLOTS["learning_curves.png"] + " (mean over seeds)" + one, fontsize=10)
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


def plot_data(analysis: Analysis, records: list[RunRecord]) -> PlotData | None:
    """What the plots show: the last budget's runs, losses ordered by mean IoU (best first); ``None`` without results."""
    if not analysis.budgets:
        return None
    last = analysis.budgets[-1]
    order = last.table.sort_values(["miou", "loss"], ascending=[False, True], kind="stable")["loss"].tolist()
    at_last = [r for r in records if r.budget == last.budget]
    df = analysis.results
    return PlotData(df[df["budget"] == last.budget], last, at_last, analysis.classes, analysis.focus, order)


def write_plots(d: PlotData, report: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "lossbench"
    for name, plot in _PLOTTERS.items():
        plot(d, report / name)


def plot_sensitivity(searches: list[Any], select_on: str, path: Path) -> None:
    """A tuned suite's search: one panel per setting searched, the validation score against its values,
    one line per loss (for each value, the loss's best point with that value), the selected point starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = max(s.budget for s in searches)
    searches = [s for s in searches if s.budget == budget]
    def values_of(s: Any, point: Any) -> dict[str, Any]:  # a loss's own parameter is its own axis (tversky.alpha, combo.alpha)
        return {**dict(point.settings), **{f"{s.label}.{k}": v for k, v in point.params}}

    axes: list[str] = []
    for s in searches:
        for p in s.points:
            axes += [k for k in values_of(s, p.point) if k not in axes]
    if not axes:
        return
    cols = min(3, len(axes))
    rows = math.ceil(len(axes) / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    colours = {s.label: loss_colour(s.label) for s in searches}
    for ax, axis in zip(grid.flat, axes):
        values = sorted({values_of(s, p.point)[axis] for s in searches for p in s.points if axis in values_of(s, p.point)},
                        key=_order_key)  # fmt: skip
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        log = numeric and min(values) > 0 and max(values) / min(values) >= 10
        xs = values if numeric else list(range(len(values)))
        for s in sorted(searches, key=lambda s: s.label):
            best = {}
            for p in s.points:
                v = values_of(s, p.point).get(axis, _MISSING)
                if v is _MISSING or math.isnan(p.mean):
                    continue
                best[v] = max(best.get(v, -math.inf), p.mean)
            if not best:
                continue
            pts = [(xs[values.index(v)], best[v]) for v in values if v in best]
            ax.plot(*zip(*pts), "o-", color=colours[s.label], label=s.label, lw=1.3, ms=4)
            if s.selected is not None and axis in values_of(s, s.selected):
                x = xs[values.index(values_of(s, s.selected)[axis])]
                ax.plot([x], [s.score_of(s.selected)], "*", color=colours[s.label], ms=13, mec="black", mew=0.6)
        if log:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(xs)
            ax.set_xticklabels([str(v) for v in values])
        elif len(values) <= 8:  # a few listed values: one tick each; drawn values keep the axis's own ticks
            ax.set_xticks(values)
            ax.set_xticklabels([f"{v:g}" for v in values])
            ax.minorticks_off()
        ax.set_xlabel(axis)
        ax.set_ylabel(f"validation {_STATISTIC.get(select_on, select_on + ' IoU')}")
        ax.grid(alpha=0.3)
    for ax in list(grid.flat)[len(axes) :]:
        ax.axis("off")
    legend: dict[str, Any] = {}
    for ax in grid.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    ordered = sorted(legend)
    fig.legend([legend[k] for k in ordered], ordered, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"Validation {_STATISTIC.get(select_on, select_on + ' IoU')} against each setting searched ({plural(budget, 'epoch')}; ★ selected)")
    fig.tight_layout(rect=(0, 0, 0.86, 0.95))
    _save(fig, path)


_MISSING = object()
_STATISTIC = {"miou": "mean IoU", "focus": "focus-class IoU"}


def _order_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))
