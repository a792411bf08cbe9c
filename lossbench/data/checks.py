"""What every kind of data shares: the mask and channel checks, the pixel statistics of a split, the cache path.

Synthetic, folder and Python data are read differently but checked and counted by these same rules,
so a bad mask value or a channel mismatch reads the same wherever it is found.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbench.metrics import scored_pixels

SPLITS = ("train", "val", "test")
"""The splits of every dataset, in this order."""


STATS_CHUNK = 1 << 24
"""Pixels counted per step: a split is counted in slices of this size, so no copy of a whole split is made
(``experiments/full.yaml``'s training masks widened to int64 at once took 2 GB and 5 s)."""


def class_pixel_counts(masks: np.ndarray | torch.Tensor, num_classes: int, ignore_index: int | None) -> list[int]:
    """Pixels of each class in ``masks`` (ignored pixels excluded)."""
    flat = np.asarray(masks).reshape(-1)
    counts = np.zeros(num_classes, np.int64)
    for start in range(0, flat.size, STATS_CHUNK):
        m = flat[start : start + STATS_CHUNK]
        if ignore_index is not None:
            m = m[m != ignore_index]
        if m.dtype.kind != "u":
            m = m.astype(np.int64)
        counts += np.bincount(m, minlength=num_classes)[:num_classes]
    return counts.tolist()


def invalid_label(mask: np.ndarray, num_classes: int, ignore_index: int | None) -> tuple[int, int, int] | None:
    """``(row, column, value)`` of the first mask pixel that is neither a class nor the ignore index, or ``None``."""
    m = np.asarray(mask)
    bad = ~scored_pixels(m, num_classes, ignore_index)
    if ignore_index is not None:
        bad &= m != ignore_index
    if not bad.any():
        return None
    y, x = np.argwhere(bad)[0]
    return int(y), int(x), int(m[y, x])


def check_mask(mask: np.ndarray, what: str, num_classes: int, ignore_index: int | None) -> None:
    """Raise a ``ValueError`` naming ``what`` (a file, an item) if a mask value is neither a class nor the ignore index."""
    bad = invalid_label(mask, num_classes, ignore_index)
    if bad is not None:
        y, x, value = bad
        raise ValueError(
            f"{what} has value {value} at row {y}, column {x}, but the classes are 0..{num_classes - 1}"
            + (f" and the ignore index is {ignore_index}" if ignore_index is not None else " and no data.ignore_index is set")
        )


def check_finite(image: np.ndarray, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` if a float image has a NaN or infinite pixel (it would make every
    run's loss NaN, and the error would blame the loss)."""
    if np.issubdtype(np.asarray(image).dtype, np.floating):
        bad = ~np.isfinite(image)
        if bad.any():
            where = np.argwhere(bad)[0]
            raise ValueError(f"{what} has a non-finite pixel ({image[tuple(where)]}) at {tuple(int(i) for i in where)} "
                             f"(channel, row, column), {int(bad.sum())} in all: images must hold finite values")  # fmt: skip


def check_channels(channels: int, what: str, first: int, first_what: str) -> None:
    """Raise a ``ValueError`` if image ``what`` has another channel count than the first image of its split."""
    if channels != first:
        raise ValueError(f"{what} has {channels} channel(s) but {first_what} has {first}; all images need the same")


def check_split_channels(channels: dict[str, int], source: str) -> None:
    """Raise a ``ValueError`` naming ``source`` if the splits' images have different channel counts."""
    if len(set(channels.values())) > 1:
        raise ValueError(f"{source}: the splits' images have different channel counts {channels}")


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
        """Count one image (float pixels, ``[C, ...]``) and its mask (already checked with :func:`check_mask`)."""
        self.class_counts += class_pixel_counts(mask, self.num_classes, self.ignore_index)
        f = np.asarray(image).reshape(image.shape[0], -1)
        total, squares = np.zeros(f.shape[0]), np.zeros(f.shape[0])
        step = STATS_CHUNK // max(f.shape[0], 1)
        for start in range(0, f.shape[1], step):  # float64 a slice at a time
            part = f[:, start : start + step].astype(np.float64)
            total += part.sum(1)
            squares += np.einsum("ij,ij->i", part, part)
        self.channel_sum = self.channel_sum + total
        self.channel_sumsq = self.channel_sumsq + squares
        self.pixels += f.shape[1]

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the pixels (a constant channel gets std 1)."""
        mean = np.asarray(self.channel_sum, np.float64) / self.pixels
        std = np.sqrt(np.maximum(np.asarray(self.channel_sumsq, np.float64) / self.pixels - mean**2, 0.0))
        return mean.tolist(), np.where(std > 0, std, 1.0).tolist()


def split_dirs(root: str | Path, split: str, what: str) -> tuple[Path, Path]:
    """``<root>/<split>/images`` and ``masks``, or a ``ValueError`` naming the missing one (``what``: "folder dataset", ...)."""
    base = Path(root) / split
    images_dir, masks_dir = base / "images", base / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise ValueError(f"{what}: expected the folder {d} (layout: <path>/<split>/images and <split>/masks)")
    return images_dir, masks_dir


def pair_fingerprint(images: list[Path], masks: list[Path]) -> list[list[Any]]:
    """Names, sizes and modification times of paired image and mask files: a cache key that changes with any file."""
    out = []
    for img, mask in zip(images, masks):
        si, sm = img.stat(), mask.stat()
        out.append([img.name, si.st_size, si.st_mtime_ns, mask.name, sm.st_size, sm.st_mtime_ns])
    return out


def cache_path(cache_dir: str | None, kind: str, key: dict[str, Any], digits: int, suffix: str = "") -> Path:
    """``<cache_dir>/<kind>-<digest><suffix>``: a cache entry named by the SHA-256 of ``key`` (its first ``digits`` hex digits).

    ``cache_dir`` is ``data.cache_dir`` (an empty value means the default, ``data``).
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:digits]
    return Path(cache_dir or "data") / f"{kind}-{digest}{suffix}"
