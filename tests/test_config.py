"""The config schema: every problem is one sentence at load, before anything trains (issue 8)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from helpers.processes import HANG_S
from helpers.cli import ROOT, SMOKE, lossbench_cli

from lossbench.config import ConfigError, LossEntry, dump_shown, load_config, parse_overrides
from lossbench.identity import run_config
from lossbench.plan import resolve_losses
from lossbench.plugins import load_plugins


def test_config_errors_are_one_clear_sentence(tmp_path):
    assert parse_overrides(["trainer.max_epochs=1", "a.b=[1, 2]"]) == {"trainer": {"max_epochs": 1}, "a": {"b": [1, 2]}}
    with pytest.raises(ConfigError, match=r"unknown key 'batchsize' in section 'data'; did you mean 'batch_size'\?"):
        load_config(SMOKE, ["data.batchsize=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(SMOKE, ["trainer.max_epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"smoke.yaml.*data.batch_size input should be greater than or equal to 1, got 0"):
        load_config(SMOKE, ["data.batch_size=0"])


def test_an_unknown_trainer_key_names_the_closest_valid_one():
    # bug 6: --set trainer.max_epoch=1 used to start every run and fail each with a raw TypeError
    with pytest.raises(ConfigError, match=r"unknown key 'max_epoch' in trainer; did you mean 'max_epochs'\?"):
        load_config(SMOKE, ["trainer.max_epoch=1"])
    with pytest.raises(ConfigError, match=r"trainer.callbacks cannot be set"):
        load_config(SMOKE, ["trainer.callbacks=[]"])
    cfg = load_config(SMOKE, ["trainer.gradient_clip_val=1e-1"])  # any real Trainer argument passes
    assert cfg.trainer.kwargs()["gradient_clip_val"] == 0.1


def test_numbers_written_with_an_exponent_are_numbers():
    # bug 7: YAML 1.1 read 1e-3 as the string '1e-3', which failed inside AdamW in a subprocess
    cfg = load_config(SMOKE, ["optim.lr=1e-3", "optim.weight_decay=5E-5"])
    assert cfg.optim.lr == 0.001 and isinstance(cfg.optim.lr, float) and cfg.optim.weight_decay == 5e-5
    with pytest.raises(ConfigError, match=r"optim.lr input should be a valid number.*got 'fast'"):
        load_config(SMOKE, ["optim.lr=fast"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("losses=ce", r"losses input should be a valid list, got 'ce'"),  # was "unknown loss 'c'"
        ("trainer.max_epochs=-1", r"trainer.max_epochs input should be greater than or equal to 1, got -1"),
        ("seeds=[-1]", r"seeds.0 input should be greater than or equal to 0, got -1"),
        ("seeds=[1, 1]", r"seed 1 appears twice"),
        ("jobs=-2", r"jobs: expected 'auto', a number of runs at once ≥ 1, or -1 for one per CPU core, got -2"),
        ("jobs=two", r"jobs: expected 'auto', a number of runs at once.*got 'two'"),
        ("losses=[ce, {name: dice, label: ce}]", r"loss label 'ce' appears twice"),
        ("losses=[{name: dice, label: ..}]", r"loss label '..' cannot name a folder"),
        ("losses=[{name: dice, label: a/b}]", r"loss label 'a/b' cannot name a folder"),
        ("trainer.devices=0", r"expected a number of devices ≥ 1, -1 \(all\) or 'auto', got 0"),
        ("model.kwargs={encoder_weights: imagenet}", r"model.kwargs may not set encoder_weights"),
    ],
)
def test_bad_values_are_caught_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, [override])


def test_jobs_minus_one_means_one_run_per_core_and_auto_is_the_default():
    from lossbench.launch import runs_at_once

    assert runs_at_once(load_config(SMOKE, ["jobs=-1"]).jobs) == os.cpu_count()
    assert load_config(SMOKE).jobs == "auto" and load_config(SMOKE, ["jobs=auto"]).jobs == "auto"
    with pytest.raises(ConfigError, match="expected 'auto', a number of runs at once"):
        load_config(SMOKE, ["jobs=many"])


def test_the_launcher_section_is_typed_and_not_part_of_a_runs_identity():
    from lossbench.identity import config_hash, run_config

    cfg = load_config(SMOKE, ["launcher.kind=slurm", "launcher.partition=gpu", "launcher.sbatch={constraint: a100}"])
    assert cfg.launcher.partition == "gpu" and cfg.launcher.sbatch == {"constraint": "a100"}
    plain = load_config(SMOKE)
    assert config_hash(run_config(cfg, cfg.losses[0], 0)) == config_hash(run_config(plain, plain.losses[0], 0))
    with pytest.raises(ConfigError, match="launcher"):
        load_config(SMOKE, ["launcher.kind=pbs"])
    with pytest.raises(ConfigError, match="launcher"):
        load_config(SMOKE, ["launcher.time_min=0"])


def test_loss_selection_is_one_function_and_rejects_duplicates():
    cfg = load_config(SMOKE, ["losses=[ce, {name: tversky, params: {alpha: 0.1, beta: 0.9}}]"])
    assert [e.label for e in resolve_losses(cfg)] == ["ce", "tversky"]  # bug 1: no label → the name
    assert resolve_losses(cfg, ["tversky"])[0].params == {"alpha": 0.1, "beta": 0.9}
    assert resolve_losses(cfg, ["dice"])[0] == LossEntry(name="dice")  # any registered name
    with pytest.raises(ConfigError, match=r"loss 'ce' appears twice"):
        resolve_losses(cfg, ["ce", "ce"])  # --losses ce,ce trained one run twice at once
    with pytest.raises(ValueError, match=r"unknown loss 'dcie'; known losses \(closest first\): dice"):
        resolve_losses(cfg, ["dcie"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: tversky, params: {alpha: '1e-1'}}", r"loss 'tversky': parameter alpha must be a number \(default 0.3\), got '1e-1'"),
        ("{name: lovasz_softmax, params: {classes: [true]}}", r"lovasz_softmax classes must be ids in \[0, 4\), got \[True\]"),
        ("{name: dice, params: {smoth: 1}}", r"loss 'dice' got unknown parameter\(s\) smoth; it accepts: smooth=1.0"),
        ("{name: dice, label: d2, params: {per_image: 'yes'}}", r"loss 'd2' \(dice\): parameter per_image must be true or false"),
    ],
)
def test_loss_parameters_are_checked_before_training(entry, message):
    cfg = load_config(SMOKE, [f"losses=[{entry}]"])
    with pytest.raises(ValueError, match=message):
        resolve_losses(cfg)


PLUGIN = '''
import torch
from lossbench.losses import SegmentationLoss, register_loss


@register_loss("per_pixel", description="forgets to reduce")
class PerPixel(SegmentationLoss):
    def compute(self, prep):
        return prep.logits.mean(1)


@register_loss("detached", description="leaves the graph")
class Detached(SegmentationLoss):
    def compute(self, prep):
        return torch.tensor(float(prep.logits.mean()))
'''


@pytest.fixture
def registry():
    """Plugin losses registered by a test are gone after it."""
    from lossbench.losses import registry as module

    saved = dict(module._REGISTRY)
    yield
    module._REGISTRY.clear()
    module._REGISTRY.update(saved)


def test_a_plugin_loss_that_breaks_the_contract_is_named_before_training(tmp_path, registry):
    plugin = tmp_path / "contract_plugin.py"
    plugin.write_text(PLUGIN)
    load_plugins([str(plugin)])
    cfg = load_config(SMOKE, ["losses=[per_pixel, detached]"])
    with pytest.raises(ValueError, match=r"loss 'per_pixel' returned a tensor of shape \(2, 64\); the contract is a scalar"):
        resolve_losses(cfg, ["per_pixel"])
    with pytest.raises(ValueError, match=r"loss 'detached' returned a value without a gradient"):
        resolve_losses(cfg, ["detached"])


def test_a_plugin_with_a_syntax_error_names_its_file_and_line(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("import torch\n\ndef f(:\n    pass\n")
    with pytest.raises(ValueError, match=rf"plugin '{plugin}' has a syntax error in {plugin}, line 3"):
        load_plugins([str(plugin)])
    raising = tmp_path / "raising.py"
    raising.write_text("x = 1\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(ValueError, match=rf"failed while being imported \({raising}, line 2\): RuntimeError: no GPU here"):
        load_plugins([str(raising)])


def test_run_config_is_typed_and_hashed_without_the_label():
    cfg = load_config(SMOKE)
    a = run_config(cfg, LossEntry(name="tversky", params={"alpha": 0.1}, label="tversky_a01"), 4)
    b = run_config(cfg, LossEntry(name="tversky", params={"alpha": 0.1}, label="other"), 4)
    assert a.loss.label == "tversky_a01" and a.seed == 4 and a.trainer.max_epochs == 2
    from lossbench.identity import config_hash

    assert config_hash(a) == config_hash(b) != config_hash(run_config(cfg, LossEntry(name="tversky"), 4))


# --- the command line -----------------------------------------------------------------------------


@pytest.mark.slow  # starts lossbench processes
def test_cli_errors_speak_to_the_user():
    r = lossbench_cli("train", "--config", str(SMOKE), "--loss", "dcie")
    assert r.returncode == 2
    assert "unknown loss 'dcie'; known losses (closest first): dice" in r.stderr
    assert "Traceback" not in r.stderr
    r = lossbench_cli("compare", "--config", str(SMOKE), "--jobs", "-2", "--out", "/nonexistent/never")
    assert r.returncode == 2 and "--jobs: expected 'auto', a number of runs at once ≥ 1, or -1" in r.stderr  # it used to hang forever


@pytest.mark.slow  # starts a lossbench process
def test_losses_piped_into_a_reader_that_leaves_early_says_nothing_more():
    for reader in ("head -n 1", "true"):  # true leaves before anything is written: the write meets a closed pipe
        r = subprocess.run(f"{sys.executable} -m lossbench.cli losses | {reader}", shell=True, cwd=ROOT,
                           capture_output=True, text=True, timeout=HANG_S)  # fmt: skip
        assert len(r.stdout.splitlines()) == (1 if reader.startswith("head") else 0)
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


@pytest.mark.slow  # starts lossbench processes
def test_losses_lists_a_configs_plugin_losses(tmp_path):
    # bug 8: `lossbench losses` listed only the built-ins
    plugin = tmp_path / "my_losses.py"
    plugin.write_text(
        "from lossbench.losses import SegmentationLoss, register_loss, soft_stats\n\n"
        "@register_loss('focal_tversky_mine', description='my focal Tversky')\n"
        "class FT(SegmentationLoss):\n"
        "    def __init__(self, num_classes, gamma=1.5, ignore_index=None):\n"
        "        super().__init__(num_classes, ignore_index)\n"
        "        self.gamma = gamma\n\n"
        "    def compute(self, prep):\n"
        "        tp, fp, fn = soft_stats(prep)\n"
        "        return (1 - (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1)).mean() ** (1 / self.gamma)\n"
    )
    config = tmp_path / "suite.yaml"
    config.write_text(f"plugins: [{plugin}]\nlosses: [focal_tversky_mine]\n")
    r = lossbench_cli("losses", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert "focal_tversky_mine" in r.stdout and "my focal Tversky" in r.stdout and "gamma=1.5" in r.stdout
    assert "tversky" in r.stdout  # and the built-ins
    assert "focal_tversky_mine" not in lossbench_cli("losses").stdout


@pytest.mark.slow  # starts lossbench processes
def test_make_names_folders_after_the_suite_and_leaves_wandb_mode_alone(tmp_path):
    # bug 3: make compare CONFIG=experiments/full.yaml trained into runs/default and overwrote reports/default
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MAKE"))}
    dry = subprocess.run(["make", "-n", "compare", "report", "CONFIG=experiments/full.yaml"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "--config experiments/full.yaml" in dry and "runs/default" not in dry and "reports/default" not in dry
    # in an empty folder (never the working tree's runs/): the runs folder is named after the suite
    r = lossbench_cli("report", "--config", str(ROOT / "experiments" / "full.yaml"), "--no-wandb", cwd=tmp_path,
                      env={"WANDB_MODE": "offline"})  # fmt: skip
    assert r.returncode == 2 and "no runs under runs/full" in r.stderr
    # bug 4: the Makefile exported WANDB_MODE=offline, so a logged-in user never logged online under make
    database = subprocess.run(["make", "-pn", "compare"], cwd=ROOT, env=env, capture_output=True, text=True).stdout
    assert "WANDB_MODE" not in database


def test_a_logged_in_user_logs_online_unless_told_otherwise(tmp_path, monkeypatch):
    from lossbench.wandb_sink import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert wandb_mode(None) == "offline"
    netrc_file = tmp_path / ".netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc_file.chmod(0o600)
    assert wandb_mode(None) == "online"
    assert wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) == "disabled"


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_its_losses_pass_the_check(path, tmp_path):
    from lossbench.plan import resolve_losses

    folder = "kind: folder" in path.read_text()  # its data folder is the user's: point at one, name the classes
    cfg = load_config(path, [f"data.path={tmp_path}", "data.class_names=[sky, building, road, car]"] if folder else [])
    classes = len(cfg.data.class_names) if cfg.data.class_names else 4
    assert resolve_losses(cfg, num_classes=classes)  # built and called once each, as compare does first


@pytest.mark.slow  # starts lossbench processes
def test_version_print_config_dry_run_and_status_by_config(tmp_path, data_cache):
    r = lossbench_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == "lossbench 0.1.0"
    r = lossbench_cli("compare", "--config", str(SMOKE), "--print-config", "--set", "optim.lr=0.01", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["optim"]["lr"] == 0.01 and printed["report"]["bootstrap"] == 2000  # --set applied, defaults filled
    assert printed["jobs_per_gpu"] == "auto"  # issue 27: in the resolved config
    assert printed == yaml.safe_load(dump_shown(load_config(SMOKE, ["optim.lr=0.01"])))
    assert printed["data"]["image_size"] == 32 and "palette" not in printed["data"]
    # issue 30 (18): a folder suite's printed config showed the synthetic data's keys
    r = lossbench_cli("compare", "--config", str(SMOKE), "--print-config", "--set", "data.kind=folder",
                      f"data.path={tmp_path}", "data.class_names=[background, thing]", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(r.stdout)["data"]
    assert data["path"] == str(tmp_path) and not {"image_size", "num_train", "imbalance", "noise", "seed"} & set(data)

    r = lossbench_cli("compare", "--config", str(SMOKE), "--dry-run", "--set", f"data.cache_dir={data_cache}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "0 of 3 runs are done, these 3 would train into runs/smoke" in r.stdout and "  dice seed 0" in r.stdout
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
    r = lossbench_cli("compare", "--config", str(SMOKE), "--dry-run", "--losses", "dice", "--set", f"data.cache_dir={data_cache}", cwd=tmp_path)
    assert "the config, the data and 1 loss checks out; 0 of 1 run is done, this one would train into runs/smoke" in r.stdout
    r = lossbench_cli("compare", "--config", str(SMOKE), "--dry-run", "--losses", "dcie", cwd=tmp_path)
    assert r.returncode == 2 and "unknown loss 'dcie'" in r.stderr  # the checks compare makes, before training
    (tmp_path / "runs" / "smoke").mkdir(parents=True)
    r = lossbench_cli("status", "--config", str(SMOKE), cwd=tmp_path)
    assert r.returncode == 0 and "no runs in this folder yet" in r.stdout


def test_relative_paths_in_a_config_are_read_from_its_folder(tmp_path, monkeypatch):
    """Issue 20, item 13: data.path and .py plugins written in a config file resolve against the
    file's folder (as Hydra and mmsegmentation read theirs); --set values against the working
    directory; a missing data.path names what was written and where it led."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "data" / "set").mkdir(parents=True)
    (project / "configs" / "my_loss.py").write_text("")
    config = project / "configs" / "mine.yaml"
    config.write_text("data: {kind: folder, path: ../data/set, class_names: [a, b]}\nplugins: [my_loss.py, json]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory is not the config's folder
    cfg = load_config(config)
    assert cfg.data.path == str(project / "data" / "set")
    assert cfg.plugins == [str(project / "configs" / "my_loss.py"), "json"]  # module names stay names
    assert cfg.data.cache_dir == "data"  # where work goes stays relative to the working directory, like --out
    (elsewhere / "other").mkdir()
    assert load_config(config, ["data.path=other"]).data.path == str(elsewhere / "other")  # --set: the working directory
    config.write_text("data: {kind: folder, path: ../data/sett, class_names: [a, b]}\n")
    with pytest.raises(ConfigError, match=r"mine.yaml.*: data.path '../data/sett' does not exist \(resolved to "
                                          + str(project / "data" / "sett") + r"\)$"):  # fmt: skip
        load_config(config)
    with pytest.raises(ConfigError, match=r"data.path '/no/such/set' does not exist$"):
        load_config(config, ["data.path=/no/such/set"])


def test_the_example_suites_are_package_data_found_by_name(tmp_path, monkeypatch):
    """Issue 20, item 12: the example suites ship inside the package (lossbench/suites is experiments/),
    and --config NAME finds one from any folder."""
    from lossbench.config import SUITES_DIR, packaged_suites

    assert sorted(p.name for p in SUITES_DIR.glob("*.yaml")) == sorted(p.name for p in (ROOT / "experiments").glob("*.yaml"))
    assert {"default", "smoke", "folder"} <= set(packaged_suites())
    monkeypatch.chdir(tmp_path)
    assert load_config("smoke").suite == "smoke"
    with pytest.raises(ConfigError, match=r"config file 'smok' does not exist \(resolved to .*smok\); the packaged "
                                          r"example suites are named default, .*smoke"):  # fmt: skip
        load_config("smok")


@pytest.mark.parametrize(("value", "ok"), [("auto", True), (3, True), (0, False), (-1, False), ("many", False), (True, False)])
def test_jobs_per_gpu_is_auto_or_a_count_of_runs_on_one_gpu(value, ok):
    if ok:
        assert load_config(SMOKE, [f"jobs_per_gpu={value}"]).jobs_per_gpu == value
    else:
        with pytest.raises(ConfigError, match=r"jobs_per_gpu.*expected 'auto' or a number of runs at once on one GPU"):
            load_config(SMOKE, [f"jobs_per_gpu={str(value).lower() if isinstance(value, bool) else value}"])


def test_a_yaml_alias_bomb_is_one_sentence_and_ordinary_aliases_still_load(tmp_path):
    # issue 30 (10): nine levels of aliases of aliases ("billion laughs") under model.kwargs exhausted memory and hung
    levels = ['    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("model:\n  arch: Unet\n  kwargs:\n" + "\n".join(levels) + "\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml' is not valid YAML: its aliases expand to more than 100,000 values"):
        load_config(bomb)
    shared = tmp_path / "shared.yaml"
    shared.write_text("losses:\n  - {name: focal, label: a, params: &p {gamma: 3.0}}\n  - {name: focal, label: b, params: *p}\n")
    cfg = load_config(shared)
    assert [e.params for e in cfg.losses] == [{"gamma": 3.0}, {"gamma": 3.0}]


def test_class_names_for_the_synthetic_sets_are_refused_not_ignored():
    # issue 30 (14): data.class_names was silently ignored for synthetic data
    with pytest.raises(ConfigError, match=r"data.class_names is for folder and volume data; the synthetic set's classes are fixed \(background, blob, curve, spot\)"):
        load_config(SMOKE, ["data.class_names=[a, b, c, d]"])
    assert load_config(SMOKE, ["data.class_names=[background, blob, curve, spot]"]).data.kind == "synthetic"  # its own names: fine
    cfg = load_config(SMOKE, ["data.kind=synthetic_volumes", "model.dims=3", "model.arch=UNet"])
    assert load_config(SMOKE, ["data.kind=synthetic_volumes", "model.dims=3", "model.arch=UNet",
                               f"data.class_names={cfg.data.class_names}"]).data.class_names == cfg.data.class_names  # fmt: skip


def test_the_package_has_no_import_cycle_and_the_config_loads_without_torch():
    # issue 30 (20): config.py was 892 lines of schema, loading, overrides, paths and a data concern; split into
    # lossbench/config/ (schema, loading, classes.txt) — without a cycle; issue 36 (7): and config imports nothing of data
    # (classes.txt was read in lossbench/data/classes.py: the one import running back up the flow)
    import ast

    root = ROOT / "lossbench"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()  # a package's own __init__ importing its modules is no cycle: they need nothing from it
        for node in ast.parse(path.read_text()).body:  # module level only: an import inside a function is lazy
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*stack, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
    assert {"lossbench.config.schema", "lossbench.config.loading", "lossbench.config.classes", "lossbench.models"} <= set(modules)
    upward = [(name, t) for name, path in modules.items() if name.startswith("lossbench.config")
              for node in ast.walk(ast.parse(path.read_text()))  # lazy imports inside functions too
              for t in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
              if t.startswith("lossbench.data")]  # fmt: skip
    assert not upward, upward  # data flows config → data, never back
    assert "lossbench.volume_model" not in modules and len((root / "config" / "schema.py").read_text().splitlines()) < 800
    code = "import sys, lossbench.config as c; c.load_config('default'); print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.stdout.strip() == "[]", r.stderr[-2000:]


def test_the_makefiles_probe_loads_with_the_raced_default_suite():
    # the default suite races (3 seeds and up); make probe asks for one seed, so it turns the race off
    import shlex

    recipe = (ROOT / "Makefile").read_text().split("\nprobe:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    args = shlex.split(recipe.split("lossbench compare", 1)[1].replace("$(ARGS)", ""))
    sets = args[args.index("--set") + 1 : args.index("--out")]
    cfg = load_config(ROOT / "experiments" / "default.yaml", sets)
    assert cfg.race is None and cfg.seeds == [0] and cfg.budgets == [8, 24]
    assert load_config(ROOT / "experiments" / "default.yaml").race.max_seeds == 6


def test_a_yaml_key_given_twice_is_refused_with_the_key_and_both_lines(tmp_path):
    # issue 37, P78: a second `trainer:` section replaced the first (accelerator cpu -> auto, log_every_n_steps lost)
    path = tmp_path / "dup.yaml"
    path.write_text("suite: dup\nlosses: [ce]\ntrainer:\n  accelerator: cpu\n  log_every_n_steps: 5\nseeds: [0]\n"
                    "trainer:\n  max_epochs: 1\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"the key 'trainer' appears twice, on lines 3 and 7"):
        load_config(path)
    path.write_text("suite: dup\nlosses: [ce]\ntrainer: {max_epochs: 1, max_epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"'max_epochs' appears twice, on lines 3 and 3"):
        load_config(path)


def test_a_folder_given_as_config_is_named_as_a_folder(tmp_path):
    # issue 37, P79: `--config DIR` said "config file 'DIR' does not exist"
    with pytest.raises(ConfigError, match="is a folder; expected a suite's YAML file"):
        load_config(tmp_path)


@pytest.mark.parametrize(("setting", "words"), [
    ("trainer.precision=bogus", r"trainer.precision: expected one of auto, .*bf16-mixed.*, got 'bogus'"),  # P53
    ("data.batch_size=100000000000000000000", r"data.batch_size input should be less than or equal to 1048576"),  # P54
    ("data.eval_batch_size=10000000000", r"data.eval_batch_size input should be less than or equal to 1048576"),
])  # fmt: skip
def test_values_the_trainer_or_loader_cannot_take_are_refused_at_load(setting, words):
    # issue 37: the dry run passed these and every run failed (precision) or failed in islice() (batch size)
    with pytest.raises(ConfigError, match=words):
        load_config(SMOKE, [setting])
    assert load_config(SMOKE, ["trainer.precision=16"]).trainer.precision == "16"  # Lightning's legacy names stay valid


def test_detach_with_the_local_launcher_is_refused_in_one_sentence():
    # issue 37 (minor): --detach was silently ignored with the local launcher
    r = lossbench_cli("compare", "--config", str(SMOKE), "--detach", "--dry-run")
    assert r.returncode == 2 and "--detach needs jobs that outlive compare" in r.stderr and "Traceback" not in r.stderr
