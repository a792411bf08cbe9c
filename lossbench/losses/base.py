"""The base class every built-in loss derives from: validation once, float32, shared preparation."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from lossbench.losses.functional import Prepared, check_inputs

_SMALL_INTS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.bool)


class SegmentationLoss(nn.Module):
    """A segmentation loss with the lossbench call contract; subclasses write only :meth:`compute`.

    ``forward(logits, target)``:

    * ``logits``: ``[B, C, *spatial]`` raw scores (``C == 1``: binary, sigmoid; ``C >= 2``: softmax).
    * ``target``: ``[B, *spatial]`` integer class ids in ``[0, C)`` (binary: ``{0, 1}``) or ``ignore_index``
      (any integer, also a class id: pixels equal to it are ignored by every loss alike).
    * returns a float32 scalar, also under bf16/fp16 autocast; ignored pixels contribute nothing to
      the value or the gradient; with every pixel ignored the result is a zero still connected to
      the graph. Bad input raises ``ValueError`` naming the problem.

    Args:
        num_classes: number of classes ``C`` (1 for binary).
        ignore_index: label of pixels to ignore, or ``None``.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index

    @property
    def num_labels(self) -> int:
        """Distinct labels in a target: 2 for binary, else ``num_classes``."""
        return 2 if self.num_classes == 1 else self.num_classes

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if isinstance(target, Tensor) and target.dtype in _SMALL_INTS:
            target = target.long()  # before any comparison: a uint8 target would wrap ignore_index=-1 to 255
        all_valid = check_inputs(logits, target, self.num_classes, self.ignore_index)
        device = logits.device.type
        with torch.autocast(device_type=device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
            prep = Prepared(logits, target, self.ignore_index, all_valid)
            value = self.compute(prep)
            return value if all_valid else value * prep.any_valid

    def compute(self, prep: Prepared) -> Tensor:
        """The loss value from the prepared tensors (float32); must be finite when nothing is valid."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Training progress, for a loss whose definition changes over training (e.g. ``boundary``'s α).

        The LightningModule calls it at the start of every training epoch with the 0-based epoch
        (``trainer.current_epoch``) — also when a run resumes from a checkpoint, so a schedule that
        is a function of the epoch resumes where it was. Any registered loss may define it; the
        default does nothing.
        """

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"
