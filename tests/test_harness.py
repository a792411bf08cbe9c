"""The training harness: data, metrics, config, one run through the CLI, DDP (spawn and real ddp), W&B."""

from __future__ import annotations

import json
import math

import lightning as L
import numpy as np
import pytest
import torch
from conftest import SMOKE, lossbench_cli
from PIL import Image
from torchmetrics.classification import MulticlassJaccardIndex, MulticlassRecall, MulticlassSpecificity

from lossbench.config import ConfigError, load_config, loss_entry, parse_overrides, run_config
from lossbench.io import json_safe
from lossbench.data import SYNTHETIC_CLASSES, SegmentationDataModule, class_pixel_counts, load_data, synthetic_splits
from lossbench.metrics import confusion_matrix_metric, per_class_metrics
from lossbench.module import LossbenchModule
from lossbench.wandb_offline import logged_values, offline_run_files

# --- metrics ------------------------------------------------------------------------------------


def test_per_class_metrics_match_torchmetrics_with_ignore_index_and_an_absent_class():
    g = torch.Generator().manual_seed(0)
    c, ignore = 5, 255
    target = torch.randint(0, c, (4, 32, 32), generator=g)
    target[target == 3] = 0  # class 3 absent from the target...
    preds = torch.randint(0, c, (4, 32, 32), generator=g)  # ...but predicted
    target[:, :5] = ignore
    cm = confusion_matrix_metric(c, ignore)
    cm.update(preds[:2], target[:2])
    cm.update(preds[2:], target[2:])
    ours = per_class_metrics(cm.compute(), [f"c{i}" for i in range(c)])

    kw = {"num_classes": c, "average": None, "ignore_index": ignore}
    refs = {
        "iou": MulticlassJaccardIndex(**kw)(preds, target),
        "sensitivity": MulticlassRecall(**kw)(preds, target),
        "specificity": MulticlassSpecificity(**kw)(preds, target),
    }
    for metric, ref in refs.items():
        for i in range(c):
            value = ours["per_class"][f"c{i}"][metric]
            if metric == "sensitivity" and i == 3:
                assert math.isnan(value)  # TP + FN = 0: undefined (torchmetrics reports its zero_division 0)
                assert ref[i] == 0
            else:
                assert value == pytest.approx(ref[i].item(), abs=1e-6), (metric, i)
    assert ours["per_class"]["c3"]["iou"] == 0.0  # absent but predicted: a defined 0
    assert ours["pixels"] == int((target != ignore).sum())
    assert ours["miou"] == pytest.approx(refs["iou"].mean().item(), abs=1e-6)


# --- data ---------------------------------------------------------------------------------------


def _smoke_data_cfg(cache, **kw):
    cfg = load_config(SMOKE, [f"data.cache_dir={cache}"])["data"]
    return cfg | kw


def test_synthetic_data_is_deterministic_per_seed(tmp_path):
    a = synthetic_splits(_smoke_data_cfg(tmp_path / "a"))
    b = synthetic_splits(_smoke_data_cfg(tmp_path / "b"))
    c = synthetic_splits(_smoke_data_cfg(tmp_path / "c", seed=1))
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["train_images"], c["train_images"])
    # the cache returns exactly what was generated
    assert all(np.array_equal(v, synthetic_splits(_smoke_data_cfg(tmp_path / "a"))[k]) for k, v in a.items())


def test_synthetic_class_frequencies_span_two_orders_of_magnitude(tmp_path):
    cfg = _smoke_data_cfg(tmp_path, image_size=64, num_train=300, num_val=1, num_test=1)
    counts = np.array(class_pixel_counts(synthetic_splits(cfg)["train_masks"], 4, None), float)
    share = counts / counts.sum()
    assert 0.85 < share[0] < 0.95  # background
    assert 0.05 < share[1] < 0.12  # blobs
    assert 0.008 < share[2] < 0.03  # curves
    assert 0.0015 < share[3] < 0.006  # spots
    assert share.max() / share.min() > 100

    rarer = np.array(class_pixel_counts(synthetic_splits(cfg | {"imbalance": 3.0})["train_masks"], 4, None), float)
    assert rarer[3] / rarer.sum() < share[3] / 2  # the imbalance setting makes rare classes rarer


def test_synthetic_classes_are_not_separable_by_intensity(tmp_path):
    arrays = synthetic_splits(_smoke_data_cfg(tmp_path, image_size=64, num_train=100))
    img, mask = arrays["train_images"][:, 0], arrays["train_masks"]
    for k in (1, 2, 3):  # the intensity window holding the middle half of a class is mostly other pixels
        lo, hi = np.percentile(img[mask == k], [25, 75])
        window = (img > lo) & (img < hi)
        precision = (window & (mask == k)).sum() / window.sum()
        assert precision < 0.5, (SYNTHETIC_CLASSES[k], precision)


def test_folder_dataset_reads_images_masks_and_frequencies(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / split / "images" / f"{i}.png")
            mask = rng.integers(0, 3, (16, 16)).astype(np.uint8)
            mask[0] = 255
            Image.fromarray(mask).save(tmp_path / split / "masks" / f"{i}.png")
    cfg = load_config(None, [f"data.path={tmp_path}", "data.kind=folder", "data.class_names=[a,b,c]", "data.ignore_index=255"])
    bundle = load_data(cfg["data"])
    assert bundle.in_channels == 3 and bundle.class_names == ["a", "b", "c"] and bundle.ignore_index == 255
    image, mask = bundle.train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and float(image.max()) <= 1.0
    assert mask.dtype == torch.int64 and int(mask[0, 0]) == 255
    assert sum(bundle.class_frequencies) == 3 * 15 * 16  # ignored row excluded

    bad = np.full((16, 16), 7, np.uint8)
    Image.fromarray(bad).save(tmp_path / "test" / "masks" / "1.png")
    with pytest.raises(ValueError, match=r"1.png has value 7 but there are 3 classes"):
        load_data(cfg["data"]).test[1]


# --- config -------------------------------------------------------------------------------------


def test_config_errors_are_one_clear_sentence(tmp_path):
    assert parse_overrides(["trainer.max_epochs=1", "a.b=[1, 2]"]) == {"trainer": {"max_epochs": 1}, "a": {"b": [1, 2]}}
    with pytest.raises(ConfigError, match="unknown key\\(s\\) batchsize in section 'data'"):
        load_config(SMOKE, ["data.batchsize=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(SMOKE, ["trainer.max_epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="data.batch_size must be a positive integer"):
        load_config(SMOKE, ["data.batch_size=0"])


def test_cli_errors_speak_to_the_user():
    r = lossbench_cli("train", "--config", str(SMOKE), "--loss", "dcie")
    assert r.returncode == 2
    assert "unknown loss 'dcie'; known losses (closest first): dice" in r.stderr
    assert "Traceback" not in r.stderr


# --- DDP, in-process (ddp_spawn) ------------------------------------------------------------------


def _module_and_data(cache, loss="dice"):
    cfg = load_config(SMOKE, [f"data.cache_dir={cache}"])
    bundle = load_data(cfg["data"])
    L.seed_everything(0, verbose=False)
    module = LossbenchModule(
        cfg["model"], loss, {}, bundle.class_names, bundle.ignore_index, bundle.in_channels, bundle.class_frequencies
    )
    dm = SegmentationDataModule(bundle, 8, None, 0, seed=0)
    return module, dm, bundle


def test_ddp_spawn_evaluation_pools_every_test_pixel_exactly_once(data_cache):
    module, dm, bundle = _module_and_data(data_cache)
    assert len(bundle.test) % (2 * 8) != 0  # shards are uneven: a padding sampler would skew metrics
    common = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "use_distributed_sampler": False}
    single = L.Trainer(devices=1, **common).test(module, datamodule=dm, verbose=False)[0]
    spawned = L.Trainer(devices=2, strategy="ddp_spawn", **common).test(module, datamodule=dm, verbose=False)[0]
    keys = [k for k in single if k.startswith("test/") and k != "test/loss"]
    assert "test/iou/spot" in keys and "test/specificity/curve" in keys
    for k in keys:
        assert spawned[k] == single[k], k


# --- one run through the CLI ---------------------------------------------------------------------


def _read_metrics(out):
    files = list(out.glob("*/*/metrics.json"))
    assert len(files) == 1, files
    return files[0].parent, json.loads(files[0].read_text())


def test_smoke_run_end_to_end_writes_metrics_and_an_offline_wandb_run(tmp_path, data_cache):
    r = lossbench_cli(
        "train", "--config", str(SMOKE), "--loss", "tversky", "--seed", "3",
        "--out", str(tmp_path), "--set", f"data.cache_dir={data_cache}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, m = _read_metrics(tmp_path)
    assert run_dir.parent.name == "tversky" and run_dir.name.startswith("seed3-")
    assert m["status"] == "ok" and m["epochs"] == 2 and m["wall_s"] > 0 and m["seed"] == 3
    assert list(m["test"]["per_class"]) == SYNTHETIC_CLASSES
    for row in m["test"]["per_class"].values():
        assert set(row) >= {"iou", "sensitivity", "specificity", "precision", "dice"}
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    assert "test mIoU" in r.stdout

    (wandb_file,) = offline_run_files(run_dir)
    logged = logged_values(wandb_file)
    assert logged["test/miou"] == pytest.approx(m["test"]["miou"], rel=1e-6)
    for name, row in m["test"]["per_class"].items():
        for metric in ("iou", "sensitivity", "specificity"):
            assert logged[f"test/{metric}/{name}"] == pytest.approx(row[metric], rel=1e-6, abs=1e-7)

    again = lossbench_cli("train", "--config", str(SMOKE), "--loss", "tversky", "--seed", "3",
                          "--out", str(tmp_path), "--set", f"data.cache_dir={data_cache}")  # fmt: skip
    assert again.returncode == 0
    assert json.loads((run_dir / "metrics.json").read_text())["finished_at"] == m["finished_at"]  # not retrained


def test_ddp_run_through_the_cli_equals_a_single_process_evaluation(tmp_path, data_cache):
    from lossbench.run import evaluate_checkpoint

    r = lossbench_cli(
        "train", "--config", str(SMOKE), "--loss", "ce", "--out", str(tmp_path), "--no-progress",
        "--set", f"data.cache_dir={data_cache}", "trainer.devices=2", "trainer.strategy=ddp",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, m = _read_metrics(tmp_path)
    assert m["status"] == "ok" and m["world_size"] == 2
    single = evaluate_checkpoint(run_dir)
    assert m["test"]["pixels"] == single["pixels"] == 20 * 32 * 32
    assert m["test"] == json_safe(single)  # exactly equal, class by class (undefined ratios as null)


def test_run_config_normalises_loss_entries():
    cfg = load_config(SMOKE)
    entry = loss_entry({"name": "tversky", "params": {"alpha": 0.1}, "label": "tversky_a01"})
    rc = run_config(cfg, entry, 4)
    assert rc["loss"] == {"name": "tversky", "params": {"alpha": 0.1}, "label": "tversky_a01"} and rc["seed"] == 4
    with pytest.raises(ConfigError, match="losses: item"):
        loss_entry(3)


def test_a_wandb_failure_does_not_fail_the_run(tmp_path, data_cache):
    r = lossbench_cli(
        "train", "--config", str(SMOKE), "--loss", "ce", "--out", str(tmp_path), "--no-progress",
        "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=1", "wandb.mode=not-a-mode",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "W&B could not start" in r.stderr
    _, m = _read_metrics(tmp_path)
    assert m["status"] == "ok" and m["test"]["miou"] is not None
