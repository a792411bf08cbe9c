"""What a model sees of a volume: training slices or patches drawn so the rare classes are not drowned out,
and whole volumes for evaluation.

Training (:class:`VolumeSamples`): each epoch draws ``data.volumes.samples_per_volume`` samples from every
training volume. A sample is centred on a voxel chosen by MONAI's ``RandCropByLabelClasses``: with probability
``pos_fraction`` on a voxel of a foreground class — each class present in the volume equally likely, so a
lesion of 0.1 % of the voxels is drawn as often as a vessel of 1 % — else on a background voxel.

* ``model.dims: 2``: the sample is the slice through that voxel (``[C·(2k+1), H, W]`` with ``model.context`` k
  neighbouring slices on each side as extra channels, the volume's end slices repeated past its ends) and its
  mask ``[H, W]``;
* ``model.dims: 3``: the sample is the ``data.volumes.patch`` ``[C, D, H, W]`` around it (the volume padded to the
  patch where smaller: image 0, mask the padding label), and its mask.

The randomness is seeded per (run seed, epoch, sample), as for images (:func:`~lossbench.data.transforms.item_seed`).

Evaluation (:class:`VolumeEvalItems`): item ``i`` is the whole volume ``i`` at its own grid, its mask, its
index and its spacing; the module predicts it whole (:mod:`lossbench.models`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lossbench.data.transforms import item_seed
from lossbench.data.volumes import VolumeSplit


def class_ratios(present: list[bool], pos_fraction: float) -> list[float]:
    """``RandCropByLabelClasses`` ratios: background ``1 − pos_fraction``, the rest shared equally by the
    foreground classes present (all to the background when none is)."""
    fg = [k for k in range(1, len(present)) if present[k]]
    if not fg:
        return [1.0] + [0.0] * (len(present) - 1)
    ratios = [0.0] * len(present)
    ratios[0] = (1.0 - pos_fraction) if present[0] else 0.0
    for k in fg:
        ratios[k] = pos_fraction / len(fg)
    if sum(ratios) == 0:
        ratios[fg[0]] = 1.0
    return ratios


class VolumeSamples(Dataset):
    """Training view of a :class:`VolumeSplit`: item ``(epoch, j)`` is sample ``j % samples_per_volume`` of volume
    ``j // samples_per_volume`` (see the module docstring)."""

    def __init__(self, source: VolumeSplit, num_classes: int, dims: int, context: int, patch: tuple[int, int, int],
                 samples_per_volume: int, pos_fraction: float, pad_label: int | None, run_seed: int):  # fmt: skip
        self.source, self.num_classes, self.dims, self.context = source, num_classes, dims, context
        self.patch, self.per_volume, self.pos_fraction = tuple(patch), samples_per_volume, pos_fraction
        self.pad_label, self.run_seed = pad_label, run_seed
        self._indices: dict[int, tuple[list[np.ndarray], list[float]]] = {}

    def __len__(self) -> int:
        return len(self.source) * self.per_volume

    def _volume(self, v: int) -> tuple[np.ndarray, np.ndarray]:
        """Volume ``v`` padded for sampling: by ``context`` slices (dims 2) or up to the patch (dims 3)."""
        image, mask = self.source.arrays(v)
        image, mask = np.asarray(image, np.float32), np.asarray(mask, np.int64)
        fill = self.pad_label if self.pad_label is not None else -1
        if self.dims == 2:
            k = self.context
            if k:
                image = np.pad(image, ((0, 0), (k, k), (0, 0), (0, 0)), mode="edge")
                mask = np.pad(mask, ((k, k), (0, 0), (0, 0)), constant_values=fill)
            return image, mask
        grow = [(0, max(0, p - n)) for p, n in zip(self.patch, mask.shape)]
        if any(g[1] for g in grow):
            image = np.pad(image, [(0, 0), *grow])
            mask = np.pad(mask, grow, constant_values=fill)
        return image, mask

    def _class_indices(self, v: int, mask: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        if v not in self._indices:
            from monai.transforms.utils import map_classes_to_indices

            valid = mask
            if self.dims == 2 and self.context:  # centres only on real slices
                valid = mask.copy()
                valid[: self.context] = -1
                valid[mask.shape[0] - self.context :] = -1
            indices = map_classes_to_indices(valid[None], num_classes=self.num_classes)
            present = [len(i) > 0 for i in indices]
            self._indices[v] = (indices, class_ratios(present, self.pos_fraction))
        return self._indices[v]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        from monai.transforms import RandCropByLabelClasses

        epoch, j = key
        v = j // self.per_volume
        image, mask = self._volume(v)
        indices, ratios = self._class_indices(v, mask)
        if self.dims == 2:
            size = (2 * self.context + 1, -1, -1)  # the slice and its neighbours, whole in-plane
        else:
            size = self.patch
        crop = RandCropByLabelClasses(spatial_size=size, ratios=ratios, num_classes=self.num_classes, num_samples=1,
                                      indices=indices, warn=False)  # fmt: skip
        crop.set_random_state(seed=item_seed(self.run_seed, epoch, j) % (2**32))
        both = np.concatenate([image, mask[None].astype(np.float32)], 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (out,) = crop(torch.from_numpy(both), label=torch.from_numpy(mask[None]))
        out = out.as_tensor() if hasattr(out, "as_tensor") else out
        x, y = out[:-1].float(), out[-1].round().long()
        if self.dims == 2:
            c, k = x.shape[0], self.context
            return x.reshape(c * (2 * k + 1), *x.shape[-2:]).contiguous(), y[k].contiguous()
        return x.contiguous(), y.contiguous()


class VolumeEvalItems(Dataset):
    """Evaluation view: ``{"image" [C, D, H, W], "mask", "target" [D, H, W], "index", "spacing"}`` of whole volumes."""

    def __init__(self, source: VolumeSplit):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, mask = self.source[i]
        return {"image": image, "mask": mask, "target": mask, "index": i,
                "spacing": torch.tensor(self.source.spacing[i], dtype=torch.float64)}  # fmt: skip


def collate_volumes(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of whole volumes (of any sizes: evaluation takes one at a time) as a batch of one."""
    if len(batch) != 1:
        raise ValueError(f"volumes are evaluated one at a time, got a batch of {len(batch)}")
    (b,) = batch
    return {"image": b["image"][None], "mask": b["mask"][None], "target": b["target"][None],
            "index": torch.tensor([b["index"]]), "spacing": b["spacing"][None]}  # fmt: skip
