"""One run: train one model with one loss and one seed, test it, and write the run's directory.

A run directory holds::

    config.yaml        the resolved config of this run
    checkpoints/       last.ckpt, written atomically after every epoch (an interrupted run resumes from it)
    metrics.json       status, per-class test metrics, mean IoU, learning curves, epochs, wall time
    wandb/             the W&B run (offline unless W&B is configured) — a sink, never read back

``metrics.json`` is written atomically, by rank 0 only, first with ``"status": "running"`` and at
the end with ``"ok"`` or ``"failed"`` (and the error). Results never depend on W&B.
"""

from __future__ import annotations

import netrc
import os
import platform
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lossbench.config import config_hash
from lossbench.io import read_json, write_json_atomic, write_text_atomic

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
LAST_CKPT = Path("checkpoints") / "last.ckpt"


def run_dir_for(out: str | Path, run_cfg: dict[str, Any]) -> Path:
    """``<out>/<label>/seed<seed>-<hash>``: one folder per (loss, seed, resolved config)."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_cfg["loss"]["label"])
    return Path(out) / label / f"seed{run_cfg['seed']}-{config_hash(run_cfg)}"


def global_rank() -> int:
    """This process's rank as the launcher set it (0 outside distributed runs)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def wandb_mode(wandb_cfg: dict[str, Any]) -> str:
    """``wandb.mode`` from the config, else ``WANDB_MODE``, else online only for a logged-in user."""
    mode = wandb_cfg.get("mode") or os.environ.get("WANDB_MODE")
    if mode:
        return str(mode)
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def resolve_precision(trainer_cfg: dict[str, Any]) -> str:
    """``precision: auto`` → ``bf16-mixed`` on a CUDA GPU that supports it, else ``32-true``."""
    precision = trainer_cfg.get("precision", "auto")
    if precision != "auto":
        return precision
    import torch

    on_gpu = trainer_cfg.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def _record(run_cfg: dict[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "suite": run_cfg["suite"],
        "loss": run_cfg["loss"]["name"],
        "label": run_cfg["loss"]["label"],
        "loss_params": run_cfg["loss"]["params"],
        "seed": run_cfg["seed"],
        "config_hash": config_hash(run_cfg),
        **extra,
    }


def train_run(run_cfg: dict[str, Any], run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train, test and record one run; resume from ``checkpoints/last.ckpt`` if it exists.

    A run whose ``metrics.json`` already says ``ok`` is not retrained; its record is returned.
    On failure the record (status ``failed``, the error) is written and the exception re-raised.
    """
    run_dir = Path(run_dir)
    done = read_json(run_dir / METRICS_FILE)
    if done and done.get("status") == "ok" and done.get("config_hash") == config_hash(run_cfg):
        return done
    rank0 = global_rank() == 0
    attempt = {"attempts": int((done or {}).get("attempts", 0)) + 1}
    if rank0:
        write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(run_cfg, sort_keys=False))
        write_json_atomic(run_dir / METRICS_FILE, _record(run_cfg, "running", started_at=time.time(), **attempt))
    try:
        record = _train(run_cfg, run_dir, progress) | attempt
    except BaseException as e:
        if rank0:
            failed = _record(
                run_cfg,
                "failed",
                **attempt,
                error=f"{type(e).__name__}: {e}",
                traceback=traceback.format_exc(limit=20),
            )
            write_json_atomic(run_dir / METRICS_FILE, failed)
        raise
    if rank0:
        write_json_atomic(run_dir / METRICS_FILE, record)
    return record


@dataclass
class Components:
    """What one run is made of; built by :func:`build_components`, used by training and the benchmark."""

    trainer: Any
    module: Any
    datamodule: Any
    bundle: Any
    clock: Any
    precision: str


def _datamodule(run_cfg: dict[str, Any], bundle: Any) -> Any:
    from lossbench.data import SegmentationDataModule

    d = run_cfg["data"]
    return SegmentationDataModule(bundle, d["batch_size"], d["eval_batch_size"], d["num_workers"], run_cfg["seed"])


def build_components(run_cfg: dict[str, Any], run_dir: Path, progress: bool = True, callbacks: list | None = None) -> Components:
    """Data, module, W&B logger, checkpointing and Trainer of one run, exactly as ``lossbench train`` uses them."""
    import lightning as L
    from lossbench.data import load_data
    from lossbench.module import LastCheckpoint, LossbenchModule, SinkWandbLogger, WallClock
    from lossbench.plugins import load_plugins

    load_plugins(run_cfg.get("plugins") or [])
    L.seed_everything(run_cfg["seed"], workers=True, verbose=False)
    bundle = load_data(run_cfg["data"])
    module = LossbenchModule(
        model_cfg=run_cfg["model"],
        loss_name=run_cfg["loss"]["name"],
        loss_params=run_cfg["loss"]["params"],
        class_names=bundle.class_names,
        ignore_index=bundle.ignore_index,
        in_channels=bundle.in_channels,
        class_frequencies=bundle.class_frequencies,
        lr=run_cfg["optim"]["lr"],
        weight_decay=run_cfg["optim"]["weight_decay"],
    )
    wandb_cfg = run_cfg["wandb"]
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{run_cfg['suite']}-{run_dir.parent.name}-{run_dir.name}")[:120]
    logger = SinkWandbLogger(
        project=wandb_cfg["project"],
        entity=wandb_cfg.get("entity"),
        name=run_cfg["loss"]["label"],
        group=run_cfg["suite"],
        id=run_id,
        resume="allow",
        save_dir=str(run_dir),
        mode=wandb_mode(wandb_cfg),
        tags=list(wandb_cfg.get("tags") or []),
        config=run_cfg,
        job_type="train",
    )
    checkpoint = LastCheckpoint(run_dir / LAST_CKPT)
    clock = WallClock()
    trainer_cfg = dict(run_cfg["trainer"])
    trainer_cfg["precision"] = resolve_precision(trainer_cfg)
    trainer_cfg.setdefault("enable_progress_bar", progress)
    trainer = L.Trainer(
        **trainer_cfg,
        logger=logger,
        callbacks=[checkpoint, clock, *(callbacks or [])],
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
    return Components(trainer, module, _datamodule(run_cfg, bundle), bundle, clock, trainer_cfg["precision"])


def _train(run_cfg: dict[str, Any], run_dir: Path, progress: bool) -> dict[str, Any]:
    import torch

    parts = build_components(run_cfg, run_dir, progress)
    trainer, module, datamodule, bundle, clock = parts.trainer, parts.module, parts.datamodule, parts.bundle, parts.clock
    last = run_dir / LAST_CKPT
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)
        trainer.test(module, datamodule=datamodule, verbose=False)
    finally:
        if trainer.is_global_zero:
            import wandb

            wandb.finish(exit_code=0 if module.test_result is not None else 1)
    return _record(
        run_cfg,
        "ok",
        classes=bundle.class_names,
        class_frequencies=bundle.class_frequencies,
        test=module.test_result,
        history=module.history,
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        wall_s=round(clock.elapsed, 2),
        resumed_after_epoch=module.resumed_after_epoch,
        world_size=trainer.world_size,
        precision=parts.precision,
        device=str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else platform.processor() or "cpu",
        finished_at=time.time(),
    )


def evaluate_checkpoint(run_dir: str | Path, checkpoint: str | Path | None = None, **trainer_overrides: Any) -> dict:
    """Test the checkpoint of a finished run again (by default in one process) and return its metrics.

    Used to check that a distributed evaluation equals a single-process one.
    """
    import lightning as L

    from lossbench.data import load_data
    from lossbench.module import LossbenchModule
    from lossbench.plugins import load_plugins

    run_dir = Path(run_dir)
    run_cfg = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    load_plugins(run_cfg.get("plugins") or [])
    bundle = load_data(run_cfg["data"])
    module = LossbenchModule.load_from_checkpoint(str(checkpoint or run_dir / LAST_CKPT), map_location="cpu")
    datamodule = _datamodule(run_cfg, bundle)
    settings = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False}
    trainer = L.Trainer(**(settings | trainer_overrides), use_distributed_sampler=False, enable_model_summary=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return module.test_result
