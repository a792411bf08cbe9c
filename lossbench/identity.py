"""A run's identity: its resolved config and the hash that names its folder.

:func:`run_config` narrows a suite to one (loss, seed, budget) :class:`~lossbench.config.RunConfig`
— what a run process receives, written as its ``config.yaml`` — and :func:`config_hash` keys it by
the parts that decide its result, so a finished run is found again and never retrained.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from lossbench.config import LossEntry, RunConfig, RunSections, SuiteConfig, with_settings

_DATA_OFF: dict[str, Any] = {
    "resize": None, "crop": None, "augment": None, "palette": None, "target": None, "kwargs": {}, "normalize": "none",
    "volumes": None,
}  # fmt: skip
_MODEL_OFF: dict[str, Any] = {"encoder_weights": None, "dims": 2, "context": 0}
"""Keys that leave the hash when switched off, so runs made before the keys existed keep their folders."""

# Trainer keys that change only logging or launching, not a run's result (left out of the run hash).
_TRAINER_NOT_HASHED = {"strategy", "accelerator", "log_every_n_steps", "enable_progress_bar", "keep_checkpoint"}


def run_config(cfg: SuiteConfig, loss: LossEntry, seed: int, budget: int | None = None,
               settings: Mapping[str, Any] | None = None) -> RunConfig:  # fmt: skip
    """The resolved config of one run: the suite's run sections plus this loss and seed, trained for
    ``budget`` epochs (``trainer.max_epochs``; default the suite's), with ``settings`` — dotted config
    keys and their values, a tuned suite's point — applied."""
    sections = cfg.model_dump(include=set(RunSections.model_fields))
    if budget is not None:
        sections["trainer"] = {**sections["trainer"], "max_epochs": budget}
    if settings:
        sections = with_settings(sections, settings)
    return RunConfig.model_validate({**sections, "loss": loss.model_dump(), "seed": seed})


def config_hash(run_cfg: RunConfig) -> str:
    """12 hex digits of the parts of a run's config that decide its result.

    Excluded: W&B settings, the report section, the suite name, plugins, the loss label, the data cache
    folder and worker count, data and model keys at their "off" value (:data:`_DATA_OFF`,
    :data:`_MODEL_OFF`), and trainer keys that change only logging or how the work is launched
    (``strategy``, ``accelerator``, logging cadence, progress bar, whether the last checkpoint is kept). ``devices`` and ``num_nodes`` stay
    in: they change the global batch.
    """
    dumped = run_cfg.model_dump(mode="json")
    trainer = {k: v for k, v in dumped["trainer"].items() if k not in _TRAINER_NOT_HASHED}
    data = {k: v for k, v in dumped["data"].items() if k not in {"num_workers", "cache_dir"} and _DATA_OFF.get(k, ...) != v}
    model = {k: v for k, v in dumped["model"].items() if _MODEL_OFF.get(k, ...) != v}
    key = {
        "data": data,
        "model": model,
        "optim": dumped["optim"],
        "trainer": trainer,
        "loss": {"name": run_cfg.loss.name, "params": dumped["loss"]["params"]},
        "seed": run_cfg.seed,
    }
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
