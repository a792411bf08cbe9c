"""Experiment configs: YAML files under ``experiments/``, ``--set key=value`` overrides, validation.

A config is a plain nested dict. :func:`load_config` reads a file, merges it over
:data:`DEFAULTS`, applies overrides and checks it, so every later stage can trust its shape.
:func:`run_config` narrows a suite config to one (loss, seed) run and :func:`config_hash` keys it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "suite": None,  # name of the suite; the W&B group. Defaults to the config file's stem.
    "plugins": [],  # modules (importable names or .py paths) that register extra losses
    "losses": [],  # names, or {name: ..., params: {...}, label: ...}
    "seeds": [0],
    "jobs": 1,  # runs trained at once by `lossbench compare` (CPU: each gets cores/jobs threads)
    "data": {
        "kind": "synthetic",  # "synthetic" or "folder"
        "seed": 0,  # data generation seed; the same for every run of a suite
        "image_size": 64,
        "num_train": 256,
        "num_val": 64,
        "num_test": 64,
        "imbalance": 1.0,  # > 1 makes the rare classes rarer, < 1 less rare
        "noise": 0.08,
        "cache_dir": "data",
        "path": None,  # folder datasets: root holding train/ val/ test/, each with images/ and masks/
        "class_names": None,  # folder datasets: names, one per class id
        "ignore_index": None,  # folder datasets: mask value to ignore (synthetic data has none)
        "batch_size": 16,
        "eval_batch_size": None,
        "num_workers": 0,
    },
    "model": {"arch": "Unet", "encoder": "resnet18", "kwargs": {}},
    "optim": {"lr": 1e-3, "weight_decay": 1e-4},
    "trainer": {
        "max_epochs": 10,
        "accelerator": "auto",
        "devices": 1,
        "strategy": "auto",
        "precision": "auto",  # bf16-mixed on a GPU that supports it, else 32-true
        "log_every_n_steps": 10,
        "deterministic": False,
    },
    "wandb": {"project": "lossbench", "entity": None, "mode": None, "tags": []},
}

RUN_KEYS = ("data", "model", "optim", "trainer")
"""Sections that, with the loss and seed, determine a run's result (and so its hash)."""


class ConfigError(ValueError):
    """A config problem, told in one sentence."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``override`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["trainer.max_epochs=1", "data.num_train=8"]`` → nested dict; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects key=value with a dotted key, got {item!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with another --set on {part!r}")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e.problem})") from None
    return out


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a YAML config, merge it over :data:`DEFAULTS`, apply ``--set`` overrides and validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    cfg = deep_merge(DEFAULTS, raw)
    cfg = deep_merge(cfg, parse_overrides(overrides))
    if cfg["suite"] is None:
        cfg["suite"] = Path(path).stem if path is not None else "adhoc"
    validate(cfg)
    return cfg


def _unknown_keys(given: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    extra = sorted(set(given) - set(allowed))
    if extra:
        raise ConfigError(f"unknown key(s) {', '.join(extra)} in {where}; known: {', '.join(sorted(allowed))}")


def validate(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` on unknown keys and wrong values (trainer: keys are Lightning's)."""
    _unknown_keys(cfg, DEFAULTS, "the config")
    for section in ("data", "model", "optim", "wandb"):
        if not isinstance(cfg[section], Mapping):
            raise ConfigError(f"config section {section!r} must be a mapping")
        _unknown_keys(cfg[section], DEFAULTS[section], f"section {section!r}")
    if not isinstance(cfg["trainer"], Mapping):
        raise ConfigError("config section 'trainer' must be a mapping of Lightning Trainer arguments")
    data = cfg["data"]
    if data["kind"] not in ("synthetic", "folder"):
        raise ConfigError(f"data.kind must be 'synthetic' or 'folder', got {data['kind']!r}")
    if data["kind"] == "folder" and not data["path"]:
        raise ConfigError("data.kind is 'folder' but data.path is not set")
    for key in ("image_size", "num_train", "num_val", "num_test", "batch_size"):
        if not isinstance(data[key], int) or data[key] < 1:
            raise ConfigError(f"data.{key} must be a positive integer, got {data[key]!r}")
    if not isinstance(cfg["seeds"], list) or not all(isinstance(s, int) for s in cfg["seeds"]):
        raise ConfigError(f"seeds must be a list of integers, got {cfg['seeds']!r}")
    for entry in cfg["losses"]:
        loss_entry(entry)
    if not isinstance(cfg["plugins"], list):
        raise ConfigError(f"plugins must be a list of modules or .py files, got {cfg['plugins']!r}")


def loss_entry(entry: Any) -> dict[str, Any]:
    """Normalise a ``losses:`` item to ``{"name", "params", "label"}``; ``label`` names the run."""
    if isinstance(entry, str):
        return {"name": entry, "params": {}, "label": entry}
    if isinstance(entry, Mapping) and "name" in entry:
        _unknown_keys(entry, {"name": 0, "params": 0, "label": 0}, f"loss entry {dict(entry)!r}")
        params = dict(entry.get("params") or {})
        return {"name": entry["name"], "params": params, "label": entry.get("label") or entry["name"]}
    raise ConfigError(f"a losses: item must be a name or a mapping with 'name' (and 'params'), got {entry!r}")


def run_config(cfg: Mapping[str, Any], loss: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The resolved config of one run: the suite's run sections plus this loss and seed."""
    out = {key: copy.deepcopy(cfg[key]) for key in RUN_KEYS}
    out.update(suite=cfg["suite"], plugins=list(cfg["plugins"]), wandb=copy.deepcopy(cfg["wandb"]))
    out["loss"] = {"name": loss["name"], "params": dict(loss["params"]), "label": loss["label"]}
    out["seed"] = int(seed)
    return out


def config_hash(run_cfg: Mapping[str, Any]) -> str:
    """12 hex digits of the parts of a run's config that decide its result.

    Excluded: W&B settings, the suite name, the data cache folder and worker count, and trainer keys
    that change only logging or how the work is launched (``strategy``, ``accelerator``, logging
    cadence, progress bar). ``devices`` and ``num_nodes`` stay in: they change the global batch.
    """
    trainer = {
        k: v
        for k, v in run_cfg["trainer"].items()
        if k not in {"strategy", "accelerator", "log_every_n_steps", "enable_progress_bar"}
    }
    data = {k: v for k, v in run_cfg["data"].items() if k not in {"num_workers", "cache_dir"}}
    key = {
        "data": data,
        "model": run_cfg["model"],
        "optim": run_cfg["optim"],
        "trainer": trainer,
        "loss": {"name": run_cfg["loss"]["name"], "params": run_cfg["loss"]["params"]},
        "seed": run_cfg["seed"],
    }
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
