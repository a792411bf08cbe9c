"""The report from hand-built runs: what it gathers, what it computes, what it writes — no training.

Each run here is a real run folder (config, record, evidence) written through :mod:`lossbench.record`,
with per-image counts from predictions made up to a stated accuracy, so every expected number is
known without training a model.
"""

from __future__ import annotations

import json
import math
import re
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.cli import SMOKE, lossbench_cli
from helpers.runs import CLASSES, predictions, suite, write_run

from lossbench.config import ConfigError, load_config
from lossbench.record import read_evidence, read_record, record_path, scan_runs, write_record
from lossbench.report import RESULT_COLUMNS, write_report
from lossbench.report.analyse import LEADERBOARD_COLUMNS, analyse
from lossbench.report.gather import collect_runs
from lossbench.report.stats import LossScores, compare, image_draws, replicate_scores, seed_mean
from lossbench.report.tables import leaderboard_md

def test_gather_keeps_the_suites_runs_and_names_the_missing_the_stale_and_the_damaged(tmp_path):
    cfg = suite(tmp_path, "[ce, dice, focal]", "[0, 1]")
    for seed in (0, 1):
        write_run(tmp_path, cfg, "ce", seed, predictions(0.9, seed))
    write_run(tmp_path, cfg, "dice", 0, predictions(0.9, 0))
    damaged = write_run(tmp_path, cfg, "focal", 0, predictions(0.9, 0))
    record_path(damaged).write_text('{"status": "ok", "suite"')  # truncated
    other = load_config(SMOKE, ["losses=[ce]", "optim.lr=0.5"])  # another config: another hash
    write_run(tmp_path, other, "ce", 0, predictions(0.9, 0))

    found = collect_runs(tmp_path)
    assert sorted((r.label, r.seed) for r in found.current) == [("ce", 0), ("ce", 1), ("dice", 0)]
    assert len(found.stale) == 1 and found.stale[0].loss_params == {} and found.stale[0].label == "ce"
    assert [d.path for d in found.damaged] == [record_path(damaged)]
    assert found.missing == [("dice", 1, cfg.trainer.max_epochs), ("focal", 1, cfg.trainer.max_epochs)]  # damaged: not missing


def test_a_clearly_better_loss_is_best_and_alone_in_the_best_set(tmp_path):
    cfg = suite(tmp_path, "[ce, dice, focal]")
    for seed in (0, 1, 2):
        write_run(tmp_path, cfg, "ce", seed, predictions(0.95, seed))
        write_run(tmp_path, cfg, "dice", seed, predictions(0.70, seed))
        write_run(tmp_path, cfg, "focal", seed, predictions(0.50, seed))
    analysis = analyse(collect_runs(tmp_path))
    (b,) = analysis.budgets
    assert b.miou.best == "ce" and b.miou.in_best_set == {"ce": True, "dice": False, "focal": False}
    assert b.miou.ruled_out["dice"].by == "ce" and b.miou.ruled_out["focal"].by in ("ce", "dice")
    t = b.table.set_index("loss")
    # the estimate is the mean over seeds of each run's recorded test mean IoU
    recorded = [read_record(d).miou for d in sorted((tmp_path / "ce").iterdir())]
    assert t.at["ce", "miou"] == pytest.approx(np.mean(recorded))
    assert t.at["ce", "miou_lo"] <= t.at["ce", "miou"] <= t.at["ce", "miou_hi"]
    assert t.at["dice", "miou_hi"] < t.at["ce", "miou_lo"]  # far apart: the intervals do not meet
    assert list(analysis.leaderboard.columns) == LEADERBOARD_COLUMNS and len(analysis.leaderboard) == 3
    md = leaderboard_md(b, "miou", analysis.focus)
    rows = [line for line in md.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert "`ce` | **in**" in rows[0] and "`dice` | out: below `ce` (p" in rows[1]


def test_the_same_predictions_under_two_labels_are_both_in_the_best_set(tmp_path):
    cfg = suite(tmp_path, "[ce, dice]")
    for seed in (0, 1, 2):
        for label in ("ce", "dice"):
            write_run(tmp_path, cfg, label, seed, predictions(0.8, seed))
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert b.miou.in_best_set == {"ce": True, "dice": True} and b.miou.ruled_out == {}
    assert b.miou.difference["dice"].delta == 0.0
    # issue 30 (17): at one seed the same predictions read "−0.000 [-0.000, -0.000], p=0.000" and left one out
    for seed in (1, 2):
        for label in ("ce", "dice"):
            (next((tmp_path / label).glob(f"seed{seed}-*")) / "metrics.json").unlink()
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert b.level == "image" and b.miou.members == ["ce", "dice"]
    md = leaderboard_md(b, "miou", "spot")
    assert "0.000 (the same scores: nothing tells them apart)" in md and "-0.000" not in md and "−0.000" not in md


def test_a_class_never_predicted_is_flagged_degenerate_and_a_missing_seed_incomplete(tmp_path):
    cfg = suite(tmp_path, "[ce, dice]")
    for seed in (0, 1, 2):
        write_run(tmp_path, cfg, "ce", seed, predictions(0.9, seed))
    for seed in (0, 1):  # seed 2 of dice never ran
        write_run(tmp_path, cfg, "dice", seed, predictions(0.9, seed, never=2))
    analysis = analyse(collect_runs(tmp_path))
    t = analysis.budgets[0].table.set_index("loss")
    assert t.at["dice", "degenerate"] == [("spot", 0.0, 0)] and t.at["ce", "degenerate"] == []
    assert t.at["dice", "flags"].startswith("degenerate: `spot` (seed 0)")
    assert "incomplete" in t.at["dice", "flags"] and "incomplete" not in t.at["ce", "flags"]
    assert t.at["dice", "focus_iou"] == 0.0


def test_the_report_writes_every_file_and_regenerates_byte_identical(tmp_path):
    out, report = tmp_path / "runs", tmp_path / "report"
    cfg = suite(out, "[ce, dice]", "[0, 1]")
    for seed in (0, 1):
        write_run(out, cfg, "ce", seed, predictions(0.9, seed))
        write_run(out, cfg, "dice", seed, predictions(0.6, seed))
    readme = write_report(out, report, log_to_wandb=False)
    text = readme.read_text()
    assert "## Verdict" in text and "### Leaderboard by mean IoU" in text and "## Failed and unfinished runs" in text
    assert "**mean IoU**: best set (these trained models, on this test set): `ce` (1 of 2;" in text
    results = pd.read_csv(report / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS and len(results) == 2 * 2 * len(CLASSES)
    first = {p.name: p.read_bytes() for p in sorted(report.iterdir())}
    assert {"README.md", "results.csv", "leaderboard.csv", "intervals.png", "learning_curves.png"} <= set(first)
    write_report(out, report, log_to_wandb=False)
    assert {p.name: p.read_bytes() for p in sorted(report.iterdir())} == first
    assert not math.isnan(pd.read_csv(report / "leaderboard.csv")["miou_lo"][0])


def _rising_history(rec_dir: Path, end: float) -> None:
    """Give a run a validation curve that climbs to ``end`` over 4 epochs."""
    rec = read_record(rec_dir)
    rec.history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.0 / e, "val_miou": end - 0.05 * (4 - e),
                    "val_iou/spot": 0.01} for e in (1, 2, 3, 4)]  # fmt: skip
    write_record(rec_dir, rec)


def test_one_seed_says_training_randomness_is_not_measured_and_what_was_still_rising(tmp_path):
    # what a new user's first short run on their own data must read: no seed-level claim, the rare class not
    # learned, validation still rising — before any ranking
    cfg = suite(tmp_path, "[ce, dice, lovasz_softmax]", "[0]")
    write_run(tmp_path, cfg, "ce", 0, predictions(0.95, 0, never=2))
    _rising_history(write_run(tmp_path, cfg, "dice", 0, predictions(0.7, 0, never=2)), 0.6)
    write_run(tmp_path, cfg, "lovasz_softmax", 0, predictions(0.5, 0, never=2))
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    verdict = readme[readme.index("## Verdict") : readme.index("### Leaderboard")]
    lines = [line for line in verdict.splitlines() if line.startswith("- ")]
    assert lines[0].startswith("- **Who learned what**")
    # issue 30 (5): a class no loss learned names no "best" at zero
    assert "  - **not learned by any loss**: `spot` (best 0.00) — a ranking on them means nothing yet" in verdict
    assert "No loss learned" not in readme and "the best test IoU on it is 0.000" not in readme
    assert lines[1].startswith("- **Still improving when training stopped**: the validation mean IoU of `dice` (+0.050)")
    assert lines[2].startswith("- **1 seed per loss: training randomness is not measured.**")
    # dice's validation rose past ce's while ce tests higher: both orders are shown
    assert lines[3].startswith("- **Validation and test order the losses differently** (mean IoU) — test: `ce`")
    assert lines[4].startswith("- **What this suite can detect**: one seed measures no training randomness")
    assert "best set (these trained models, on this test set): `ce` (1 of 3;" in verdict
    assert "P(best)" not in verdict  # one seed: no chance of being best is claimed for the losses
    assert "beyond the" not in verdict  # no seed-level certainty from one seed
    assert "unstable" not in readme and "level" in pd.read_csv(tmp_path / "report" / "leaderboard.csv")
    assert set(pd.read_csv(tmp_path / "report" / "leaderboard.csv")["level"]) == {"image"}


def test_three_seeds_compare_the_losses_at_seed_level_in_words(tmp_path):
    cfg = suite(tmp_path, "[ce, dice]")
    for seed in (0, 1, 2):
        write_run(tmp_path, cfg, "ce", seed, predictions(0.9, seed))
        write_run(tmp_path, cfg, "dice", seed, predictions(0.9, 10 + seed))  # as good: other draws of the same accuracy
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "**3 seeds per loss: training randomness is measured.**" in readme
    assert "**mean IoU**: no loss can be ruled out as the best at 95 % — these seeds cannot separate them" in readme
    assert "**What this suite can detect**: among 2 losses with 3 seeds each" in readme and "6 seeds: " in readme
    assert "set a floor: even with unlimited seeds" in readme
    assert "Hsu's criterion" in readme and "moderated" in readme and "Holm" not in readme
    assert "tied" not in readme.lower() and "Holm p" not in readme
    # a real gap of one point of accuracy on 3 seeds is found (the last round's test could not find it)
    for seed in (0, 1, 2):
        write_run(tmp_path, cfg, "dice", seed, predictions(0.89, seed))
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "**mean IoU**: best set: `ce` (1 of 2; cannot be ruled out as the best at 95 %); ruled out as the best: `dice` (below `ce`)" in readme


@pytest.mark.slow
def test_a_a_on_real_runs_of_one_loss_split_into_two_labels_on_disjoint_seeds(tmp_path, data_cache):
    # Real training randomness: eight runs of one loss; every way of giving three seeds to a label "a" and
    # three others to "b" is a comparison of two losses that are the same in distribution.
    out = tmp_path / "runs"
    r = lossbench_cli("compare", "--config", str(SMOKE), "--out", str(out), "--report", str(tmp_path / "rep"), "--no-wandb",
                      "--jobs", "2", "--set", "losses=[ce]", "seeds=[0, 1, 2, 3, 4, 5, 6, 7]", f"data.cache_dir={data_cache}")  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    records = {rec.seed: rec for rec in scan_runs(out).records if rec.ok}
    assert sorted(records) == list(range(8))
    counts = {seed: read_evidence(rec.run_dir).counts for seed, rec in records.items()}
    names = records[0].classes
    classes = [names.index(c) for c in records[0].test["per_class"]]
    weights = image_draws(next(iter(counts.values())).shape[0], 400)

    def scores_of(seeds):
        c = np.stack([counts[s] for s in seeds])
        per_seed = np.array([records[s].miou for s in seeds])
        return LossScores(per_seed, seed_mean(replicate_scores(c, weights, classes, None)[0]))

    calls = []
    for a in combinations(range(8), 3):
        for b in combinations([s for s in range(8) if s not in a], 3):
            if a < b:
                c = compare({"a": scores_of(a), "b": scores_of(b)}, 0.05)
                assert c.level == "seed"
                calls.append(not all(c.in_best_set.values()))
    assert len(calls) == 280
    assert np.mean(calls) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / len(calls)), f"false-positive rate {np.mean(calls):.3f}"


def test_one_loss_and_one_seed_is_worded_as_such(tmp_path):
    cfg = suite(tmp_path, "[ce]", "[0]")
    write_run(tmp_path, cfg, "ce", 0, predictions(0.9, 0))
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "the only loss with results here — nothing to compare it with" in readme
    assert "1 losses" not in readme and "every other loss" not in readme and "beyond the" not in readme


def test_a_hundred_bootstrap_replicates_and_five_separated_losses_leave_one_in_the_best_set(tmp_path):
    # the old bootstrap p-value had a floor of 2/(B+1): with B = 100, Holm over 4 comparisons tied everything
    cfg = suite(tmp_path, "[ce, dice, focal, iou, tversky]", "[0, 1, 2]", "report.bootstrap=100")
    for seed in (0, 1, 2):
        for label, accuracy in zip(("ce", "dice", "focal", "iou", "tversky"), (0.95, 0.75, 0.55, 0.4, 0.3)):
            write_run(tmp_path, cfg, label, seed, predictions(accuracy, seed))
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert b.replicates == 100 and b.miou.best == "ce"
    assert b.miou.members == ["ce"]


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("truncate", "File is not a zip file|not a zip|truncat|EOF|cannot"),
        ("short axis", r"counts is \[24, 3, 2\], expected \[images, classes, 3\]"),
        ("float counts", "counts must hold non-negative integer counts, found float64"),
    ],
)
def test_damaged_evidence_is_named_and_costs_only_its_own_run(tmp_path, damage, why):
    # a truncated evidence.npz removed the intervals of every loss; a short last axis raised an IndexError;
    # float counts with a NaN were cast silently and changed an interval; then (issue 34) it cost its loss every
    # seed — now only its own run is left out
    cfg = suite(tmp_path, "[ce, dice, focal]")
    for seed in (0, 1, 2):
        write_run(tmp_path, cfg, "ce", seed, predictions(0.9, seed))
        write_run(tmp_path, cfg, "focal", seed, predictions(0.6, seed))
        bad = write_run(tmp_path, cfg, "dice", seed, predictions(0.8, seed))
    path = bad / "evidence.npz"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    else:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        if damage == "short axis":
            arrays["counts"] = arrays["counts"][..., :2]
        else:
            arrays["counts"] = arrays["counts"].astype(np.float64)
            arrays["counts"][0, 0, 0] = np.nan
        np.savez(path, **arrays)
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert b.no_evidence == [] and [e.path for e in b.damaged_evidence] == [path]
    assert re.search(why, b.damaged_evidence[0].why), b.damaged_evidence[0].why
    assert f"Damaged evidence, its run left out of every statistic: `{path}`" in readme
    t = b.table.set_index("loss")
    assert not math.isnan(t.at["ce", "miou_lo"]) and not math.isnan(t.at["focal", "miou_lo"])  # the others keep theirs
    assert not math.isnan(t.at["dice", "miou_lo"]) and t.at["dice", "seeds"] == 2 and b.level == "seed"


def test_class_names_cannot_break_the_reports_markdown(tmp_path, monkeypatch):
    # class names went into the Markdown unescaped: `|` added a table column, <script> was written raw,
    # backticks broke code spans
    hostile = ["back|ground", "<script>alert(1)</script>", "tick`s"]
    monkeypatch.setattr(sys.modules["helpers.runs"], "CLASSES", hostile)
    cfg = suite(tmp_path, "[ce, dice]", "[0, 1, 2]")
    for seed in (0, 1, 2):
        for label in ("ce", "dice"):
            run_dir = write_run(tmp_path, cfg, label, seed, predictions(0.9, seed, never=2))
            rec = read_record(run_dir)
            rec.focus = hostile[2]
            write_record(run_dir, rec)
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    without_code = re.sub(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", "", readme)
    assert "<script>" not in without_code and "&lt;script&gt;" in readme  # shown, never run
    assert "``tick`s``" in readme  # a code span that holds the backtick
    for block in readme.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:  # every row of every table has as many cells as its header
            assert len({len(re.findall(r"(?<!\\)\|", line)) for line in rows}) == 1, rows[0]


def test_the_suite_has_one_wandb_summary_run_that_each_report_updates_with_typed_tables(tmp_path):
    # issue 36 (5): each compare or report added a summary run (7 runs for 4 trainings); in_best_set was the string
    # 'False'. (Before: a fixed id made `wandb sync` find two offline runs with one id — one is kept, the latest.)
    from lossbench.report.summary import summary_id

    cfg = suite(tmp_path, "[ce, dice]", "[0]")
    write_run(tmp_path, cfg, "ce", 0, predictions(0.9, 0))
    write_run(tmp_path, cfg, "dice", 0, predictions(0.6, 0))
    write_report(tmp_path, tmp_path / "report")
    first = sorted((tmp_path / "wandb").glob("offline-run-*"))
    write_report(tmp_path, tmp_path / "report")
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(first) == len(runs) == 1 and runs[0].name.endswith(summary_id(cfg.suite, tmp_path)), [r.name for r in runs]
    assert summary_id(cfg.suite, tmp_path) == summary_id(cfg.suite, tmp_path / ".") != summary_id(cfg.suite, tmp_path / "other")
    (table_file,) = runs[0].glob("files/media/table/leaderboard_*.table.json")
    table = json.loads(table_file.read_text())
    column = [row[table["columns"].index("in_best_set")] for row in table["data"]]
    assert set(column) <= {True, False, None} and True in column, column


def test_a_loss_with_a_caveat_is_explained_before_the_ranks(tmp_path):
    # issue 19: lovasz_hinge learned nothing by argmax while its training loss fell — the report says why
    cfg = suite(tmp_path, "[ce, {name: lovasz_hinge, label: hinge}]", "[0]")
    for label in ("ce", "hinge"):
        write_run(tmp_path, cfg, label, 0, predictions(0.9, 0))
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    notes = readme.split("**Before reading the ranks**:")[1].split("## Verdict")[0]
    assert "`hinge` (lovasz_hinge): a binary loss" in notes and "use lovasz\\_softmax" in notes and "`ce`" not in notes


def test_a_raced_suite_reports_its_rounds_and_what_the_next_round_trains(tmp_path):
    cfg = suite(tmp_path, "[ce, dice, focal]", "[0, 1, 2]", "race={max_seeds: 6}")
    accuracy = {"ce": 0.9, "dice": 0.9, "focal": 0.4}  # ce and dice: the same predictions
    for seed in (0, 1, 2):
        for label, a in accuracy.items():
            write_run(tmp_path, cfg, label, seed, predictions(a, seed))
    (b,) = analyse(collect_runs(tmp_path)).budgets
    race = b.race
    assert race.schedule == [3, 6] and len(race.rounds) == 1 and race.rounds[0].alpha == pytest.approx(0.05 / 3)
    assert "focal" in race.rounds[0].ruled_out and race.next == (["ce", "dice"], 6)
    assert b.miou.in_best_set == {"ce": True, "dice": True, "focal": False}
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "### The race (2 epochs)" in readme and "**The race is not finished**: round 2 trains 6 seeds for 2 losses" in readme
    assert "out: below `" in readme and ", round 1)" in readme
    # the next round's seeds (3, 4, 5) for the losses still racing, and the race ends at the schedule's end
    for seed in (3, 4, 5):
        for label in ("ce", "dice"):
            write_run(tmp_path, cfg, label, seed, predictions(accuracy[label], seed))
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert b.race.next is None and len(b.race.rounds) == 2 and b.race.rounds[1].racing == ["ce", "dice"]
    assert b.race.runs == 9 + 6 and b.race.ended.startswith("the schedule's last round (6 seeds per loss)")
    t = b.table.set_index("loss")
    assert t.at["ce", "seeds"] == 6 and t.at["focal", "seeds"] == 3 and not t["incomplete"].any()
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "**The race ended** (the schedule's last round (6 seeds per loss) is done) after 15 runs" in readme


def test_a_race_trains_a_round_only_when_the_pace_of_the_rounds_so_far_leaves_room_within_max_minutes(tmp_path):
    # a 2-core machine twice as slow as another took 10 min for make compare's first round: a race capped in minutes
    # stops there and says what it would need; the runs' records decide, so the report and a rerun decide the same

    cfg = suite(tmp_path, "[ce, dice, focal]", "[0, 1, 2]", "race={max_seeds: 6, max_minutes: 1.5}")
    t0 = 1_000_000.0
    for i, seed in enumerate((0, 1, 2)):
        for j, label in enumerate(("ce", "dice", "focal")):  # the same predictions: none is ruled out
            run_dir = write_run(tmp_path, cfg, label, seed, predictions(0.9, seed))
            rec = read_record(run_dir)
            pause = 8 * 3600 if i == 2 else 0  # the last seed's runs after an 8-hour pause (a queue, an interruption)
            rec.started_at, rec.finished_at = t0 + pause + 20 * i + j, t0 + pause + 20 * (i + 1)  # round 1: 60 s for 9 runs
            rec.wall_s = rec.finished_at - rec.started_at
            write_record(run_dir, rec)
    (b,) = analyse(collect_runs(tmp_path)).budgets
    race = b.race
    # the pace is the time the runs trained, not the pause (issue 34: first start to last end projected 4h01m)
    assert race.rounds[0].seconds == pytest.approx(60.0) and race.next is None and race.stopped_by_budget
    assert race.ended == ("the next round (9 runs: 6 seeds for each of the 3 losses left) would take about 1m00s at the pace "
                          "of the rounds so far (1m00s of training for 9 runs), past race.max_minutes (1.5); race.max_minutes: 2 "
                          "gives it the time")  # fmt: skip
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    verdict = readme.split("## Verdict")[1].split("###")[0]
    assert "- **This budget could not separate them**: the race stopped with 3 losses in the best set, since the next round" in verdict
    # the time it asks for: round 2 is asked for, and the sentence is gone
    suite(tmp_path, "[ce, dice, focal]", "[0, 1, 2]", "race={max_seeds: 6, max_minutes: 2}")
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert b.race.next == (["ce", "dice", "focal"], 6) and not b.race.stopped_by_budget
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "could not separate them" not in readme


def test_a_race_is_checked_before_anything_trains():
    for setting, words in (("seeds=[0, 1]", "list at least 3"), ("race.max_seeds=3", "must be above the 3 seeds"),
                           ("race.max_runs=6", "leaves no run for a second round"), ("race.max_minutes=0", "greater than 0"),
                           ("race.max_minutes=nan", "greater than 0"), ("race.max_minutes=inf", "finite"), ("race.max_minutes=true", "race.max_minutes")):  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            load_config(SMOKE, ["losses=[ce, dice]", "seeds=[0, 1, 2]", "race={max_seeds: 6}", setting])


def test_report_honours_its_report_settings_and_names_another_suites_folder(tmp_path):
    # issue 30 (12): report --config S --set report.focus=blob report.bootstrap=100 ignored both settings, and
    # report --config on another suite's folder silently wrote that suite's report
    from lossbench.config import dump_yaml

    out = tmp_path / "runs"
    cfg = suite(out, "[ce, dice]")
    for seed in (0, 1, 2):
        write_run(out, cfg, "ce", seed, predictions(0.9, seed))
        write_run(out, cfg, "dice", seed, predictions(0.7, seed))
    config = tmp_path / "smoke.yaml"
    config.write_text(dump_yaml(cfg))
    report = tmp_path / "report"
    r = lossbench_cli("report", "--config", str(config), "--out", str(out), "--report", str(report), "--no-wandb",
                      "--set", "report.focus=blob", "report.bootstrap=100")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    readme = (report / "README.md").read_text()
    assert "### Leaderboard by `blob` IoU (the focus class)" in readme and "100 replicates" in readme
    # --out alone takes report.* settings too, on the folder's own suite file
    r = lossbench_cli("report", "--out", str(out), "--report", str(report), "--no-wandb", "--set", "report.focus=spot")
    assert r.returncode == 0 and "### Leaderboard by `spot` IoU" in (report / "README.md").read_text()
    r = lossbench_cli("report", "--out", str(out), "--report", str(report), "--no-wandb", "--set", "data.seed=3")
    assert r.returncode != 0 and "changes only the report: section" in r.stderr and "'data.seed=3'" in r.stderr
    # another suite's config on this folder is one sentence naming what differs
    other = tmp_path / "other.yaml"
    other.write_text(dump_yaml(cfg.model_copy(update={"suite": "other", "seeds": [0, 1]})))
    r = lossbench_cli("report", "--config", str(other), "--out", str(out), "--report", str(report), "--no-wandb")
    assert r.returncode != 0 and "is not the suite whose runs are in" in r.stderr and "differs in suite, seeds" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_verdict_leads_with_who_learned_what_and_says_each_degenerate_run_once(tmp_path):
    # issue 30 (4, 5): at one seed and one epoch the verdict crowned a 0.005 lead while the finding — one loss alone
    # learned a class, at the cost of another — was only in the tables; each degenerate list appeared three times
    cfg = suite(tmp_path, "[ce, dice, focal, lovasz_softmax]", "[0]")
    for label in ("ce", "dice", "focal"):
        rec_dir = write_run(tmp_path, cfg, label, 0, predictions(0.9, 0, never=2))
        rec = read_record(rec_dir)
        rec.history = rec.history[:1]  # one epoch
        write_record(rec_dir, rec)
    alone = predictions(0.9, 0)
    alone[(alone == 1) & (np.random.default_rng(0).random(alone.shape) < 0.7)] = 0  # learns spot, pays on blob
    rec_dir = write_run(tmp_path, cfg, "lovasz_softmax", 0, alone)
    rec = read_record(rec_dir)
    rec.history = rec.history[:1]
    write_record(rec_dir, rec)
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    verdict = readme[readme.index("## Verdict") : readme.index("### Leaderboard")]
    first = verdict.split("\n- ")[1]
    assert first.startswith("**Who learned what**")
    assert "  - `spot`: learned only by `lovasz_softmax` 0." in first and "not by the other 3 losses (at most 0.00)" in first
    assert "`lovasz_softmax` pays on `blob` (0." in first
    assert "- **Still improving?** Cannot be told from one epoch" in verdict
    assert "P(best)" not in verdict
    # the degenerate runs: in "who learned what" and in the flags column, not again in the verdict's lines
    assert "degenerate" not in verdict.replace("flagged degenerate", "")
    assert readme.count("degenerate: `spot` (seed 0)") == 2 * 3  # the three losses' rows of both leaderboards
    assert "**0.000" not in readme  # nothing is crowned at zero


def test_a_column_whose_best_reads_zero_crowns_nobody():
    from lossbench.report.tables import per_class_md

    df = pd.DataFrame({"loss": ["a", "b"], "class": ["spot", "spot"], "iou": [0.0004, 0.0], "status": ["ok", "ok"]})
    assert "**" not in per_class_md(df, "iou", ["spot"], ["a", "b"])
    df.loc[0, "iou"] = 0.2
    assert "**0.200**" in per_class_md(df, "iou", ["spot"], ["a", "b"])


def test_a_report_of_a_narrowed_compare_is_what_was_asked_and_the_rest_is_one_line(tmp_path):
    # issue 30 (5): compare --losses ce --seeds 0 flagged every loss "incomplete" and listed 8 runs "missing"
    cfg = suite(tmp_path, "[ce, dice, focal]")
    write_run(tmp_path, cfg, "ce", 0, predictions(0.9, 0))
    write_run(tmp_path, cfg, "dice", 0, predictions(0.8, 0))
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False, asked=({"ce"}, {0})).read_text()
    assert "incomplete" not in readme and "not trained yet |" not in readme
    assert "| `dice` |" not in readme  # in no table: dice seed 0 was trained, but not asked for
    assert "This report is what `compare --losses/--seeds` was asked; 7 other runs of the suite" in readme
    whole = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()  # lossbench report: the suite
    assert whole.count("| missing | not trained yet |") == 7 and "incomplete" in whole


def _figures(monkeypatch):
    """The figures the report's plot functions make, kept open to read their layout (not their pixels)."""
    import lossbench.report.plots as plots

    made = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: made.append(fig))
    return made


def test_plot_layouts_wrap_panels_fix_colours_by_name_and_say_one_epoch(tmp_path, monkeypatch):
    # issue 30 (6): 11 classes made a 3,872×418 row of panels; labels overlapped; a loss's colour changed between
    # reruns; one epoch drew an empty learning-curve plot
    import matplotlib

    matplotlib.use("Agg")
    import lossbench.report.plots as plots

    cfg = suite(tmp_path, "[ce, dice, lovasz_softmax]", "[0]")
    for label, a in (("ce", 0.9), ("dice", 0.8), ("lovasz_softmax", 0.7)):
        rec_dir = write_run(tmp_path, cfg, label, 0, predictions(a, 0))
        rec = read_record(rec_dir)
        rec.history = rec.history[:1]
        write_record(rec_dir, rec)
    found = collect_runs(tmp_path)
    d = plots.plot_data(analyse(found), found.current)
    made = _figures(monkeypatch)
    classes = [f"class{i}" for i in range(11)]
    rows = [{"loss": k, "class": c, "sensitivity": 0.5, "precision": 0.5, "status": "ok"} for k in d.order for c in classes]
    plots._plot_precision_recall(plots.PlotData(pd.DataFrame(rows), d.b, d.records, classes, d.focus, d.order), tmp_path / "pr.png")
    grid = [ax for ax in made[-1].axes if ax.get_title()]
    assert len(grid) == 11 and {ax.get_subplotspec().get_geometry()[:2] for ax in grid} == {(3, 4)}
    plots._plot_miou_vs_focus(d, tmp_path / "m.png")
    (ax,) = made[-1].axes
    assert not ax.texts and [t.get_text() for t in ax.get_legend().get_texts()] == d.order  # a legend, no labels at points
    plots._plot_learning_curves(d, tmp_path / "l.png")
    assert "one epoch: a point per loss" in made[-1]._suptitle.get_text()
    assert all(line.get_marker() == "o" for line in made[-1].axes[0].get_lines())
    # a loss's colour is its name's, whatever else the suite holds; the documents' losses each have their own
    assert d.colors["dice"] == plots.loss_colour("dice")
    other = plots.PlotData(d.df, d.b, d.records, d.classes, d.focus, ["dice", "zz_mine", "ce"])
    assert other.colors["dice"] == d.colors["dice"] and other.colors["ce"] == d.colors["ce"]
    assert len({plots.loss_colour(k) for k in plots.BUILTIN_ORDER}) == len(plots.BUILTIN_ORDER)
    from lossbench.losses import list_losses

    assert {s if isinstance(s, str) else s.name for s in list_losses()} <= set(plots.BUILTIN_ORDER)  # every built-in loss
    assert plots.loss_colour("zz_mine") == plots.loss_colour("zz_mine") not in {plots.loss_colour(k) for k in plots.BUILTIN_ORDER}


def test_a_test_set_of_three_cases_gives_no_image_interval_and_says_why(tmp_path, monkeypatch):
    # issue 30 (6): 2 test volumes gave an interval [0.537, 0.537] with no word that 2 cannot give one
    import helpers.runs

    monkeypatch.setattr(helpers.runs, "N", 3)
    cfg = suite(tmp_path, "[ce, dice]", "[0]")
    write_run(tmp_path, cfg, "ce", 0, predictions(0.9, 0))
    write_run(tmp_path, cfg, "dice", 0, predictions(0.7, 0))
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert b.images == 3 and b.too_few_cases and math.isnan(b.miou.interval["ce"][0])
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "- **Only 3 test images**: too few to measure what other test images would give" in readme
    assert "no interval is given" in readme and "at least 5 images" in readme
    lb = pd.read_csv(tmp_path / "report" / "leaderboard.csv")
    assert lb["miou_lo"].isna().all()


def test_a_race_on_the_focus_class_rules_out_by_the_focus_iou(tmp_path):
    cfg = suite(tmp_path, "[ce, dice, focal]", "[0, 1, 2]", "race={max_seeds: 6, score: focus}")
    for seed in (0, 1, 2):
        write_run(tmp_path, cfg, "ce", seed, predictions(0.9, seed))
        write_run(tmp_path, cfg, "dice", seed, predictions(0.9, seed))
        write_run(tmp_path, cfg, "focal", seed, predictions(0.9, seed, never=2))  # never finds the focus class (spot)
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert b.race_on == "focus" and "focal" in b.race.rounds[0].ruled_out
    assert b.focus.in_best_set == {"ce": True, "dice": True, "focal": False} and b.focus.ruled_out == b.race.ruled_out
    assert b.race.next == (["ce", "dice"], 6)
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "on the focus class's IoU" in readme


def test_a_damaged_or_missing_run_leaves_out_that_run_not_its_loss_nor_the_suites_seed_level(tmp_path):
    # issue 34's probes: one damaged evidence.npz dropped every seed of its loss from the best set ("the only loss
    # with results here"); one unreadable metrics.json turned the whole report to "training randomness is not
    # measured"; a loss left with one seed (two failed) ruled its rival out "p<0.001" at zero seed variance.
    cfg = suite(tmp_path, "[ce, dice, fg]")
    dirs = {}
    for seed in (0, 1, 2):
        dirs["ce", seed] = write_run(tmp_path, cfg, "ce", seed, predictions(0.9, seed))
        dirs["dice", seed] = write_run(tmp_path, cfg, "dice", seed, predictions(0.9, 10 + seed))
        dirs["fg", seed] = write_run(tmp_path, cfg, "fg", seed, predictions(0.6, seed))
    (dirs["ce", 0] / "evidence.npz").write_bytes(b"PK\x03\x04 cut short")
    record_path(dirs["dice", 1]).write_text('{"status": "ok", "suite"')  # unreadable
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert b.level == "seed" and b.scores["ce"].n == 2 and b.scores["dice"].n == 2 and b.scores["fg"].n == 3
    assert "ce" not in b.no_evidence and b.miou.ruled_out.keys() == {"fg"} and b.miou.members == sorted(["ce", "dice"], key=lambda k: -b.miou.estimate[k])
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "training randomness is measured" in readme and "its run left out of every statistic" in readme
    # a loss with one seed neither rules out nor is ruled out at seed level
    solo = tmp_path / "solo"
    cfg = suite(solo, "[ce, fg]")
    write_run(solo, cfg, "ce", 0, predictions(0.9, 0))
    for seed in (0, 1, 2):
        write_run(solo, cfg, "fg", seed, predictions(0.6, seed))
    (b,) = analyse(collect_runs(solo)).budgets
    assert b.level == "seed" and b.miou.ruled_out == {} and b.miou.in_best_set == {"ce": True, "fg": True}


def test_a_class_no_loss_learned_gets_no_best_set_and_no_ruled_out(tmp_path):
    # issue 34: the verdict said `Bicyclist` was learned by no loss, then gave a best set on its IoU (dice 0.004)
    cfg = suite(tmp_path, "[ce, dice]", "[0, 1, 2]", "report.focus=spot")
    from helpers.runs import targets

    for seed in (0, 1, 2):
        write_run(tmp_path, cfg, "ce", seed, predictions(0.9, seed, never=2))
        p = predictions(0.9, 10 + seed, never=2)
        found = np.argwhere(targets() == 2)[: 2 + seed]  # dice finds 2-4 of the 96 spot pixels: IoU about 0.03
        p[tuple(found.T)] = 2
        write_run(tmp_path, cfg, "dice", seed, p)
    (b,) = analyse(collect_runs(tmp_path)).budgets
    assert 0 < b.focus.estimate["dice"] < 0.05
    assert b.focus.best is None and not any(b.focus.in_best_set.values()) and b.focus.ruled_out == {}
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    verdict = readme.split("## Verdict")[1].split("###")[0]
    assert "- **`spot` IoU**: no loss learned it (the highest 0.03" in verdict
    assert "`spot` IoU**: best set" not in verdict


def test_the_report_names_the_machine_and_flags_runs_from_several_kinds(tmp_path):
    cfg = suite(tmp_path, "[ce, dice]")
    avx2 = {"cpu": "AMD EPYC", "isa": "AVX2", "gpu": None, "torch": "2.14.1", "cuda": None, "onednn": "3.12.0"}
    for seed in (0, 1, 2):
        for label in ("ce", "dice"):
            run_dir = write_run(tmp_path, cfg, label, seed, predictions(0.9, 10 * (label == "dice") + seed))
            rec = read_record(run_dir)
            rec.machine = avx2 | ({"isa": "AVX512"} if (label, seed) == ("dice", 2) else {})
            write_record(run_dir, rec)
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "**The runs trained on 2 kinds of machine**" in readme.split("## Verdict")[1].split("###")[0]
    assert "AMD EPYC (AVX512); torch 2.14.1, oneDNN 3.12.0 (1 run)" in readme
    rec = read_record(run_dir)
    rec.machine = avx2
    write_record(run_dir, rec)
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "- machine: AMD EPYC (AVX2); torch 2.14.1, oneDNN 3.12.0 — a rerun reproduces these numbers bit for bit on the same kind" in readme
    assert "kinds of machine" not in readme


def test_with_one_seed_the_verdict_shows_the_validation_and_test_orders_when_they_differ(tmp_path):
    # issue 34: a new user on CamVid (1 seed, 1 epoch) read "ruled out (p<0.001)" although the validation and test
    # splits put the losses in opposite orders, which the report never showed side by side
    cfg = suite(tmp_path, "[ce, dice]", "[0]")
    write_run(tmp_path, cfg, "ce", 0, predictions(0.9, 0), val_miou=0.40)
    write_run(tmp_path, cfg, "dice", 0, predictions(0.8, 0), val_miou=0.45)
    verdict = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text().split("## Verdict")[1].split("###")[0]
    assert "**Validation and test order the losses differently** (mean IoU) — test: `ce`" in verdict
    assert "validation: `dice` 0.450 > `ce` 0.400" in verdict and "these trained models on this test set only" in verdict
    write_run(tmp_path, cfg, "dice", 0, predictions(0.8, 0), val_miou=0.30)  # the same order: nothing said
    verdict = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text().split("## Verdict")[1]
    assert "order the losses differently" not in verdict


def test_report_set_shows_the_race_that_was_trained_and_says_what_it_changed(tmp_path):
    # issue 34: `report --set report.alpha=0.5` re-ran the race on paper — a history of runs and a round-1 exclusion
    # that compare never made
    cfg = suite(tmp_path, "[ce, dice, fg]", "[0, 1, 2]", "race={max_seeds: 6}")
    for seed in range(6):
        for label, acc in (("ce", 0.9), ("dice", 0.9), ("fg", 0.88)):
            if seed < 3 or label != "fg":
                write_run(tmp_path, cfg, label, seed, predictions(acc, 10 * (label == "dice") + seed))
    (trained,) = analyse(collect_runs(tmp_path)).budgets
    loose = cfg.report.model_copy(update={"alpha": 0.5})
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False, settings=loose).read_text()
    found = collect_runs(tmp_path)
    found.trained_report, found.cfg = cfg.report, found.cfg.model_copy(update={"report": loose})
    (asked,) = analyse(found).budgets
    assert [(r.seeds, r.alpha, sorted(r.ruled_out)) for r in asked.race.rounds] == \
        [(r.seeds, r.alpha, sorted(r.ruled_out)) for r in trained.race.rounds]  # fmt: skip
    assert "report.alpha 0.5 (trained at 0.05): the race shown is the one compare trained" in readme
    plain = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "the race shown is the one compare trained" not in plain


@pytest.mark.parametrize("edit", ["nan miou", "no test"])
def test_a_hand_edited_record_is_one_run_left_out_not_a_raw_error(tmp_path, edit):
    # issue 37, P45: `"miou": NaN` in one metrics.json ended the report with "'xerr' must not contain negative values";
    # P46: a record saying ok without `test` raised a raw TypeError
    import json

    cfg = suite(tmp_path, "[ce, dice]")
    for seed in (0, 1, 2):
        write_run(tmp_path, cfg, "ce", seed, predictions(0.9, seed))
        edited = write_run(tmp_path, cfg, "dice", seed, predictions(0.8, seed))
    data = json.loads(record_path(edited).read_text())
    if edit == "nan miou":
        data["test"]["miou"] = float("nan")
    else:
        del data["test"]
    record_path(edited).write_text(json.dumps(data))
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "training randomness is measured" in readme  # the other runs keep the suite's seed level
    if edit == "no test":
        assert "status ok but no test results" in readme


def test_one_out_holds_one_suite_and_a_folder_in_use_refuses_another_config(tmp_path):
    # issue 37, P60: compare B (another lr) on compare A's --out rewrote suite.yaml under A; A trained all its runs, then
    # said "no runs under runs/shared" with no report; P86: every run stale said "no runs" too
    import subprocess

    from lossbench import claim
    from lossbench.suite import check_one_suite

    out = tmp_path / "shared"
    cfg = suite(out, "[ce, dice]")
    run_dir = write_run(out, cfg, "ce", 0, predictions(0.9, 0))
    check_one_suite(cfg, out)  # the same suite: fine
    check_one_suite(load_config(SMOKE, ["losses=[ce, dice, focal]", "seeds=[0, 1, 2, 3]", "report.bootstrap=400"]), out)  # grows
    other = load_config(SMOKE, ["losses=[ce, dice]", "seeds=[0, 1, 2]", "report.bootstrap=400", "optim.lr=0.02"])
    check_one_suite(other, out)  # nobody trains there: another config may take the folder (its old runs are stale)
    holder = subprocess.Popen(["sleep", "600"])
    try:
        assert claim.claim(run_dir, claim.me("compare", pid=holder.pid)) is None
        with pytest.raises(ConfigError, match=rf"{out} is in use: compare \(pid {holder.pid} on .*\) trains ce seed 0 of suite "
                                              r"'smoke'.* differs in what its runs train"):  # fmt: skip
            check_one_suite(other, out)
    finally:
        holder.kill()
        holder.wait()
    renamed = load_config(SMOKE, ["suite=another", "losses=[ce]"])
    with pytest.raises(ConfigError, match=r"holds the runs of suite 'smoke'.*not of 'another': one --out holds one suite"):
        check_one_suite(renamed, out)
    # every run stale: said so, not "no runs"
    suite(out, "[ce, dice]", "[0, 1, 2]", "optim.lr=0.02")
    with pytest.raises(ValueError, match=r"were all trained with another config than its suite file says \(stale\)"):
        write_report(out, tmp_path / "report", log_to_wandb=False)


def test_a_narrowed_report_of_a_finished_race_claims_no_round_to_train(tmp_path):
    # issue 34: `compare --losses ce,dice` on a finished race said round 2 still had to train runs that existed
    cfg = suite(tmp_path, "[ce, dice, fg]", "[0, 1, 2]", "race={max_seeds: 6}")
    for seed in range(6):
        for label, acc in (("ce", 0.9), ("dice", 0.9), ("fg", 0.5)):
            if seed < 3 or label != "fg":
                write_run(tmp_path, cfg, label, seed, predictions(acc, 10 * (label == "dice") + seed))
    (whole,) = analyse(collect_runs(tmp_path)).budgets
    assert whole.race.next is None and len(whole.race.rounds) == 2
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False, asked=({"ce", "dice"}, {0, 1, 2})).read_text()
    assert "The race is not finished" not in readme and "round 2 trains" not in readme


def test_race_max_seeds_is_bounded_and_race_seeds_are_linear():
    # issue 34: race.max_seeds=100000 hung (the seeds were generated in quadratic time) and spent the early rounds'
    # level to about zero without a word
    import time

    from lossbench.plan import race_seeds

    with pytest.raises(ConfigError, match=r"race.max_seeds input should be less than or equal to 256, got 100000"):
        load_config(SMOKE, ["losses=[ce, dice]", "seeds=[0, 1, 2]", "race={max_seeds: 100000}"])
    cfg = load_config(SMOKE, ["losses=[ce, dice]", "seeds=[5, 9, 2]", "race={max_seeds: 256}"])
    t0 = time.perf_counter()
    seeds = race_seeds(cfg, 200_000)
    assert time.perf_counter() - t0 < 2.0 and seeds[:5] == [5, 9, 2, 0, 1] and len(set(seeds)) == 200_000


def test_the_wall_time_column_is_named_and_says_the_load_it_was_measured_under(tmp_path):
    cfg = suite(tmp_path, "[ce, dice]")
    loads = {0: [0.4, 1.9], 1: [2.2, 3.61], 2: [1.0, 1.2]}
    for seed in (0, 1, 2):
        for label in ("ce", "dice"):
            run_dir = write_run(tmp_path, cfg, label, seed, predictions(0.9, seed))
            rec = read_record(run_dir)
            rec.placement = {"host": "h", "cores": 2, "load": loads[seed]}
            write_record(run_dir, rec)
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "| seeds | wall s/run |" in readme and "| s/run |" not in readme
    assert "the 1-minute load average was 0.4–3.6 on its 2 cores when these runs started and ended" in readme
    rec.placement = None  # one run from before lossbench kept the load: the others still say theirs
    write_record(run_dir, rec)
    assert "0.4–3.6 on its 2 cores" in write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()


def test_the_predictions_panel_shows_a_large_image_cropped_around_the_focus_class_at_its_own_pixels(tmp_path, monkeypatch):
    # issue 36 (5): 360×480 street scenes at about 150 px an image hid poles and cyclists
    import matplotlib

    matplotlib.use("Agg")
    import lossbench.report.plots as plots
    from lossbench.record import PanelImage

    target = np.zeros((360, 480), np.int32)
    target[300:306, 440:443] = 2  # a 6×3 spot near the bottom-right corner
    assert plots.panel_crop(target, 2) == (slice(232, 360), slice(310, 480))  # 128×170: the image's aspect, 170 wide
    small = np.zeros((64, 64), np.int32)
    assert plots.panel_crop(small, 2) == (slice(0, 64), slice(0, 64))  # it fits: whole
    big = np.zeros((360, 480), np.int32)
    big[20:300, 40:400] = 2  # a focus region wider than a panel: the window grows to hold it
    rows, cols = plots.panel_crop(big, 2)
    assert rows.start <= 12 and rows.stop >= 308 and cols.start <= 32 and cols.stop >= 408
    cfg = suite(tmp_path, "[ce, dice]", "[0]")
    for label in ("ce", "dice"):
        run_dir = write_run(tmp_path, cfg, label, 0, predictions(0.9, 0))
        ev = read_evidence(run_dir)
        ev.panel = [PanelImage(image=np.full((360, 480, 3), 128, np.uint8), target=target, pred=target)]
        ev.panel_index = np.array([7])
        from lossbench.record import write_evidence

        write_evidence(run_dir, ev)
    found = collect_runs(tmp_path)
    d = plots.plot_data(analyse(found), found.current)
    made = _figures(monkeypatch)
    plots._plot_predictions(d, tmp_path / "p.png")
    fig = made[-1]
    shown = fig.axes[0].get_images()[0].get_array().shape[:2]
    assert shown == (128, 170)
    width_px = fig.axes[0].get_position().width * fig.get_size_inches()[0] * 110
    assert width_px >= 0.9 * 170  # about one screen pixel per image pixel, not a third of one
    assert "rows 232–359" in fig.axes[0].get_ylabel() and "cropped around the spot pixels" in fig._suptitle.get_text()


def test_the_report_says_the_share_of_the_wanted_training_the_runs_had(tmp_path):
    # issue 36 (3): a plan of 1 epoch where the data wanted 40 must not read as a verdict on trained models
    cfg = suite(tmp_path, "[ce, dice]", "[0]", "report.wanted_epochs=40")
    for label in ("ce", "dice"):
        write_run(tmp_path, cfg, label, 0, predictions(0.9, 0))
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert f"**That is {cfg.trainer.max_epochs / 40:.0%} of the 40 epochs this data wanted** (`report.wanted_epochs`" in readme
