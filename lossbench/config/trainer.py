"""What Lightning's ``Trainer`` accepts, as the config checks it: its keyword arguments, ``devices``, the accelerators
that train on GPUs, and ``precision`` (:class:`lossbench.config.schema.TrainerConfig` uses them)."""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def trainer_arguments() -> tuple[str, ...]:
    """The keyword arguments of ``lightning.Trainer``."""
    import lightning as L

    return tuple(p for p in inspect.signature(L.Trainer.__init__).parameters if p != "self")


def _devices(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of devices, -1 (all), 'auto' or a list of ids, got {value!r}")
    if isinstance(value, int) and (value == 0 or value < -1):
        raise ValueError(f"expected a number of devices ≥ 1, -1 (all) or 'auto', got {value}")
    return value


GPU_ACCELERATORS = ("auto", "gpu", "cuda")
"""``trainer.accelerator`` values that train on GPUs when there are any."""


PRECISIONS = ("auto", "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16")  # fmt: skip
"""What ``trainer.precision`` may be: ``auto`` and the values Lightning's ``Trainer(precision=…)`` accepts."""


def _precision(value: Any) -> Any:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if text not in PRECISIONS:
        raise ValueError(f"expected one of {', '.join(PRECISIONS)}, got {value!r}")
    return text
