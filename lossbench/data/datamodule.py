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

    def _loader(self, dataset: Dataset, sampler: Sampler, batch_size: int, collate=None) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate or self.collate,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._world()
        sampler = EpochSampler(self.train_set, world, rank, shuffle=True, seed=self.seed)
        return self._loader(self.train_set, sampler, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._world()
        return self._loader(self.val_set, ShardSampler(len(self.val_set), rank, world), self.eval_batch_size, self.eval_collate)

    def test_dataloader(self) -> DataLoader:
        rank, world = self._world()
        return self._loader(self.test_set, ShardSampler(len(self.test_set), rank, world), self.eval_batch_size, self.eval_collate)
