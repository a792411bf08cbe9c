"""A user's image folders, scanned once and decoded once into a memory-mapped cache.

Layout: ``<root>/<split>/images/NAME.<png|jpg|tif|...>`` with the mask ``<root>/<split>/masks/NAME.<png|tif>``
for the splits ``train``, ``val`` and ``test``. Images may have any size (each keeps its own).

The first time a split is used every file is decoded (:mod:`lossbench.data.images`) and checked — an
unreadable file, a mask whose size differs from its image, a mask value that is neither a class
nor the ignore index, an unknown palette colour, an image with another channel count than the
rest: each is a ``ValueError`` naming the file, raised before anything trains — and the pixels are
streamed to ``<cache_dir>/folder-<key>/<split>.{images,masks}.bin`` (flat arrays, read memory-mapped)
with an index ``<split>.json`` of shapes, class pixel counts and per-channel sums. The key covers the file list,
sizes and modification times and the mask reading settings, so a changed file rebuilds the cache;
an epoch then reads arrays instead of decoding files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lossbench.data.checks import (
    SplitStats,
    cache_path,
    check_channels,
    check_finite,
    check_mask,
    check_split_channels,
    pair_fingerprint,
    split_dirs,
)
from lossbench.data.images import IMAGE_SUFFIXES, MASK_SUFFIXES, decode_image_array, read_mask, to_float
from lossbench.io import atomic_file, write_json_atomic
from lossbench.progress import Counter

_CACHE_VERSION = 3  # bump when decoding or checking changes, so caches are rebuilt (2: non-finite pixels, 3: EXIF)


@dataclass
class SplitFiles:
    """The image and mask files of one split, paired by name."""

    root: Path
    images: list[Path]
    masks: list[Path]

    @classmethod
    def find(cls, root: str | Path, split: str) -> SplitFiles:
        images_dir, masks_dir = split_dirs(root, split, "folder dataset")
        images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not images:
            raise ValueError(f"folder dataset: split {split!r} is empty: no image files ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
        by_stem: dict[str, Path] = {}
        for m in sorted(masks_dir.iterdir()):
            if m.suffix.lower() in MASK_SUFFIXES:
                by_stem.setdefault(m.stem, m)
        masks = []
        for img in images:
            if img.stem not in by_stem:
                raise ValueError(f"folder dataset: image {img} has no mask {masks_dir / img.stem}.png (or .tif)")
            masks.append(by_stem[img.stem])
        return cls(images_dir.parent, images, masks)

    def fingerprint(self) -> list[list[Any]]:
        return pair_fingerprint(self.images, self.masks)


def _memmap(path: Path, dtype: str, length: int) -> np.memmap:
    expected = np.dtype(dtype).itemsize * length
    if path.stat().st_size != expected:
        raise ValueError(f"{path} holds {path.stat().st_size} bytes, expected {expected}")
    return np.memmap(path, dtype=np.dtype(dtype), mode="r", shape=(length,))


class CachedSplit(Dataset):
    """One decoded split: items are ``(image [C, H, W], mask int64 [H, W])`` at the file's own size.

    8-bit images stay ``uint8`` (the transforms resize them as such and then scale them to
    ``[0, 1]``); any other image is float32, scaled by :func:`~lossbench.data.images.to_float`.
    """

    def __init__(self, folder: Path, split: str):
        self.index = json.loads((folder / f"{split}.json").read_text())
        self.names = self.index["names"]
        self.shapes = [tuple(s) for s in self.index["shapes"]]
        self.offsets = np.cumsum([0] + [int(np.prod(s)) for s in self.shapes]).tolist()
        self.mask_offsets = np.cumsum([0] + [h * w for _, h, w in self.shapes]).tolist()
        self._images = _memmap(folder / f"{split}.images.bin", self.index["dtype"], self.offsets[-1])
        self._masks = _memmap(folder / f"{split}.masks.bin", self.index["mask_dtype"], self.mask_offsets[-1])

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, w = self.shapes[i]
        image = np.asarray(self._images[self.offsets[i] : self.offsets[i + 1]]).reshape(c, h, w)
        image = image.copy() if image.dtype == np.uint8 else to_float(image)
        mask = np.asarray(self._masks[self.mask_offsets[i] : self.mask_offsets[i + 1]]).reshape(h, w)
        return torch.from_numpy(image), torch.from_numpy(mask.astype(np.int64))

    @property
    def stats(self) -> SplitStats:
        """The class pixel counts and channel sums measured when the cache was built."""
        i = self.index
        return SplitStats(len(i["class_counts"]), None, np.array(i["class_counts"], np.int64), np.array(i["channel_sum"]),
                          np.array(i["channel_sumsq"]), int(i["pixels"]))  # fmt: skip

    @property
    def channels(self) -> int:
        return int(self.index["channels"])


class _Restart(Exception):
    """A split's images do not share one dtype: store them as float32 instead."""


def build_split(files: SplitFiles, folder: Path, split: str, num_classes: int, ignore_index: int | None,
                palette: dict[tuple[int, int, int], int] | None) -> None:  # fmt: skip
    """Decode and check every file of a split and write its cache (the index last: it marks completion).

    Pixels are streamed to disk, so a dataset larger than memory can be cached. Images keep their
    own dtype when the split shares one (``uint8``, ``uint16``, ``float32``), else they are stored
    as float32, already scaled.
    """
    try:
        _build_split(files, folder, split, num_classes, ignore_index, palette, None)
    except _Restart:
        _build_split(files, folder, split, num_classes, ignore_index, palette, np.dtype(np.float32))


def _build_split(files: SplitFiles, folder: Path, split: str, num_classes: int, ignore_index: int | None,
                 palette: dict[tuple[int, int, int], int] | None, dtype: np.dtype | None) -> None:  # fmt: skip
    counter = Counter(f"decoding the {split} split of {files.root.parent} into the cache", len(files.images), "images")
    mask_dtype = np.dtype(np.uint8 if max(num_classes - 1, ignore_index or 0) < 256 and (ignore_index or 0) >= 0 else np.int32)
    shapes: list[list[int]] = []
    stats = SplitStats(num_classes, ignore_index)
    channels = first = None
    with atomic_file(folder / f"{split}.images.bin", "wb") as images_out, atomic_file(folder / f"{split}.masks.bin", "wb") as masks_out:
        for img_path, mask_path in zip(files.images, files.masks):
            image = decode_image_array(img_path)
            check_finite(image, f"image {img_path}")
            mask = read_mask(mask_path, palette)
            if image.shape[1:] != mask.shape:
                raise ValueError(
                    f"mask {mask_path} is {mask.shape[0]}×{mask.shape[1]} (height × width) but its image {img_path} "
                    f"is {image.shape[1]}×{image.shape[2]}"
                )
            if channels is None:
                channels, first = image.shape[0], img_path
                dtype = dtype or image.dtype
            check_channels(image.shape[0], f"image {img_path}", channels, str(first))
            if image.dtype != dtype and dtype != np.float32:
                raise _Restart()
            check_mask(mask, f"mask {mask_path}", num_classes, ignore_index)
            stats.add(to_float(image), mask)
            stored = image if image.dtype == dtype else to_float(image)
            images_out.write(np.ascontiguousarray(stored, dtype=dtype).tobytes())
            masks_out.write(np.ascontiguousarray(mask, dtype=mask_dtype).tobytes())
            shapes.append(list(image.shape))
            counter.add()
    counter.finish()
    index = {
        "names": [p.name for p in files.images],
        "shapes": shapes,
        "dtype": np.dtype(dtype).str,
        "mask_dtype": mask_dtype.str,
        "channels": channels,
        "class_counts": stats.class_counts.tolist(),
        "pixels": stats.pixels,
        "channel_sum": stats.channel_sum.tolist(),
        "channel_sumsq": stats.channel_sumsq.tolist(),
    }
    write_json_atomic(folder / f"{split}.json", index)


def cache_folder(data_cfg: Any, split_files: dict[str, SplitFiles]) -> Path:
    """The cache folder of this data: keyed by files (names, sizes, times) and how masks are read."""
    palette = data_cfg.palette_ids()
    key = {
        "version": _CACHE_VERSION,
        "root": str(Path(data_cfg.path).resolve()),
        "classes": len(data_cfg.class_names),
        "ignore_index": data_cfg.ignore_index,
        "palette": sorted([list(c), v] for c, v in palette.items()) if palette else None,
        "files": {s: f.fingerprint() for s, f in split_files.items()},
    }
    return cache_path(data_cfg.cache_dir, "folder", key, digits=16)


def _usable(folder: Path, split: str) -> bool:
    try:
        CachedSplit(folder, split)
        return True
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return False


def load_folder_splits(data_cfg: Any, splits: tuple[str, ...]) -> dict[str, CachedSplit]:
    """Every split of a folder dataset, decoded and checked once, then read from the cache."""
    split_files = {s: SplitFiles.find(data_cfg.path, s) for s in splits}
    folder = cache_folder(data_cfg, split_files)
    out = {}
    for split in splits:
        if not _usable(folder, split):
            build_split(split_files[split], folder, split, len(data_cfg.class_names), data_cfg.ignore_index, data_cfg.palette_ids())
        out[split] = CachedSplit(folder, split)
    check_split_channels({s: d.channels for s, d in out.items()}, f"folder dataset {data_cfg.path}")
    return out
