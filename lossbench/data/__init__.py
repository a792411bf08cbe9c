"""Data: where images and masks come from, and how they reach the model.

================ ==========================================================================================
``bundle``       :func:`load_data`: a config's ``data:`` section → :class:`DataBundle` (splits, classes, ignore index)
``synthetic``    the deliberately imbalanced synthetic dataset, generated and cached
``folder``       your image folders (``<path>/<split>/images`` and ``masks``), decoded once into a cache
``images``       reading image and mask files as they come (PNG, JPEG, TIFF, BMP; 8/16-bit, float, N bands)
``dataset``      your own ``torch`` Dataset (``data.kind: python``)
``volumes``      3-D volumes (``data.kind: volumes``): NIfTI / NumPy, reoriented to RAS, checked, cached; the synthetic volume set
``volume_items`` training slices (2-D, 2.5-D) and patches (3-D) drawn class-balanced; whole volumes for evaluation
``classes``      a folder's ``classes.txt`` (light: the config reads it at load)
``checks``       what every kind shares: mask and channel checks, split statistics, cache paths
``transforms``   resize, augmentation, crop, normalisation, padding (torchvision transforms v2), seeded
``datamodule``   the Lightning DataModule: loaders, samplers, DDP sharding
================ ==========================================================================================
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DataBundle": "bundle", "load_data": "bundle", "SPLITS": "checks", "class_pixel_counts": "checks",
    "SegmentationDataModule": "datamodule", "num_workers": "datamodule", "synthetic_splits": "synthetic",
}  # fmt: skip
"""The package's names, each imported from its module on first use: importing ``lossbench.data`` does not pull
torch in."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lossbench.data' has no attribute {name!r}")
    return getattr(import_module(f"lossbench.data.{_EXPORTS[name]}"), name)
