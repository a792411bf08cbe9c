"""The report's analysis at each training budget: estimates, intervals, the best set, objects and flags.

:func:`analyse_budget` computes every statistic a leaderboard shows from the runs' records and
evidence (:mod:`lossbench.report.stats`); :func:`flag_budgets` and :func:`flag_text` add the flags
(degenerate, unstable, budget-bound, incomplete); :func:`leaderboard_frame` is ``leaderboard.csv``.
Each budget also says in plain words what a person must know before any ranking: who learned which class
(:func:`who_learned`, :data:`LEARNED_IOU`) and the losses still improving when training stopped (:data:`RISING`).
Settings come from the suite's ``report:`` section (its defaults when the folder has no suite file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossbench.config import ReportConfig, SuiteConfig
from lossbench.plan import race_schedule, race_seeds
from lossbench.record import DamagedEvidence, RunRecord, read_evidence
import lossbench.report.stats as stats
from lossbench.report.race import Race, run_race
from lossbench.report.markdown import code
from lossbench.report.gather import Runs, focus_of, results_frame

LEADERBOARD_COLUMNS = ["budget", "loss", "seeds", "level", "miou", "miou_lo", "miou_hi", "miou_p_best", "miou_rank_lo",
                       "miou_rank_hi", "focus_iou", "focus_lo", "focus_hi", "focus_p_best", "in_best_set",
                       "focus_in_best_set", "objects_recall", "objects_fp_per_image", "objects_f1", "flags", "wall_s"]  # fmt: skip
"""The columns of ``leaderboard.csv``: one row per (budget, loss). ``level``: ``seed`` when the intervals and the best
set account for training randomness, ``image`` when they cover only the test images drawn. ``in_best_set``: the loss
cannot be ruled out as the best (by mean IoU; ``focus_in_best_set`` by the focus class's IoU)."""

LEARNED_IOU = 0.05
"""A run whose IoU on a class present in the test set is below this has not learned it (flag *degenerate*); a loss
whose mean IoU on a class over its seeds is below it did not learn the class (the verdict's *who learned what*)."""

MIN_TEST_CASES = 5
"""Fewer test images (or volumes) than this cannot measure what other test cases would give: no image bootstrap."""

RISING = 0.01
"""Validation mean IoU that rose by more than this over the last quarter of training was still rising."""


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass
class Budget:
    """The comparison at one training budget: intervals, the best set, objects and flags of every loss."""

    budget: int
    table: pd.DataFrame  # one row per loss (LEADERBOARD_COLUMNS and more)
    miou: stats.Comparison | None
    focus: stats.Comparison | None
    replicates: int
    alpha: float  # the family-wise level of the best set
    images: int | None
    seeds: list[int]
    no_evidence: list[str]  # labels of losses shown without intervals
    scores: dict[str, stats.LossScores] = field(default_factory=dict)  # mean IoU of each loss, per seed
    rising: dict[str, float] = field(default_factory=dict)  # losses still rising at the end: the rise
    learned: dict[str, dict[str, float]] = field(default_factory=dict)  # class → loss → mean test IoU over its seeds
    epochs_seen: int = 0  # the most epochs any run's history holds (1: "still improving" cannot be told)
    damaged_evidence: list[DamagedEvidence] = field(default_factory=list)  # evidence files that cannot be used
    race: Race | None = None  # a raced suite's rounds (at its last budget)
    race_on: str = "miou"  # the score the race ruled losses out on
    detectable: dict[float, float] = field(default_factory=dict)  # seeds per loss → the gap ruled out with 80 % power
    floor: float = math.nan  # that gap with infinitely many seeds: what the test images alone allow
    case: str = "image"  # what one test case is: an image, or a volume
    machines: dict[str, int] = field(default_factory=dict)  # the kinds of machine its runs trained on: runs of each
    validation: dict[str, float] = field(default_factory=dict)  # each loss's last validation mean IoU (mean over seeds)
    race_note: str = ""  # report --set changed the race's levels or focus: what the race shown was trained at
    load: tuple[float, float, int] | None = None  # the lowest and highest 1-minute load average its runs saw, and the cores

    @property
    def too_few_cases(self) -> bool:
        """Too few test cases for the image bootstrap (:data:`MIN_TEST_CASES`): intervals without the test set's part."""
        return self.images is not None and self.images < MIN_TEST_CASES

    @property
    def level(self) -> str:
        return self.miou.level if self.miou is not None else stats.level_of(self.scores)

    @property
    def seeds_per_loss(self) -> tuple[int, int]:
        """The fewest and the most seeds a loss has at this budget."""
        n = self.table["seeds"] if len(self.table) else pd.Series([0])
        return int(n.min()), int(n.max())


def machine_kinds(records: list[RunRecord]) -> dict[str, int]:
    """The kinds of machine the finished runs trained on (a resumed run's earlier ones too), with how many runs each."""
    kinds: dict[str, int] = {}
    for r in records:
        if r.ok and r.machine:
            for kind in {r.machine_kind, *r.machine.get("earlier", [])}:
                kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def load_range(records: list[RunRecord]) -> tuple[float, float, int] | None:
    """The lowest and highest 1-minute load average the finished runs started or ended under, and the most cores a
    machine of theirs had (``None`` for runs recorded before lossbench kept it): what their wall times were measured under."""
    loads = [x for r in records if r.ok and r.placement for x in r.placement.get("load") or [] if isinstance(x, (int, float))]
    cores = [r.placement["cores"] for r in records if r.ok and r.placement and isinstance(r.placement.get("cores"), int)]
    return (min(loads), max(loads), max(cores)) if loads and cores else None


def _damaged(records: list[RunRecord]) -> list[DamagedEvidence]:
    """The evidence files of these runs that exist but cannot be used (each leaves out its run, not its loss)."""
    out = []
    for rec in records:
        try:
            if rec.run_dir is not None:
                read_evidence(rec.run_dir)
        except DamagedEvidence as e:
            out.append(e)
    return out


def _evidence_counts(records: list[RunRecord]) -> np.ndarray | None:
    """``[S, N, C, 3]`` counts of one loss's runs (its own seeds), or ``None`` when a run has no evidence: then only
    this loss is shown without intervals (runs with damaged evidence are left out before, by :func:`_damaged`)."""
    arrays = []
    for rec in sorted(records, key=lambda r: r.seed):
        ev = read_evidence(rec.run_dir) if rec.run_dir is not None else None
        if ev is None:
            return None
        arrays.append(ev.counts)
    if len({a.shape for a in arrays}) != 1:
        return None
    return np.stack(arrays)


def _degenerate(records: list[RunRecord]) -> list[tuple[str, float, int]]:
    """``(class, IoU, seed)``: for each class present in the test set, the lowest IoU a run of this loss got on it,
    where that is below :data:`LEARNED_IOU` (never predicted counts as 0)."""
    worst: dict[str, tuple[float, int]] = {}
    for rec in sorted(records, key=lambda r: r.seed):
        for name, row in rec.test["per_class"].items():
            if (row.get("support") or 0) > 0:
                iou = _num(row.get("iou"))
                iou = 0.0 if math.isnan(iou) else iou
                if iou < LEARNED_IOU and (name not in worst or iou < worst[name][0]):
                    worst[name] = (iou, rec.seed)
    return [(name, iou, seed) for name, (iou, seed) in worst.items()]


def still_rising(records: list[RunRecord]) -> float | None:
    """How much the validation mean IoU (mean over seeds) rose over the last quarter of training, when more
    than :data:`RISING`; ``None`` when it had levelled off or the history is too short to tell."""
    hist = [pd.DataFrame(r.history) for r in records if r.history]
    if not hist:
        return None
    curve = pd.concat(hist).groupby("epoch")["val_miou"].mean()
    last = int(curve.index.max())
    ref = max(1, int(0.75 * last))
    if ref >= last or ref not in curve.index or math.isnan(curve[last]) or math.isnan(curve[ref]):
        return None
    rise = float(curve[last] - curve[ref])
    return rise if rise > RISING else None


def _scores(ok: list[RunRecord], label: str, focus: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Each run's recorded test ``(mean IoU [S], focus IoU [S])``, by seed."""
    runs = sorted((r for r in ok if r.label == label), key=lambda r: r.seed)
    miou = np.array([_num(r.miou) for r in runs])
    focus_iou = np.array([_num(r.test["per_class"].get(focus, {}).get("iou")) if focus else math.nan for r in runs])
    return miou, focus_iou


def analyse_budget(records: list[RunRecord], budget: int, cfg: SuiteConfig | None, focus: str | None,
                   expected_seeds: int | dict[str, int], race: bool = False,
                   trained: ReportConfig | None = None) -> Budget:  # fmt: skip
    """Every statistic of the report at one budget, from the runs' records and evidence; with ``race``, the best
    set of the raced score is the race's (:func:`race_of`). ``expected_seeds``: the seeds each loss should have
    (one number for all, or per label)."""
    ok = [r for r in records if r.ok and r.budget == budget]
    damaged = _damaged(ok)  # a damaged evidence file leaves out its run — not its loss, nor the others' seed level
    if damaged:
        bad = {Path(e.path).parent for e in damaged}
        ok = [r for r in ok if r.run_dir is None or Path(r.run_dir) not in bad]
        records = [r for r in records if r.run_dir is None or Path(r.run_dir) not in bad]
    labels = sorted({r.label for r in ok})
    seeds = sorted({r.seed for r in ok})
    classes = list(ok[0].test["per_class"]) if ok else []
    names = ok[0].classes if ok else []
    class_ids = [names.index(c) for c in classes]
    focus_id = names.index(focus) if focus in (names or []) else None
    rep = cfg.report if cfg is not None else ReportConfig()
    n_boot, alpha = rep.bootstrap, rep.alpha

    counts, no_evidence = {}, []
    for label in labels:
        c = _evidence_counts([r for r in ok if r.label == label])
        if c is None:
            no_evidence.append(label)
        else:
            counts[label] = c
    n_images = {c.shape[1] for c in counts.values()}
    images = n_images.pop() if len(n_images) == 1 else None
    if images is None and counts:  # runs tested on different test sets cannot be compared image by image
        no_evidence += sorted(counts)
        counts = {}
    weights = stats.image_draws(images, n_boot, seed=0) if counts else None
    bootstrap = images is not None and images >= MIN_TEST_CASES  # 2 test volumes cannot say what others would give

    score_m, score_f = {}, {}
    for label in labels:
        per_seed_m, per_seed_f = _scores(ok, label, focus)
        rep_m = rep_f = None
        if label in counts and bootstrap:
            m, f = stats.replicate_scores(counts[label], weights, class_ids, focus_id)
            rep_m, rep_f = stats.seed_mean(m), stats.seed_mean(f)
        score_m[label] = stats.LossScores(per_seed_m, rep_m)
        score_f[label] = stats.LossScores(per_seed_f, rep_f)
    with_ev = [k for k in labels if k in counts]
    level = stats.level_of(score_m)
    the_race, race_note = None, ""
    if race and with_ev:  # the race that was trained: at the folder's own levels and focus, whatever report --set says
        race_cfg = cfg if trained is None else cfg.model_copy(update={"report": trained})
        race_focus = focus_of(records, race_cfg) if trained is not None else focus
        race_focus_id = names.index(race_focus) if race_focus in (names or []) else None
        the_race = race_of(records, budget, race_cfg, counts, weights if bootstrap else None, class_ids, race_focus, race_focus_id)
        changed = [f"report.{k} {getattr(rep, k)!r} (trained at {getattr(trained, k)!r})" for k in ("alpha", "focus")
                   if trained is not None and getattr(rep, k) != getattr(trained, k)]  # fmt: skip
        if changed:
            race_note = (f"This report was asked for {' and '.join(changed)}: the race shown is the one compare trained, "
                         "judged at the levels it was trained at; the settings asked for apply to the rest of the report.")
    on = cfg.race.score if the_race is not None else None
    out_m = the_race.ruled_out if on == "miou" else None
    out_f = the_race.ruled_out if on == "focus" else None
    cmp_m = stats.compare({k: score_m[k] for k in with_ev}, alpha, level, ruled_out=out_m) if with_ev else None
    cmp_f = (stats.compare({k: score_f[k] for k in with_ev}, alpha, level, ruled_out=out_f, learned=LEARNED_IOU)
             if with_ev and focus_id is not None else None)  # fmt: skip

    rows = [_row(budget, label, [r for r in ok if r.label == label], score_m[label], score_f[label], cmp_m, cmp_f, focus,
                 level, expected_seeds) for label in labels]  # fmt: skip
    table = pd.DataFrame(rows)
    if len(table):
        _flag_unstable(table)
    rising = {label: rise for label in labels if (rise := still_rising([r for r in ok if r.label == label])) is not None}
    b = Budget(budget, table, cmp_m, cmp_f, n_boot, alpha, images, seeds, sorted(no_evidence), score_m, rising,
               _class_means(ok, classes), max((len(r.history or []) for r in ok), default=0), damaged, the_race,
               on or "miou")  # fmt: skip
    b.detectable, b.floor = _detectable(b)
    b.case = "volume" if cfg is not None and cfg.data.is_volumes else "image"
    b.machines = machine_kinds(ok)
    b.load = load_range(ok)
    b.validation = _last_validation(ok)
    b.race_note = race_note
    return b


def _detectable(b: Budget) -> tuple[dict[float, float], float]:
    """The gap to the best that mean IoU rules out with 80 % power at the level it is judged at: at this suite's
    seeds and at 2, 4 and 8 times as many — in a race, at each round's seeds and level, the counts it can reach — and
    the test images' floor; from the losses' seed spread (moderated) and the median image-paired spread."""
    cmp_ = b.miou
    if cmp_ is None or cmp_.best is None or len(cmp_.estimate) < 2:
        return {}, math.nan
    k = len(cmp_.estimate)
    top = b.scores[cmp_.best]
    image_sd = float(np.median([math.sqrt(stats.image_var_of_difference(top, b.scores[j])) for j in cmp_.difference]))
    variances = [s.seed_sd**2 for s in b.scores.values() if s.n > 1]
    if not variances:  # one seed: the test images' floor is all that can be said
        return {}, stats.detectable_difference(0.0, math.inf, k, image_sd, b.alpha)
    sd = math.sqrt(float(np.mean(variances)))
    d0 = cmp_.prior.df if cmp_.prior.df < math.inf else cmp_.prior.cap
    n = max(2, min(s.n for s in b.scores.values() if s.n > 1))  # the judged losses' fewest seeds
    if b.race is not None and b.race_on == "miou":
        levels = dict(zip(b.race.schedule, stats.race_alphas(b.race.schedule, b.alpha)))
    else:
        levels = {m: b.alpha for m in (n, 2 * n, 4 * n, 8 * n)}
    gaps = {m: stats.detectable_difference(sd, m, k, image_sd, a, prior_df=d0) for m, a in levels.items() if m >= n}
    return gaps, stats.detectable_difference(sd, math.inf, k, image_sd, b.alpha)


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """The length of the union of the ``(start, end)`` spans: the time at least one of them was running."""
    total, end = 0.0, -math.inf
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def race_of(records: list[RunRecord], budget: int, cfg: SuiteConfig, counts: dict[str, np.ndarray], weights: np.ndarray | None,
            class_ids: list[int], focus: str | None, focus_id: int | None) -> Race:  # fmt: skip
    """The race of a raced suite at ``budget``, judged on the runs that exist (:func:`lossbench.report.race.run_race`):
    each loss's seeds in the race's order, a loss's first ``n`` of them scored from their evidence."""
    order = {seed: i for i, seed in enumerate(race_seeds(cfg, cfg.race.max_seeds))}
    mine = [r for r in records if r.budget == budget and r.seed in order]
    labels = sorted(counts)
    attempted = {}
    for label in labels:
        ended = {r.seed for r in mine if r.label == label and r.status in ("ok", "failed")}
        attempted[label] = next((i for i, seed in enumerate(order) if seed not in ended), len(order))
    ok = {label: sorted((r for r in mine if r.label == label and r.ok), key=lambda r: order[r.seed]) for label in labels}
    # counts[label] holds the loss's runs at this budget by seed (as analyse_budget read them): a round's runs are rows of it
    row = {label: {seed: i for i, seed in enumerate(sorted(r.seed for r in records if r.ok and r.budget == budget and r.label == label))}
           for label in labels}  # fmt: skip
    cache: dict[tuple[str, int], stats.LossScores] = {}

    def scores(label: str, n: int) -> stats.LossScores:
        if (label, n) not in cache:
            runs = [r for r in ok[label] if order[r.seed] < n]
            if not runs:
                return stats.LossScores(np.array([]))
            per_m, per_f = _scores(runs, label, focus)
            on_miou = cfg.race.score == "miou"
            reps = None
            if weights is not None:
                m, f = stats.replicate_scores(counts[label][[row[label][r.seed] for r in runs]], weights, class_ids, focus_id)
                reps = stats.seed_mean(m if on_miou else f)
            cache[label, n] = stats.LossScores(per_m if on_miou else per_f, reps)
        return cache[label, n]

    def seconds(runs: dict[str, tuple[int, int]]) -> float:
        """The time these runs trained: the length of the union of their runs' training spans (each run's recorded
        wall time, summed over its attempts, ending when it finished), so that a pause, a queue or an interruption
        between runs is not counted as the round's pace (0 when not recorded)."""
        chosen = [r for r in records if r.seed in order and r.label in runs and runs[r.label][0] <= order[r.seed] < runs[r.label][1]]  # every budget
        return busy_seconds([(r.finished_at - r.wall_s, r.finished_at) for r in chosen
                             if r.finished_at is not None and r.wall_s is not None])  # fmt: skip

    return run_race(labels, race_schedule(cfg), attempted, scores, cfg.report.alpha, cfg.race.max_runs,
                    max_minutes=cfg.race.max_minutes, seconds=seconds)


def _row(budget: int, label: str, runs: list[RunRecord], sm: stats.LossScores, sf: stats.LossScores,
         cmp_m: stats.Comparison | None, cmp_f: stats.Comparison | None, focus: str | None, level: str,
         expected_seeds: int) -> dict[str, Any]:  # fmt: skip
    """One leaderboard row."""
    objs = [r.objects for r in runs if r.objects and r.focus == focus]
    obj = {k: float(np.mean([_num(o.get(k)) for o in objs])) if objs else math.nan for k in ("recall", "fp_per_image", "f1")}
    nan2 = (math.nan, math.nan)
    mi = cmp_m.interval.get(label, nan2) if cmp_m else nan2
    fi = cmp_f.interval.get(label, nan2) if cmp_f else nan2
    rank = cmp_m.rank.get(label, nan2) if cmp_m else nan2
    return {
        "budget": budget, "loss": label, "seeds": len(runs), "level": level,
        "miou": sm.estimate, "miou_lo": mi[0], "miou_hi": mi[1],
        "miou_p_best": cmp_m.p_best.get(label, math.nan) if cmp_m else math.nan,
        "miou_rank_lo": rank[0], "miou_rank_hi": rank[1],
        "focus_iou": sf.estimate if focus else math.nan, "focus_lo": fi[0], "focus_hi": fi[1],
        "focus_p_best": cmp_f.p_best.get(label, math.nan) if cmp_f else math.nan,
        "in_best_set": bool(cmp_m.in_best_set[label]) if cmp_m and cmp_m.best and label in cmp_m.in_best_set else None,
        "focus_in_best_set": (bool(cmp_f.in_best_set[label]) if cmp_f and cmp_f.best and label in cmp_f.in_best_set
                              else None),  # fmt: skip
        "objects_recall": obj["recall"], "objects_fp_per_image": obj["fp_per_image"], "objects_f1": obj["f1"],
        "miou_std": sm.seed_sd, "focus_std": sf.seed_sd if focus else math.nan,
        "degenerate": _degenerate(runs),
        "incomplete": len(runs) < (expected_seeds.get(label, 0) if isinstance(expected_seeds, dict) else expected_seeds),
        "wall_s": float(np.mean([_num(r.wall_s) for r in runs])),
    }  # fmt: skip


def _last_validation(ok: list[RunRecord]) -> dict[str, float]:
    """Each loss's validation mean IoU at its last epoch, averaged over its seeds (where the history has one)."""
    out: dict[str, list[float]] = {}
    for r in ok:
        last = r.history[-1].get("val_miou") if r.history else None
        if last is not None and not math.isnan(float(last)):
            out.setdefault(r.label, []).append(float(last))
    return {k: float(np.mean(v)) for k, v in out.items()}


def _class_means(ok: list[RunRecord], classes: list[str]) -> dict[str, dict[str, float]]:
    """Each class's mean test IoU over the seeds of each loss (a run that never predicted a present class counts 0)."""
    out: dict[str, dict[str, float]] = {}
    for c in classes:
        means = {}
        for label in sorted({r.label for r in ok}):
            values = [_num(r.test["per_class"].get(c, {}).get("iou")) for r in ok if r.label == label]
            values = [v for v in values if not math.isnan(v)]
            if values:
                means[label] = float(np.mean(values))
        out[c] = means
    return out


def who_learned(b: Budget) -> tuple[list[str], list[tuple[str, dict[str, float], dict[str, float]]], list[tuple[str, float]]]:
    """``(learned by every loss, [(class, learned by, not learned by)], [(class, best IoU)] learned by none)``: a loss
    learned a class when its mean test IoU over the seeds is at least :data:`LEARNED_IOU`."""
    every, some, none = [], [], []
    for c, means in b.learned.items():
        if not means:
            continue
        yes = {k: v for k, v in means.items() if v >= LEARNED_IOU}
        no = {k: v for k, v in means.items() if v < LEARNED_IOU}
        if not no:
            every.append(c)
        elif not yes:
            none.append((c, max(means.values())))
        else:
            some.append((c, yes, no))
    return every, some, none


def cost_of(b: Budget, loss: str, learned: str) -> tuple[str, float, float] | None:
    """The class on which ``loss`` — one of few to learn ``learned`` — pays most: ``(class, its IoU, the others'
    median)``, when it trails the others' median there by more than :data:`LEARNED_IOU`."""
    worst = None
    for c, means in b.learned.items():
        if c == learned or loss not in means or len(means) < 3:
            continue
        others = float(np.median([v for k, v in means.items() if k != loss]))
        gap = others - means[loss]
        if gap > LEARNED_IOU and (worst is None or gap > worst[2] - worst[1]):
            worst = (c, means[loss], others)
    return worst


def _flag_unstable(table: pd.DataFrame) -> None:
    """*unstable*: a loss whose seed spread (std over seeds) exceeds the spread across losses (std of their means),
    judged only with at least :data:`~lossbench.report.stats.SEED_LEVEL_MIN` seeds (fewer cannot measure a spread)."""
    unstable = []
    for stat, spread_col in (("miou", "miou_std"), ("focus_iou", "focus_std")):
        across = float(table[stat].std(ddof=1)) if table[stat].notna().sum() > 1 else math.nan
        unstable.append(table[spread_col] > across if not math.isnan(across) else pd.Series(False, index=table.index))
    table["unstable"] = (unstable[0] | unstable[1]) & (table["seeds"] >= stats.SEED_LEVEL_MIN)


def flag_budgets(results: list[Budget]) -> None:
    """*budget-bound*: a loss that enters or leaves a best set, or whose focus-class IoU interval moves, between budgets."""
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
            moved = any(first.at[loss, c] != last.at[loss, c] for c in ("in_best_set", "focus_in_best_set"))
            lo1, hi1, lo2, hi2 = (first.at[loss, "focus_lo"], first.at[loss, "focus_hi"], last.at[loss, "focus_lo"],
                                  last.at[loss, "focus_hi"])  # fmt: skip
            if not any(map(math.isnan, (lo1, hi1, lo2, hi2))) and (hi1 < lo2 or hi2 < lo1):
                moved = True
            b.table.at[i, "budget_bound"] = moved


FLAG_MEANING = {"unstable": "seed spread > spread across losses", "budget-bound": "moves between budgets",
                "incomplete": "seeds missing or failed"}
"""What each flag but *degenerate* (whose text names the classes and seeds) means, as the flags column says it."""


def flag_names(row: Any) -> list[str]:
    """The flags one leaderboard row carries, by name."""
    on = {"degenerate": bool(row["degenerate"]), "unstable": bool(row.get("unstable")),
          "budget-bound": bool(row.get("budget_bound")), "incomplete": bool(row["incomplete"])}  # fmt: skip
    return [name for name, flagged in on.items() if flagged]


def flag_text(row: Any) -> str:
    """The flags of one leaderboard row as text (kept in the table's ``flags`` column)."""
    flags = []
    for name in flag_names(row):
        if name == "degenerate":
            flags.append("degenerate: " + ", ".join(f"{code(c)} (seed {seed})" for c, _, seed in row["degenerate"]))
        else:
            flags.append(f"{name} ({FLAG_MEANING[name]})")
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
    """The report's analysis of a gathered runs folder: per budget the estimates, intervals, best sets and flags."""
    records = found.current
    df = results_frame(records)
    ok_records = [r for r in records if r.ok]
    classes = list(ok_records[0].test["per_class"]) if ok_records else []
    focus = focus_of(records, found.cfg) or (classes[-1] if classes else None)
    budgets = [b for b in found.budgets if any(r.budget == b for r in ok_records)]
    seeds: int | dict[str, int] = len(found.cfg.seeds) if found.cfg else len({r.seed for r in ok_records})
    if found.asked_seeds is not None:
        seeds = found.asked_seeds
    # a report narrowed to what compare --losses/--seeds was asked is not the suite's race: the race is judged on every
    # run the suite holds, in its own report (a narrowed one said round 2 still had to train runs that existed)
    raced = found.cfg is not None and found.cfg.race is not None and found.asked_seeds is None
    if raced:  # a raced loss should have every seed the race gave it (a failed one makes it incomplete)
        ended = [r for r in records if r.status in ("ok", "failed")]
        seeds = {label: max(seeds, len({r.seed for r in ended if r.label == label})) for label in {r.label for r in records}}
    results = [analyse_budget(records, b, found.cfg, focus, seeds, raced and b == budgets[-1], found.trained_report)
               for b in budgets]  # fmt: skip
    flag_budgets(results)
    for b in results:
        b.table["flags"] = [flag_text(r) for r in b.table.to_dict("records")]
    return Analysis(df, classes, focus, results, leaderboard_frame(results))
