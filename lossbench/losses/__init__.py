"""The loss library: the fourteen losses of the source documents and nine more, boundary losses and
loss recipes (``sum``), under one call contract, built by name.

    >>> from lossbench.losses import build_loss, list_losses
    >>> loss = build_loss("tversky", num_classes=4, alpha=0.3, beta=0.7, ignore_index=255)
    >>> value = loss(logits, target)  # logits [B, 4, H, W] raw scores, target [B, H, W] class ids

Each class's docstring gives its definition (formula, parameters, paper), and :mod:`lossbench.losses.registry`
for registering your own.
"""

# Importing the families registers the built-ins, in this order.
from lossbench.losses import pixel  # noqa: F401  isort: skip
from lossbench.losses import region  # noqa: F401  isort: skip
from lossbench.losses import compound  # noqa: F401  isort: skip
from lossbench.losses import lovasz  # noqa: F401  isort: skip
from lossbench.losses import boundary  # noqa: F401  isort: skip
from lossbench.losses import recipe  # noqa: F401  isort: skip
from lossbench.losses.base import SegmentationLoss
from lossbench.losses.functional import EPS, Prepared, class_mean, lovasz_grad, pixel_mean, soft_stats
from lossbench.losses.registry import (
    LossSpec,
    build_loss,
    check_loss,
    check_output,
    check_params,
    get_loss_spec,
    list_losses,
    register_loss,
)

__all__ = [
    "EPS",
    "LossSpec",
    "Prepared",
    "SegmentationLoss",
    "build_loss",
    "check_loss",
    "check_output",
    "check_params",
    "class_mean",
    "get_loss_spec",
    "list_losses",
    "lovasz_grad",
    "pixel_mean",
    "register_loss",
    "soft_stats",
]
