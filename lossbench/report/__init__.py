"""The comparison report: what a person decides from, written from a runs folder alone.

``write_report(out, report_dir)`` reads every run record under ``out`` (so runs trained on several
machines into one shared folder merge; see :mod:`lossbench.record`), keeps those that belong to the
suite in the folder's suite file (same resolved config hash), and writes into ``report_dir``:

* ``README.md``: per budget a verdict that opens with plain words (classes no loss learned, losses
  still improving, what the seeds allow), then the leaderboards by mean IoU and by the focus class's
  IoU — each figure with its 95 % interval (at seed level with 3 or more seeds per loss, else at
  image level: :mod:`lossbench.report.stats`), the difference to the highest with its interval, the
  *best set* (the losses that cannot be ruled out as the best, family-wise), what the suite could
  detect, a raced suite's rounds (:mod:`lossbench.report.race`), each loss's chance of being best and its rank
  interval, focus-class object detection, and flags (degenerate, unstable, budget-bound,
  incomplete) — the qualitative panel, per-class tables, failed, interrupted and missing runs,
  damaged records, and the suite's config;
* ``results.csv``: one row per (loss, seed, budget, class), with the focus class's object metrics;
* ``leaderboard.csv``: one row per (budget, loss) with the intervals, best sets and flags;
* the plots of :data:`~lossbench.report.plots.PLOTS`; and, unless told not to, a summary run in W&B.

A tuned suite (``tune:``) is reported at each loss's selected point — the verdict above is theirs —
after a section on the fight (:mod:`lossbench.report.tuning`): the points searched, the point
validation selected, the ranking at the suite's own settings beside the tuned one, and
``sensitivity.png``.

The stages, one module each: ``gather`` (the runs of the suite, the missing ones, the long table),
``analyse`` (per budget: estimates, intervals, ties, flags; the statistics are in ``stats``),
``tables`` (the Markdown), ``plots``, ``summary`` (W&B). The statistics are computed from each run's
``evidence.npz``, never by retraining; a run without one is shown without intervals. The output
depends only on the runs (the bootstrap has a fixed seed), so regenerating it from the same runs
gives the same files.
"""

from __future__ import annotations

from pathlib import Path

from lossbench.config import ReportConfig
from lossbench.io import write_text_atomic
from lossbench.report.analyse import LEADERBOARD_COLUMNS, analyse
from lossbench.report.gather import RESULT_COLUMNS, Runs, collect_runs, narrowed
from lossbench.report.plots import PLOTS, plot_data, plot_sensitivity, write_plots
from lossbench.report.summary import log_summary_to_wandb
from lossbench.report.tables import readme_md

__all__ = ["LEADERBOARD_COLUMNS", "PLOTS", "RESULT_COLUMNS", "write_report"]


def write_report(out: Path, report: Path, log_to_wandb: bool = True, settings: ReportConfig | None = None,
                 asked: tuple[set[str], set[int]] | None = None) -> Path:  # fmt: skip
    """Write the report of the runs under ``out`` into ``report``; return the README path. ``settings``: a
    ``report:`` section to use instead of the suite file's (``lossbench report --set report.focus=…``);
    ``asked``: the labels and seeds ``compare --losses/--seeds`` trained — the report is theirs."""
    out, report = Path(out), Path(report)
    found = collect_runs(out)
    if asked is not None:
        found = narrowed(found, *asked)
    if settings is not None and found.cfg is not None:
        if settings != found.cfg.report:
            found.trained_report = found.cfg.report  # the race was trained at the folder's own levels
        found.cfg = found.cfg.model_copy(update={"report": settings})
    searched = found.tuning is not None and (found.tuning.search_records or found.tuning.default_records)
    if not found.current and not found.damaged and not searched:
        if found.stale:  # P86: runs there, all trained with another config than the folder's suite.yaml
            raise ValueError(f"the {len(found.stale)} runs under {out} were all trained with another config than its "
                             f"suite file says (stale): run `lossbench compare` with this config to train its runs, or "
                             f"report their own suite from the folder it came with")  # fmt: skip
        raise ValueError(f"no runs under {out}: run `lossbench compare` first")
    analysis = analyse(found)
    default = None
    if found.tuning is not None:  # the ranking at the suite's own settings, beside the tuned one
        default = analyse(Runs(found.tuning.default_records, [], [], [], found.cfg))
    report.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report / "results.csv", analysis.results.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(report / "leaderboard.csv", analysis.leaderboard.to_csv(index=False, float_format="%.6g"))
    plotted = plot_data(analysis, found.current)
    if plotted is not None:
        write_plots(plotted, report)
    if found.tuning is not None and found.tuning.searches:
        plot_sensitivity(found.tuning.searches, found.cfg.tune.select_on, report / "sensitivity.png")
    readme = report / "README.md"
    write_text_atomic(readme, readme_md(found, analysis, plotted, out, report, default))
    if log_to_wandb and found.cfg is not None:
        log_summary_to_wandb(analysis.results, analysis.leaderboard, found.cfg, out, report)
    return readme
