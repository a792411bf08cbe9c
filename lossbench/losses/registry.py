"""The loss registry: a name → :class:`LossSpec` table, filled by the :func:`register_loss` decorator.

A user's loss registers exactly like the built-in ones, from any file::

    from lossbench.losses import SegmentationLoss, register_loss, soft_stats

    @register_loss("my_dice", description="Dice without smoothing")
    class MyDice(SegmentationLoss):
        def compute(self, prep):
            tp, fp, fn = soft_stats(prep)
            return 1 - (2 * tp / (2 * tp + fp + fn).clamp_min(1e-7)).mean()

Any ``nn.Module`` class whose ``__init__`` takes ``num_classes`` (and optionally ``ignore_index``)
and whose ``forward(logits, target)`` returns a scalar can be registered.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

_REGISTRY: dict[str, LossSpec] = {}


@dataclass(frozen=True)
class LossSpec:
    """One registry entry: what a loss is called, what builds it, and what it accepts."""

    name: str
    cls: type[nn.Module]
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Accepted parameters (besides ``num_classes``) and their defaults (``inspect.Parameter.empty`` if required)."""

    @property
    def params(self) -> list[str]:
        return list(self.defaults)

    @property
    def uses_class_frequencies(self) -> bool:
        """True if the harness should hand this loss the training set's class pixel frequencies."""
        return "class_frequencies" in self.defaults


def register_loss(name: str, *, description: str = "") -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a loss to the registry under ``name``.

    Re-registering the same class (e.g. a plugin module imported twice) is a no-op; registering a
    different class under a taken name raises ``ValueError``.
    """
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"loss name must be letters, digits and underscores, got {name!r}")

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"@register_loss({name!r}) must decorate an nn.Module subclass, got {cls!r}")
        sig = inspect.signature(cls.__init__)
        if "num_classes" not in sig.parameters:
            raise ValueError(f"loss {name!r}: {cls.__qualname__}.__init__ must accept num_classes")
        defaults = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.name not in ("self", "num_classes") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        old = _REGISTRY.get(name)
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"loss name {name!r} is already registered by {old.cls.__module__}.{old.cls.__qualname__}"
            )
        doc = (cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = LossSpec(
            name=name,
            cls=cls,
            description=description or (doc[0] if doc else ""),
            defaults=MappingProxyType(defaults),
        )
        return cls

    return decorator


def list_losses() -> list[str]:
    """Names of all registered losses, in registration order (built-ins first)."""
    return list(_REGISTRY)


def get_loss_spec(name: str) -> LossSpec:
    """The :class:`LossSpec` of ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = list_losses()
        close = difflib.get_close_matches(str(name), known, n=len(known), cutoff=0.0)
        raise ValueError(f"unknown loss {name!r}; known losses (closest first): {', '.join(close)}") from None


def build_loss(name: str, num_classes: int, **params: Any) -> nn.Module:
    """Build the registered loss ``name`` for ``num_classes`` classes (1 = binary).

    Raises:
        ValueError: unknown name (the known ones are listed, closest first), a parameter the loss
            does not accept (its parameters are listed), or invalid parameter values.
    """
    spec = get_loss_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (1 = binary), got {num_classes!r}")
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        accepted = ", ".join(f"{k}={_fmt(v)}" for k, v in spec.defaults.items()) or "none"
        raise ValueError(f"loss {name!r} got unknown parameter(s) {', '.join(unknown)}; it accepts: {accepted}")
    return spec.cls(num_classes=num_classes, **params)


def _fmt(value: Any) -> str:
    return "<required>" if value is inspect.Parameter.empty else repr(value)
