"""Issue 19, a fair fight: the tune: section, its points, the selection on validation only, the report."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from helpers.cli import SMOKE, lossbench_cli
from helpers.runs import predictions, suite, write_run

from lossbench.config import ConfigError, load_config
from lossbench.plan import DEFAULT, FINAL, SEARCH, Point, loss_points, plan_runs
from lossbench.record import read_record, write_record
from lossbench.report import write_report
from lossbench.report.gather import collect_runs
from lossbench.tune import search_results, select

TUNE = "tune={grid: {optim.lr: [0.001, 0.01]}, params: {focal: {gamma: [1, 2, 3]}}, seeds: [7]}"


def test_points_cross_the_shared_axes_with_each_losss_own():
    cfg = load_config(SMOKE, ["losses=[ce, focal]", TUNE])
    ce, focal = cfg.losses
    assert [p.describe() for p in loss_points(cfg, ce)] == ["lr=0.001", "lr=0.01"]
    assert len(loss_points(cfg, focal)) == 6 and Point((("optim.lr", 0.01),), (("gamma", 3),)) in loss_points(cfg, focal)
    assert Point((("optim.lr", 0.01),), (("gamma", 3),)).entry(focal).params == {"gamma": 3}


def test_trials_give_every_loss_the_same_budget_drawn_per_loss():
    cfg = load_config(SMOKE, ["losses=[ce, focal, tversky]", TUNE.replace("seeds: [7]", "seeds: [7], trials: 4"),
                              "tune.params.tversky={alpha: [0.3, 0.5, 0.7], beta: [0.5, 0.7]}"])  # fmt: skip
    ce, focal, tversky = cfg.losses
    assert len(loss_points(cfg, ce)) == 2  # its whole grid: fewer points than trials
    assert len(loss_points(cfg, focal)) == 4 and len(set(loss_points(cfg, focal))) == 4  # drawn without replacement
    assert len(loss_points(cfg, tversky)) == 4
    fewer = load_config(SMOKE, ["losses=[focal]", TUNE.replace("seeds: [7]", "seeds: [7], trials: 4")])
    assert loss_points(fewer, fewer.losses[0]) == loss_points(cfg, focal)  # another loss in the suite changes no draw
    again = load_config(SMOKE, ["losses=[focal]", TUNE.replace("seeds: [7]", "seeds: [7], trials: 4, sample_seed: 1")])
    assert loss_points(again, again.losses[0]) != loss_points(cfg, focal)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("tune.grid={optim.lr: [0.01, abc]}", r"tune.grid\['optim.lr'\] value 'abc': optim.lr input should be a valid number"),
        ("tune.grid={wandb.mode: [online]}", "key 'wandb.mode' is not a run setting"),
        ("tune.grid={trainer.max_epochs: [2, 4]}", "list the budgets under budgets:"),
        # keys that change the data would select each point on another validation set (issue 30, item 13)
        ("tune.grid={data.seed: [0, 1]}", "key 'data.seed' changes the data, so each point would be selected on another"),
        ("tune.grid={data.num_test: [10, 20]}", "key 'data.num_test' changes the data"),
        ("tune.grid={data.image_size: [32, 48]}", "only data.augment and data.batch_size may be searched"),
        ("tune.grid={optim.lr: []}", r"must be a non-empty list"),
        ("tune.grid={optim.lr: [0.1, 0.1]}", "appears twice"),
        ("tune.params={fcoal: {gamma: [1]}}", "tune.params names 'fcoal', which is not a loss label of this suite; did you mean 'focal'"),
        ("tune.select_on=spto", "did you mean 'spot'"),
        ("tune.seeds=[]", "tune.seeds lists no seed"),
    ],
)
def test_a_bad_tune_section_is_one_sentence_at_load(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, ["losses=[ce, focal]", setting])


def test_the_training_settings_and_augmentation_may_be_searched():
    cfg = load_config(SMOKE, ["losses=[ce]", "tune.grid={data.batch_size: [4, 8], data.augment.hflip: [false, true], "
                              "model.encoder: [tu-mobilenetv3_small_100], trainer.precision: [32-true]}"])  # fmt: skip
    assert set(cfg.tune.grid) == {"data.batch_size", "data.augment.hflip", "model.encoder", "trainer.precision"}


def test_a_bad_loss_parameter_value_is_caught_before_training():
    cfg = load_config(SMOKE, ["losses=[ce, focal]", "tune={params: {focal: {gamma: [2, -1]}}}"])
    with pytest.raises(ValueError, match="focal"):
        plan_runs(cfg, Path("runs"), num_classes=4)  # each value is built and called, as compare does first


def test_plan_a_tuned_suite_search_default_and_selected_points(tmp_path):
    cfg = load_config(SMOKE, ["losses=[ce, focal]", TUNE, "seeds=[0, 1]"])
    runs = plan_runs(cfg, tmp_path, check=False)
    assert sum(r.role == SEARCH for r in runs) == (2 + 6) * 1 and sum(r.role == DEFAULT for r in runs) == 2 * 2
    assert {r.seed for r in runs if r.role == SEARCH} == {7} and len({r.run_dir for r in runs}) == len(runs)
    plain = plan_runs(load_config(SMOKE, ["losses=[ce, focal]", "seeds=[0, 1]"]), tmp_path, check=False)
    assert {r.run_dir for r in runs if r.role == DEFAULT} == {r.run_dir for r in plain}  # the untuned suite's own runs
    selection = {("ce", 2): Point((("optim.lr", 0.01),)), ("focal", 2): Point()}
    runs = plan_runs(cfg, tmp_path, check=False, selection=selection)
    finals = [r for r in runs if r.role == FINAL]
    assert len(finals) == 4 and sum(r.role == DEFAULT for r in runs) == 2  # focal's selection is its default: one folder
    assert all(r.run_cfg.optim.lr == 0.01 for r in finals if r.label == "ce")


def _tuned_folder(out: Path, ce_val: dict[float, float], ce_test: dict[float, float]):
    """A tuned suite of ce and dice over optim.lr, hand-built: ce's validation and test scores per lr as given."""
    cfg = suite(out, "[ce, dice]", "[0, 1, 2]", "tune={grid: {optim.lr: [0.001, 0.01]}, seeds: [7]}")
    for lr in (0.001, 0.01):
        point = Point((("optim.lr", lr),))
        write_run(out, cfg, "ce", 7, predictions(ce_test[lr], 7), point, val_miou=ce_val[lr])
        write_run(out, cfg, "dice", 7, predictions(0.7, 7), point, val_miou=0.6 if lr == 0.01 else 0.5)
    return cfg


def test_selection_follows_validation_even_where_the_test_set_disagrees(tmp_path):
    # at lr 0.001 ce is better on validation and worse on test: a selection that read the test set would pick 0.01
    cfg = _tuned_folder(tmp_path, ce_val={0.001: 0.8, 0.01: 0.6}, ce_test={0.001: 0.55, 0.01: 0.95})
    for run_dir in tmp_path.glob("*/seed7-*"):  # and no test result or evidence is there to be read at all
        rec = read_record(run_dir)
        rec.test, rec.objects = None, None
        write_record(run_dir, rec)
        (run_dir / "evidence.npz").unlink()
    searches = search_results(cfg, plan_runs(cfg, tmp_path, check=False), read_record)
    chosen = select(searches)
    assert chosen[("ce", 2)] == Point((("optim.lr", 0.001),)) and chosen[("dice", 2)] == Point((("optim.lr", 0.01),))
    ce = next(s for s in searches if s.label == "ce")
    assert ce.score_of(Point((("optim.lr", 0.001),))) == pytest.approx(0.8)


def test_a_failed_or_unfinished_point_is_not_selected(tmp_path):
    cfg = _tuned_folder(tmp_path, ce_val={0.001: 0.5, 0.01: 0.9}, ce_test={0.001: 0.8, 0.01: 0.8})
    (best,) = [d for d in tmp_path.glob("ce/seed7-*") if read_record(d).history[-1]["val_miou"] == 0.9]
    rec = read_record(best)
    rec.status, rec.error = "failed", "FloatingPointError: loss 'ce' became nan"
    write_record(best, rec)
    chosen = select(search_results(cfg, plan_runs(cfg, tmp_path, check=False), read_record))
    assert chosen[("ce", 2)] == Point((("optim.lr", 0.001),))  # the diverged point is not credited
    (best / "metrics.json").unlink()  # not finished: no selection yet for ce
    assert ("ce", 2) not in select(search_results(cfg, plan_runs(cfg, tmp_path, check=False), read_record))


def test_the_report_of_a_tuned_suite_shows_the_fight_at_the_selected_points(tmp_path):
    cfg = _tuned_folder(tmp_path, ce_val={0.001: 0.8, 0.01: 0.6}, ce_test={0.001: 0.55, 0.01: 0.95})
    for seed in (0, 1, 2):  # the selected points on the suite's seeds, and the suite's own settings
        write_run(tmp_path, cfg, "ce", seed, predictions(0.9, seed), Point((("optim.lr", 0.001),)))
        write_run(tmp_path, cfg, "dice", seed, predictions(0.6, seed), Point((("optim.lr", 0.01),)))
        write_run(tmp_path, cfg, "ce", seed, predictions(0.6, seed))
        write_run(tmp_path, cfg, "dice", seed, predictions(0.9, seed))
    found = collect_runs(tmp_path)
    assert len(found.current) == 6 and len(found.tuning.search_records) == 4 and len(found.tuning.default_records) == 6
    assert all(r.config_hash != d.config_hash for r in found.current for d in found.tuning.default_records)
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert (tmp_path / "report" / "sensitivity.png").stat().st_size > 10_000
    fight = readme.split("## The fight")[1].split("## Verdict")[0]
    assert "| `ce` | 2 | lr=0.001 | 0.800 |" in fight and "| `dice` | 2 | lr=0.01 | 0.600 |" in fight
    assert "**Tuned**: the highest mean IoU is `ce`" in fight and "**At the suite's own settings** it was `dice`" in fight
    assert "Tuning changed the verdict" in fight and "The test set is not read for the selection" in fight
    assert "seeds [7]; the selected points were trained again on seeds [0, 1, 2]" in fight
    verdict = readme.split("## Verdict")[1]
    assert "highest `ce`" in verdict  # the verdict is the selected points'
    board = pd.read_csv(tmp_path / "report" / "leaderboard.csv")
    miou = board.set_index("loss")["miou"]
    assert sorted(board["loss"]) == ["ce", "dice"] and miou["ce"] > miou["dice"]  # the selected points' runs, not the defaults


@pytest.mark.slow  # trains a small tuned suite
def test_a_tuned_smoke_suite_trains_every_point_once_selects_and_reports(tmp_path, data_cache):
    args = ["compare", "--config", str(SMOKE), "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "report"),
            "--no-wandb", "--losses", "ce,tversky", "--set", f"data.cache_dir={data_cache}", "seeds=[0, 1]",
            "tune={grid: {optim.lr: [0.001, 0.01]}, params: {tversky: {alpha: [0.3, 0.7]}}, trials: 3, seeds: [5]}"]  # fmt: skip
    r = lossbench_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    # search: ce 2 points, tversky 3 of its 4; default: 2 losses x 2 seeds; then the selected points on seeds 0, 1
    assert "9 runs — 0 already done" in r.stdout and "selected on validation (miou" in r.stdout
    records = [read_record(d) for d in (tmp_path / "runs").glob("*/seed*-*")]
    assert all(rec.status == "ok" and rec.attempts == 1 for rec in records)
    searched = [rec for rec in records if rec.seed == 5]
    assert len(searched) == 5 and len({rec.config_hash for rec in searched}) == 5
    found = collect_runs(tmp_path / "runs")
    for s in [s for s in found.tuning.searches if s.label in ("ce", "tversky")]:  # the selected point: the best validation score
        best = max(p.mean for p in s.points)
        assert s.selected is not None and math.isclose(s.score_of(s.selected), best)
        assert f"{s.label}: {s.selected.describe()}" in r.stdout
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "## The fight" in readme and (tmp_path / "report" / "sensitivity.png").exists()
    again = lossbench_cli(*args)
    assert again.returncode == 0 and "trained" not in again.stdout  # a rerun trains nothing, in either phase
    assert again.stdout.count("already done") == 2 and (tmp_path / "report" / "README.md").read_text() == readme


def test_a_range_is_drawn_as_a_latin_hypercube_giving_every_loss_the_same_number_of_points():
    cfg = load_config(SMOKE, ["losses=[ce, tversky]", "tune={grid: {optim.lr: {low: 0.0001, high: 0.1, log: true}}, "
                              "params: {tversky: {alpha: [0.3, 0.5, 0.7]}}, trials: 6}"])  # fmt: skip
    for entry in cfg.losses:
        points = loss_points(cfg, entry)
        assert len(points) == 6  # the same budget for a loss with its own axes and one without
        lrs = sorted(p.values()["optim.lr"] for p in points)
        strata = [int((math.log10(lr) + 4) / 3 * 6) for lr in lrs]  # one point in each sixth of the log range
        assert strata == list(range(6)), lrs
    alphas = sorted(p.values()["alpha"] for p in loss_points(cfg, cfg.losses[1]))
    assert alphas == [0.3, 0.3, 0.5, 0.5, 0.7, 0.7]  # a listed axis covered evenly too
    with pytest.raises(ConfigError, match="optim.lr is a range: its values are drawn, so set tune.trials"):
        load_config(SMOKE, ["tune={grid: {optim.lr: {low: 0.001, high: 0.01}}}"])
    with pytest.raises(ConfigError, match="a log range needs low > 0"):
        load_config(SMOKE, ["tune={grid: {optim.lr: {low: 0, high: 0.01, log: true}}, trials: 2}"])


def test_the_report_of_a_search_under_way_shows_it_and_gives_no_verdict_yet(tmp_path):
    cfg = _tuned_folder(tmp_path, ce_val={0.001: 0.8, 0.01: 0.6}, ce_test={0.001: 0.55, 0.01: 0.95})
    (dice_best,) = [d for d in tmp_path.glob("dice/seed7-*") if read_record(d).history[-1]["val_miou"] == 0.6]
    (dice_best / "metrics.json").unlink()  # dice's search is not finished
    readme = write_report(tmp_path, tmp_path / "report", log_to_wandb=False).read_text()
    assert "| `dice` | 2 | search unfinished |" in readme and "| `ce` | 2 | lr=0.001 |" in readme
    assert "No verdict at the selected points yet" in readme
    assert "| `dice [lr=0.01]` | 7 | 2 | missing |" in readme  # the unfinished search run, named in the problems
    assert "| `ce [selected: lr=0.001]` | 0 | 2 | missing |" in readme
    assert cfg.tune.seeds == [7]
