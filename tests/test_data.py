"""Data: the synthetic imbalanced set, its cache, folder data scanned before training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.cli import SMOKE
from PIL import Image

from lossbench.config import SYNTHETIC_CLASSES, load_config
from lossbench.data import SegmentationDataModule, class_pixel_counts, load_data, synthetic_splits


def _smoke_data_cfg(cache, **kw):
    return load_config(SMOKE, [f"data.cache_dir={cache}"]).data.model_copy(update=kw)


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

    rarer = np.array(class_pixel_counts(synthetic_splits(cfg.model_copy(update={"imbalance": 3.0}))["train_masks"], 4, None), float)
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
    cfg = load_config(None, [f"data.path={tmp_path}", "data.kind=folder", "data.class_names=[a,b,c]", "data.ignore_index=255",
                             f"data.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    bundle = load_data(cfg.data)
    assert bundle.in_channels == 3 and bundle.class_names == ["a", "b", "c"] and bundle.ignore_index == 255
    image, mask = bundle.train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8  # 8-bit until the transforms scale it
    assert mask.dtype == torch.int64 and int(mask[0, 0]) == 255
    assert sum(bundle.class_frequencies) == 3 * 15 * 16  # ignored row excluded

    # issue 8 (folder data): a bad mask of the *test* split is found when the data is loaded, before training
    bad = np.full((16, 16), 7, np.uint8)
    Image.fromarray(bad).save(tmp_path / "test" / "masks" / "1.png")
    with pytest.raises(ValueError, match=r"test/masks/1.png has value 7 at row 0, column 0, but the classes are 0..2 and the ignore index is 255"):
        load_data(cfg.data)


def _folder(root, n=2, size=16):
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / split / "images" / f"{i}.png")
            Image.fromarray(rng.integers(0, 3, (size, size)).astype(np.uint8)).save(root / split / "masks" / f"{i}.png")
    return load_config(None, [f"data.path={root}", "data.kind=folder", "data.class_names=[a,b,c]", f"data.cache_dir={root / 'cache'}"]).data


def test_a_truncated_image_is_named_before_training(tmp_path):
    # issue 8 (folder data): a truncated PNG was a raw "OSError: image file is truncated" with no file named
    data_cfg = _folder(tmp_path, size=64)
    path = tmp_path / "val" / "images" / "1.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"cannot read .*val/images/1.png: .*truncated"):
        load_data(data_cfg)


def test_a_corrupt_synthetic_cache_is_detected_and_rebuilt(tmp_path, capsys):
    # issue 8 (faults): a damaged cache made every run fail forever with BadZipFile
    cfg = _smoke_data_cfg(tmp_path)
    good = synthetic_splits(cfg)
    (cache,) = tmp_path.glob("synthetic-*.npz")
    cache.write_bytes(b"PK\x03\x04 not a zip at all")
    rebuilt = synthetic_splits(cfg)
    err = capsys.readouterr().err
    assert f"synthetic data cache {cache} is damaged" in err and "rebuilding it" in err
    assert all(np.array_equal(rebuilt[k], good[k]) for k in good)
    with np.load(cache) as f:  # and the cache on disk is whole again
        assert np.array_equal(f["test_masks"], good["test_masks"])
    data = dict(good)
    data["train_masks"] = data["train_masks"][:3]  # a readable file with the wrong arrays
    np.savez(cache, **data)
    assert synthetic_splits(cfg)["train_masks"].shape == good["train_masks"].shape


def _curve_by_definition(rng, size):
    """The definition of a curve's pixels, computed over the whole image: every pixel whose centre is within
    0.75 px of one of the curve's 4·size points (the generator draws it in small windows instead)."""
    import math

    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    length, theta = rng.uniform(0.4, 0.7), rng.uniform(0, 2 * math.pi)
    x0, y0 = rng.uniform(0.15, 0.85, size=2)
    t = np.linspace(0, 1, 4 * size)
    amp, freq, phase = rng.uniform(0.03, 0.08), rng.uniform(1, 3) * 2 * math.pi, rng.uniform(0, 2 * math.pi)
    u, v = t * length, amp * np.sin(freq * t + phase)
    px, py = x0 + np.cos(theta) * u - np.sin(theta) * v, y0 + np.sin(theta) * u + np.cos(theta) * v
    d2 = (xx[..., None] - px) ** 2 + (yy[..., None] - py) ** 2
    return np.flatnonzero(d2.min(-1) < (0.75 / size) ** 2)


@pytest.mark.parametrize("size", [16, 64, 97])
def test_curves_drawn_in_windows_are_the_curves_of_the_definition(size):
    from lossbench.data.synthetic import _curve_pixels

    coords = (np.arange(size) + 0.5) / size
    for seed in range(20):
        local = _curve_pixels(np.random.default_rng(seed), coords)
        assert np.array_equal(local, _curve_by_definition(np.random.default_rng(seed), size)), seed


def test_synthetic_class_shares_do_not_depend_on_the_image_size(tmp_path):
    shares = {}
    for size, n in ((64, 400), (256, 60)):
        cfg = _smoke_data_cfg(tmp_path, image_size=size, num_train=n, num_val=1, num_test=1)
        counts = np.array(class_pixel_counts(synthetic_splits(cfg)["train_masks"], 4, None), float)
        shares[size] = counts / counts.sum()
    assert np.allclose(shares[256], shares[64], rtol=0.15), shares  # per class within 15 % relative (sampling noise)


def test_a_long_preparation_says_n_of_N_and_an_eta():
    from lossbench.progress import Counter

    now, said = [0.0], []
    counter = Counter("generating", 100, "images", quiet_s=3, every_s=5, say=said.append, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.1
        counter.add()
    counter.finish()
    assert said[0].startswith("generating: 30 of 100 images (30 %), ETA 7s"), said
    assert said[1].startswith(("generating: 80 of 100", "generating: 81 of 100")) and said[-1] == "generating: 100 images in 10s" and len(said) == 3  # 3 s, 8 s, the end
    quiet = []
    fast = Counter("generating", 10, say=quiet.append, clock=lambda: 0.0)
    for _ in range(10):
        fast.add()
    fast.finish()
    assert quiet == []  # work that ends within a few seconds says nothing


def test_batches_served_from_the_device_are_the_loaders_batches(tmp_path):
    # issue 27: in-memory data kept on the GPU is gathered there by index; the batches must be the host
    # loader's, in the same seeded order, epoch after epoch (here with the tensors on the CPU).
    from lossbench.data.datamodule import DeviceBatches
    from lossbench.data.datamodule import ShardSampler

    cfg = _smoke_data_cfg(tmp_path, image_size=32, num_train=21, num_val=7, num_test=5)
    bundle = load_data(cfg)
    dm = SegmentationDataModule(bundle, cfg, seed=3, multiple=32)
    loader = dm.train_dataloader()
    on_device = DeviceBatches(bundle.train.images, bundle.train.masks, loader.sampler, dm.batch_size)
    assert len(on_device) == len(loader)
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        host = list(loader)
        device = list(on_device)
        assert len(host) == len(device)
        for (hx, hy), (dx, dy) in zip(host, device):
            assert torch.equal(hx, dx) and torch.equal(hy, dy) and dy.dtype == torch.long
    evaluation = dm.val_dataloader()
    served = DeviceBatches(bundle.val.images, bundle.val.masks, ShardSampler(len(dm.val_set), 0, 1), dm.eval_batch_size, evaluation=True)
    for h, d in zip(evaluation, served, strict=True):
        assert set(h) == set(d)
        for key in h:
            assert torch.equal(h[key], d[key]), key
