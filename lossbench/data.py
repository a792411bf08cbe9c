"""Data: a deliberately imbalanced synthetic dataset, your own image folders, your own Dataset; a DataModule.

Every kind yields ``(image [C_in, H, W] float32, mask [H, W] int64)`` at the image's own size and
comes with what the harness needs to know (:class:`DataBundle`): class names, the ignore index,
input channels, and the pixel count of each class in the training split (handed to losses such as
``weighted_ce`` and ``exp_log``). :class:`SegmentationDataModule` adds the input pipeline of
:mod:`lossbench.transforms` (resize, crop, augmentation, normalisation, padding); folder data is
decoded once into a cache by :mod:`lossbench.folder`.

The synthetic data (:func:`synthetic_splits`) has four classes whose pixel shares span two
orders of magnitude — about 90 % background, 8 % large textured blobs, 1.5 % thin dark curves and
0.3 % tiny bright spots — over a smoothly varying, noisy background with bright single-pixel
distractors, so that no intensity threshold separates the classes: the model has to learn shape
and context. It is generated deterministically from ``data.seed`` and cached as ``.npz``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lossbench.config import SYNTHETIC_CLASSES, DataConfig
from lossbench.io import atomic_file
from lossbench.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EpochSampler,
    EvalItems,
    PadCollate,
    SeededItems,
    eval_transform,
    train_transform,
)

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
    pad_label: int | None = None
    """Mask value of padded pixels: the ignore index, else ``num_classes`` when batches may be padded."""
    mean: list[float] | None = None
    """Per-channel normalisation (``data.normalize``); ``None``: the images are not normalised."""
    std: list[float] | None = None

    @property
    def loss_ignore_index(self) -> int | None:
        """What the losses and metrics ignore: the data's ignore index, or the padding label."""
        return self.ignore_index if self.ignore_index is not None else self.pad_label

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
    with atomic_file(path, "wb") as fh:
        np.savez(fh, **arrays)
    return arrays


def class_pixel_counts(masks: np.ndarray | torch.Tensor, num_classes: int, ignore_index: int | None) -> list[int]:
    """Pixels of each class in ``masks`` (ignored pixels excluded)."""
    m = np.asarray(masks).reshape(-1).astype(np.int64)
    if ignore_index is not None:
        m = m[m != ignore_index]
    return np.bincount(m, minlength=num_classes)[:num_classes].tolist()


def invalid_label(mask: np.ndarray, num_classes: int, ignore_index: int | None) -> tuple[int, int, int] | None:
    """``(row, column, value)`` of the first mask pixel that is neither a class nor the ignore index, or ``None``."""
    m = np.asarray(mask)
    bad = (m < 0) | (m >= num_classes)
    if ignore_index is not None:
        bad &= m != ignore_index
    if not bad.any():
        return None
    y, x = np.argwhere(bad)[0]
    return int(y), int(x), int(m[y, x])


@dataclass
class SplitStats:
    """What one read of a split learns: class pixel counts, and per-channel sums for ``normalize: dataset``."""

    num_classes: int
    ignore_index: int | None
    class_counts: np.ndarray = None  # type: ignore[assignment]
    channel_sum: np.ndarray | float = 0.0
    channel_sumsq: np.ndarray | float = 0.0
    pixels: int = 0

    def __post_init__(self) -> None:
        if self.class_counts is None:
            self.class_counts = np.zeros(self.num_classes, np.int64)

    def add(self, image: np.ndarray, mask: np.ndarray) -> None:
        """Count one image (float pixels, ``[C, ...]``) and its mask (already checked with :func:`invalid_label`)."""
        self.class_counts += class_pixel_counts(mask, self.num_classes, self.ignore_index)
        f = np.asarray(image, np.float64).reshape(image.shape[0], -1)
        self.channel_sum = self.channel_sum + f.sum(1)
        self.channel_sumsq = self.channel_sumsq + (f**2).sum(1)
        self.pixels += f.shape[1]

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the pixels (a constant channel gets std 1)."""
        mean = np.asarray(self.channel_sum, np.float64) / self.pixels
        std = np.sqrt(np.maximum(np.asarray(self.channel_sumsq, np.float64) / self.pixels - mean**2, 0.0))
        return mean.tolist(), np.where(std > 0, std, 1.0).tolist()


# --- your own data -------------------------------------------------------------------------------


def _python_factory(data_cfg: DataConfig) -> dict[str, Any]:
    """Call ``data.target`` (``"package.module:factory"``) with ``data.kwargs`` and check what it returns."""
    module_name, _, attr = data_cfg.target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"data.target {data_cfg.target!r} cannot be imported: {e}") from None
    try:
        made = factory(**data_cfg.kwargs)
    except TypeError as e:
        raise ValueError(f"data.target {data_cfg.target!r} does not take data.kwargs {data_cfg.kwargs}: {e}") from None
    get = made.get if isinstance(made, dict) else lambda k, d=None: getattr(made, k, d)
    missing = [k for k in ("train", "val", "test") if get(k) is None]
    names = get("class_names") or data_cfg.class_names
    if missing or not names:
        need = missing + ([] if names else ["class_names"])
        raise ValueError(
            f"data.target {data_cfg.target!r} must return train, val, test and class_names (a dict or an object with "
            f"those attributes); {', '.join(need)} missing"
        )
    ignore = get("ignore_index", data_cfg.ignore_index)
    return {"train": get("train"), "val": get("val"), "test": get("test"), "class_names": list(names), "ignore_index": ignore}


def scan_dataset(dataset: Dataset, split: str, num_classes: int, ignore_index: int | None) -> tuple[SplitStats, int]:
    """Read every item of a user's dataset once: check it and count its pixels (``stats, channels``).

    An item must be ``(image float [C, H, W], mask integer [H, W])`` of one size with mask values that
    are classes or the ignore index; anything else is a ``ValueError`` naming the split and the item.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError(f"the {split} split of the dataset is empty")
    stats = SplitStats(num_classes, ignore_index)
    channels = None
    for i in range(n):
        item = dataset[i]
        where = f"item {i} of the {split} split"
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"{where} is a {type(item).__name__}; expected (image [C, H, W], mask [H, W])")
        image, mask = (torch.as_tensor(x) for x in item)
        if image.ndim != 3 or not image.is_floating_point():
            raise ValueError(f"{where}: the image is {image.dtype} {tuple(image.shape)}; expected float [C, H, W]")
        if mask.ndim != 2 or mask.is_floating_point() or mask.shape != image.shape[1:]:
            raise ValueError(
                f"{where}: the mask is {mask.dtype} {tuple(mask.shape)}; expected integers [H, W] = {tuple(image.shape[1:])}"
            )
        if channels is None:
            channels = image.shape[0]
        elif image.shape[0] != channels:
            raise ValueError(f"{where}: the image has {image.shape[0]} channels, item 0 has {channels}")
        bad = invalid_label(mask.numpy(), num_classes, ignore_index)
        if bad is not None:
            raise ValueError(
                f"{where}: the mask has value {bad[2]}, but the classes are 0..{num_classes - 1} (ignore_index={ignore_index})"
            )
        stats.add(image.numpy(), mask.numpy())
    return stats, channels


class CheckedItems(Dataset):
    """A user's dataset as lossbench reads it: ``(float32 image, int64 mask)`` tensors."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.dataset[i]
        return torch.as_tensor(image, dtype=torch.float32), torch.as_tensor(mask).long()


# --- loading a config's data ----------------------------------------------------------------------


def _may_pad(data_cfg: DataConfig) -> bool:
    """Whether a batch can need padding (then padded pixels carry a label the losses ignore).

    Synthetic images of a multiple of 32 with no crop or rescale never do; data of any size may.
    """
    if data_cfg.kind != "synthetic" or data_cfg.crop is not None:
        return True
    if data_cfg.augment is not None and data_cfg.augment.scale is not None:
        return True
    size = data_cfg.resize or (data_cfg.image_size, data_cfg.image_size)
    return any(n % 32 for n in size)


def load_data(data_cfg: DataConfig) -> DataBundle:
    """Build the :class:`DataBundle` a config's ``data:`` section describes.

    Folder data is decoded and checked once into the cache; a Python dataset is read once to check
    it and count its classes. Every problem is a ``ValueError`` naming the file or item, before training.
    """
    if data_cfg.kind == "synthetic":
        arrays = synthetic_splits(data_cfg)
        splits = {s: ArrayDataset(arrays[f"{s}_images"], arrays[f"{s}_masks"]) for s in SPLITS}
        names, ignore, in_channels = list(SYNTHETIC_CLASSES), None, 1
        stats = SplitStats(len(names), None)
        stats.add(arrays["train_images"].transpose(1, 0, 2, 3), arrays["train_masks"])
    elif data_cfg.kind == "folder":
        from lossbench.folder import load_folder_splits

        splits = load_folder_splits(data_cfg, SPLITS)
        names, ignore = list(data_cfg.class_names), data_cfg.ignore_index
        in_channels, stats = splits["train"].channels, splits["train"].stats
    else:
        made = _python_factory(data_cfg)
        names, ignore = made["class_names"], made["ignore_index"]
        scans = {s: scan_dataset(made[s], s, len(names), ignore) for s in SPLITS}
        channels = {s: scans[s][1] for s in SPLITS}
        if len(set(channels.values())) > 1:
            raise ValueError(f"data.target {data_cfg.target!r}: the splits' images have different channel counts {channels}")
        splits = {s: CheckedItems(made[s]) for s in SPLITS}
        in_channels, stats = channels["train"], scans["train"][0]
    counts = stats.class_counts.tolist()
    mean, std = stats.mean_std() if data_cfg.normalize == "dataset" else (None, None)
    if data_cfg.normalize == "imagenet":
        if in_channels != 3:
            raise ValueError(f"data.normalize is 'imagenet', which needs 3-channel (RGB) images, but the images have {in_channels}")
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    pad_label = ignore if ignore is not None else (len(names) if _may_pad(data_cfg) else None)
    return DataBundle(
        **splits, class_names=names, ignore_index=ignore, in_channels=in_channels, class_frequencies=list(counts),
        pad_label=pad_label, mean=mean, std=std,
    )  # fmt: skip


def auto_workers() -> int:
    """DataLoader workers beside an accelerator: the CPU cores this run may use, less one for the training loop, at most 8.

    The cores a run may use are ``OMP_NUM_THREADS`` when set (``compare`` sets it when runs share
    the CPU), else the cores this process may run on.
    """
    try:
        cores = int(os.environ["OMP_NUM_THREADS"])
    except (KeyError, ValueError):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def num_workers(data_cfg: DataConfig, accelerated: bool) -> int:
    """``data.num_workers``, with ``auto`` resolved.

    ``auto`` is :func:`auto_workers` when the model trains on an accelerator, and 0 when it trains on
    the CPU: there a worker only takes cores from the training threads (measured on 2 cores, 480×360
    folder data resized to 192×256: 27 s an epoch with none, 33 s with one). In-memory synthetic
    data without transforms needs none anywhere.
    """
    if data_cfg.num_workers != "auto":
        return int(data_cfg.num_workers)
    in_memory = data_cfg.kind == "synthetic" and data_cfg.augment is None and data_cfg.resize is None and data_cfg.crop is None
    return 0 if in_memory or not accelerated else auto_workers()


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
    """Lightning DataModule over a :class:`DataBundle`: transforms, seeded sampling, padding, its own DDP sharding.

    Use with ``Trainer(use_distributed_sampler=False)``. Training batches are ``(image, mask)``
    through the training transforms (:mod:`lossbench.transforms`), sharded by a seeded
    :class:`~lossbench.transforms.EpochSampler`; validation and test batches are dicts that keep
    each original mask (``"target"``), sharded by :class:`ShardSampler` (no padding of the set).
    ``multiple`` is the input size multiple the model needs.
    """

    def __init__(self, bundle: DataBundle, data_cfg: DataConfig, seed: int, multiple: int = 32):
        super().__init__()
        self.bundle, self.cfg, self.seed = bundle, data_cfg, seed
        self.batch_size, self.eval_batch_size = data_cfg.batch_size, data_cfg.eval_batch_size or data_cfg.batch_size
        self.collate = PadCollate(multiple, bundle.pad_label)
        b = bundle
        self.train_set = SeededItems(
            b.train, train_transform(data_cfg.resize, data_cfg.crop, data_cfg.augment, b.pad_label, b.mean, b.std), seed
        )
        evaluate = eval_transform(data_cfg.resize, b.mean, b.std)
        self.val_set, self.test_set = EvalItems(b.val, evaluate), EvalItems(b.test, evaluate)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @property
    def num_workers(self) -> int:
        trainer = self.trainer
        accelerated = trainer.strategy.root_device.type != "cpu" if trainer is not None else torch.cuda.is_available()
        return num_workers(self.cfg, accelerated)

    def _loader(self, dataset: Dataset, sampler: Sampler, batch_size: int) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=self.collate,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._world()
        sampler = EpochSampler(self.train_set, world, rank, shuffle=True, seed=self.seed)
        return self._loader(self.train_set, sampler, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._world()
        return self._loader(self.val_set, ShardSampler(len(self.val_set), rank, world), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        rank, world = self._world()
        return self._loader(self.test_set, ShardSampler(len(self.test_set), rank, world), self.eval_batch_size)
