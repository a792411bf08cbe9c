"""The Lightning DataModule over a :class:`~lossbench.data.DataBundle`: transforms, seeded sampling, padding, DDP sharding."""

from __future__ import annotations

import os

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lossbench.config import DataConfig
from lossbench.data.bundle import DataBundle
from lossbench.data.transforms import EpochSampler, EvalItems, PadCollate, SeededItems, eval_transform, train_transform


def auto_workers() -> int:
    """DataLoader workers beside an accelerator: the CPU cores this run may use, less one for the training loop, at most 8.

    The cores a run may use are ``OMP_NUM_THREADS`` when set (``compare`` sets it when runs share
    the CPU), else the cores this process may run on.
    """
    try:
        cores = int(os.environ["OMP_NUM_THREADS"])
    except (KeyError, ValueError):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def num_workers(data_cfg: DataConfig, accelerated: bool) -> int:
    """``data.num_workers``, with ``auto`` resolved.

    ``auto`` is :func:`auto_workers` when the model trains on an accelerator, and 0 when it trains on
    the CPU: there a worker only takes cores from the training threads (measured on 2 cores, 480×360
    folder data resized to 192×256: 27 s an epoch with none, 33 s with one). In-memory synthetic
    data without transforms needs none anywhere.
    """
    if data_cfg.num_workers != "auto":
        return int(data_cfg.num_workers)
    in_memory = data_cfg.kind == "synthetic" and data_cfg.augment is None and data_cfg.resize is None and data_cfg.crop is None
    return 0 if in_memory or not accelerated else auto_workers()


class ShardSampler(Sampler[int]):
    """Evaluation sampler for DDP: rank ``r`` of ``w`` takes indices ``r, r + w, ...``.

    Unlike ``DistributedSampler`` it neither pads nor drops, so every evaluation sample is seen
    exactly once across ranks and pooled metrics equal a single-process evaluation.
    """

    def __init__(self, length: int, rank: int, world_size: int):
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


class SegmentationDataModule(L.LightningDataModule):
    """Lightning DataModule over a :class:`DataBundle`: transforms, seeded sampling, padding, its own DDP sharding.

    Use with ``Trainer(use_distributed_sampler=False)``. Training batches are ``(image, mask)``
    through the training transforms (:mod:`lossbench.data.transforms`), sharded by a seeded
    :class:`~lossbench.data.transforms.EpochSampler`; validation and test batches are dicts that keep
    each original mask (``"target"``), sharded by :class:`ShardSampler` (no padding of the set).
    ``multiple`` is the input size multiple the model needs.
    """

    def __init__(self, bundle: DataBundle, data_cfg: DataConfig, seed: int, multiple: int = 32, dims: int = 2, context: int = 0):
        super().__init__()
        self.bundle, self.cfg, self.seed = bundle, data_cfg, seed
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # split → (images, masks) on the GPU
        self.batch_size, self.eval_batch_size = data_cfg.batch_size, data_cfg.eval_batch_size or data_cfg.batch_size
        self.collate = PadCollate(multiple if dims == 2 else 1, bundle.pad_label)
        b = bundle
        if bundle.is_volumes:  # slices or patches to train on, whole volumes to evaluate (lossbench.data.volume_items)
            from lossbench.data.volume_items import VolumeEvalItems, VolumeSamples, collate_volumes

            v = data_cfg.volumes
            self.train_set = VolumeSamples(b.train, b.num_classes, dims, context, v.patch, v.samples_per_volume,
                                           v.pos_fraction, b.pad_label, seed)  # fmt: skip
            self.val_set, self.test_set = VolumeEvalItems(b.val), VolumeEvalItems(b.test)
            self.eval_collate, self.eval_batch_size = collate_volumes, 1
            return
        self.eval_collate = self.collate
        self.train_set = SeededItems(
            b.train, train_transform(data_cfg.resize, data_cfg.crop, data_cfg.augment, b.pad_label, b.mean, b.std), seed
        )
        evaluate = eval_transform(data_cfg.resize, b.mean, b.std)
        self.val_set, self.test_set = EvalItems(b.val, evaluate), EvalItems(b.test, evaluate)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @property
    def num_workers(self) -> int:
        trainer = self.trainer
        accelerated = trainer.strategy.root_device.type != "cpu" if trainer is not None else torch.cuda.is_available()
        return num_workers(self.cfg, accelerated)

    resident_on: tuple[str, ...] = ("cuda",)
    """The device types whose runs are served :class:`DeviceBatches` (a test adds ``"cpu"`` to run that path here)."""

    @property
    def _on_cuda(self) -> bool:
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _resident(self, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The split's images and masks on the training GPU, when they can be served from there: in-memory
        data (:class:`~lossbench.data.synthetic.ArrayDataset`) that no transform changes, already at a size the
        model takes, and small enough (:data:`RESIDENT_SHARE` of the GPU). Copied once per run."""
        from lossbench.data.synthetic import ArrayDataset

        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else None
        if device is None or device.type not in self.resident_on or self.bundle.is_volumes:
            return None
        source = getattr(self.bundle, split)
        views = (self.train_set, self.val_set, self.test_set)
        if not isinstance(source, ArrayDataset) or any(v.transform is not None for v in views):
            return None
        h, w = source.images.shape[-2:]
        if h % self.collate.multiple or w % self.collate.multiple:
            return None  # the host path pads them
        if split not in self._on_device:
            total = sum(t.nbytes for d in (self.bundle.train, self.bundle.val, self.bundle.test) for t in (d.images, d.masks))
            if device.type == "cuda" and total > RESIDENT_SHARE * torch.cuda.get_device_properties(device).total_memory:
                return None
            self._on_device[split] = (source.images.to(device), source.masks.to(device))
        return self._on_device[split]

    def _loader(self, dataset: Dataset, sampler: Sampler, batch_size: int, collate=None) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self._on_cuda,  # pinning makes a CUDA context: never for a CPU run on a GPU host
            collate_fn=collate or self.collate,
        )

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        rank, world = self._world()
        sampler = EpochSampler(self.train_set, world, rank, shuffle=True, seed=self.seed)
        resident = self._resident("train")
        if resident is not None:
            return DeviceBatches(*resident, sampler, self.batch_size)
        return self._loader(self.train_set, sampler, self.batch_size)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._eval_loader("val", self.val_set)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._eval_loader("test", self.test_set)

    def _eval_loader(self, split: str, items: Dataset) -> DataLoader | DeviceBatches:
        rank, world = self._world()
        sampler = ShardSampler(len(items), rank, world)
        resident = self._resident(split)
        if resident is not None:
            return DeviceBatches(*resident, sampler, self.eval_batch_size, evaluation=True)
        return self._loader(items, sampler, self.eval_batch_size, self.eval_collate)


RESIDENT_SHARE = 0.125
"""In-memory data is kept on the GPU when all its splits take at most this share of the GPU's memory."""


class DeviceBatches:
    """The batches of in-memory data held on the training GPU: each batch is gathered there by index, in the
    order of the same seeded sampler as the host path, so the batches are the same tensors — without a
    loader, a collate or a host-to-device copy per batch. Training batches are ``(image, mask)``,
    evaluation batches the dicts :class:`~lossbench.data.transforms.PadCollate` makes (nothing padded)."""

    batch_sampler = None
    """Lightning reads it on every loader it is given (``_is_dataloader_shuffled``): none here — the sampler orders
    the batches, as a loader's does with ``batch_size`` set."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, sampler: Sampler, batch_size: int, evaluation: bool = False):
        self.images, self.masks, self.sampler, self.batch_size, self.evaluation = images, masks, sampler, batch_size, evaluation

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        order = [k[1] if isinstance(k, tuple) else k for k in self.sampler]  # EpochSampler: (epoch, index)
        index = torch.tensor(order, dtype=torch.long).to(self.images.device, non_blocking=True)
        h, w = self.images.shape[-2:]
        for start in range(0, len(order), self.batch_size):
            i = index[start : start + self.batch_size]
            image, mask = self.images.index_select(0, i), self.masks.index_select(0, i).long()
            if not self.evaluation:
                yield image, mask
                continue
            size = torch.tensor([h, w], device=image.device).expand(len(i), 2)
            yield {"image": image, "mask": mask, "target": mask, "size": size, "target_size": size, "index": i}
