"""The report's Markdown: header, verdict, leaderboards, per-class tables, problems and the suite.

Every function here formats what :mod:`lossbench.report.analyse` computed; none computes a statistic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.config import SuiteConfig
from lossbench.metrics import BOUNDARY_METRICS
from lossbench.record import RunRecord
import lossbench.report.stats as stats
from lossbench.report.analyse import (LEARNED_IOU, MIN_TEST_CASES, RISING, Analysis, Budget, cost_of, flag_names, machine_kinds,
                                     who_learned)
from lossbench.report.gather import Runs
from lossbench.report.markdown import code, table, text
from lossbench.report.plots import PLOTS, PlotData
from lossbench.report.race import Race
from lossbench.progress import plural


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


def _set_mark(comparison: stats.Comparison | None, loss: str, race: Race | None = None) -> str:
    """``in`` for a loss of the best set; for one ruled out, which loss beat it, the family-wise p-value and
    (in a race) the round."""
    if comparison is None or comparison.best is None or loss not in comparison.estimate:
        return "—"
    if comparison.in_best_set.get(loss):
        return "**in**"
    out = comparison.ruled_out.get(loss)
    if out is None:
        return "—"
    when = f", round {race.round_of(loss)}" if race is not None and race.round_of(loss) else ""
    return f"out: below `{out.by}` ({_p(out.p)}{when})"


def _p(p: float) -> str:
    """``p=0.004``, or ``p<0.001``."""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _vs_best(comparison: stats.Comparison | None, loss: str) -> str:
    if comparison is None or loss not in comparison.difference:
        return "—" if comparison is None or loss != comparison.best else "0"
    d = comparison.difference[loss]
    if d.se == 0 and d.delta == 0:
        return "0.000 (the same scores: nothing tells them apart)"
    gap = round(d.delta, 3) + 0.0  # no "−0.000"
    return f"{'−' if gap > 0 else ''}{gap:.3f} [{round(-d.hi, 3) + 0.0:+.3f}, {round(-d.lo, 3) + 0.0:+.3f}]"


def _chance(comparison: stats.Comparison | None, loss: str) -> str:
    """P(best) and the 95 % rank interval of a loss, as ``0.62 · 1–3``."""
    if comparison is None or loss not in comparison.p_best:
        return "—"
    lo, hi = comparison.rank[loss]
    return f"{comparison.p_best[loss]:.2f} · {lo}–{hi}" if lo != hi else f"{comparison.p_best[loss]:.2f} · {lo}"


def leaderboard_md(b: Budget, sort_by: str, focus: str | None) -> str:
    t = b.table.sort_values([sort_by, "loss"], ascending=[False, True], kind="stable")
    main = b.miou if sort_by == "miou" else b.focus
    race = b.race if b.race_on == ("miou" if sort_by == "miou" else "focus") else None
    rows = []
    for i, r in enumerate(t.to_dict("records"), 1):
        rows.append([
            i, f"`{r['loss']}`", _set_mark(main, r["loss"], race), _chance(main, r["loss"]),
            _ci(r["miou"], r["miou_lo"], r["miou_hi"]), _ci(r["focus_iou"], r["focus_lo"], r["focus_hi"]),
            _vs_best(main, r["loss"]),
            f"{_fmt(r['objects_recall'])} / {_fmt(r['objects_fp_per_image'])} / {_fmt(r['objects_f1'])}",
            r["flags"] or "—", r["seeds"], f"{r['wall_s']:.0f}",
        ])  # fmt: skip
    what = "mean IoU" if sort_by == "miou" else f"{text(focus)} IoU"
    header = ["#", "loss", "best set", "P(best) · rank [95 %]", "mean IoU [95 % CI]", f"{code(focus)} IoU [95 % CI]",
              f"{what}: vs the highest [95 % CI]", f"{code(focus)} objects: found / false per {b.case} / F1", "flags", "seeds",
              "wall s/run"]  # fmt: skip
    return table(header, rows)


def wall_time_md(b: Budget) -> str:
    """What the *wall s/run* column measures: the machine's time, not the loss's cost alone."""
    load = ""
    if b.load is not None:
        lo, hi, cores = b.load
        span = f"{lo:.1f}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}–{hi:.1f}"
        load = f" (the 1-minute load average was {span} on its {plural(cores, 'core')} when these runs started and ended)"
    return ("*wall s/run*: the mean seconds from a run's start to its end, training and test, on the machine as it was"
            f"{load} — it mixes a loss's own cost with whatever else the machine ran, and with how the launcher placed the "
            "runs; `make bench` times the losses alone, side by side.")


def per_class_md(df: pd.DataFrame, metric: str, classes: list[str], order: list[str], lower_is_better: bool = False,
                 count: str | None = None) -> str:  # fmt: skip
    """Mean ± std over seeds per loss and class; the best of a column in bold, unless it reads 0.000 (nothing to crown).
    ``count``: a column whose mean over seeds each cell shows as ``(n …)``."""
    ok = df[df["status"] == "ok"]
    stats_ = {(loss, c): _mean_std(g[metric]) for (loss, c), g in ok.groupby(["loss", "class"])}
    counts = {(loss, c): g[count].mean() for (loss, c), g in ok.groupby(["loss", "class"])} if count else {}
    pick = min if lower_is_better else max
    best = {c: pick((stats_[(loss, c)][0] for loss in order if (loss, c) in stats_ and not math.isnan(stats_[(loss, c)][0])),
                    default=math.nan) for c in classes}  # fmt: skip
    rows = []
    for loss in order:
        cells = []
        for c in classes:
            mean, std = stats_.get((loss, c), (math.nan, math.nan))
            crown = not math.isnan(mean) and mean == best[c] and (lower_is_better or round(best[c], 3) > 0)  # no **0.000**
            n = counts.get((loss, c), math.nan)
            cells.append(_cell(mean, std, crown) + (f" (n {n:.0f})" if not math.isnan(n) else ""))
        rows.append([f"`{loss}`", *cells])
    return table(["loss", *(text(c) for c in classes)], rows)


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
    volumes = any(r.test.get("distance_unit") == "mm" for r in records if r.ok and r.test)
    unit, case = ("mm", "volume") if volumes else ("pixels", "image")
    if df.loc[df["status"] == "ok", "boundary_images"].isna().any():
        note += (" Runs tested before this rule (no n shown) averaged only over the images where both masks have the "
                 "class: retrain them (a new folder for `--out`) to compare like with like.")  # fmt: skip
    how = (f"Per test {case}, then the mean over the {case}s where it is defined — where the class is in the target or "
           f"the prediction (n: how many, mean over seeds); a class missed, or predicted where there is none, counts "
           f"as the worst case (HD95 the {case}'s diagonal, NSD 0), as Metrics Reloaded recommends, so a loss that "
           "rarely predicts a class is not rewarded for it. Mean ± std over seeds. Region overlap hides boundary "
           "errors on thin curves and small spots.")
    if volumes:
        how += " Distances are measured at each volume's own voxel spacing, surfaces as 3-D voxel faces (MONAI's convention)."
    return [
        f"## Per-class HD95{title}", "", f"95th-percentile Hausdorff distance in {unit}. {how} Bold: the lowest of a column.", "",
        per_class_md(df, "hd95", classes, order, lower_is_better=True, count="boundary_images"), "",
        f"## Per-class NSD{title}", "", f"Normalised surface Dice at a tolerance of {tol} {unit}. {how} Bold: the highest of a column.{note}", "",
        per_class_md(df, "nsd", classes, order), "",
    ]  # fmt: skip


def _names(losses: list[str], values: dict[str, float] | None = None, most: int = 6) -> str:
    """`a` 0.32, `b` 0.21 — or, past ``most``, the first ones and how many more."""
    shown = [f"`{k}`" + (f" {values[k]:.2f}" if values else "") for k in losses[:most]]
    return ", ".join(shown) + (f" and {len(losses) - most} more" if len(losses) > most else "")


def who_learned_md(b: Budget) -> list[str]:
    """The report's first finding: which losses learned which class (mean test IoU over the seeds ≥ LEARNED_IOU),
    each class said once — learned by all, by some (with the losses, and what a lone learner paid for it), by none."""
    every, some, none = who_learned(b)
    if not (some or none) or len(b.table) < 1:
        return [f"- **Who learned what**: every loss learned every class ({', '.join(map(code, every))}; mean test IoU "
                f"over the seeds at least {LEARNED_IOU:g})."] if every else []  # fmt: skip
    lines = [f"- **Who learned what** (a loss learned a class when its mean test IoU over the seeds is at least {LEARNED_IOU:g}):"]
    for c, yes, no in some:
        order = sorted(yes, key=lambda k: (-yes[k], k))
        if len(yes) <= len(no):
            line = f"{code(c)}: learned only by {_names(order, yes)}; not by the other {plural(len(no), 'loss', 'losses')} (at most {max(no.values()):.2f})"
            costs = [(k, cost) for k in order if (cost := cost_of(b, k, c)) is not None]
            if costs and len(yes) <= 2:
                line += "; " + "; ".join(f"`{k}` pays on {code(cc)} ({v:.2f} against the others' median {m:.2f})" for k, (cc, v, m) in costs)
        else:
            missed = sorted(no, key=lambda k: (no[k], k))
            line = f"{code(c)}: not learned by {_names(missed, no)}; every other loss learned it (up to {max(yes.values()):.2f})"
        lines.append(f"  - {line}.")
    if none:
        lines.append(f"  - **not learned by any loss**: {', '.join(f'{code(c)} (best {v:.2f})' for c, v in none)} — a ranking "
                     "on them means nothing yet: train longer, or change the data or the model.")  # fmt: skip
    if every:
        lines.append(f"  - learned by every loss: {', '.join(map(code, every))}.")
    return lines


def _plain_words_md(b: Budget) -> list[str]:
    """What a person must know before any ranking: who learned what, losses still improving (or that one epoch
    cannot tell), what the seeds allow, and what the suite can detect."""
    out = who_learned_md(b)
    if b.epochs_seen == 1:
        out.append("- **Still improving?** Cannot be told from one epoch: the validation curve has one point. Train "
                   "longer, or list several `budgets:`.")  # fmt: skip
    if b.rising:
        rising = ", ".join(f"`{k}` (+{v:.3f})" for k, v in sorted(b.rising.items(), key=lambda kv: -kv[1]))
        out.append(f"- **Still improving when training stopped**: the validation mean IoU of {rising} rose by more than "
                   f"{RISING:g} over the last quarter of the {plural(b.budget, 'epoch')}. Train longer, or list several `budgets:` "
                   "to see whether the ranking holds with more training.")  # fmt: skip
    lo, hi = b.seeds_per_loss
    seeds = f"{lo}" if lo == hi else f"{lo} to {hi}"
    if b.level == stats.SEED:
        out.append(f"- **{seeds} seeds per loss: training randomness is measured.** The intervals and the best set below "
                   "say what another seed would give, as well as other test images: a loss is ruled out only when "
                   "another loss beats it beyond both.")  # fmt: skip
    else:
        out.append(f"- **{seeds} seed{'s' if hi > 1 else ''} per loss: training randomness is not measured.** The "
                   "intervals and the best set below cover only which test images were drawn — they describe *these "
                   "trained models on this test set*, not the losses: another seed can reorder losses that are close. "
                   f"Train at least {stats.SEED_LEVEL_MIN} seeds per loss (`seeds:`) to compare the losses themselves.")  # fmt: skip
    disagree = _splits_disagree(b)
    if disagree:
        out.append(disagree)
    if b.too_few_cases:
        out.append(f"- **Only {plural(b.images, 'test ' + b.case)}**: too few to measure what other test {b.case}s would "
                   "give, so no interval here covers it — "
                   + ("they cover training randomness only." if b.level == stats.SEED else "and with one seed there is "
                      "nothing else to measure: no interval is given.")
                   + f" Test on at least {MIN_TEST_CASES} {b.case}s (`data.num_test`, or more files in `test/`).")  # fmt: skip
    can = _detectable_md(b)
    if can:
        out.append(can)
    if len(b.machines) > 1:
        out.append(f"- **The runs trained on {len(b.machines)} kinds of machine** (see *Config*): the same seed gives other "
                   "numbers on another kind, so part of what the intervals call training randomness is the machines'.")  # fmt: skip
    if b.race is not None and b.race.stopped_by_budget and len(b.race.left) > 1:
        out.append(f"- **This budget could not separate them**: the race stopped with {len(b.race.left)} losses in the "
                   f"best set, since {b.race.ended}.")  # fmt: skip
    return out


def _splits_disagree(b: Budget) -> str | None:
    """With one seed (or one epoch) a ranking is of these trained models: when the validation split orders the losses
    otherwise than the test split, both orders side by side."""
    if b.level == stats.SEED and b.epochs_seen > 1:
        return None
    test = {r["loss"]: r["miou"] for r in b.table.to_dict("records") if r["loss"] in b.validation and not math.isnan(r["miou"])}
    if len(test) < 2:
        return None
    by_test = sorted(test, key=lambda k: (-test[k], k))
    by_val = sorted(test, key=lambda k: (-b.validation[k], k))
    if not any(test[a] > test[c] and b.validation[a] < b.validation[c] for a in test for c in test):
        return None  # ties are no disagreement
    row = lambda order, score: " > ".join(f"`{k}` {score[k]:.3f}" for k in order)  # noqa: E731
    return ("- **Validation and test order the losses differently** (mean IoU) — test: " + row(by_test, test)
            + "; validation: " + row(by_val, b.validation) + ". With "
            + (f"{plural(b.seeds_per_loss[1], 'seed')}" if b.level != stats.SEED else "one epoch")
            + " a ranking, and *ruled out* below, speak of these trained models on this test set only: another seed or "
              "another split can reorder losses this close.")  # fmt: skip


def _gap(x: float) -> str:
    return f"{x:.3f}" if x < 0.01 else f"{x:.2f}"


def _detectable_md(b: Budget) -> str | None:
    """What this design can detect, in words: the gap to the best at which a loss is ruled out 80 % of the time,
    at these seeds and more, and the floor the test images set."""
    if not b.detectable and math.isnan(b.floor):
        return None
    k, images = len(b.table), b.images
    floor = (f"The {images} test {b.case}{'s' if images != 1 else ''} set a floor: even with unlimited seeds a gap "
             f"below about {_gap(b.floor)} is not ruled out reliably on them; a larger test set lowers it.")  # fmt: skip
    if b.too_few_cases:
        floor = f"What the {plural(images, 'test ' + b.case)} add to that is not measured (see above)."
    if not b.detectable:
        return (f"- **What this suite can detect**: one seed measures no training randomness, so no gap can be promised "
                f"between the losses themselves. {floor}")  # fmt: skip
    (n, now), *more = sorted(b.detectable.items())
    if b.level != stats.SEED:
        return (f"- **What this suite can detect**: with {n:g} seeds the seed spread is a rough figure; at "
                f"{stats.SEED_LEVEL_MIN}+ seeds a loss is ruled out about 80 % of the time when it trails the best "
                f"by the gap the next report states. {floor}")  # fmt: skip
    rest = "; ".join(f"{m:g} seeds: {_gap(g) if g < 1 else 'none'}" for m, g in more)
    if now >= 1:
        can = (f"with {n:g} seeds each and the seed spread measured here, no gap an IoU can have (at most 1) is "
               "ruled out reliably (80 % of the time): these seeds cannot separate losses by themselves")  # fmt: skip
    else:
        can = (f"with {n:g} seeds each and the seed spread measured here, a loss is ruled out (80 % of the time) when "
               f"it trails the best by about {_gap(now)} in mean IoU; smaller gaps usually stay in the best set")  # fmt: skip
    return f"- **What this suite can detect**: among {k} losses {can}. More seeds shrink the gap — {rest}. {floor}"


def _flag_names(row: Any, degenerate: bool = True) -> str:
    """The names of a row's flags (``degenerate, unstable``), without their details."""
    return ", ".join(n for n in flag_names(row) if degenerate or n != "degenerate")


def _ruled_out_md(cmp_: stats.Comparison, losses: list[str]) -> str:
    """The ruled-out losses, grouped by the loss that beat them."""
    by: dict[str, list[str]] = {}
    for k in sorted(losses, key=lambda k: (-cmp_.estimate[k], k)):
        by.setdefault(cmp_.ruled_out[k].by, []).append(f"`{k}`")
    return "; ".join(f"{', '.join(v)} (below `{k}`)" for k, v in by.items())


def _judged_at(b: Budget, col: str) -> str:
    """The level a best set was judged at, in words: ``at 95 %``, or for a raced score the rounds' levels and what they
    add up to (a race stopped early spent less, so its set is judged at more than 95 %)."""
    raced = b.race is not None and b.race_on == ("miou" if col == "miou" else "focus")
    if not raced or not b.race.rounds:
        return f"at {100 * (1 - b.alpha):g} %"
    spent = sum(r.alpha for r in b.race.rounds)
    levels = ", ".join(f"{r.alpha:.4f}" for r in b.race.rounds)
    return (f"at {100 * (1 - spent):.4g} % (the race's round{'s' if len(b.race.rounds) > 1 else ''} at {levels}"
            + (f" of the {b.alpha:g} planned" if spent < b.alpha - 1e-12 else "") + ")")


def _verdict_md(b: Budget, focus: str | None) -> list[str]:
    t = b.table.set_index("loss")
    out = _plain_words_md(b)
    seed_level = b.level == stats.SEED
    for name, cmp_, col in (("mean IoU", b.miou, "miou"), (f"{code(focus)} IoU", b.focus, "focus_iou")):
        if cmp_ is None:
            continue
        if cmp_.best is None:
            top = max((v for v in cmp_.estimate.values() if not math.isnan(v)), default=0.0)
            out.append(f"- **{name}**: every loss scores 0 — nothing to choose between." if top <= 0 else
                       f"- **{name}**: no loss learned it (the highest {top:.3f}, below {LEARNED_IOU:g}) — no best set, "
                       "nothing ruled out: a ranking on it means nothing.")  # fmt: skip
            continue
        members = cmp_.members
        at = _judged_at(b, col)
        lo, hi = cmp_.interval[cmp_.best]
        chance = f", P(best) {cmp_.p_best[cmp_.best]:.2f}" if cmp_.best in cmp_.p_best and seed_level else ""
        flag = _flag_names(t.loc[cmp_.best])
        n = len(cmp_.estimate)
        top = (f"highest `{cmp_.best}` {t.at[cmp_.best, col]:.3f} [{lo:.3f}, {hi:.3f}]{chance}"
               + (f" — flagged {flag}" if flag else ""))  # fmt: skip
        if n == 1:
            line = f"- **{name}**: {top}; the only loss with results here — nothing to compare it with"
        elif len(members) == n:
            why = ("these seeds cannot separate them" if seed_level else
                   "on this test set these trained models cannot be told apart")  # fmt: skip
            line = f"- **{name}**: no loss can be ruled out as the best {at} — {why}; the {top}"
        else:
            where = "" if seed_level else " (these trained models, on this test set)"
            names = ", ".join(f"`{k}`" for k in members)
            out_of = [k for k in cmp_.estimate if k in cmp_.ruled_out]
            line = (f"- **{name}**: best set{where}: {names} ({len(members)} of {n}; cannot be ruled out as the best "
                    f"{at}); ruled out as the best: {_ruled_out_md(cmp_, out_of)}. The {top}")  # fmt: skip
        out.append(line + ".")
    flagged = [(r["loss"], _flag_names(r, degenerate=False)) for r in b.table.to_dict("records")]
    flagged = [(k, v) for k, v in flagged if v]
    if flagged:  # degenerate runs are in "who learned what" and the leaderboards' flags column: said once each
        out.append("- Flags: " + "; ".join(f"`{k}` {v}" for k, v in flagged) + ".")
    if b.no_evidence:
        out.append(f"- Shown without intervals (runs without `evidence.npz`, or tested on other images): {', '.join(b.no_evidence)}.")
    for e in b.damaged_evidence:
        out.append(f"- Damaged evidence, its run left out of every statistic: {code(e.path)} ({text(e.why)}).")
    return out


def _method_md(b: Budget) -> str:
    k = len(b.table)
    if b.level == stats.SEED:
        how = (
            "How sure is this? Two things make a loss's score uncertain: the luck of training (another seed gives "
            "another model) and the luck of the test images (other images give another score). With "
            f"{stats.SEED_LEVEL_MIN} or more seeds per loss both are measured. Three seeds say little about one loss's "
            "spread, so each loss's seed variance is moderated: pulled towards what all the losses' spreads say "
            "together, as much as they agree (empirical Bayes, Smyth 2004 — the method limma uses for thousands of "
            "genes with few samples), which buys degrees of freedom without pretending the spreads are equal. A "
            "loss's interval is its mean over seeds ± a t-multiplier × the combined standard error (that moderated "
            f"spread, and a bootstrap over the {b.images} test images, {b.replicates} replicates); a 95 % interval covers "
            "the loss's mean in 95 % of suites, measured on simulated suites with spreads as uneven as real ones. "
            "*vs the highest*: the difference to the loss with the highest estimate, one comparison on its own "
            "(seeds are not paired across losses — a seed's luck is not the same for two losses; the images are)."
        )
    else:
        how = (
            "How sure is this? With fewer than "
            f"{stats.SEED_LEVEL_MIN} seeds per loss the luck of training cannot be measured, so the intervals here "
            f"cover only the luck of the test images: a bootstrap over the {b.images} test images ({b.replicates} "
            "replicates, the same draws for every loss, so losses are compared image by image). They say how "
            "sure we are about *these trained models on this test set*; they say nothing about what another seed "
            "would give, and *ruled out* speaks of these trained models only. *vs the highest*: the difference to "
            "the loss with the highest estimate, one comparison on its own."
        )
    conf = f"{100 * (1 - b.alpha):g} %"
    race = ""
    if b.race is not None:
        race = (f" In this suite's race the {100 * b.alpha:g} % error is shared between the planned rounds in proportion "
                "to their seeds per loss, a round compares the losses still racing, and a loss ruled out in a round "
                "stays out (see *The race*); a race stopped early spent less, and the verdict says at which level.")  # fmt: skip
    return (
        f"{how} *Best set* (Hsu's criterion): the losses that cannot be ruled out as the best. A loss is ruled out "
        "when the evidence says some other loss is better than it; since any of the other "
        f"{plural(k - 1, 'loss', 'losses')} could be that one, the surest lead over it is judged against how large the surest "
        "of that many leads would be by chance — in suites of this very design, simulated with every loss equally "
        f"good. So the true best is ruled out in at most {100 * b.alpha:g} % of suites, and so is any loss as good as "
        f"it: the best set holds the best loss with {conf} confidence. A loss in the best set is not shown to be as "
        "good as the best — only not shown to be worse; a loss ruled out is below the loss named beside it. *What "
        f"this suite can detect* says how large a gap it would have found.{race} *P(best) · rank*: how often the loss "
        "comes out best, and the range of ranks it takes in 95 % of the resamples (1: best). Objects: connected "
        "components (8-connectivity; 26 in volumes) of the focus class, found when a predicted component overlaps "
        "one with IoU ≥ the threshold (`report.object_iou`)."
    )


def race_md(b: Budget) -> list[str]:
    """The rounds of a raced suite: who raced, who was ruled out when and by whom, on how many seeds."""
    race = b.race
    if race is None:
        return []
    on = "mean IoU" if b.race_on == "miou" else "the focus class's IoU"
    rows = []
    for i, r in enumerate(race.rounds, 1):
        out = ", ".join(f"`{k}` (below `{v.by}`, {_p(v.p)})" for k, v in sorted(r.ruled_out.items())) or "—"
        rows.append([i, r.seeds, f"{r.alpha:.4f}", len(r.racing), r.runs, out])
    left = ", ".join(f"`{k}`" for k in race.left)
    epochs = plural(b.budget, "epoch")
    lines = [f"### The race ({epochs})", "",
             f"Rounds of seeds per loss {race.schedule} on {on}: each round trains more seeds only for the losses still in "
             "the best set, at its share of the level; a loss ruled out keeps the seeds it had.", "",
             table(["round", "seeds per loss", "level", "racing", "runs added", "ruled out"], rows), ""]  # fmt: skip
    if b.race_note:
        lines += [f"**{b.race_note}**", ""]
    if race.next is not None:
        losses, n = race.next
        lines.append(f"**The race is not finished**: round {len(race.rounds) + 1} trains {n} seeds for {plural(len(losses), 'loss', 'losses')} "
                     f"({', '.join(f'`{k}`' for k in losses)}); run `lossbench compare` again to train them — what is done is kept.")  # fmt: skip
    else:
        lines.append(f"**The race ended** ({race.ended}) after {plural(race.runs, 'run')}, with {left or 'no loss'} "
                     f"in the best set.")  # fmt: skip
    return [*lines, ""]


def config_md(cfg: SuiteConfig | None, records: list[RunRecord], focus: str | None) -> str:
    if cfg is None:
        return "_No suite.yaml in the runs folder: the runs were not started by `lossbench compare`._"
    d, m, t, o = cfg.data, cfg.model, cfg.trainer, cfg.optim
    freqs = next((r.class_frequencies for r in records if r.class_frequencies), None)
    classes = next((r.classes for r in records if r.classes), None)
    seeds = sorted({r.seed for r in records})
    lines = [f"- suite `{cfg.suite}`; seeds {seeds}; focus class {code(focus)}" + (" (the rarest)" if not cfg.report.focus else "")]
    if d.kind == "synthetic":
        lines.append(
            f"- data: synthetic, {d.image_size}×{d.image_size}, {d.num_train} train / {d.num_val} val / "
            f"{d.num_test} test images, imbalance {d.imbalance}, noise {d.noise}, data seed {d.seed}"
        )
    elif d.is_volumes:
        v = d.volumes
        source = (f"synthetic volumes, {v.depth}×{d.image_size}×{d.image_size} voxels of {'×'.join(f'{s:g}' for s in v.synthetic_spacing)} mm, "
                  f"{d.num_train} train / {d.num_val} val / {d.num_test} test, data seed {d.seed}"
                  if d.kind == "synthetic_volumes" else f"volumes {code(d.path)}, ignore index {d.ignore_index}")  # fmt: skip
        lines.append(f"- data: {source}; intensity {v.intensity}" + (f" (window {list(v.window)})" if v.intensity == "ct" else "")
                     + ". **Each test case is a whole volume**: every per-image figure below (intervals, objects, "
                     "boundaries) is per volume, scored at the volume's own spacing; objects are 26-connected components")  # fmt: skip
    else:
        lines.append(f"- data: {d.kind} {code(d.path or d.target)}, ignore index {d.ignore_index}, resize {d.resize}, crop {d.crop}, "
                     f"augment {d.augment.model_dump() if d.augment else None}, normalize {d.normalize}")  # fmt: skip
    if freqs and classes:
        total = sum(freqs) or 1
        lines.append(f"- training {'voxels' if d.is_volumes else 'pixels'} per class: " + ", ".join(f"{text(c)} {100 * f / total:.2f} %" for c, f in zip(classes, freqs)))
    kwargs = f" {m.kwargs}" if m.kwargs else ""
    weights = f"pretrained encoder ({m.encoder_weights})" if m.encoder_weights else "no pretrained weights"
    if d.is_volumes and m.dims == 3:
        v = d.volumes
        lines.append(f"- model: 3-D MONAI `{m.arch}`{kwargs}, trained on {'×'.join(map(str, v.patch))} patches ({v.samples_per_volume} per "
                     f"volume per epoch, {v.pos_fraction:g} of them centred on a foreground class), sliding-window inference "
                     f"(overlap {v.overlap:g})")  # fmt: skip
    elif d.is_volumes:
        v = d.volumes
        lines.append(f"- model: smp `{m.arch}`, encoder `{m.encoder}`{kwargs}, {weights}, on 2-D slices"
                     + (f" with {m.context} neighbouring slice(s) each side as channels (2.5-D)" if m.context else "")
                     + f" ({v.samples_per_volume} per volume per epoch, {v.pos_fraction:g} of them through a foreground class); "
                     "predictions stacked back into volumes")  # fmt: skip
    else:
        lines.append(f"- model: smp `{m.arch}`, encoder `{m.encoder}`{kwargs}, {weights}")
    lines.append(
        f"- training: {', '.join(map(str, cfg.budget_list()))} epoch{'s' if cfg.budget_list() != [1] else ''}, batch {d.batch_size}, AdamW lr {o.lr} "
        f"(cosine to 0), weight decay {o.weight_decay}, precision {t.precision}"
    )
    params = [f"`{e.label}`" + (f" ({e.name} {e.params})" if e.params or e.label != e.name else "") for e in cfg.losses]
    lines.append("- losses: " + ", ".join(params) + " — other parameters at their defaults (`lossbench losses`)")
    lines.append(machines_md(records))
    return "\n".join(lines)


def machines_md(records: list[RunRecord]) -> str:
    """Where the runs trained, and what that means for reproducing them: the same kind of machine reproduces every
    number bit for bit; another kind (another CPU vector ISA, GPU or library version) reproduces them statistically."""
    kinds = machine_kinds(records)
    if not kinds:
        return "- machine: not recorded (runs from before lossbench kept it)"
    if len(kinds) == 1:
        return (f"- machine: {text(next(iter(kinds)))} — a rerun reproduces these numbers bit for bit on the same kind of "
                "machine, and within their intervals on another")  # fmt: skip
    listed = "; ".join(f"{text(k)} ({plural(n, 'run')})" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    return (f"- **machines: the runs trained on {len(kinds)} kinds of machine** — {listed}. The same seed gives other "
            "numbers on another kind, so these runs mix the machines' differences into the seeds' spread")  # fmt: skip


def header_md(suite: str, out: Path) -> list[str]:
    return [
        f"# lossbench report: `{suite}`",
        "",
        f"Generated by `lossbench report` from the runs in {code(out)}; do not edit by hand. Every number is a "
        "test-split metric pooled over all test pixels (IoU of each class at each mask's own resolution), with its "
        "95 % interval in brackets. Losses are not crowned by a bold number: the verdict names the *best set* — the "
        "losses that cannot be ruled out as the best (Hsu's criterion: it holds the best with 95 % confidence) — and what this suite could have detected; read it, "
        "and the flags.",
        "",
    ]


def budget_md(b: Budget, focus: str | None, several: bool, wanted: int | None = None) -> list[str]:
    """The verdict, the two leaderboards and the method note of one budget (``wanted``: ``report.wanted_epochs``)."""
    title = f" — {plural(b.budget, 'epoch')}" if several else ""
    parts = [f"## Verdict{title}", "", *_verdict_md(b, focus), "", *race_md(b)]
    share = ""
    if wanted and b.budget < wanted:
        share = (f" **That is {b.budget / wanted:.0%} of the {plural(wanted, 'epoch')} this data wanted** (`report.wanted_epochs`: "
                 "`init --minutes` gave fewer to fit the time): the verdict is about early training, where losses that "
                 "learn fast lead; the rare classes are often learned later.")  # fmt: skip
    if not several:
        parts += [
            f"All runs trained for {plural(b.budget, 'epoch')} (one budget).{share} Whether these conclusions hold with more "
            "training is not tested by this suite: list several `budgets:` to see which conclusions move (flag *budget-bound*).",
            "",
        ]
    elif share:
        parts += [share.strip(), ""]
    parts += [f"### Leaderboard by mean IoU{title}", "", leaderboard_md(b, "miou", focus), ""]
    if focus:
        parts += [f"### Leaderboard by {code(focus)} IoU (the focus class){title}", "", leaderboard_md(b, "focus_iou", focus), ""]
    parts += [wall_time_md(b), ""]
    parts += [_method_md(b), ""] if b.images else []
    return parts


def problems_md(found: Runs, out: Path) -> list[str]:
    not_ok = sorted((r for r in found.current if not r.ok), key=lambda r: (r.label, r.seed, r.budget or 0))
    parts = ["## Failed and unfinished runs", ""]
    rows = [[f"`{r.label}`", r.seed, r.budget, r.status, text((r.error or "still running, or killed")[:300])] for r in not_ok]
    rows += [[f"`{label}`", seed, budget, "missing", "not trained yet"] for label, seed, budget in found.missing]
    parts.append(table(["loss", "seed", "epochs", "status", "error"], rows) if rows else "None.")
    if found.not_asked:
        parts += ["", f"This report is what `compare --losses/--seeds` was asked; {plural(found.not_asked, 'other run')} of "
                  f"the suite (other losses or seeds) {'is' if found.not_asked == 1 else 'are'} not trained yet: `lossbench "
                  "compare` without `--losses`/`--seeds` trains them and reports the whole suite."]  # fmt: skip
    if found.damaged:
        parts += ["", "## Damaged run records", "", "These `metrics.json` files cannot be read; their runs are left out "
                  "and the next `lossbench compare` trains them again:", ""]  # fmt: skip
        parts += [f"- {code(d.path)}: {text(d.why)}" for d in found.damaged]
    if found.stale:
        parts += ["", f"{len(found.stale)} run(s) under {code(out)} were trained with another config and are left out."]
    return parts


def caveats_md(records: list[RunRecord]) -> list[str]:
    """What a reader must know about a loss of this suite before reading its rank (the registry's caveats)."""
    from lossbench.losses import get_loss_spec

    notes = {}
    for rec in records:
        try:
            caveat = get_loss_spec(rec.loss).caveat
        except (KeyError, ValueError):  # a plugin loss that is not loaded here
            continue
        if caveat:
            notes.setdefault(rec.label, (rec.loss, caveat))
    if not notes:
        return []
    lines = [f"- `{label}`" + (f" ({name})" if name != label else "") + f": {text(caveat)}" for label, (name, caveat) in sorted(notes.items())]
    return ["**Before reading the ranks**:", "", *lines, ""]


def readme_md(found: Runs, analysis: Analysis, plotted: PlotData | None, out: Path, report: Path,
              default: Analysis | None = None) -> str:  # fmt: skip
    """The report's ``README.md``: a tuned suite's fight (with ``default``, the analysis at the suite's own
    settings), per budget the verdict and leaderboards, then (at the last budget) the pictures and
    per-class tables, the problems, and the suite."""
    suite = found.cfg.suite if found.cfg else out.name
    focus, classes = analysis.focus, analysis.classes
    parts = header_md(suite, out)
    if found.tuning is not None and found.cfg is not None:
        from lossbench.report.tuning import fight_md

        parts += fight_md(found.cfg, found.tuning, analysis, default, analysis.several_budgets)
        parts += ["The verdict and everything below are the selected points' runs on the suite's seeds.", ""]
    parts += caveats_md(found.current)
    for b in analysis.budgets:
        parts += budget_md(b, focus, analysis.several_budgets, found.cfg.report.wanted_epochs if found.cfg else None)
    if plotted is not None:
        d = plotted
        title = f" ({plural(d.b.budget, 'epoch')})" if analysis.several_budgets else ""
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
    parts += ["", "## Suite", "", config_md(found.cfg, found.current, focus), "", "Regenerate: "
              f"{code(f'lossbench report --out {out} --report {report}')}; data: `results.csv` (one row per loss, seed, budget and class), "
              "`leaderboard.csv` (one row per budget and loss).", ""]  # fmt: skip
    return "\n".join(parts)
