"""A config's data as the harness needs it: the three splits and what the model and losses must know.

:func:`load_data` reads any kind — synthetic (:mod:`lossbench.data.synthetic`), a folder of images
(:mod:`lossbench.data.folder`), your own Dataset (:mod:`lossbench.data.dataset`), volumes
(:mod:`lossbench.data.volumes`) — and returns a
:class:`DataBundle`: every split yields ``(image [C_in, H, W], mask [H, W] int64)`` at the image's own
size (volumes: ``(image [C_in, D, H, W], mask [D, H, W])`` and each volume's spacing), with the class names, the ignore index, the input channels, the pixel count of each class in
the training split (handed to losses such as ``weighted_ce`` and ``exp_log``) and the normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset

from lossbench.config import SYNTHETIC_CLASSES, DataConfig
from lossbench.data.checks import SPLITS, SplitStats, check_split_channels
from lossbench.data.dataset import CheckedItems, python_factory, scan_dataset
from lossbench.data.folder import load_folder_splits
from lossbench.data.synthetic import ArrayDataset, synthetic_splits
from lossbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD


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
    """Mask value of padded pixels, which the losses and metrics ignore (:meth:`~lossbench.config.DataConfig.loss_ignore_index`)."""
    mean: list[float] | None = None
    """Per-channel normalisation (``data.normalize``); ``None``: the images are not normalised."""
    std: list[float] | None = None
    spacing: list[tuple[float, float, float]] | None = None
    """Volumes: each training volume's voxel spacing (mm, ``[D, H, W]``); ``None`` for 2-D images."""

    @property
    def is_volumes(self) -> bool:
        return self.spacing is not None

    @property
    def median_spacing(self) -> list[float] | None:
        """The training volumes' median spacing per axis (what the distance-based losses measure in), or ``None``."""
        if self.spacing is None:
            return None
        return [float(v) for v in np.median(np.asarray(self.spacing, np.float64), axis=0)]

    @property
    def loss_ignore_index(self) -> int | None:
        """What the losses and metrics ignore: the data's ignore index, or the padding label (the same value as ``pad_label``)."""
        return self.pad_label

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


_kept: dict[str, DataBundle] | None = None  # a warm worker's last bundle, by its data config (keep_last_data)


def keep_last_data() -> None:
    """In this process, keep the last bundle :func:`load_data` built and hand it out again for the same
    ``data:`` section: a warm worker (:mod:`lossbench.workers`) then reads a suite's data once, not once a run.
    The bundle is only read from (its datasets hold no state that training changes)."""
    global _kept
    _kept = {}


def load_data(data_cfg: DataConfig) -> DataBundle:
    """Build the :class:`DataBundle` a config's ``data:`` section describes.

    Folder data is decoded and checked once into the cache; a Python dataset is read once to check
    it and count its classes. Every problem is a ``ValueError`` naming the file or item, before training.
    """
    if _kept is None:
        return _load_data(data_cfg)
    key = data_cfg.model_dump_json()
    if key not in _kept:
        _kept.clear()  # one at a time: the previous data is let go before the next is read
        _kept[key] = _load_data(data_cfg)
    return _kept[key]


def _load_data(data_cfg: DataConfig) -> DataBundle:
    if data_cfg.kind == "synthetic":
        arrays = synthetic_splits(data_cfg)
        splits = {s: ArrayDataset(arrays[f"{s}_images"], arrays[f"{s}_masks"]) for s in SPLITS}
        names, ignore, in_channels = list(SYNTHETIC_CLASSES), None, 1
        stats = SplitStats(len(names), None)
        stats.add(arrays["train_images"].transpose(1, 0, 2, 3), arrays["train_masks"])
    elif data_cfg.kind == "folder":
        splits = load_folder_splits(data_cfg, SPLITS)
        names, ignore = list(data_cfg.class_names), data_cfg.ignore_index
        in_channels, stats = splits["train"].channels, splits["train"].stats
    elif data_cfg.is_volumes:
        from lossbench.data.volumes import load_volume_splits

        splits = load_volume_splits(data_cfg, SPLITS)
        names, ignore = list(data_cfg.class_names), data_cfg.declared_ignore_index
        in_channels, stats = splits["train"].channels, splits["train"].stats
    else:
        made = python_factory(data_cfg)
        names, ignore = made["class_names"], made["ignore_index"]
        scans = {s: scan_dataset(made[s], s, len(names), ignore) for s in SPLITS}
        channels = {s: scans[s][1] for s in SPLITS}
        check_split_channels(channels, f"data.target {data_cfg.target!r}")
        splits = {s: CheckedItems(made[s]) for s in SPLITS}
        in_channels, stats = channels["train"], scans["train"][0]
    counts = stats.class_counts.tolist()
    mean, std = stats.mean_std() if data_cfg.normalize == "dataset" else (None, None)
    if data_cfg.normalize == "imagenet":
        if in_channels != 3:
            raise ValueError(f"data.normalize is 'imagenet', which needs 3-channel (RGB) images, but the images have {in_channels}")
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    pad_label = data_cfg.loss_ignore_index(ignore, len(names))
    return DataBundle(
        **splits, class_names=names, ignore_index=ignore, in_channels=in_channels, class_frequencies=list(counts),
        pad_label=pad_label, mean=mean, std=std, spacing=splits["train"].spacing if data_cfg.is_volumes else None,
    )  # fmt: skip
