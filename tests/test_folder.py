"""Your own data, as it comes: file formats, the decoded cache, sizes, augmentation, a Python Dataset, pretrained weights."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import tifffile
import torch
from helpers.cli import lossbench_cli
from helpers.files import PALETTE, write_mixed_folder, write_png16
from PIL import Image

from lossbench.config import ConfigError, load_config
from lossbench.data import SegmentationDataModule, load_data, num_workers
from lossbench.data.images import read_image, read_mask
from lossbench.data.transforms import PadCollate, SeededItems, train_transform


def _cfg(root, *sets):
    return load_config(None, ["data.kind=folder", f"data.path={root}", f"data.cache_dir={root / 'cache'}", *sets])


# --- formats ----------------------------------------------------------------------------------------


def test_images_keep_their_dynamic_range_in_every_format(tmp_path):
    rgb16 = np.array([[[0, 1000, 65535], [300, 2, 40000]]], np.uint16)  # 1 × 2 × 3
    write_png16(tmp_path / "rgb16.png", rgb16)
    x = read_image(tmp_path / "rgb16.png")  # PIL would have read 8 bits
    assert x.shape == (3, 1, 2) and np.allclose(x[:, 0, 0], [0, 1000 / 65535, 1.0])

    write_png16(tmp_path / "g16.png", np.array([[1, 65535]], np.uint16))
    assert np.allclose(read_image(tmp_path / "g16.png"), [[[1 / 65535, 1.0]]])

    bands = np.random.default_rng(0).normal(size=(5, 4, 6)).astype(np.float32) * 100  # 5-band float TIFF
    tifffile.imwrite(tmp_path / "bands.tif", bands, photometric="minisblack", planarconfig="separate")
    assert np.array_equal(read_image(tmp_path / "bands.tif"), bands)

    rgb_tif = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb_tif, photometric="rgb")
    assert np.allclose(read_image(tmp_path / "rgb.tif"), rgb_tif.transpose(2, 0, 1) / 65535)

    Image.fromarray(np.full((3, 3, 4), 200, np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png").shape == (3, 3, 3)  # alpha dropped


def test_masks_as_ids_palette_indices_and_rgb_colours(tmp_path):
    ids = np.array([[0, 1], [2, 255]], np.uint8)
    p = Image.fromarray(ids, mode="P")
    p.putpalette([9, 9, 9, 200, 0, 0, 0, 200, 0] + [1, 2, 3] * 253)
    p.save(tmp_path / "pal.png")
    assert np.array_equal(read_mask(tmp_path / "pal.png"), ids)  # indices, not colours

    write_png16(tmp_path / "m16.png", np.array([[0, 300]], np.uint16))
    assert read_mask(tmp_path / "m16.png").tolist() == [[0, 300]]

    colours = np.array([[PALETTE["sky"], PALETTE["road"]], [PALETTE["ignore"], PALETTE["sign"]]], np.uint8)
    Image.fromarray(colours).save(tmp_path / "rgb.png")
    cfg = _cfg(tmp_path, "data.ignore_index=255", "data.palette=" + json.dumps({k: list(v) for k, v in PALETTE.items()}))
    assert cfg.data.class_names == ["sky", "road", "sign"]  # names from the palette
    assert read_mask(tmp_path / "rgb.png", cfg.data.palette_ids()).tolist() == [[0, 1], [255, 2]]

    colours[0, 1] = (1, 2, 3)
    Image.fromarray(colours).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match=r"odd.png has colour \[1, 2, 3\] at row 0, column 1, which is not in data.palette"):
        read_mask(tmp_path / "odd.png", cfg.data.palette_ids())


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.palette={sky: [1, 2, 3], ignore: [0, 0, 0]}"], r"'ignore' colour but data.ignore_index is not set"),
        (["data.palette={sky: [1, 2, 3], road: [1, 2, 3]}"], r"one colour to two names"),
        (["data.class_names=[a, b]", "data.palette={a: [1, 2, 3], c: [0, 0, 1]}"], r"names 'c', which is not in data.class_names"),
        (["data.resize=[0, 10]"], r"data.resize.0 input should be greater than or equal to 1"),
        (["data.augment={scale: [1.5, 0.5]}"], r"data.augment.scale: expected \[low, high\] with low ≤ high"),
        (["data.normalize=imagnet"], r"data.normalize input should be 'none', 'imagenet' or 'dataset'"),
        (["model.kwargs={encoder_weights: imagenet}"], r"model.kwargs may not set encoder_weights: set model.encoder_weights"),
    ],
)
def test_data_config_mistakes_are_one_sentence(tmp_path, sets, message):
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match=message):
        _cfg(tmp_path, *sets)


def test_class_names_come_from_classes_txt_or_the_error_says_where(tmp_path):
    with pytest.raises(ConfigError, match=r"needs data.class_names, data.palette or .*classes.txt"):
        _cfg(tmp_path)
    (tmp_path / "classes.txt").write_text("background\nlesion\n\n")  # trailing blank lines end the file
    assert _cfg(tmp_path).data.class_names == ["background", "lesion"]
    # a blank line inside used to be dropped silently, shifting every class id after it
    (tmp_path / "classes.txt").write_text("background\n\nlesion\n")
    with pytest.raises(ConfigError, match=r"classes.txt line 2 is empty: write one class name per line"):
        _cfg(tmp_path)


# --- the folder dataset, scanned and cached ---------------------------------------------------------


def test_a_mixed_folder_is_read_once_into_the_cache_as_it_is(tmp_path):
    truth = write_mixed_folder(tmp_path / "d")
    cfg = _cfg(tmp_path / "d", "data.ignore_index=255")
    bundle = load_data(cfg.data)
    assert bundle.class_names == ["sky", "road", "sign"] and bundle.in_channels == 3 and bundle.pad_label == 255
    for split in ("train", "test"):
        ds = getattr(bundle, split)
        for i, name in enumerate(ds.names):
            image, mask = ds[i]
            want_image, want_mask = truth[(split, name.rsplit(".", 1)[0])]
            assert torch.equal(mask, torch.from_numpy(want_mask.astype(np.int64)))  # sizes kept, palette indices read
            assert torch.allclose(image, torch.from_numpy(want_image.transpose(2, 0, 1) / 255.0).float(), atol=1e-6)
    masks = [m for (s, _), (_, m) in truth.items() if s == "train"]
    want = np.bincount(np.concatenate([m[m != 255] for m in masks]), minlength=3)
    assert bundle.class_frequencies == want.tolist()

    cache = next((tmp_path / "d" / "cache").glob("folder-*"))
    assert isinstance(bundle.train._images, np.memmap)
    assert {p.name for p in cache.iterdir()} >= {"train.json", "train.images.bin", "train.masks.bin"}
    # a changed file changes the key: the new content is read (and checked) again
    bad = np.full((90, 120), 7, np.uint8)
    Image.fromarray(bad).save(tmp_path / "d" / "val" / "masks" / "val01.png")
    with pytest.raises(ValueError, match=r"val01.png is 90×120 .* but its image .*val01.tif is 75×100"):
        load_data(cfg.data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", r"cannot read .*train/images/train00.png: .*\(damaged, truncated or not an image file\?\)"),
        ("value", r"mask .*test00.png has value 9 at row 5, column 7, but the classes are 0..2 and the ignore index is 255"),
        ("empty", r"split 'val' is empty: no image files"),
        ("channels", r"image .*train02.png has 1 channel\(s\) but .*train00.png has 3"),
        ("no mask", r"image .*train01.tif has no mask"),
        # a float TIFF with NaN pixels used to pass, and every run then failed as "loss 'ce' became nan"
        ("nan", r"image .*train01.tif has a non-finite pixel \(nan\) at \(0, 3, 4\) \(channel, row, column\), 2 in all"),
    ],
)
def test_bad_input_is_one_sentence_naming_the_file_before_training(tmp_path, damage, message):
    write_mixed_folder(tmp_path / "d")
    d = tmp_path / "d"
    if damage == "truncate":
        p = d / "train" / "images" / "train00.png"
        p.write_bytes(p.read_bytes()[:200])
    elif damage == "value":
        m = np.array(Image.open(d / "test" / "masks" / "test00.png"))
        m[5, 7] = 9
        Image.fromarray(m).save(d / "test" / "masks" / "test00.png")
    elif damage == "empty":
        for p in (d / "val" / "images").iterdir():
            p.unlink()
    elif damage == "channels":
        Image.fromarray(np.zeros((90, 120), np.uint8)).save(d / "train" / "images" / "train02.png")
    elif damage == "nan":
        import tifffile

        image = np.ones((3, 90, 120), np.float32)
        image[0, 3, 4] = np.nan
        image[1, 50, 60] = np.inf
        tifffile.imwrite(d / "train" / "images" / "train01.tif", image, photometric="minisblack", planarconfig="separate")
    else:
        (d / "train" / "masks" / "train01.png").unlink()
    with pytest.raises(ValueError, match=message):
        load_data(_cfg(d, "data.ignore_index=255").data)


def test_a_damaged_cache_is_rebuilt(tmp_path):
    write_mixed_folder(tmp_path / "d")
    cfg = _cfg(tmp_path / "d", "data.ignore_index=255")
    first = load_data(cfg.data).train[1]
    cache = next((tmp_path / "d" / "cache").glob("folder-*"))
    (cache / "train.images.bin").write_bytes(b"\0" * 10)
    again = load_data(cfg.data).train[1]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


# --- sizes, augmentation, padding -------------------------------------------------------------------


def test_augmentation_is_seeded_per_run_epoch_and_image_and_masks_stay_labels(tmp_path):
    write_mixed_folder(tmp_path / "d")
    cfg = _cfg(tmp_path / "d", "data.ignore_index=255", "data.resize=[64, 80]", "data.crop=[48, 48]",
               "data.augment={hflip: true, vflip: true, rotate90: true, scale: [0.6, 1.4], jitter: 0.2}")  # fmt: skip
    bundle = load_data(cfg.data)
    t = train_transform(cfg.data.resize, cfg.data.crop, cfg.data.augment, bundle.pad_label)
    a, b = SeededItems(bundle.train, t, run_seed=3), SeededItems(bundle.train, t, run_seed=3)
    x1, y1 = a[(2, 1)]
    x2, y2 = b[(2, 1)]  # another run (another loss) with the same seed: the same augmented item
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (3, 48, 48) and y1.shape == (48, 48)
    x3, _ = a[(3, 1)]
    x4, _ = SeededItems(bundle.train, t, run_seed=4)[(2, 1)]
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)  # other epoch, other seed: other draws
    torch.manual_seed(0)
    before = torch.rand(())
    torch.manual_seed(0)
    a[(5, 0)]
    assert torch.equal(torch.rand(()), before)  # the global random stream is left alone
    for epoch in range(8):  # nearest neighbour only: no value that is not a label (or the padding) appears
        for i in range(len(bundle.train)):
            _, y = a[(epoch, i)]
            assert set(y.unique().tolist()) <= {0, 1, 2, 255}


def test_batches_pad_to_the_model_multiple_with_an_ignored_label(tmp_path):
    write_mixed_folder(tmp_path / "d", void=False)
    cfg = _cfg(tmp_path / "d", "data.batch_size=4", "data.num_workers=0")  # no ignore index of its own
    bundle = load_data(cfg.data)
    assert bundle.ignore_index is None and bundle.pad_label == 3 and bundle.loss_ignore_index == 3
    dm = SegmentationDataModule(bundle, cfg.data, seed=0, multiple=32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[-2:] == (96, 128) and y.shape == (4, 96, 128)
    assert (y[:, 90:, :] == 3).all() and (y[:, :, 120:] == 3).all()
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape[-2:] == (96, 128)
    assert batch["target_size"].tolist() == [[90, 120], [75, 100], [90, 120]] == batch["size"].tolist()
    with pytest.raises(ValueError, match=r"must be padded to \(96, 128\) .* no label for padding"):
        PadCollate(32, None)([(torch.zeros(3, 90, 120), torch.zeros(90, 120, dtype=torch.long))] * 2)


def test_metrics_are_computed_at_each_masks_original_resolution(tmp_path):
    import lightning as L

    from lossbench.models import input_multiple
    from lossbench.module import LossbenchModule

    write_mixed_folder(tmp_path / "d")
    for resize in (None, [48, 64]):
        sets = ["data.ignore_index=255", "data.eval_batch_size=2", "data.num_workers=0"] + ([f"data.resize={resize}"] if resize else [])
        cfg = load_config("experiments/smoke.yaml", ["data.kind=folder", f"data.path={tmp_path / 'd'}",
                                                     f"data.cache_dir={tmp_path / 'cache'}", *sets])  # fmt: skip
        bundle = load_data(cfg.data)
        module = LossbenchModule(cfg.model.model_dump(), "ce", {}, bundle.class_names, bundle.loss_ignore_index,
                                 bundle.in_channels, bundle.class_frequencies)  # fmt: skip
        dm = SegmentationDataModule(bundle, cfg.data, seed=0, multiple=input_multiple(module.model))
        L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, use_distributed_sampler=False,
                  enable_model_summary=False).test(module, datamodule=dm, verbose=False)  # fmt: skip
        originals = [bundle.test[i][1] for i in range(len(bundle.test))]
        assert module.test_result["pixels"] == sum(int((m != 255).sum()) for m in originals)
        support = {n: r["support"] for n, r in module.test_result["per_class"].items()}
        assert support == {n: sum(int((m == c).sum()) for m in originals) for c, n in enumerate(bundle.class_names)}


def test_num_workers_auto_uses_the_runs_share_of_the_cpu_beside_an_accelerator(monkeypatch, tmp_path):
    write_mixed_folder(tmp_path / "d")
    cfg = _cfg(tmp_path / "d").data
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert num_workers(cfg, accelerated=True) == 0  # two runs sharing two cores: no core to spare
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert num_workers(cfg, accelerated=True) == 5
    assert num_workers(cfg, accelerated=False) == 0  # training on the CPU: workers would take its cores
    monkeypatch.setenv("OMP_NUM_THREADS", "32")
    assert num_workers(cfg, accelerated=True) == 8
    assert num_workers(cfg.model_copy(update={"num_workers": 3}), accelerated=False) == 3
    assert num_workers(load_config("experiments/smoke.yaml").data, accelerated=True) == 0  # in-memory data needs none


# --- your own Dataset -------------------------------------------------------------------------------

FACTORY = textwrap.dedent(
    """
    import torch
    from torch.utils.data import TensorDataset

    def make(n=6, size=40):
        g = torch.Generator().manual_seed(0)
        def split(k):
            x = torch.rand(k, 2, size, size, generator=g)
            y = (x[:, 0] > 0.7).long()
            return TensorDataset(x, y)
        return {"train": split(n), "val": split(2), "test": split(3), "class_names": ["bg", "fg"]}
    """
)


def test_a_python_dataset_factory_is_checked_and_used(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, ["data.kind=python", "data.target=mydata:make", "data.kwargs={n: 4, size: 40}"])
    bundle = load_data(cfg.data)
    assert bundle.class_names == ["bg", "fg"] and bundle.in_channels == 2 and len(bundle.train) == 4
    assert sum(bundle.class_frequencies) == 4 * 40 * 40 and bundle.pad_label == 2  # 40 is not a multiple of 32
    with pytest.raises(ValueError, match=r"data.target 'mydata:make' does not take data.kwargs \{'m': 1\}"):
        load_data(load_config(None, ["data.kind=python", "data.target=mydata:make", "data.kwargs={m: 1}"]).data)
    with pytest.raises(ValueError, match=r"data.target 'mydata:nope' cannot be imported"):
        load_data(load_config(None, ["data.kind=python", "data.target=mydata:nope"]).data)
    (tmp_path / "baddata.py").write_text(FACTORY.replace("(x[:, 0] > 0.7).long()", "(x[:, 0] > 0.7).long() * 5"))
    with pytest.raises(ValueError, match=r"the mask of item 0 of the train split has value 5 at row \d+, column \d+, but the "
                                         r"classes are 0..1 and no data.ignore_index is set"):  # fmt: skip
        load_data(load_config(None, ["data.kind=python", "data.target=baddata:make"]).data)
    # the same rule as folder data: a channel count that changes within a split is named
    (tmp_path / "mixed.py").write_text(FACTORY.replace("return TensorDataset(x, y)", "return [(x[0], y[0]), (x[1, :1], y[1])]"))
    with pytest.raises(ValueError, match=r"the image of item 1 of the train split has 1 channel\(s\) but the image of item 0 "
                                         r"of the train split has 2; all images need the same"):  # fmt: skip
        load_data(load_config(None, ["data.kind=python", "data.target=mixed:make"]).data)


# --- end to end -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_on_a_users_folder_with_resize_crop_and_augmentation(tmp_path):
    write_mixed_folder(tmp_path / "d", n=(6, 2, 3))
    config = tmp_path / "mine.yaml"
    config.write_text(textwrap.dedent(f"""
        suite: mine
        losses: [ce, dice, lovasz_softmax]
        seeds: [0]
        jobs: 2
        data:
          kind: folder
          path: {tmp_path / 'd'}
          cache_dir: {tmp_path / 'cache'}
          ignore_index: 255
          resize: [64, 80]
          crop: [32, 32]
          augment: {{hflip: true, rotate90: true, scale: [0.75, 1.25], jitter: 0.1}}
          normalize: dataset
          batch_size: 4
        model: {{arch: Unet, encoder: resnet18, kwargs: {{encoder_depth: 3, decoder_channels: [16, 8, 8]}}}}
        trainer: {{max_epochs: 3, accelerator: cpu, devices: 1}}
    """))
    r = lossbench_cli("compare", "--config", str(config), "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "rep"), "--no-wandb")
    assert r.returncode == 0, r.stdout + r.stderr
    # a new user's first short suite (3 losses, 1 seed, 3 epochs): the verdict claims nothing at seed level
    readme = (tmp_path / "rep" / "README.md").read_text()
    verdict = readme[readme.index("## Verdict") : readme.index("### Leaderboard")]
    assert "**1 seed per loss: training randomness is not measured.**" in verdict and "beyond the" not in verdict
    rising = []
    for label in ("ce", "dice", "lovasz_softmax"):
        (record,) = (tmp_path / "runs" / label).glob("seed0-*/metrics.json")
        curve = [row["val_miou"] for row in json.loads(record.read_text())["history"]]
        if curve[2] - curve[1] > 0.01:  # the last quarter of 3 epochs: epoch 2 to 3
            rising.append(label)
    if rising:
        assert "Still improving when training stopped" in verdict and all(f"`{k}` (+" in verdict for k in rising)
    else:
        assert "Still improving" not in verdict
    for label in ("ce", "dice"):
        (record,) = (tmp_path / "runs" / label).glob("seed0-*/metrics.json")
        rec = json.loads(record.read_text())
        assert rec["status"] == "ok" and rec["classes"] == ["sky", "road", "sign"]
        originals = sum(int((np.array(Image.open(p)) != 255).sum()) for p in (tmp_path / "d" / "test" / "masks").iterdir())
        assert rec["test"]["pixels"] == originals  # evaluated at the masks' own sizes


@pytest.mark.slow
def test_pretrained_weights_that_cannot_be_had_stop_before_training(tmp_path):
    r = lossbench_cli("compare", "--config", "experiments/smoke.yaml", "--set", "model.encoder_weights=imagenet",
                      f"data.cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "rep"),
                      env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(
        "lossbench: error: model.encoder_weights='imagenet' for encoder 'tu-mobilenetv3_small_100' cannot be loaded — no cached copy"
    ), r.stderr
    assert not list((tmp_path / "runs").glob("*/seed*"))  # nothing was trained


def test_the_readme_dataset_example_works_as_written(tmp_path, monkeypatch):
    from helpers.cli import ROOT

    readme = (ROOT / "docs" / "data.md").read_text()  # the README's reference page on data
    code = readme.split("# my_data.py", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_data.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    yaml_line = next(line for line in readme.splitlines() if "kind: python, target:" in line)
    cfg = load_config(None, ["data=" + yaml_line.split("data:", 1)[1].strip()])
    bundle = load_data(cfg.data)
    assert bundle.class_names == ["background", "object"] and len(bundle.train) == 64 and bundle.in_channels == 3
    assert 0 < bundle.class_frequencies[1] < sum(bundle.class_frequencies)


def test_an_exif_orientation_is_applied_as_viewers_do(tmp_path):
    # a phone JPEG stored landscape with "rotate 90° to show": its mask, drawn on the shown (portrait) image,
    # was rejected as a size mismatch — and a square one would have been silently misaligned
    from PIL import ImageOps

    write_mixed_folder(tmp_path / "d")
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:10, :] = 250  # a bright band along the top of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    path = tmp_path / "d" / "train" / "images" / "train00.jpg"
    (tmp_path / "d" / "train" / "images" / "train00.png").unlink()
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    with Image.open(path) as im:
        shown = np.array(ImageOps.exif_transpose(im))
    assert shown.shape == (60, 40, 3)  # portrait as shown
    mask = np.zeros((60, 40), np.uint8)
    mask[:, 30:] = 1  # the band, now at the right as shown
    Image.fromarray(mask).save(tmp_path / "d" / "train" / "masks" / "train00.png")
    bundle = load_data(_cfg(tmp_path / "d", "data.ignore_index=255").data)
    image, target = bundle.train[0]
    assert tuple(image.shape) == (3, 60, 40) and tuple(target.shape) == (60, 40)
    pixels = image.numpy().astype(np.float64) * (255.0 if image.is_floating_point() else 1.0)  # the split may be stored as float
    assert np.abs(pixels.transpose(1, 2, 0) - shown).max() <= 2  # the pixels as shown
    assert pixels[:, :, 30:].mean() > 200 and pixels[:, :, :10].mean() < 60  # the band lies on the mask


def test_the_readme_says_plugins_and_dataset_factories_run_code_where_it_introduces_them():
    # issue 30 (17): the README did not say that a plugin .py or data.kind: python runs code
    from helpers.cli import ROOT

    assert "A plugin is code that runs with your permissions" in (ROOT / "README.md").read_text()
    losses, data = (ROOT / "docs" / "losses.md").read_text(), (ROOT / "docs" / "data.md").read_text()
    plugins = losses.split("## Adding your own loss", 1)[1].split("\n## ", 1)[0]
    assert "**A plugin is code that\nruns**" in plugins and "with your permissions" in plugins
    factory = data.split("**Your own Dataset** (`data.kind: python`)", 1)[1].split("```", 1)[0]
    assert "the factory is your code" in factory and "runs with your permissions" in factory
