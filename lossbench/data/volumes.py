"""3-D volumes (``data.kind: volumes``): NIfTI and NumPy files, read once, reoriented, checked and cached.

Layout, as folder data: ``<root>/<split>/images/CASE.<nii|nii.gz|npy>`` with the mask
``<root>/<split>/masks/CASE.<nii|nii.gz|npy>`` for the splits ``train``, ``val`` and ``test``; one file per case.

Reading (:func:`read_volume`): a NIfTI file through nibabel, reoriented to RAS (``nibabel.as_closest_canonical``,
what MONAI's ``Orientation("RAS")`` does) and held slice-first, ``[D, H, W]`` = (superior, anterior, right), with the
voxel spacing of the header in the same order; a 4-D NIfTI's last axis is its channels. A ``.npy`` volume is
``[D, H, W]`` or ``[C, D, H, W]`` already, with the spacing ``data.volumes.spacing`` (1 mm when unset). A mask must
have its image's grid: the same shape and, for NIfTI, the same affine.

Intensity (``data.volumes.intensity``): ``ct`` clips to the Hounsfield ``window`` and scales it to [0, 1] (MONAI's
``ScaleIntensityRange`` with ``clip``); ``mri`` z-scores each volume and channel (MONAI's ``NormalizeIntensity``,
``channel_wise``); ``none`` keeps the values.

Every problem is a ``ValueError`` naming the file, before anything trains: an unreadable file, a mask of another
shape or affine than its image, a mask value that is neither a class nor the ignore index, a non-finite voxel, an
image with another channel count than the rest, an empty split. The decoded volumes are cached as ``.npy`` files
(read memory-mapped) in ``<cache_dir>/volumes-<key>/``, keyed by the file list, sizes and modification times and
the reading settings, so a changed file rebuilds it.

The synthetic volume set (``data.kind: synthetic_volumes``, :func:`write_synthetic_volumes`) is written as NIfTI
files with an anisotropic spacing and a non-identity affine, and read back through this same path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lossbench.config import SYNTHETIC_VOLUME_CLASSES, DataConfig, VolumeConfig
from lossbench.data.checks import SplitStats, cache_path, check_channels, pair_fingerprint, split_dirs
from lossbench.progress import Counter

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy")
_CACHE_VERSION = 1


def install_extra(extra: str = "volumes") -> str:
    """The command that installs lossbench's ``extra`` for how lossbench is installed: run from a checkout
    (editable, or on ``PYTHONPATH``) ``pip install -e '<checkout>[volumes]'``, else ``pip install 'lossbench[volumes]'``."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and "site-packages" not in Path(__file__).resolve().parts:
        return f"pip install -e '{checkout}[{extra}]'"
    return f"pip install 'lossbench[{extra}]'"


def missing_for_volumes(nifti: bool, dims3: bool = True) -> list[str]:
    """The packages of the ``volumes`` extra that volume data needs and this environment lacks."""
    from importlib.util import find_spec

    wanted = (["nibabel"] if nifti else []) + (["monai"] if dims3 else [])
    return [name for name in wanted if find_spec(name) is None]


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise ValueError(f"volume data needs nibabel: {install_extra()} (or pip install nibabel)") from None
    return nibabel


def case_name(path: Path) -> str | None:
    """The case a volume file belongs to (its name without ``.nii.gz``, ``.nii`` or ``.npy``), or ``None`` for another file."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix) and not name.startswith("."):
            return name[: -len(suffix)]
    return None


@dataclass
class VolumeFiles:
    """The image and mask files of one split, paired by case name."""

    root: Path
    cases: list[str]
    images: list[Path]
    masks: list[Path]

    @classmethod
    def find(cls, root: str | Path, split: str) -> VolumeFiles:
        images_dir, masks_dir = split_dirs(root, split, "volume dataset")
        images = {case_name(p): p for p in sorted(images_dir.iterdir())}
        images.pop(None, None)
        if not images:
            raise ValueError(f"volume dataset: split {split!r} is empty: no volume files ({', '.join(VOLUME_SUFFIXES)}) in {images_dir}")
        masks = {case_name(p): p for p in sorted(masks_dir.iterdir())}
        cases = sorted(images)
        for case in cases:
            if case not in masks:
                raise ValueError(f"volume dataset: image {images[case]} has no mask {masks_dir / case}.nii.gz (or .nii, .npy)")
        return cls(images_dir.parent, cases, [images[c] for c in cases], [masks[c] for c in cases])

    def fingerprint(self) -> list[list[Any]]:
        return pair_fingerprint(self.images, self.masks)


@dataclass
class Volume:
    """One decoded volume: ``array`` ``[C, D, H, W]`` (image) or ``[D, H, W]`` (mask), ``spacing`` (mm, ``[D, H, W]``), ``affine`` (RAS)."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray


def read_volume(path: Path, default_spacing: tuple[float, float, float] | None = None, mask: bool = False) -> Volume:
    """Read one NIfTI or ``.npy`` volume, reoriented to RAS and held slice-first (see the module docstring)."""
    try:
        if path.name.lower().endswith(".npy"):
            array = np.load(path, allow_pickle=False)
            spacing = tuple(float(s) for s in (default_spacing or (1.0, 1.0, 1.0)))
            want = 3 if mask else (3, 4)
            if array.ndim not in ((want,) if mask else want):
                shape = "[D, H, W]" if mask else "[D, H, W] or [C, D, H, W]"
                raise ValueError(f"is {array.ndim}-D {list(array.shape)}; a {'mask' if mask else 'volume'} .npy must be {shape}")
            affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])  # x = W, y = H, z = D
        else:
            try:
                nib = _nibabel()
            except ValueError as e:
                raise ImportError(f"{path} is a NIfTI file, and {e}") from None
            img = nib.as_closest_canonical(nib.load(str(path)))
            data = np.asanyarray(img.dataobj)
            if data.ndim == 5 and data.shape[3] == 1:
                data = data[:, :, :, 0]  # NIfTI's (x, y, z, t=1, c)
            if mask and data.ndim == 4 and data.shape[3] == 1:
                data = data[..., 0]
            if data.ndim not in ((3,) if mask else (3, 4)):
                raise ValueError(f"is {data.ndim}-D {list(data.shape)}; expected a 3-D volume" + ("" if mask else " or a 4-D one with channels last"))
            zooms = img.header.get_zooms()[:3]
            array = np.moveaxis(data, 3, 0) if data.ndim == 4 else data  # [C,] x, y, z
            array = np.swapaxes(array, -1, -3)  # [C,] z, y, x = D (superior), H (anterior), W (right)
            spacing = (round(float(zooms[2]), 6), round(float(zooms[1]), 6), round(float(zooms[0]), 6))  # float32 in the header
            affine = np.asarray(img.affine, np.float64)
    except ImportError as e:
        raise ValueError(str(e)) from None
    except ValueError as e:
        raise ValueError(f"volume file {path} {e}") from None
    except Exception as e:  # noqa: BLE001 — nibabel and numpy raise many kinds
        raise ValueError(f"volume file {path} cannot be read: {type(e).__name__}: {e}") from None
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_):
        held = "class ids (integers)" if mask else "real intensities"
        raise ValueError(f"volume file {path} holds {array.dtype} values; a {'mask' if mask else 'volume'} holds {held}")
    if not mask and array.ndim == 3:
        array = array[None]
    return Volume(np.ascontiguousarray(array), spacing, affine)


def apply_intensity(image: np.ndarray, cfg: VolumeConfig) -> np.ndarray:
    """``image`` ``[C, D, H, W]`` as float32 after ``data.volumes.intensity`` (see the module docstring)."""
    x = image.astype(np.float32)
    if cfg.intensity == "ct":
        lo, hi = cfg.window
        return (np.clip(x, lo, hi) - lo) / (hi - lo)
    if cfg.intensity == "mri":
        flat = x.reshape(x.shape[0], -1)
        mean, std = flat.mean(1), flat.std(1)
        return ((x - mean[:, None, None, None]) / np.where(std > 0, std, 1.0)[:, None, None, None]).astype(np.float32)
    return x


def check_volume_mask(mask: np.ndarray, path: Path, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """The mask as int64 if every voxel is a class or the ignore index; else a ``ValueError`` naming the file and the voxel."""
    if np.issubdtype(mask.dtype, np.floating):
        if not np.all(np.isfinite(mask)) or not np.all(mask == np.round(mask)):
            bad = np.argwhere(~np.isfinite(mask) | (mask != np.round(mask)))[0]
            raise ValueError(f"mask {path} has the non-integer value {mask[tuple(bad)]} at voxel {tuple(int(i) for i in bad)} "
                             "(slice, row, column); a mask holds class ids")  # fmt: skip
    m = mask.astype(np.int64)
    bad = (m < 0) | (m >= num_classes)
    if ignore_index is not None:
        bad &= m != ignore_index
    if bad.any():
        where = np.argwhere(bad)[0]
        raise ValueError(
            f"mask {path} has value {m[tuple(where)]} at voxel {tuple(int(i) for i in where)} (slice, row, column), but the "
            f"classes are 0..{num_classes - 1}"
            + (f" and the ignore index is {ignore_index}" if ignore_index is not None else " and no data.ignore_index is set")
        )
    return m


def _decode_case(image_path: Path, mask_path: Path, cfg: VolumeConfig, num_classes: int, ignore_index: int | None):
    image = read_volume(image_path, cfg.spacing)
    mask = read_volume(mask_path, cfg.spacing, mask=True)
    if image.array.shape[1:] != mask.array.shape:
        raise ValueError(f"mask {mask_path} is {list(mask.array.shape)} [D, H, W] but its image {image_path} is "
                         f"{list(image.array.shape[1:])}: a mask must have its image's grid")  # fmt: skip
    if not np.allclose(image.affine, mask.affine, atol=1e-3):
        raise ValueError(f"mask {mask_path} has another affine than its image {image_path} (a different voxel grid or "
                         f"position):\n{np.round(mask.affine, 3)}\nversus\n{np.round(image.affine, 3)}")  # fmt: skip
    labels = check_volume_mask(mask.array, mask_path, num_classes, ignore_index)
    if not np.all(np.isfinite(image.array)):
        where = np.argwhere(~np.isfinite(image.array))[0]
        raise ValueError(f"volume {image_path} has a non-finite voxel at {tuple(int(i) for i in where)} (channel, slice, "
                         "row, column): volumes must hold finite values")  # fmt: skip
    return apply_intensity(image.array, cfg), labels.astype(np.int16 if labels.max(initial=0) < 2**15 else np.int64), image.spacing


class VolumeSplit(Dataset):
    """One cached split: item ``i`` is ``(image float32 [C, D, H, W], mask int64 [D, H, W])``; :attr:`spacing` per case."""

    def __init__(self, folder: Path, split: str):
        self.folder, self.split = folder, split
        self.index = json.loads((folder / f"{split}.json").read_text())
        self.cases: list[str] = self.index["cases"]
        self.spacing: list[tuple[float, float, float]] = [tuple(s) for s in self.index["spacing"]]

    def __len__(self) -> int:
        return len(self.cases)

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Case ``i``'s image and mask, memory-mapped."""
        base = self.folder / self.split
        return np.load(base / f"{i:05d}.image.npy", mmap_mode="r"), np.load(base / f"{i:05d}.mask.npy", mmap_mode="r")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.arrays(i)
        return torch.from_numpy(np.array(image, np.float32)), torch.from_numpy(np.array(mask, np.int64))

    @property
    def stats(self) -> SplitStats:
        s = self.index["stats"]
        return SplitStats(len(s["class_counts"]), None, np.asarray(s["class_counts"], np.int64),
                          np.asarray(s["channel_sum"]), np.asarray(s["channel_sumsq"]), int(s["pixels"]))  # fmt: skip

    @property
    def channels(self) -> int:
        return int(self.index["channels"])


def _build_split(files: VolumeFiles, folder: Path, split: str, cfg: VolumeConfig, num_classes: int, ignore_index: int | None) -> None:
    stats = SplitStats(num_classes, ignore_index)
    out = folder / split
    out.mkdir(parents=True, exist_ok=True)
    spacing, shapes, channels = [], [], None
    counter = Counter(f"reading the {split} volumes of {files.root} into the cache", len(files.images), "volumes")
    for i, (img_path, mask_path) in enumerate(zip(files.images, files.masks)):
        image, mask, sp = _decode_case(img_path, mask_path, cfg, num_classes, ignore_index)
        if channels is None:
            channels, first = image.shape[0], img_path
        check_channels(image.shape[0], f"volume {img_path}", channels, f"volume {first}")
        stats.add(image, mask)
        np.save(out / f"{i:05d}.image.npy", image)
        np.save(out / f"{i:05d}.mask.npy", mask)
        spacing.append(list(sp))
        shapes.append(list(mask.shape))
        counter.add()
    counter.finish()
    index = {
        "cases": files.cases, "spacing": spacing, "shapes": shapes, "channels": channels,
        "stats": {"class_counts": stats.class_counts.tolist(), "channel_sum": np.asarray(stats.channel_sum).tolist(),
                  "channel_sumsq": np.asarray(stats.channel_sumsq).tolist(), "pixels": stats.pixels},
    }  # fmt: skip
    (folder / f"{split}.json").write_text(json.dumps(index))


def load_volume_splits(data_cfg: DataConfig, splits: tuple[str, ...]) -> dict[str, VolumeSplit]:
    """Every split of ``data.path`` (or the synthetic volume set), decoded into the cache on first use."""
    cfg = data_cfg.volumes or VolumeConfig()
    root = Path(write_synthetic_volumes(data_cfg)) if data_cfg.kind == "synthetic_volumes" else Path(data_cfg.path)
    if not root.is_dir():
        raise ValueError(f"data.path {data_cfg.path!r} does not exist (resolved to {root.resolve()})")
    names = data_cfg.class_names or []
    files = {s: VolumeFiles.find(root, s) for s in splits}
    key = {
        "version": _CACHE_VERSION, "root": str(root.resolve()), "files": {s: f.fingerprint() for s, f in files.items()},
        "classes": len(names), "ignore": data_cfg.ignore_index,
        "reading": cfg.model_dump(mode="json", include={"intensity", "window", "spacing"}),
    }  # fmt: skip
    folder = cache_path(data_cfg.cache_dir, "volumes", key, 16)
    if not (folder / "complete").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        try:
            for s in splits:
                _build_split(files[s], staging, s, cfg, len(names), data_cfg.ignore_index)
            (staging / "complete").write_text("")
            try:
                os.rename(staging, folder)  # atomic; another process that built it first wins
            except OSError:
                if not (folder / "complete").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    out = {s: VolumeSplit(folder, s) for s in splits}
    channels = {s: out[s].channels for s in splits}
    if len(set(channels.values())) > 1:
        raise ValueError(f"volume dataset {root}: the splits' volumes have different channel counts {channels}")
    return out


# --- the synthetic volume set --------------------------------------------------------------------------


def _tube(rng: np.random.Generator, zz, yy, xx, spacing, radius_mm: float) -> np.ndarray:
    """A thin tube along a smooth random curve running through the volume (roughly along D)."""
    shape = (zz.shape[0], yy.shape[1], xx.shape[2])
    d, h, w = shape
    t = np.linspace(0, 1, 4 * d)
    y0, x0 = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ay, ax, fy, fx = rng.uniform(0.05, 0.2) * h, rng.uniform(0.05, 0.2) * w, rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5)
    cz = t * (d - 1)
    cy = y0 + ay * np.sin(2 * np.pi * fy * t + rng.uniform(0, 6.3))
    cx = x0 + ax * np.sin(2 * np.pi * fx * t + rng.uniform(0, 6.3))
    out = np.zeros(shape, bool)
    for z, y, x in zip(cz, cy, cx):
        lo = [max(0, int(np.floor(c - radius_mm / s)) - 1) for c, s in zip((z, y, x), spacing)]
        hi = [min(n, int(np.ceil(c + radius_mm / s)) + 2) for c, s, n in zip((z, y, x), spacing, shape)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        bz, by, bx = np.ix_(*(np.arange(a, b) for a, b in zip(lo, hi)))
        dist2 = ((bz - z) * spacing[0]) ** 2 + ((by - y) * spacing[1]) ** 2 + ((bx - x) * spacing[2]) ** 2
        out[box] |= dist2 <= radius_mm**2
    return out


def synthetic_volume(rng: np.random.Generator, depth: int, size: int, spacing, imbalance: float, noise: float):
    """One synthetic CT-like volume ``[D, H, W]`` (Hounsfield-like values) and its mask: small spheres of ``lesion``
    (2–4 mm radius), thin tubes of ``vessel`` (≈1 mm radius), on smoothly varying soft tissue."""
    zz, yy, xx = np.meshgrid(np.arange(depth), np.arange(size), np.arange(size), indexing="ij", sparse=True)
    mask = np.zeros((depth, size, size), np.uint8)
    for _ in range(int(rng.integers(2, 4))):
        mask[_tube(rng, zz, yy, xx, spacing, rng.uniform(0.9, 1.3))] = 2
    n_lesions = max(1, int(round(rng.integers(2, 5) / imbalance)))
    for _ in range(n_lesions):
        c = [rng.uniform(0.15, 0.85) * n for n in (depth, size, size)]
        r = rng.uniform(2.0, 4.0) / imbalance ** (1 / 3)
        sphere = ((zz - c[0]) * spacing[0]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2 + ((xx - c[2]) * spacing[2]) ** 2 <= r**2
        mask[sphere] = 1
    field = 40 + 25 * np.sin(zz / depth * rng.uniform(1, 4) + rng.uniform(0, 6)) * np.cos(yy / size * rng.uniform(1, 4)) \
        + 20 * np.sin(xx / size * rng.uniform(1, 5) + rng.uniform(0, 6))  # fmt: skip
    image = field + np.where(mask == 1, 45.0, 0.0) + np.where(mask == 2, 110.0, 0.0)
    image = image + rng.normal(0, noise * 250, image.shape)
    return image.astype(np.float32), mask


def write_synthetic_volumes(data_cfg: DataConfig) -> Path:
    """Write (once, cached) the synthetic volume set as NIfTI files in the split layout and return its root.

    Each case is stored in LPS order with its spacing in the affine (``diag(−sx, −sy, sz)``, as DICOM-derived
    CT often is), so reading it exercises the reorientation to RAS.
    """
    nib = _nibabel()
    v = data_cfg.volumes or VolumeConfig()
    key = {"v": 1, "seed": data_cfg.seed, "size": data_cfg.image_size, "depth": v.depth, "spacing": list(v.synthetic_spacing),
           "n": [data_cfg.num_train, data_cfg.num_val, data_cfg.num_test], "imbalance": data_cfg.imbalance, "noise": data_cfg.noise}  # fmt: skip
    root = cache_path(data_cfg.cache_dir, "synthetic_volumes", key, 16)
    if (root / "complete").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    sd, sh, sw = v.synthetic_spacing
    affine = np.diag([-sw, -sh, sd, 1.0])
    try:
        counter = Counter("writing the synthetic volumes", data_cfg.num_train + data_cfg.num_val + data_cfg.num_test, "volumes")
        for split, n, offset in (("train", data_cfg.num_train, 0), ("val", data_cfg.num_val, 1), ("test", data_cfg.num_test, 2)):
            rng = np.random.default_rng([data_cfg.seed, offset])
            for d in ("images", "masks"):
                (staging / split / d).mkdir(parents=True)
            for i in range(n):
                image, mask = synthetic_volume(rng, v.depth, data_cfg.image_size, v.synthetic_spacing, data_cfg.imbalance, data_cfg.noise)
                # [D, H, W] in RAS order → NIfTI (x, y, z) stored as LPS: x and y flipped
                to_xyz = lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 2)[::-1, ::-1, :])  # noqa: E731
                nib.save(nib.Nifti1Image(to_xyz(image), affine), str(staging / split / "images" / f"case{i:03d}.nii.gz"))
                nib.save(nib.Nifti1Image(to_xyz(mask), affine), str(staging / split / "masks" / f"case{i:03d}.nii.gz"))
                counter.add()
        counter.finish()
        (staging / "classes.txt").write_text("\n".join(SYNTHETIC_VOLUME_CLASSES) + "\n")
        (staging / "complete").write_text("")
        try:
            os.rename(staging, root)
        except OSError:
            if not (root / "complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
