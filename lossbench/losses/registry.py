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

import torch
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
    caveat: str = ""
    """What a user comparing this loss must know; the report says it when the loss is in a suite."""

    @property
    def params(self) -> list[str]:
        return list(self.defaults)

    @property
    def uses_class_frequencies(self) -> bool:
        """True if the harness should hand this loss the training set's class pixel frequencies."""
        return "class_frequencies" in self.defaults


def register_loss(name: str, *, description: str = "", caveat: str = "") -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a loss to the registry under ``name``; ``caveat``: what a user comparing it
    must know (the report says it whenever the loss is in a suite).

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
            caveat=caveat,
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
            does not accept (its parameters are listed), a string or bool where the default is a
            number, or invalid parameter values.
    """
    spec = get_loss_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (1 = binary), got {num_classes!r}")
    check_params(name, params)
    return spec.cls(num_classes=num_classes, **params)


def _fmt(value: Any) -> str:
    return "<required>" if value is inspect.Parameter.empty else repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_params(name: str, params: Mapping[str, Any], label: str | None = None) -> None:
    """Raise ``ValueError`` if ``params`` has a name ``name`` does not accept, or a value of the wrong kind.

    A parameter whose default is a number must be a number (``"1e-1"`` is a string, not 0.1), and one
    whose default is a bool must be a bool.
    """
    spec = get_loss_spec(name)
    who = f"loss {label or name!r}" + (f" ({name})" if label and label != name else "")
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        accepted = ", ".join(f"{k}={_fmt(v)}" for k, v in spec.defaults.items()) or "none"
        raise ValueError(f"{who} got unknown parameter(s) {', '.join(unknown)}; it accepts: {accepted}")
    for key, value in params.items():
        default = spec.defaults[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{who}: parameter {key} must be true or false (default {default!r}), got {value!r}")
        if _is_number(default) and not _is_number(value):
            raise ValueError(f"{who}: parameter {key} must be a number (default {default!r}), got {value!r}")


def check_output(value: Any, label: str) -> None:
    """Raise ``ValueError`` unless ``value`` keeps the call contract: a floating scalar tensor with a gradient."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"loss {label!r} returned {type(value).__name__}; the contract is a scalar tensor")
    if value.dim() != 0:
        raise ValueError(f"loss {label!r} returned a tensor of shape {tuple(value.shape)}; the contract is a scalar (shape ())")
    if not value.is_floating_point():
        raise ValueError(f"loss {label!r} returned dtype {value.dtype}; the contract is a floating-point scalar")
    if not value.requires_grad:
        raise ValueError(
            f"loss {label!r} returned a value without a gradient (requires_grad=False); "
            "the contract is a scalar computed from the logits with torch operations"
        )


def check_loss(
    name: str,
    params: Mapping[str, Any],
    num_classes: int,
    ignore_index: int | None = None,
    label: str | None = None,
    dims: int = 2,
) -> None:
    """Check, before any training, that loss ``name`` builds with ``params`` and keeps the call contract.

    Builds it for ``num_classes`` and calls it on a small random batch (``[2, C, 8, 8]``, or
    ``[2, C, 8, 8, 8]`` when ``dims`` is 3, with a few ignored pixels when ``ignore_index`` is set): it must return a finite floating scalar with a
    gradient. Every problem is a one-sentence ``ValueError`` naming the loss.
    """
    label = label or name
    check_params(name, params, label)
    spec = get_loss_spec(name)
    kwargs = dict(params)
    if spec.uses_class_frequencies and "class_frequencies" not in kwargs:
        kwargs["class_frequencies"] = [1] * (2 if num_classes == 1 else num_classes)
    if "ignore_index" in spec.defaults:
        kwargs.setdefault("ignore_index", ignore_index)
    try:
        loss = build_loss(name, num_classes=num_classes, **kwargs)
    except ValueError as e:
        raise ValueError(f"loss {label!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 — a constructor's raw TypeError/IndexError becomes one sentence
        raise ValueError(f"loss {label!r} cannot be built with parameters {dict(params)!r}: {type(e).__name__}: {e}") from None
    gen = torch.Generator().manual_seed(0)
    spatial = (8,) * dims
    if kwargs.get("spacing") is not None and len(kwargs["spacing"]) != dims:
        raise ValueError(f"loss {label!r} has spacing {list(kwargs['spacing'])} ({len(kwargs['spacing'])} axes), but its "
                         f"input has {dims} spatial axes")  # fmt: skip
    logits = torch.randn(2, num_classes, *spatial, generator=gen, requires_grad=True)
    target = torch.randint(0, 2 if num_classes == 1 else num_classes, (2, *spatial), generator=gen)
    if ignore_index is not None:
        target[0].view(-1)[:3] = ignore_index
    try:
        value = loss(logits, target)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"loss {label!r} failed on a small test batch before training: {type(e).__name__}: {e}") from None
    check_output(value, label)
    if not bool(torch.isfinite(value.detach())):
        raise ValueError(f"loss {label!r} returned {value.item()} on a small random test batch; the contract is a finite value")
