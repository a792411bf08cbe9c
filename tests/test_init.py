"""``lossbench init --data DIR`` and the installed tool (issue 20, item 12)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.cli import ROOT, lossbench_cli
from helpers.files import write_mixed_folder
from PIL import Image

from lossbench.config import ConfigError, load_config
from lossbench.init import Timing, epochs_to_fit, suite_seconds, survey, write_config


def test_init_reads_classes_void_sizes_and_class_shares_from_the_folder(tmp_path):
    write_mixed_folder(tmp_path / "set", sizes=((90, 120), (75, 100), (90, 120)), n=(4, 2, 3))
    found = survey(tmp_path / "set")
    assert found.counts == {"train": 4, "val": 2, "test": 3} and found.channels == 3
    assert found.names == ["sky", "road", "sign"] and found.ignore_index == 255  # classes.txt; 255 in the masks
    shares = found.frequencies()
    assert sum(shares) == pytest.approx(1) and min(shares) == shares[2] < 0.01  # the 6x6 sign is the rare class
    assert found.input_size() == (96, 128)  # the median size on multiples of 32
    (tmp_path / "set" / "classes.txt").unlink()
    assert survey(tmp_path / "set").names == ["class_0", "class_1", "class_2"]  # named from the mask values


def test_the_epochs_chosen_are_the_most_that_fit_the_minutes(tmp_path):
    # a fixed timing, not a measured one: more time gives more epochs, and one epoch more would not fit
    write_mixed_folder(tmp_path / "set")
    found, timing = survey(tmp_path / "set"), Timing(step=0.5, eval_image=0.05, device="cpu")
    for minutes in (2, 8, 16):
        epochs = epochs_to_fit(found, timing, minutes, 21)
        assert suite_seconds(found, timing, epochs, 21) <= minutes * 60 < suite_seconds(found, timing, epochs + 1, 21)
    assert epochs_to_fit(found, timing, 16, 21) > epochs_to_fit(found, timing, 8, 21) > epochs_to_fit(found, timing, 2, 21)
    assert epochs_to_fit(found, timing, 0.01, 21) == 1  # at least one


def test_init_writes_a_palette_for_colour_masks(tmp_path):
    root = tmp_path / "rgb"
    for split in ("train", "val", "test"):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        mask = np.zeros((64, 64, 3), np.uint8)
        mask[32:] = (128, 64, 128)
        Image.fromarray(mask).save(root / split / "masks" / "a.png")
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / split / "images" / "a.png")
    path, _ = write_config(root, tmp_path / "rgb.yaml", estimate=False)
    cfg = load_config(path)
    assert cfg.data.palette == {"class_0": (0, 0, 0), "class_1": (128, 64, 128)} and cfg.data.resize is None
    assert cfg.data.class_names == ["class_0", "class_1"]


def test_init_writes_a_config_that_loads_with_the_path_relative_to_it(tmp_path, monkeypatch):
    write_mixed_folder(tmp_path / "project" / "my set")
    monkeypatch.chdir(tmp_path)
    path, note = write_config("project/my set", "project/configs/mine.yaml", estimate=False)
    text = path.read_text()
    assert 'path: "../my set"' in text and "#     sign" in text and "no time estimate" in note
    cfg = load_config(path)
    assert cfg.data.path == str(tmp_path / "project" / "my set") and cfg.data.ignore_index == 255
    assert cfg.suite == "mine" and cfg.seeds == [0, 1, 2] and len(cfg.losses) == 7 and cfg.data.resize == (96, 128)
    with pytest.raises(ConfigError, match="mine.yaml exists; choose another --config or add --force"):
        write_config("project/my set", "project/configs/mine.yaml", estimate=False)
    write_config("project/my set", "project/configs/mine.yaml", estimate=False, force=True)
    with pytest.raises(ConfigError, match=r"--data 'nope' is not a folder \(resolved to "):
        write_config("nope", estimate=False)
    with pytest.raises(ValueError, match="expected the folder .*val/images"):
        (tmp_path / "project" / "my set" / "val" / "images").rename(tmp_path / "gone")
        write_config("project/my set", "other.yaml", estimate=False)


@pytest.mark.slow  # times training steps; starts lossbench processes
def test_init_measures_the_time_and_fits_the_epochs_to_minutes(tmp_path):
    write_mixed_folder(tmp_path / "set")
    r = lossbench_cli("init", "--data", "set", "--minutes", "8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"wrote set.yaml: about [78] min for 21 runs of \d+ epochs", r.stdout), r.stdout  # the epochs that fit
    assert "s a training step of 8 at 96x128" in r.stdout
    r = lossbench_cli("init", "--data", "set", "--minutes", "1", "--config", "short.yaml", "--no-estimate", cwd=tmp_path)
    assert r.returncode == 2 and "--minutes chooses the epochs from a measured time" in r.stderr
    r = lossbench_cli("compare", "--config", "set.yaml", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0 and "0 of 21 runs are done" in r.stdout, r.stderr


@pytest.mark.slow  # builds a wheel, makes a venv, trains two runs
def test_a_wheel_installed_in_a_clean_venv_runs_init_then_compare_from_an_empty_folder(tmp_path):
    """The wheel carries the package and its example suites; installed without the repository
    (its dependencies seen through a .pth line to this environment's site-packages, so nothing is
    downloaded), ``lossbench init`` and ``compare`` work from an empty folder."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = dist.glob("lossbench-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "deps.pth").write_text("\n".join(deps) + "\n")  # .pth files inside those folders are not read: no editable lossbench
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True, capture_output=True)
    work = tmp_path / "empty"
    work.mkdir()
    write_mixed_folder(tmp_path / "my_data")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["WANDB_MODE"] = "offline"
    lossbench = str(env_dir / "bin" / "lossbench")
    where = subprocess.run([str(python), "-c", "import lossbench; print(lossbench.__file__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert where.startswith(str(env_dir)), where  # the installed wheel, not the repository
    r = subprocess.run([lossbench, "init", "--data", "../my_data", "--no-estimate"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "wrote my_data.yaml" in r.stdout, r.stderr
    r = subprocess.run([lossbench, "compare", "--config", "my_data.yaml", "--losses", "ce,dice", "--seeds", "0",
                        "--set", "trainer.max_epochs=1", "--no-wandb"], cwd=work, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "reports" / "my_data" / "README.md").is_file() and len(list((work / "runs" / "my_data").glob("*/seed0-*"))) == 2
    r = subprocess.run([lossbench, "compare", "--config", "smoke", "--print-config"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["suite"] == "smoke", r.stderr  # the example suites travel in the wheel


@pytest.mark.slow  # runs the README's quick start (all but the training itself)
def test_the_readme_quick_start_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start: your own data")[1].split("```bash")[1].split("```")[0]
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.startswith("lossbench ")]
    assert [c[1] for c in commands] == ["init", "compare", "compare", "status"], commands
    write_mixed_folder(tmp_path / "my_set")
    for command in commands:
        if command[1] == "compare" and "--dry-run" not in command:
            continue  # the training itself: the wheel test above trains from an init-written config
        r = lossbench_cli(*command[1:], cwd=tmp_path)
        assert r.returncode == 0, (command, r.stdout[-2000:], r.stderr[-2000:])
    assert (tmp_path / "my_set.yaml").is_file() and "lossbench compare --config my_set.yaml --dry-run" in readme


@pytest.mark.slow  # times training steps at three input sizes
def test_init_halves_the_input_size_when_one_epoch_does_not_fit_the_minutes(tmp_path):
    write_mixed_folder(tmp_path / "big", sizes=((300, 400), (290, 390)), n=(4, 2, 2))
    path, note = write_config(tmp_path / "big", tmp_path / "big.yaml", minutes=0.01)  # fits nowhere: 21 start-ups alone
    assert "input size halved to 64x96 (from 288x384) to fit --minutes" in note and "more than --minutes 0.01" in note
    cfg = load_config(path)
    assert cfg.data.resize == (64, 96) and cfg.trainer.max_epochs == 1


@pytest.mark.parametrize("minutes", ["0", "-5", "nan", "inf", "five"])
def test_init_minutes_must_be_a_number_above_zero_said_before_the_data_is_read(minutes, capsys):
    # issue 30 (17): --minutes 0, -5, nan, inf were accepted, or failed with the wrong words after reading the data
    from lossbench.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["init", "--data", "/no/such/folder", f"--minutes={minutes}"])
    assert e.value.code == 2
    assert f"argument --minutes: expected a number of minutes above 0, got '{minutes}'" in capsys.readouterr().err
    assert build_parser().parse_args(["init", "--data", "x", "--minutes", "2.5"]).minutes == 2.5
