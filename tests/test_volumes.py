"""Volumes: reading NIfTI and NumPy files (reorientation, spacing, intensity, errors), sampling slices and patches,
both training modes end to end, and per-volume metrics held to a recomputation from the saved predictions (HD95
and NSD to MONAI's, with the spacing)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from helpers.cli import ROOT, lossbench_cli
from helpers.volumes import SPACING, nifti_folder, ras_volume, save_nifti
from scipy import ndimage

from lossbench.config import ConfigError, VolumeConfig, load_config
from lossbench.data import load_data
from lossbench.data.volume_items import VolumeSamples, class_ratios
from lossbench.data.volumes import VolumeFiles, load_volume_splits, read_volume
from lossbench.metrics import per_image_counts
from lossbench.module import LossbenchModule
from lossbench.record import read_evidence, read_prediction, read_record
from lossbench.models import slice_stack

# --- reading ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "PIL", "SRA"])
def test_a_nifti_volume_is_read_back_in_ras_slice_first_with_its_spacing(tmp_path, orientation):
    image, _ = ras_volume()
    save_nifti(tmp_path / "v.nii.gz", image, orientation=orientation)
    stored = nib.load(str(tmp_path / "v.nii.gz"))
    assert nib.aff2axcodes(stored.affine) == tuple(orientation)  # the file really is in that orientation
    got = read_volume(tmp_path / "v.nii.gz")
    assert got.array.shape == (1, *image.shape)
    np.testing.assert_array_equal(got.array[0], image)
    assert got.spacing == pytest.approx(SPACING)
    assert nib.aff2axcodes(got.affine) == ("R", "A", "S")


def test_numpy_volumes_take_their_spacing_from_the_config_and_channels_first(tmp_path):
    image = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    np.save(tmp_path / "a.npy", image)
    got = read_volume(tmp_path / "a.npy", (2.0, 1.0, 0.5))
    np.testing.assert_array_equal(got.array, image)
    assert got.spacing == (2.0, 1.0, 0.5)
    np.save(tmp_path / "b.npy", image[0, 0])
    with pytest.raises(ValueError, match=r"b.npy is 2-D \[6, 7\]; a volume .npy must be \[D, H, W\] or \[C, D, H, W\]"):
        read_volume(tmp_path / "b.npy")
    # issue 30 (17): complex values passed with a raw ComplexWarning
    np.save(tmp_path / "c.npy", image.astype(np.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"volume file .*c.npy holds complex64 values; a volume holds real intensities"):
            read_volume(tmp_path / "c.npy")
        np.save(tmp_path / "m.npy", image[0].astype(np.complex64))
        with pytest.raises(ValueError, match=r"m.npy holds complex64 values; a mask holds class ids"):
            read_volume(tmp_path / "m.npy", mask=True)


def test_a_nifti_file_without_nibabel_is_one_sentence_with_the_install(tmp_path):
    # issue 30 (18): "volume file X volume data needs nibabel"; here nibabel cannot be imported, as without the extra
    import subprocess
    import sys

    path = tmp_path / "v.nii.gz"
    path.write_bytes(b"")
    code = ("import sys; sys.modules['nibabel'] = None\n"
            "from pathlib import Path\nfrom lossbench.data.volumes import read_volume\n"
            f"try:\n    read_volume(Path({str(path)!r}))\nexcept ValueError as e:\n    print(e)")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    from lossbench.data.volumes import install_extra

    assert r.stdout.strip() == f"{path} is a NIfTI file, and volume data needs nibabel: {install_extra()} (or pip install nibabel)"
    assert install_extra() == f"pip install -e '{ROOT}[volumes]'", r.stderr[-2000:]  # this checkout, installed editable


def test_ct_windows_and_mri_z_scores(tmp_path):
    from lossbench.data.volumes import apply_intensity

    x = np.array([[[[-2000.0, -100.0, 100.0, 300.0, 3000.0]]]])
    ct = apply_intensity(x, VolumeConfig(intensity="ct", window=(-100, 300)))
    np.testing.assert_allclose(ct.ravel(), [0.0, 0.0, 0.5, 1.0, 1.0])
    mri = apply_intensity(np.random.default_rng(0).normal(7, 3, (2, 4, 5, 6)), VolumeConfig(intensity="mri"))
    np.testing.assert_allclose(mri.reshape(2, -1).mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(mri.reshape(2, -1).std(1), 1, atol=1e-5)


def _volume_cfg(root: Path, tmp_path: Path, *sets: str):
    return load_config(None, ["data.kind=volumes", f"data.path={root}", f"data.cache_dir={tmp_path / 'cache'}", *sets])


def test_bad_volumes_are_one_sentence_naming_the_file(tmp_path):
    root = nifti_folder(tmp_path / "set", counts=(2, 1, 1))
    image, mask = ras_volume(5)
    # a mask on another grid (shape)
    save_nifti(root / "train" / "masks" / "case1.nii.gz", mask[:, :-1])
    with pytest.raises(ValueError, match=r"mask .*train/masks/case1.nii.gz is \[10, 13, 12\] \[D, H, W\] but its image .* is \[10, 14, 12\]"):
        load_data(_volume_cfg(root, tmp_path).data)
    # the same shape, another affine (spacing)
    save_nifti(root / "train" / "masks" / "case1.nii.gz", mask, spacing=(3.0, 0.7, 1.0))
    with pytest.raises(ValueError, match=r"mask .*case1.nii.gz has another affine than its image"):
        load_data(_volume_cfg(root, tmp_path).data)
    # a label out of range, with its voxel
    bad = mask.copy()
    bad[4, 5, 6] = 7
    save_nifti(root / "train" / "masks" / "case1.nii.gz", bad)
    with pytest.raises(ValueError, match=r"case1.nii.gz has value 7 at voxel \(4, 5, 6\) \(slice, row, column\), but the classes are 0..2"):
        load_data(_volume_cfg(root, tmp_path).data)
    save_nifti(root / "train" / "masks" / "case1.nii.gz", mask)
    # an image without its mask, and an empty split
    save_nifti(root / "val" / "images" / "extra.nii.gz", image)
    with pytest.raises(ValueError, match=r"image .*val/images/extra.nii.gz has no mask .*val/masks/extra.nii.gz"):
        load_data(_volume_cfg(root, tmp_path).data)
    for f in (root / "val" / "images").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"split 'val' is empty: no volume files"):
        VolumeFiles.find(root, "val")


@pytest.mark.parametrize(("sets", "message"), [
    (["data.kind=synthetic", "model.dims=3"], "model.dims is 3, which needs volumes"),
    (["data.kind=synthetic", "model.context=1"], "model.context is 1, which needs volumes"),
    (["data.kind=synthetic", "data.volumes.patch=[8, 8, 8]"], "data.volumes describes volume data, but data.kind is 'synthetic'"),
    (["data.kind=synthetic_volumes", "data.resize=[32, 32]"], "data.resize is for 2-D images"),
    (["data.kind=synthetic_volumes", "model.dims=3", "model.context=1"], "model.context .1. adds neighbouring slices to a 2-D model"),
    (["data.kind=synthetic_volumes", "data.volumes.window=[300, -100]"], "low < high"),
])  # fmt: skip
def test_volume_settings_are_checked_at_load(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)


# --- sampling -----------------------------------------------------------------------------------------


def test_class_ratios_share_the_foreground_among_the_classes_present():
    assert class_ratios([True, True, True], 0.5) == [0.5, 0.25, 0.25]
    assert class_ratios([True, False, True], 0.8) == pytest.approx([0.2, 0.0, 0.8])
    assert class_ratios([True, False, False], 0.8) == [1.0, 0.0, 0.0]


def _split(tmp_path: Path, depth: int = 24):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, depth, 16, 16)).astype(np.float32)
    mask = np.zeros((depth, 16, 16), np.int64)
    mask[3, 4:6, 4:6] = 1  # a lesion on one slice: 4 voxels
    mask[10:20, 8, 8] = 2  # a vessel through ten slices
    root = tmp_path / "npy"
    for split in ("train", "val", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        np.save(root / split / "images" / "a.npy", image)
        np.save(root / split / "masks" / "a.npy", mask)
    cfg = load_config(None, ["data.kind=volumes", f"data.path={root}", "data.class_names=[bg, lesion, vessel]",
                             f"data.cache_dir={tmp_path / 'cache'}"]).data  # fmt: skip
    return load_volume_splits(cfg, ("train",))["train"], image, mask


def test_slices_are_drawn_so_a_rare_class_is_not_drowned_out_and_are_seeded(tmp_path):
    split, image, mask = _split(tmp_path)
    samples = VolumeSamples(split, 3, dims=2, context=1, patch=(8, 8, 8), samples_per_volume=400, pos_fraction=1.0,
                            pad_label=3, run_seed=7)  # fmt: skip
    stack = slice_stack(torch.from_numpy(image), 1)  # what evaluation feeds the model, slice by slice
    lesion = vessel = 0
    for j in range(400):
        x, y = samples[(0, j)]
        assert x.shape == (3, 16, 16) and y.shape == (16, 16)
        d = next(d for d in range(mask.shape[0]) if torch.equal(x, stack[d]))  # training's channels = evaluation's
        assert torch.equal(y, torch.from_numpy(mask[d]))
        lesion += bool((y == 1).any())
        vessel += bool((y == 2).any())
    # the lesion is on 1 slice of 24 and the vessel on 10, yet each is drawn about half the time
    assert lesion + vessel == 400 and 150 < lesion < 250
    a, b = samples[(3, 17)], samples[(3, 17)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not all(torch.equal(samples[(3, j)][0], samples[(4, j)][0]) for j in range(10))  # another epoch, other draws


def test_patches_are_centred_on_foreground_and_padded_to_the_patch(tmp_path):
    split, _, mask = _split(tmp_path, depth=6)
    samples = VolumeSamples(split, 3, dims=3, context=0, patch=(8, 8, 8), samples_per_volume=50, pos_fraction=1.0,
                            pad_label=3, run_seed=0)  # fmt: skip
    for j in range(50):
        x, y = samples[(0, j)]
        assert x.shape == (1, 8, 8, 8) and y.shape == (8, 8, 8)
        assert ((y == 1) | (y == 2)).any()
        assert (y[6:] == 3).all()  # the volume has 6 slices: the rest is padding, which the losses ignore


# --- both modes, end to end ---------------------------------------------------------------------------


def _recompute(run_dir: Path, bundle, num_classes: int, tolerance: float) -> None:
    """Per-volume counts, objects, HD95 and NSD recomputed from the saved predictions equal the run's evidence;
    HD95 and NSD are held to MONAI's with the spacing."""
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    evidence = read_evidence(run_dir)
    record = read_record(run_dir)
    assert record.test["distance_unit"] == "mm"
    assert len(evidence.counts) == len(bundle.test)
    checked = 0
    for i in range(len(bundle.test)):
        pred, spacing = read_prediction(run_dir, i)
        target = bundle.test[i][1].numpy()
        assert pred.shape == target.shape  # the volume's own grid
        assert tuple(spacing) == pytest.approx(bundle.test.spacing[i])
        counts = per_image_counts(torch.from_numpy(pred)[None], torch.from_numpy(target)[None], num_classes, None)
        np.testing.assert_array_equal(counts[0].numpy(), evidence.counts[i])
        focus = record.classes.index(record.focus)
        structure = np.ones((3, 3, 3), bool)
        n_gt = ndimage.label(target == focus, structure)[1]
        n_pr = ndimage.label(pred == focus, structure)[1]
        assert (evidence.objects[i][0], evidence.objects[i][2]) == (n_gt, n_pr)
        onehot = lambda a: torch.from_numpy(np.eye(num_classes)[a]).permute(3, 0, 1, 2)[None].float()  # noqa: E731
        hd = compute_hausdorff_distance(onehot(pred), onehot(target), include_background=True, percentile=95,
                                        spacing=tuple(spacing)).numpy()[0]  # fmt: skip
        nsd = compute_surface_dice(onehot(pred), onehot(target), class_thresholds=[tolerance] * num_classes,
                                   include_background=True, spacing=tuple(spacing)).numpy()[0]  # fmt: skip
        for c in range(num_classes):
            if (pred == c).any() and (target == c).any():
                assert evidence.boundary[i, c, 0] == pytest.approx(hd[c], rel=1e-5, abs=1e-5)
                assert evidence.boundary[i, c, 1] == pytest.approx(nsd[c], rel=1e-5, abs=1e-6)
                checked += 1
            elif (pred == c).any() or (target == c).any():  # missed or spurious: the worst case, the volume's diagonal in mm
                diagonal = math.dist((0, 0, 0), [(n - 1) * s for n, s in zip(target.shape, spacing)])
                assert evidence.boundary[i, c, 0] == pytest.approx(diagonal, rel=1e-6) and evidence.boundary[i, c, 1] == 0
    assert checked >= len(bundle.test)  # at least the background of every volume, usually more


SYNTHETIC = ["data.kind=synthetic_volumes", "data.image_size=32", "data.num_train=4", "data.num_val=2", "data.num_test=3",
             "data.volumes.depth=16", "data.volumes.patch=[16, 32, 32]", "data.volumes.samples_per_volume=2",
             "data.volumes.intensity=ct", "data.volumes.window=[-100, 300]", "data.batch_size=4", "trainer.max_epochs=1",
             "seeds=[0]", "wandb.mode=disabled", "report.bootstrap=200"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dims2", "dims3"])
def test_both_modes_train_end_to_end_and_score_each_volume_as_its_saved_prediction_does(tmp_path, mode):
    raw = yaml.safe_load((ROOT / "experiments" / "volumes.yaml").read_text())  # the suite, with a smaller model
    raw["model"] = ({"dims": 2, "arch": "Unet", "context": 1, "encoder": "tu-mobilenetv3_small_100",
                     "kwargs": {"decoder_channels": [32, 16, 16, 8, 8]}} if mode == "dims2"
                    else {"dims": 3, "arch": "UNet", "kwargs": {"channels": [8, 16, 32], "strides": [2, 2]}})  # fmt: skip
    config = tmp_path / "volumes.yaml"
    config.write_text(yaml.safe_dump(raw))
    sets = [*SYNTHETIC, f"data.cache_dir={tmp_path / 'cache'}"]
    r = lossbench_cli("compare", "--config", str(config), "--losses", "dice,hausdorff_dt", "--out", str(tmp_path / "runs"),
                      "--report", str(tmp_path / "report"), "--set", *sets)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = load_config(config, sets)
    bundle = load_data(cfg.data)
    assert bundle.median_spacing == pytest.approx([2.5, 0.8, 0.8])
    runs = sorted((tmp_path / "runs").glob("*/seed0-*"))
    assert [p.parent.name for p in runs] == ["dice", "hausdorff_dt"]
    for run_dir in runs:
        _recompute(run_dir, bundle, 3, cfg.report.nsd_tolerance)
    report = (tmp_path / "report" / "README.md").read_text()
    assert "95th-percentile Hausdorff distance in mm" in report and "Each test case is a whole volume" in report
    assert (tmp_path / "report" / "predictions.png").exists()  # a slice through each of the chosen test volumes
    # issue 30 (6): objects per volume, not "per image"; the panel says which slice of which volume it shows
    assert "objects: found / false per volume / F1" in report and "false per image" not in report
    ev = read_evidence(runs[0])
    assert ev.panel_slice is not None and len(ev.panel_slice) == len(ev.panel_index)
    target = bundle.test[int(ev.panel_index[0])][1].numpy()
    focus = bundle.class_names.index(read_record(runs[0]).focus)
    assert int(ev.panel_slice[0]) == int(np.argmax((target == focus).sum((1, 2))))


@pytest.mark.slow
def test_a_nifti_folder_with_a_non_identity_affine_and_anisotropic_spacing_trains_and_reports_in_mm(tmp_path):
    root = nifti_folder(tmp_path / "set", counts=(3, 2, 2), orientation="PIL")
    assert nib.aff2axcodes(nib.load(str(root / "train" / "images" / "case0.nii.gz")).affine) == ("P", "I", "L")
    config = tmp_path / "vol.yaml"
    config.write_text(
        "suite: nifti\nlosses: [ce, boundary]\nseeds: [0]\n"
        "data: {kind: volumes, path: set, batch_size: 4, volumes: {patch: [8, 16, 16], samples_per_volume: 2}}\n"
        "model: {dims: 3, arch: UNet, kwargs: {channels: [8, 16], strides: [2]}}\n"
        "trainer: {max_epochs: 1}\nwandb: {mode: disabled}\nreport: {bootstrap: 200, focus: lesion}\n"
    )  # fmt: skip
    r = lossbench_cli("compare", "--config", str(config), "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "report"),
                      "--set", f"data.cache_dir={tmp_path / 'cache'}")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = load_config(config, [f"data.cache_dir={tmp_path / 'cache'}"])
    bundle = load_data(cfg.data)
    assert bundle.test.spacing == [SPACING, SPACING]
    image, mask = ras_volume(20)  # the first test case, as written (RAS)
    np.testing.assert_array_equal(bundle.test[0][1].numpy(), mask)
    for run_dir in sorted((tmp_path / "runs").glob("*/seed0-*")):
        _recompute(run_dir, bundle, 3, cfg.report.nsd_tolerance)
        config_used = json.loads(json.dumps(read_record(run_dir).test))
        assert config_used["nsd_tolerance"] == cfg.report.nsd_tolerance
    report = (tmp_path / "report" / "README.md").read_text()
    assert "Hausdorff distance in mm" in report and "tolerance of 2 mm" in report


class _IndexWritingModule(LossbenchModule):
    """The module, for the DDP test: rank 0 writes the volume indices the gathered test evidence holds
    (a spawned rank's attributes do not come back to the test's process)."""

    index_file: str | None = None

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.global_rank == 0 and self.index_file:
            np.save(self.index_file, np.asarray(self.test_index))


@pytest.mark.slow
def test_ddp_evaluation_of_volumes_gathers_every_volume_exactly_once(tmp_path):
    """Two ranks (gloo, ddp_spawn) test the 5 volumes between them (3 and 2): the gathered evidence holds each
    volume once, and every per-volume metric the test logs — IoU, sensitivity, HD95 and NSD in mm per class —
    equals one process's."""
    import lightning as L

    from lossbench.data import SegmentationDataModule

    cfg = load_config("volumes", [*SYNTHETIC, "data.num_test=5", f"data.cache_dir={tmp_path / 'cache'}",
                                  "model.kwargs={channels: [8, 16, 32], strides: [2, 2]}"])  # fmt: skip
    bundle = load_data(cfg.data)
    L.seed_everything(0, verbose=False)
    module = _IndexWritingModule(
        cfg.model.model_dump(), "dice", {}, bundle.class_names, bundle.loss_ignore_index, bundle.in_channels,
        bundle.class_frequencies, dims=3, patch=tuple(cfg.data.volumes.patch), volumes=True, loss_spacing=bundle.median_spacing,
    )  # fmt: skip
    dm = SegmentationDataModule(bundle, cfg.data.model_copy(update={"num_workers": 0}), seed=0, multiple=1, dims=3)
    common = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "use_distributed_sampler": False}
    single = L.Trainer(devices=1, **common).test(module, datamodule=dm, verbose=False)[0]
    assert sorted(module.test_index.tolist()) == [0, 1, 2, 3, 4]
    module.index_file = str(tmp_path / "index.npy")
    spawned = L.Trainer(devices=2, strategy="ddp_spawn", **common).test(module, datamodule=dm, verbose=False)[0]
    assert sorted(np.load(tmp_path / "index.npy").tolist()) == [0, 1, 2, 3, 4]  # each volume once, none lost
    keys = [k for k in single if k.startswith("test/") and k != "test/loss"]
    assert {"test/iou/lesion", "test/hd95/vessel", "test/nsd/lesion"} <= set(keys)
    for k in keys:
        assert spawned[k] == pytest.approx(single[k], rel=1e-6), k
