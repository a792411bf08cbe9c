"""A deliberately imbalanced synthetic dataset, generated deterministically and cached.

Four classes whose pixel shares span two orders of magnitude — about 90 % background, 8 % large
textured blobs, 1.5 % thin dark curves and 0.3 % tiny bright spots — over a smoothly varying, noisy
background with bright single-pixel distractors, so that no intensity threshold separates the
classes: the model has to learn shape and context. It is generated from ``data.seed`` and cached
as ``.npz`` (:func:`synthetic_splits`); the class names are :data:`lossbench.config.SYNTHETIC_CLASSES`.

Each shape is drawn in its own bounding box (curves and spots in a few pixels around each of their
points), so an image costs time in proportion to its pixels: about 0.3 ms at 64² and 2 ms at 256²
on one core of a 2-core CPU (``make bench``'s data rows). The images are the same, bit for bit, as
the earlier generator's, which built a distance array per curve and grew with the cube of the size.
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
from lossbench.progress import Counter

_GENERATOR_VERSION = 2  # bump when the generator changes, so caches are rebuilt


class ArrayDataset(Dataset):
    """In-memory images ``[N, C, H, W]`` float32 and masks ``[N, H, W]``, each mask handed out as int64.

    The masks stay in their stored dtype (``uint8`` for the synthetic set): held as int64 they took 8× the
    memory — 2.9 GB for ``experiments/full.yaml`` in every process that trains a run."""

    def __init__(self, images: np.ndarray, masks: np.ndarray):
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        self.masks = torch.from_numpy(np.ascontiguousarray(masks))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i].long()



_OFFSETS_3 = np.array([(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)])  # a pixel's 3×3 window
_OFFSETS_5 = np.array([(di, dj) for di in range(-2, 3) for dj in range(-2, 3)])


def _smooth_field(rng: np.random.Generator, coords: np.ndarray, waves: int = 3) -> np.ndarray:
    """A low-frequency random field: a sum of a few sinusoids, each 1–3 cycles across the image.

    ``sin(a·x + b·y + φ)`` is built from its row and column factors (``sin a·x · cos(b·y + φ) + …``):
    two outer products instead of a sine per pixel."""
    size = len(coords)
    out = np.zeros((size, size))
    for _ in range(waves):
        theta, phase = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
        freq = rng.uniform(1.0, 3.0) * 2 * math.pi
        ax, by = freq * np.cos(theta) * coords, freq * np.sin(theta) * coords + phase
        out += np.outer(np.cos(by), np.sin(ax)) + np.outer(np.sin(by), np.cos(ax))  # rows: y, columns: x
    return out / waves


def _near(points_y: np.ndarray, points_x: np.ndarray, radius: float, offsets: np.ndarray, coords: np.ndarray,
          unique: bool = True) -> np.ndarray:  # fmt: skip
    """Flat indices of the pixels whose centre lies within ``radius`` (image units) of any of the points,
    looked for in each point's window of ``offsets`` around its nearest pixel: work linear in the points.
    ``unique=False``: a pixel near several points is listed once per point."""
    size = len(coords)
    ci = np.rint(points_y * size - 0.5).astype(np.int64)[:, None] + offsets[None, :, 0]
    cj = np.rint(points_x * size - 0.5).astype(np.int64)[:, None] + offsets[None, :, 1]
    inside = (ci >= 0) & (ci < size) & (cj >= 0) & (cj < size)
    ci, cj = np.clip(ci, 0, size - 1), np.clip(cj, 0, size - 1)
    d2 = (coords[cj] - points_x[:, None]) ** 2 + (coords[ci] - points_y[:, None]) ** 2
    near = (ci * size + cj)[inside & (d2 < radius**2)]
    return np.unique(near) if unique else near


def _curve_pixels(rng: np.random.Generator, coords: np.ndarray) -> np.ndarray:
    """A thin wavy curve (width ≈ 1.5 px) across part of the image: the flat indices of its pixels — every
    pixel within 0.75 px of one of ``4·size`` points along it, each looked for in its 3×3 window."""
    size = len(coords)
    length = rng.uniform(0.4, 0.7)
    theta = rng.uniform(0, 2 * math.pi)
    x0, y0 = rng.uniform(0.15, 0.85, size=2)
    t = np.linspace(0, 1, 4 * size)
    amp, freq, phase = rng.uniform(0.03, 0.08), rng.uniform(1, 3) * 2 * math.pi, rng.uniform(0, 2 * math.pi)
    u, v = t * length, amp * np.sin(freq * t + phase)
    px = x0 + np.cos(theta) * u - np.sin(theta) * v
    py = y0 + np.sin(theta) * u + np.cos(theta) * v
    return _near(py, px, 0.75 / size, _OFFSETS_3, coords)


def synthetic_sample(rng: np.random.Generator, size: int, imbalance: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image [size, size] float32, mask [size, size] uint8)`` pair of the synthetic dataset.

    Every shape is drawn inside its own bounding box (curves and spots in a small window around each
    point), so an image costs time in proportion to its pixels."""
    coords = (np.arange(size) + 0.5) / size
    image = 0.45 + 0.12 * _smooth_field(rng, coords)
    mask = np.zeros((size, size), np.uint8)

    for _ in range(1 + rng.poisson(0.6)):  # blobs: large ellipses with a stripe texture
        cx, cy = rng.uniform(0.15, 0.85, size=2)
        a, b = rng.uniform(0.10, 0.20), rng.uniform(0.07, 0.15)
        theta = rng.uniform(0, math.pi)
        reach = max(a, b)
        r0, r1 = max(0, int((cy - reach) * size) - 1), min(size, int((cy + reach) * size) + 2)
        c0, c1 = max(0, int((cx - reach) * size) - 1), min(size, int((cx + reach) * size) + 2)
        dy, dx = coords[r0:r1, None] - cy, coords[None, c0:c1] - cx
        u, v = np.cos(theta) * dx + np.sin(theta) * dy, -np.sin(theta) * dx + np.cos(theta) * dy
        inside = (u / a) ** 2 + (v / b) ** 2 < 1
        stripes = 0.08 * np.sin(2 * math.pi * rng.uniform(6, 10) * (u + v))
        box = image[r0:r1, c0:c1]
        box[inside] += 0.12 + stripes[inside]
        mask[r0:r1, c0:c1][inside] = 1

    flat_image, flat_mask = image.reshape(-1), mask.reshape(-1)
    scale = size / 64  # counts grow with the image so that class shares do not depend on its size
    for _ in range(rng.poisson(1.2 * scale / imbalance)):  # curves: thin and darker
        on = _curve_pixels(rng, coords)
        flat_image[on] -= 0.2
        flat_mask[on] = 2

    spots = rng.uniform(0.05, 0.95, size=(rng.poisson(2.4 * scale**2 / imbalance), 2))  # tiny bright discs (r ≈ 1.3 px)
    on = _near(spots[:, 1], spots[:, 0], 1.3 / size, _OFFSETS_5, coords, unique=False)
    np.add.at(flat_image, on, 0.3)  # overlapping discs add up, as light does
    flat_mask[on] = 3

    n_salt = rng.poisson(0.004 * size * size)  # distractors: single bright pixels, not spots
    ys, xs = rng.integers(0, size, n_salt), rng.integers(0, size, n_salt)
    image[ys, xs] += 0.3
    image += noise * rng.standard_normal(size=image.shape)
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
    counter = Counter(f"generating the synthetic data ({size}×{size})", sum(v[0] for k, v in expected.items() if k.endswith("_masks")), "images")
    for split_id, split in enumerate(SPLITS):
        rng = np.random.default_rng([int(data_cfg.seed), split_id])
        n = getattr(data_cfg, f"num_{split}")
        images, masks = np.empty((n, 1, size, size), np.float32), np.empty((n, size, size), np.uint8)
        for i in range(n):
            images[i, 0], masks[i] = synthetic_sample(rng, size, float(data_cfg.imbalance), float(data_cfg.noise))
            counter.add()
        arrays[f"{split}_images"], arrays[f"{split}_masks"] = images, masks
    counter.finish()
    with atomic_file(path, "wb") as fh:
        np.savez(fh, **arrays)
    return arrays
