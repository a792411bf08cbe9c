"""Data: where images and masks come from, and how they reach the model.

================ ==========================================================================================
``bundle``       :func:`load_data`: a config's ``data:`` section → :class:`DataBundle` (splits, classes, ignore index)
``synthetic``    the deliberately imbalanced synthetic dataset, generated and cached
``folder``       your image folders (``<path>/<split>/images`` and ``masks``), decoded once into a cache
``images``       reading image and mask files as they come (PNG, JPEG, TIFF, BMP; 8/16-bit, float, N bands)
``dataset``      your own ``torch`` Dataset (``data.kind: python``)
``volumes``      3-D volumes (``data.kind: volumes``): NIfTI / NumPy, reoriented to RAS, checked, cached; the synthetic volume set
``volume_items`` training slices (2-D, 2.5-D) and patches (3-D) drawn class-balanced; whole volumes for evaluation
``checks``       what every kind shares: mask and channel checks, split statistics, cache paths
``transforms``   resize, augmentation, crop, normalisation, padding (torchvision transforms v2), seeded
``datamodule``   the Lightning DataModule: loaders, samplers, DDP sharding
================ ==========================================================================================
"""

from lossbench.data.bundle import DataBundle, load_data
from lossbench.data.checks import SPLITS, class_pixel_counts
from lossbench.data.datamodule import SegmentationDataModule, num_workers
from lossbench.data.synthetic import synthetic_splits

__all__ = ["SPLITS", "DataBundle", "SegmentationDataModule", "class_pixel_counts", "load_data", "num_workers", "synthetic_splits"]
