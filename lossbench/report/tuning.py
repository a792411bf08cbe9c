"""A tuned suite's report section: the fight — what each loss was searched over, what validation
selected, the verdict at the selected points against the ranking at the suite's own settings.

The search and the selection are :mod:`lossbench.tune`'s (validation only); the verdict at the
selected points is the ordinary analysis of :mod:`lossbench.report.analyse` on the runs that trained
the selected points on the suite's seeds, and the ranking at the suite's own settings is the same
analysis on its default-point runs. Nothing here computes a statistic of the test set itself.
"""

from __future__ import annotations

import math
from typing import Any

from scipy.stats import spearmanr

from lossbench.config import Range, SuiteConfig
from lossbench.plan import Point
from lossbench.report.analyse import Analysis, Budget
from lossbench.report.gather import Tuning
from lossbench.report.markdown import code, table
from lossbench.tune import LossSearch
from lossbench.progress import plural


def _ranks(b: Budget | None) -> dict[str, int]:
    if b is None:
        return {}
    order = b.table.sort_values(["miou", "loss"], ascending=[False, True], kind="stable")["loss"].tolist()
    return {loss: i + 1 for i, loss in enumerate(order)}


def _estimate(b: Budget | None, loss: str) -> str:
    """A loss's mean IoU with its interval, as the leaderboard shows it."""
    if b is None or loss not in set(b.table["loss"]):
        return "—"
    row = b.table.set_index("loss").loc[loss]
    if math.isnan(row["miou"]):
        return "—"
    interval = not (math.isnan(row["miou_lo"]) or math.isnan(row["miou_hi"]))
    return f"{row['miou']:.3f}" + (f" [{row['miou_lo']:.3f}, {row['miou_hi']:.3f}]" if interval else "")


def _group(b: Budget | None) -> tuple[str | None, list[str]]:
    """The highest loss by mean IoU and the other losses of its best set."""
    if b is None or b.miou is None or b.miou.best is None:
        return None, []
    return b.miou.best, sorted(k for k in b.miou.members if k != b.miou.best)


def _names(losses: list[str]) -> str:
    return ", ".join(f"`{k}`" for k in losses) if losses else "none"


def _axis_md(name: str, axis: Any) -> str:
    if isinstance(axis, Range):
        how = "log-uniformly" if axis.log else "uniformly"
        return f"{name} drawn {how} from [{axis.low:g}, {axis.high:g}]" + (" (integers)" if axis.integer else "")
    return f"{name} ∈ {{{', '.join(map(str, axis))}}}"


def protocol_md(cfg: SuiteConfig, tuning: Tuning) -> list[str]:
    """How the fight was run: the axes, the points per loss, the selection rule, the seeds."""
    tune = cfg.tune
    assert tune is not None
    axes = [_axis_md(f"`{k}`", v) for k, v in tune.grid.items()]
    axes += [_axis_md(f"`{label}` `{p}`", v) for label, own in tune.params.items() for p, v in own.items()]
    counts = sorted({len(s.points) for s in tuning.searches})
    drawn = any(isinstance(v, Range) for v in [*tune.grid.values(), *(v for own in tune.params.values() for v in own.values())])
    if drawn:
        budget = (f"each loss tried {tune.trials} points of a Latin hypercube (seed {tune.sample_seed}): every axis cut "
                  f"into {tune.trials} equal strata with one point in each, so each loss covered the ranges evenly with "
                  "the same budget")  # fmt: skip
    elif tune.trials is not None:
        budget = (f"each loss tried {tune.trials} points drawn at random from its grid (seed {tune.sample_seed}) — the "
                  "same budget for every loss; a loss whose grid has fewer points tried all of them")  # fmt: skip
    else:
        budget = "each loss tried every point of its grid"
        if len(counts) > 1:
            budget += (f" — {counts[0]} to {counts[-1]} points: a loss with more points had more chances to look good "
                       "on validation by luck (`tune.trials` gives every loss the same number)")  # fmt: skip
    report_seeds = sorted(cfg.seeds)
    overlap = sorted(set(tune.seeds) & set(report_seeds))
    seeds_line = (f"The search trained on seeds {sorted(tune.seeds)}; the selected points were trained again on seeds "
                  f"{report_seeds}, and the verdict is theirs")  # fmt: skip
    if overlap:
        seeds_line += (f". Seeds {overlap} are in both: on them the selected point's luck in the search is also in the "
                       "reported numbers, which are then optimistic — keep `tune.seeds` apart from `seeds`")  # fmt: skip
    else:
        seeds_line += ", so a point's luck on the search seeds does not carry into them"
    return [
        "## The fight: every loss at its own best setting",
        "",
        f"Each loss was searched over {', '.join(axes) or 'its default point only'}; {budget}. A point is scored by its "
        f"validation {code(tune.select_on)} at the last epoch (the model that would be tested), averaged over the search "
        "seeds, and the best point is selected; a point with a failed run is not eligible. **The test set is not read "
        f"for the selection.** {seeds_line}.",
        "",
    ]


def fight_md(cfg: SuiteConfig, tuning: Tuning, tuned: Analysis, default: Analysis | None, several: bool) -> list[str]:
    """The fight section: protocol, the table of selected points, and whether tuning changed the verdict."""
    parts = protocol_md(cfg, tuning)
    for search_budget in sorted({s.budget for s in tuning.searches}):
        searches = sorted((s for s in tuning.searches if s.budget == search_budget), key=lambda s: s.label)
        b_t = next((b for b in tuned.budgets if b.budget == search_budget), None)
        b_d = next((b for b in default.budgets if b.budget == search_budget), None) if default else None
        if several:
            parts += [f"### {plural(search_budget, 'epoch')}", ""]
        parts += _budget_fight_md(cfg, searches, b_t, b_d)
    parts += ["![sensitivity](sensitivity.png)", "",
              "*Sensitivity*: each loss's validation score against each setting searched — for each value, the best score "
              "among the loss's points with that value; ★ marks the selected point. A flat line is a loss that does not "
              "care about that setting; a sharp peak is one that needs it tuned, and one whose win may be luck.", ""]  # fmt: skip
    return parts


def _budget_fight_md(cfg: SuiteConfig, searches: list[LossSearch], b_t: Budget | None, b_d: Budget | None) -> list[str]:
    tune = cfg.tune
    assert tune is not None
    ranks_t, ranks_d = _ranks(b_t), _ranks(b_d)
    searched_default = any(p.point == Point() for s in searches for p in s.points)
    rows = []
    for s in searches:
        default_score = s.score_of(Point())
        rows.append([
            f"`{s.label}`",
            len(s.points),
            s.selected.describe() if s.selected else ("search unfinished" if not s.finished else "none (every point failed)"),
            f"{s.score_of(s.selected):.3f}" if s.selected else "—",
            *(["—" if math.isnan(default_score) else f"{default_score:.3f}"] if searched_default else []),
            _estimate(b_t, s.label) + (f" · {ranks_t[s.label]}" if s.label in ranks_t else ""),
            _estimate(b_d, s.label) + (f" · {ranks_d[s.label]}" if s.label in ranks_d else ""),
        ])  # fmt: skip
    header = ["loss", "points", "selected point", f"val {tune.select_on} (selected)",
              *([f"val {tune.select_on} (defaults)"] if searched_default else []),
              "test mIoU, selected · rank", "test mIoU, defaults · rank"]  # fmt: skip
    parts = [table(header, rows), ""]
    parts.append(("*val (defaults)*: the validation score of the suite's own settings in the search (—: not among the "
                  "loss's points). " if searched_default else "")
                 + "*val*: the validation score, mean over the search seeds. Test columns: mean over the suite's seeds "
                 "with the 95 % interval, and the rank by mean IoU; *defaults*: the suite's own settings.")  # fmt: skip
    parts.append("")
    best_t, others_t = _group(b_t)
    best_d, others_d = _group(b_d)
    if best_t is None:
        parts += ["No verdict at the selected points yet: their runs have not finished.", ""]
        return parts
    line = f"**Tuned**: the highest mean IoU is `{best_t}`; also in the best set: {_names(others_t)}."
    if best_d is not None:
        common = sorted(set(ranks_t) & set(ranks_d))
        line += f" **At the suite's own settings** it was `{best_d}`; also in the best set: {_names(others_d)}."
        if len(common) >= 3:
            rho = spearmanr([ranks_t[k] for k in common], [ranks_d[k] for k in common]).statistic
            moved = sorted(((ranks_d[k] - ranks_t[k], k) for k in common if abs(ranks_d[k] - ranks_t[k]) >= 3), reverse=True)
            line += f" Rank correlation between the two orders: {rho:.2f}"
            line += ("; moved most: " + ", ".join(f"`{k}` {ranks_d[k]} → {ranks_t[k]}" for _, k in moved) + "." if moved else ".")
        same = best_t == best_d and set(others_t) | {best_t} == set(others_d) | {best_d}
        line += (" Tuning did not change the verdict." if same else
                 " **Tuning changed the verdict**: a comparison at one setting answers which loss suits that setting, "
                 "not which loss is best.")  # fmt: skip
    parts += [line, ""]
    return parts
