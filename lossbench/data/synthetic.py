"""A deliberately imbalanced synthetic dataset, generated deterministically and cached.

Four classes whose pixel shares span two orders of magnitude — about 90 % background, 8 % large
textured blobs, 1.5 % thin dark curves and 0.3 % tiny bright spots — over a smoothly varying, noisy
background with bright single-pixel distractors, so that no intensity threshold separates the
classes: the model has to learn shape and context. It is generated from ``data.seed`` and cached
as ``.npz`` (:func:`synthetic_splits`); the class names are :data:`lossbench.config.SYNTHETIC_CLASSES`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lossbench.config import DataConfig
from lossbench.data.checks import SPLITS, cache_path
from lossbench.io import atomic_file

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
    path = cache_path(data_cfg.cache_dir, "synthetic", spec, digits=12, suffix=".npz")
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
