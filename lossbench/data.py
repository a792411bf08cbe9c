"""Data: a deliberately imbalanced synthetic dataset, a folder dataset for your own data, a DataModule.

Both datasets yield ``(image [C_in, H, W] float32, mask [H, W] int64)`` and come with what the
harness needs to know: class names, the ignore index, input channels, and the pixel count of each
class in the training split (handed to losses such as ``weighted_ce`` and ``exp_log``).

The synthetic data (:func:`synthetic_splits`) has four classes whose pixel shares span two
orders of magnitude — about 90 % background, 8 % large textured blobs, 1.5 % thin dark curves and
0.3 % tiny bright spots — over a smoothly varying, noisy background with bright single-pixel
distractors, so that no intensity threshold separates the classes: the model has to learn shape
and context. It is generated deterministically from ``data.seed`` and cached as ``.npz``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lossbench.config import DataConfig

SYNTHETIC_CLASSES = ["background", "blob", "curve", "spot"]
SPLITS = ("train", "val", "test")
_GENERATOR_VERSION = 2  # bump when the generator changes, so caches are rebuilt


class ArrayDataset(Dataset):
    """In-memory images ``[N, C, H, W]`` float32 and masks ``[N, H, W]`` int64."""

    def __init__(self, images: np.ndarray, masks: np.ndarray):
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        self.masks = torch.from_numpy(np.ascontiguousarray(masks)).long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i]


@dataclass
class DataBundle:
    """The three splits and what a model and the losses need to know about them."""

    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    ignore_index: int | None
    in_channels: int
    class_frequencies: list[int] = field(default_factory=list)
    """Pixel count of each class in the training split (ignored pixels excluded)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --- synthetic data -------------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, waves: int = 3) -> np.ndarray:
    """A low-frequency random field: a sum of a few sinusoids, each 1–3 cycles across the image."""
    out = np.zeros_like(xx)
    for _ in range(waves):
        theta, phase = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
        freq = rng.uniform(1.0, 3.0) * 2 * math.pi
        out += np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
    return out / waves


def _curve_mask(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """A thin wavy curve (width ≈ 1.5 px) across part of the image."""
    length = rng.uniform(0.4, 0.7)
    theta = rng.uniform(0, 2 * math.pi)
    x0, y0 = rng.uniform(0.15, 0.85, size=2)
    t = np.linspace(0, 1, 4 * size)
    amp, freq, phase = rng.uniform(0.03, 0.08), rng.uniform(1, 3) * 2 * math.pi, rng.uniform(0, 2 * math.pi)
    u, v = t * length, amp * np.sin(freq * t + phase)
    px = x0 + np.cos(theta) * u - np.sin(theta) * v
    py = y0 + np.sin(theta) * u + np.cos(theta) * v
    d2 = (xx[..., None] - px) ** 2 + (yy[..., None] - py) ** 2
    return d2.min(-1) < (0.75 / size) ** 2


def synthetic_sample(rng: np.random.Generator, size: int, imbalance: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image [size, size] float32, mask [size, size] uint8)`` pair of the synthetic dataset."""
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    image = 0.45 + 0.12 * _smooth_field(rng, yy, xx)
    mask = np.zeros((size, size), np.uint8)

    for _ in range(1 + rng.poisson(0.6)):  # blobs: large ellipses with a stripe texture
        cx, cy = rng.uniform(0.15, 0.85, size=2)
        a, b = rng.uniform(0.10, 0.20), rng.uniform(0.07, 0.15)
        theta = rng.uniform(0, math.pi)
        dx, dy = xx - cx, yy - cy
        u, v = np.cos(theta) * dx + np.sin(theta) * dy, -np.sin(theta) * dx + np.cos(theta) * dy
        inside = (u / a) ** 2 + (v / b) ** 2 < 1
        stripes = 0.08 * np.sin(2 * math.pi * rng.uniform(6, 10) * (u + v))
        image = np.where(inside, image + 0.12 + stripes, image)
        mask[inside] = 1

    scale = size / 64  # counts grow with the image so that class shares do not depend on its size
    for _ in range(rng.poisson(1.2 * scale / imbalance)):  # curves: thin and darker
        on = _curve_mask(rng, yy, xx, size)
        image = np.where(on, image - 0.2, image)
        mask[on] = 2

    for _ in range(rng.poisson(2.4 * scale**2 / imbalance)):  # spots: tiny bright discs (r ≈ 1.3 px)
        cx, cy = rng.uniform(0.05, 0.95, size=2)
        on = (xx - cx) ** 2 + (yy - cy) ** 2 < (1.3 / size) ** 2
        image = np.where(on, image + 0.3, image)
        mask[on] = 3

    n_salt = rng.poisson(0.004 * size * size)  # distractors: single bright pixels, not spots
    ys, xs = rng.integers(0, size, n_salt), rng.integers(0, size, n_salt)
    image[ys, xs] += 0.3
    image += rng.normal(0.0, noise, size=image.shape)
    return image.astype(np.float32), mask


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_cache(path: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` (with a note on stderr) if the file is damaged or not what is expected."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 — zip, pickle, truncation, I/O: all mean "rebuild it"
        why = f"{type(e).__name__}: {e}"
    else:
        shapes = {k: v.shape for k, v in arrays.items()}
        if shapes == expected:
            return arrays
        why = f"holds arrays {shapes}, expected {expected}"
    print(f"lossbench: synthetic data cache {path} is damaged ({why}); rebuilding it", file=sys.stderr, flush=True)
    return None


def synthetic_splits(data_cfg: DataConfig) -> dict[str, np.ndarray]:
    """Generate (or load from the cache) the synthetic splits: ``{split}_images``, ``{split}_masks``.

    The result depends only on ``seed, image_size, num_*, imbalance, noise`` (and the generator
    version); each split has its own random stream, so growing one split leaves the others unchanged.
    A damaged cache file is detected and rebuilt.
    """
    keys = ("seed", "image_size", "num_train", "num_val", "num_test", "imbalance", "noise")
    spec = {k: getattr(data_cfg, k) for k in keys} | {"version": _GENERATOR_VERSION}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(data_cfg.cache_dir or "data") / f"synthetic-{digest}.npz"
    size = data_cfg.image_size
    expected = {}
    for split in SPLITS:
        n = getattr(data_cfg, f"num_{split}")
        expected |= {f"{split}_images": (n, 1, size, size), f"{split}_masks": (n, size, size)}
    if path.exists():
        cached = _read_cache(path, expected)
        if cached is not None:
            return cached
    arrays: dict[str, np.ndarray] = {}
    for split_id, split in enumerate(SPLITS):
        rng = np.random.default_rng([int(data_cfg.seed), split_id])
        pairs = [
            synthetic_sample(rng, size, float(data_cfg.imbalance), float(data_cfg.noise))
            for _ in range(getattr(data_cfg, f"num_{split}"))
        ]
        arrays[f"{split}_images"] = np.stack([p[0] for p in pairs])[:, None]
        arrays[f"{split}_masks"] = np.stack([p[1] for p in pairs])
    _atomic_save_npz(path, **arrays)
    return arrays


def class_pixel_counts(masks: np.ndarray | torch.Tensor, num_classes: int, ignore_index: int | None) -> list[int]:
    """Pixels of each class in ``masks`` (ignored pixels excluded)."""
    m = np.asarray(masks).reshape(-1).astype(np.int64)
    if ignore_index is not None:
        m = m[m != ignore_index]
    return np.bincount(m, minlength=num_classes)[:num_classes].tolist()


# --- folder data ----------------------------------------------------------------------------------

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class FolderDataset(Dataset):
    """A user's data: ``<root>/<split>/images/NAME.*`` with masks ``<root>/<split>/masks/NAME.png``.

    Mask pixels are class ids (``0 .. C−1``) or the ignore index. Images are read as grayscale or
    RGB and scaled to ``[0, 1]``; all images of a split must have the same size (no resizing is done).
    """

    def __init__(self, root: str | Path, split: str, num_classes: int, ignore_index: int | None):
        self.root = Path(root) / split
        images_dir, masks_dir = self.root / "images", self.root / "masks"
        if not images_dir.is_dir() or not masks_dir.is_dir():
            raise ValueError(f"folder dataset: expected {images_dir} and {masks_dir} to exist")
        self.images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not self.images:
            raise ValueError(f"folder dataset: no images in {images_dir}")
        self.masks = []
        for img in self.images:
            mask = masks_dir / f"{img.stem}.png"
            if not mask.exists():
                raise ValueError(f"folder dataset: image {img.name} has no mask {mask}")
            self.masks.append(mask)
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.images)

    def read_mask(self, i: int) -> np.ndarray:
        mask = _decode(self.masks[i])
        if mask.ndim != 2:
            raise ValueError(f"mask {self.masks[i]} must be single-channel class ids, got shape {mask.shape}")
        bad = (mask >= self.num_classes) & (mask != (self.ignore_index if self.ignore_index is not None else -1))
        if bad.any():
            raise ValueError(
                f"mask {self.masks[i]} has value {int(mask[bad][0])} but there are {self.num_classes} classes "
                f"(ignore_index={self.ignore_index})"
            )
        return mask.astype(np.int64)

    def read_image(self, i: int) -> np.ndarray:
        arr = _decode(self.images[i], grayscale_or_rgb=True).astype(np.float32) / 255.0
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.read_image(i), self.read_mask(i)
        if image.shape[1:] != mask.shape:
            raise ValueError(f"image {self.images[i]} is {image.shape[1:]} but its mask is {mask.shape}")
        return torch.from_numpy(image), torch.from_numpy(mask)

    def scan(self) -> np.ndarray:
        """Read every image and mask once (before training) and return the class pixel counts.

        A file that cannot be decoded, a mask value that is neither a class nor the ignore index, or
        an image whose size differs from its mask or from the split's first image is a ``ValueError``
        naming the file — raised now, not after the training.
        """
        counts = np.zeros(self.num_classes, np.int64)
        first = None
        for i in range(len(self)):
            image, mask = self[i]
            if first is None:
                first = tuple(image.shape)
            elif tuple(image.shape) != first:
                raise ValueError(
                    f"image {self.images[i]} is {tuple(image.shape)} (channels, height, width) but the first image "
                    f"of {self.root} is {first}; all images of a split must have one size and channel count"
                )
            counts += class_pixel_counts(mask.numpy(), self.num_classes, self.ignore_index)
        return counts


def _decode(path: Path, grayscale_or_rgb: bool = False) -> np.ndarray:
    """Decode an image file with PIL; a damaged file is a ``ValueError`` that names it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if grayscale_or_rgb:
                im = im.convert("L") if im.mode in ("L", "I", "I;16", "1", "P") else im.convert("RGB")
            return np.array(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e} (damaged or not an image file?)") from None


# --- loading a config's data ----------------------------------------------------------------------


def load_data(data_cfg: DataConfig) -> DataBundle:
    """Build the :class:`DataBundle` a config's ``data:`` section describes (folder data is scanned first)."""
    if data_cfg.kind == "synthetic":
        arrays = synthetic_splits(data_cfg)
        splits = {s: ArrayDataset(arrays[f"{s}_images"], arrays[f"{s}_masks"]) for s in SPLITS}
        names = list(SYNTHETIC_CLASSES)
        counts = class_pixel_counts(arrays["train_masks"], len(names), None)
        return DataBundle(**splits, class_names=names, ignore_index=None, in_channels=1, class_frequencies=counts)

    names = list(data_cfg.class_names or [])
    ignore = data_cfg.ignore_index
    splits = {s: FolderDataset(data_cfg.path, s, len(names), ignore) for s in SPLITS}
    counts = {s: splits[s].scan() for s in SPLITS}  # every split is read once now, not after training
    train = splits["train"]
    in_channels = train.read_image(0).shape[0]
    return DataBundle(
        **splits, class_names=list(names), ignore_index=ignore, in_channels=in_channels, class_frequencies=counts["train"].tolist()
    )


class ShardSampler(Sampler[int]):
    """Evaluation sampler for DDP: rank ``r`` of ``w`` takes indices ``r, r + w, ...``.

    Unlike ``DistributedSampler`` it neither pads nor drops, so every evaluation sample is seen
    exactly once across ranks and pooled metrics equal a single-process evaluation.
    """

    def __init__(self, length: int, rank: int, world_size: int):
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


class SegmentationDataModule(L.LightningDataModule):
    """Lightning DataModule over a :class:`DataBundle`; builds its own distributed samplers.

    Use with ``Trainer(use_distributed_sampler=False)``: training shards with a seeded
    ``DistributedSampler``; validation and test use :class:`ShardSampler` (no padding).
    """

    def __init__(self, bundle: DataBundle, batch_size: int, eval_batch_size: int | None, num_workers: int, seed: int):
        super().__init__()
        self.bundle = bundle
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: Dataset, sampler: Sampler, batch_size: int, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._world()
        sampler = DistributedSampler(self.bundle.train, world, rank, shuffle=True, seed=self.seed)
        return self._loader(self.bundle.train, sampler, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._world()
        return self._loader(self.bundle.val, ShardSampler(len(self.bundle.val), rank, world), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        rank, world = self._world()
        return self._loader(self.bundle.test, ShardSampler(len(self.bundle.test), rank, world), self.eval_batch_size)
