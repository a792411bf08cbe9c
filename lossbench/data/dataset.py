"""Your own ``torch.utils.data.Dataset``: ``data.kind: python`` with ``data.target: "package.module:factory"``.

The factory (called with ``data.kwargs``) returns the train, val and test datasets and the class
names (a dict or an object with those attributes; optionally ``ignore_index``). Every item is read
once before training (:func:`scan_dataset`): checked as folder data is checked
(:mod:`lossbench.data.checks`), and counted for the class frequencies and normalisation.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch.utils.data import Dataset

from lossbench.config import DataConfig
from lossbench.data.checks import SplitStats, check_channels, check_finite, check_mask


def python_factory(data_cfg: DataConfig) -> dict[str, Any]:
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
        check_channels(image.shape[0], f"the image of {where}", channels, f"the image of item 0 of the {split} split")
        check_mask(mask.numpy(), f"the mask of {where}", num_classes, ignore_index)
        check_finite(image.numpy(), f"the image of {where}")
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
