"""The training loop and the data pipeline: ``lossbench train``'s machinery against a plain PyTorch loop."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

class _EpochTimer(Callback):
    """Training time of each epoch: from its start to the start of its validation (or its end)."""

    def __init__(self):
        self.seconds: list[float] = []
        self.t0: float | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def _stop(self):
        if self.t0 is not None:
            self.seconds.append(time.perf_counter() - self.t0)
            self.t0 = None

    def on_validation_start(self, trainer, pl_module):
        self._stop()

    def on_train_epoch_end(self, trainer, pl_module):
        self._stop()


def _plain_loop(run_cfg: Any, epochs: int) -> tuple[list[float], float]:
    """Seconds per epoch of a plain PyTorch loop over the run's model, loss and batches; and time spent waiting for data."""
    import lightning as L

    from lossbench.run import build_components

    L.seed_everything(0, verbose=False)
    parts = build_components(run_cfg, Path(tempfile.mkdtemp(prefix="lossbench-bench-")), progress=False)
    module, loader = parts.module, parts.datamodule.train_dataloader()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, loss_fn = module.model.to(device), module.loss
    opt = torch.optim.AdamW(model.parameters(), lr=run_cfg.optim.lr, weight_decay=run_cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    seconds, waited = [], 0.0
    model.train()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        it = iter(loader)
        while True:
            t_wait = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if epoch > 0:
                waited += time.perf_counter() - t_wait
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    return seconds, waited


def _lightning_loop(run_cfg: Any) -> list[float]:
    """Seconds per epoch of ``lossbench train``'s own Trainer, logger and checkpointing."""
    import lightning as L
    import wandb

    from lossbench.run import build_components

    L.seed_everything(0, verbose=False)
    timer = _EpochTimer()
    parts = build_components(run_cfg, Path(tempfile.mkdtemp(prefix="lossbench-bench-")), progress=False, callbacks=[timer])
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    wandb.finish()
    return timer.seconds


def bench_training(config: str, epochs: int, overrides: list[str]) -> dict[str, Any]:
    """Images/s of the real ``lossbench train`` machinery vs a plain PyTorch loop, same model/loss/data."""
    from lossbench.config import LossEntry, load_config
    from lossbench.identity import run_config

    cfg = load_config(config, [f"trainer.max_epochs={epochs}", "trainer.accelerator=auto", "trainer.devices=1",
                               "wandb.mode=offline", *overrides])  # fmt: skip
    run_cfg = run_config(cfg, LossEntry(name="dice"), seed=0)
    n_images = run_cfg.data.num_train
    plain1, waited = _plain_loop(run_cfg, epochs)
    light = _lightning_loop(run_cfg)
    plain2, _ = _plain_loop(run_cfg, epochs)
    measured = lambda s: s[1:] if len(s) > 1 else s  # noqa: E731  (the first epoch warms up)
    plain_s = statistics.median(measured(plain1) + measured(plain2))
    light_s = statistics.median(measured(light))
    return {
        "config": config,
        "epochs": epochs,
        "images_per_epoch": n_images,
        "batch_size": run_cfg.data.batch_size,
        "model": f"{run_cfg.model.arch} / {run_cfg.model.encoder}",
        "plain_images_per_s": n_images / plain_s,
        "lossbench_images_per_s": n_images / light_s,
        "overhead": light_s / plain_s - 1.0,
        "data_wait_share": waited / sum(measured(plain1)),
        "met": light_s / plain_s - 1.0 <= 0.10,
    }


def write_folder_dataset(root: Path, n: int, height: int, width: int, classes: int = 11, seed: int = 0) -> None:
    """A street-scene-like folder dataset: RGB PNGs, class-id PNG masks (``classes`` classes, void 255),
    bands of large classes and discs of small ones, so the class shares span two orders of magnitude."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    for split, count in (("train", n), ("val", max(2, n // 4)), ("test", max(2, n // 4))):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            mask = np.zeros((height, width), np.uint8)
            mask[: height // 3], mask[2 * height // 3 :] = 1, 2
            for c in range(3, classes):
                for _ in range(rng.poisson(2)):
                    cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(2, max(3, height // (9 if c < 6 else 36)))
                    mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
            mask[rng.random((height, width)) < 0.01] = 255
            colour = (mask[..., None].astype(np.int64) * np.array([20, 7, 13])) % 256
            image = (colour + rng.normal(0, 20, (height, width, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{i:04d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i:04d}.png")
    (root / "classes.txt").write_text("\n".join(f"class{c}" for c in range(classes)) + "\n")


def bench_data(config: str, n: int, size: tuple[int, int], resize: tuple[int, int], epochs: int) -> dict[str, Any]:
    """The folder-data pipeline against the training loop it feeds.

    A folder dataset of ``n`` RGB PNGs of ``size`` is decoded once into the cache (timed), then the
    training loader (resize, flip, rescale, crop, normalisation; ``num_workers: auto``) is read alone
    (images/s), and a plain training loop over it measures the share of its time spent waiting for data.
    """
    from lossbench.config import LossEntry, load_config
    from lossbench.identity import run_config
    from lossbench.data import load_data
    from lossbench.run import build_components

    root = Path(tempfile.mkdtemp(prefix="lossbench-bench-data-"))
    write_folder_dataset(root / "data", n, *size)
    sets = ["data.kind=folder", f"data.path={root / 'data'}", f"data.cache_dir={root / 'cache'}", "data.ignore_index=255",
            f"data.resize=[{resize[0]}, {resize[1]}]", f"data.crop=[{resize[0]}, {resize[1]}]", "data.normalize=dataset",
            "data.augment={hflip: true, scale: [0.75, 1.25]}", "trainer.accelerator=auto", "trainer.devices=1",
            "wandb.mode=disabled", "report.focus="]  # fmt: skip
    run_cfg = run_config(load_config(config, sets), LossEntry(name="dice"), seed=0)
    t0 = time.perf_counter()
    load_data(run_cfg.data)
    decode_s = time.perf_counter() - t0
    parts = build_components(run_cfg, root / "run", progress=False)
    loader = parts.datamodule.train_dataloader()
    read = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        for _ in loader:
            pass
        read.append(time.perf_counter() - t0)
    seconds, waited = _plain_loop(run_cfg, epochs)
    measured = seconds[1:] if len(seconds) > 1 else seconds
    share = waited / sum(measured)
    return {
        "config": config,
        "images": n,
        "size": list(size),
        "resize": list(resize),
        "workers": parts.datamodule.num_workers,
        "decode_images_per_s": (n + 2 * max(2, n // 4)) / decode_s,
        "loader_images_per_s": n / statistics.median(read[1:] if len(read) > 1 else read),
        "loop_images_per_s": n / statistics.median(measured),
        "data_wait_share": share,
        "met": share < 0.05,
    }


SYNTHETIC_TARGET_MS = {64: 1.0, 256: 5.0}
"""Generation time per synthetic image on one core (issue 27): linear in the pixels."""


def bench_synthetic(sizes: list[int], images: int) -> list[dict[str, Any]]:
    """Milliseconds per synthetic image (best of three batches of ``images // 3``) at each size, one core."""
    import numpy as np

    from lossbench.data.synthetic import synthetic_sample

    rows = []
    for size in sizes:
        n = max(1, images // 3) if size <= 64 else max(1, images // 12)
        best = float("inf")
        for attempt in range(3):
            rng = np.random.default_rng([0, attempt])
            t0 = time.perf_counter()
            for _ in range(n):
                synthetic_sample(rng, size, 1.0, 0.08)
            best = min(best, (time.perf_counter() - t0) / n)
        target = SYNTHETIC_TARGET_MS.get(size)
        rows.append({"size": size, "ms_per_image": 1000 * best, "images": n, "target_ms": target,
                     "met": None if target is None else 1000 * best <= target})  # fmt: skip
    return rows
