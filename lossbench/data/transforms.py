"""From a stored image to a model input: resize, augment, crop, normalise, pad — on ``torchvision.transforms.v2``.

Training items go through :func:`train_transform`: quarter turns and flips, the resize to
``data.resize``, a random rescale (``augment.scale``), the random crop (``data.crop``, padded when the
image is smaller), brightness/contrast jitter, normalisation. Evaluation items only get the resize
and the normalisation, and keep their original mask: metrics are computed at each mask's own size.
Masks are ``tv_tensors.Mask``, which torchvision resamples by nearest neighbour only.

Randomness is seeded per (run seed, epoch, image index) by :class:`SeededItems` with the epoch
carried by :class:`EpochSampler`: a run is reproducible whatever the worker count, a resumed run
sees the batches an uninterrupted one would, and two losses of a suite see the same augmented batches.

:class:`PadCollate` pads a batch to the model's input multiple (the encoder's output stride); the
padding carries a label the losses ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomQuarterTurn(v2.Transform):
    """Rotate by 0, 90, 180 or 270 degrees (exact: a transpose of the pixel grid, no resampling)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(4, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["k"] == 0 or not isinstance(inpt, torch.Tensor):
            return inpt
        return tv_tensors.wrap(torch.rot90(inpt, params["k"], dims=(-2, -1)), like=inpt)


class RandomScale(v2.Transform):
    """Rescale by one factor drawn from ``[low, high]`` (images bilinear, masks nearest).

    The factor applies to ``base`` (``data.resize``) when given — one interpolation for the resize
    and the rescale — else to the input's own size.
    """

    def __init__(self, low: float, high: float, base: Sequence[int] | None = None):
        super().__init__()
        self.low, self.high, self.base = float(low), float(high), base

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = self.base or v2.query_size(flat_inputs)
        s = self.low + (self.high - self.low) * float(torch.rand(()))
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


class RandomBrightnessContrast(v2.Transform):
    """Brightness and contrast, each × a factor from ``[1 − j, 1 + j]``, for any number of channels.

    ``v2.ColorJitter`` takes 1 or 3 channels and clamps to ``[0, 1]``; this keeps N-band and float
    images as they are: ``x → (x − mean) · c + mean · b`` with the image's per-channel mean.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, jitter: float):
        super().__init__()
        self.jitter = float(jitter)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        b, c = (1 - self.jitter + 2 * self.jitter * torch.rand(2)).tolist()
        return {"brightness": b, "contrast": c}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        mean = inpt.mean(dim=(-2, -1), keepdim=True)
        out = (inpt - mean) * params["contrast"] + mean * params["brightness"]
        return tv_tensors.wrap(out, like=inpt)


class ToFloat(v2.Transform):
    """8-bit images to float in ``[0, 1]``; other images are float already (:func:`lossbench.data.images.to_float`).

    Folder images stay 8-bit through the geometric steps (torch's uint8 resize is several times
    faster than float's) and become float just before jitter and normalisation.
    """

    _transformed_types = (tv_tensors.Image,)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return tv_tensors.wrap(as_float(inpt.as_subclass(torch.Tensor)), like=inpt)


def as_float(image: torch.Tensor) -> torch.Tensor:
    """``uint8`` → float32 / 255; anything else → float32 as it is."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()


def _normalize(mean: Sequence[float] | None, std: Sequence[float] | None) -> list[v2.Transform]:
    return [v2.Normalize(list(mean), list(std))] if mean is not None else []


def _compose(steps: list[v2.Transform]) -> v2.Compose | None:
    """The pipeline, or ``None`` when it would only make a float image float."""
    return None if all(isinstance(t, ToFloat) for t in steps) else v2.Compose(steps)


def train_transform(
    resize: Sequence[int] | None,
    crop: Sequence[int] | None,
    augment: Any | None,
    pad_label: int | None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> v2.Compose | None:
    """The training pipeline ``(Image, Mask) → (Image, Mask)`` (``augment``: a ``data.augment`` section or ``None``);
    ``None`` when there is nothing to do."""
    steps: list[v2.Transform] = []
    if augment is not None and augment.rotate90:
        steps.append(RandomQuarterTurn())
    if augment is not None and augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment is not None and augment.vflip:
        steps.append(v2.RandomVerticalFlip())
    if augment is not None and augment.scale is not None:
        steps.append(RandomScale(*augment.scale, base=resize))  # the resize and the rescale in one interpolation
    elif resize is not None:
        steps.append(v2.Resize(list(resize), antialias=True))
    if crop is not None:
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: pad_label if pad_label is not None else 0}
        steps.append(v2.RandomCrop(list(crop), pad_if_needed=True, fill=fill))
    steps.append(ToFloat())
    if augment is not None and augment.jitter > 0:
        steps.append(RandomBrightnessContrast(augment.jitter))
    return _compose(steps + _normalize(mean, std))


def eval_transform(
    resize: Sequence[int] | None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> v2.Compose | None:
    """The evaluation pipeline: the resize (if any) and the normalisation; nothing random."""
    steps: list[v2.Transform] = [v2.Resize(list(resize), antialias=True)] if resize is not None else []
    return _compose(steps + [ToFloat()] + _normalize(mean, std))


def item_seed(run_seed: int, epoch: int, index: int) -> int:
    """The seed of one image's augmentation in one epoch (independent of workers and batch order)."""
    return int(np.random.SeedSequence([int(run_seed), int(epoch), int(index)]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled, seeded, sharded) that yields ``(epoch, index)`` pairs.

    The epoch travels with the index into the worker processes, so augmentation can be seeded per
    epoch even with persistent workers; Lightning calls :meth:`set_epoch` (also on resume).
    """

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, i) for i in super().__iter__())


class SeededItems(Dataset):
    """Training view of a source dataset: item ``(epoch, i)`` is image ``i`` through ``transform``,
    with the randomness seeded by :func:`item_seed`."""

    def __init__(self, source: Dataset, transform: v2.Compose | None, run_seed: int):
        self.source, self.transform, self.run_seed = source, transform, run_seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        image, mask = self.source[i]
        if self.transform is None:
            return as_float(image), mask
        # torchvision draws from the global CPU generator: seed it for this item and restore it after.
        # (The generator's own methods: torch.manual_seed also queues CUDA seeding, a stack capture costing ~1 ms.)
        generator = torch.default_generator
        state = generator.get_state()
        try:
            generator.manual_seed(item_seed(self.run_seed, epoch, i))
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        finally:
            generator.set_state(state)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class EvalItems(Dataset):
    """Evaluation view: ``{"image", "mask"}`` at the input size, ``"target"``, the original mask, and ``"index"``."""

    def __init__(self, source: Dataset, transform: v2.Compose | None):
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, target = self.source[i]
        if self.transform is None:
            return {"image": as_float(image), "mask": target, "target": target, "index": i}
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(target))
        return {"image": image.as_subclass(torch.Tensor), "mask": mask.as_subclass(torch.Tensor), "target": target, "index": i}


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad_to(x: torch.Tensor, h: int, w: int, value: float) -> torch.Tensor:
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    return torch.nn.functional.pad(x, (0, dw, 0, dh), value=value) if dh or dw else x


class PadCollate:
    """Stack a batch, padding images (0) and masks (``pad_label``) at the bottom and right to a common
    size that is a multiple of ``multiple``.

    Evaluation batches (dicts) also get ``"size"`` (each image's unpadded input size) and
    ``"target_size"`` (each original mask's size) as ``[B, 2]`` tensors, ``"index"`` (each image's
    place in its split), and their targets padded.
    """

    def __init__(self, multiple: int, pad_label: int | None):
        self.multiple, self.pad_label = max(1, int(multiple)), pad_label

    def _stack(self, tensors: list[torch.Tensor], value: float | None, what: str) -> torch.Tensor:
        h = _round_up(max(t.shape[-2] for t in tensors), self.multiple)
        w = _round_up(max(t.shape[-1] for t in tensors), self.multiple)
        if value is None and any(t.shape[-2:] != (h, w) for t in tensors):
            got = tuple(tensors[0].shape[-2:])
            raise ValueError(
                f"{what} of size {got} must be padded to {(h, w)} (a multiple of {self.multiple} the model needs), but the "
                "data has no label for padding: set data.resize to a multiple of it or set data.ignore_index"
            )
        return torch.stack([_pad_to(t, h, w, value or 0) for t in tensors])

    def __call__(self, batch: list[Any]) -> Any:
        if isinstance(batch[0], dict):
            images = [b["image"] for b in batch]
            out = {
                "image": self._stack(images, 0.0, "images"),
                "mask": self._stack([b["mask"] for b in batch], self.pad_label, "masks"),
                "size": torch.tensor([list(t.shape[-2:]) for t in images]),
                "target_size": torch.tensor([list(b["target"].shape[-2:]) for b in batch]),
                "index": torch.tensor([b["index"] for b in batch]),
            }
            targets = [b["target"] for b in batch]
            h, w = max(t.shape[-2] for t in targets), max(t.shape[-1] for t in targets)
            fill = self.pad_label if self.pad_label is not None else -1
            out["target"] = torch.stack([_pad_to(t, h, w, fill) for t in targets])
            return out
        images, masks = zip(*batch)
        return self._stack(list(images), 0.0, "images"), self._stack(list(masks), self.pad_label, "masks")
