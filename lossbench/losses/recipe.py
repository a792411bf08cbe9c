"""Loss recipes from the config: a weighted sum of registered losses, each with its own parameters.

    losses:
      - name: sum
        label: ce_dice_1_3
        params: {terms: [{name: ce, weight: 1}, {name: dice, weight: 3, params: {smooth: 0.0}}]}

is mmsegmentation's ``loss_decode=[CE×1, Dice×3]`` with no code; it is hashed, labelled and
reported like any loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from lossbench.losses.base import SegmentationLoss
from lossbench.losses.functional import Prepared
from lossbench.losses.registry import build_loss, check_params, get_loss_spec, register_loss


@register_loss("sum", description="a weighted sum of registered losses: Σ weight_i · loss_i (each with its params)")
class SumLoss(SegmentationLoss):
    """Weighted sum of registered losses: ``Σ_i w_i · L_i(logits, target)``.

    Each term is ``{name: <registered loss>, weight: <number, default 1>, params: {...}}``; terms get
    the run's ``ignore_index``, and the training set's class frequencies when they take them. The
    built-in terms share one preparation of the inputs (activation, one-hot, masks); a term's
    training-progress hook (``set_epoch``) is called with the sum's.

    Args:
        num_classes: ``C`` (1 = binary).
        terms: the terms, at least one.
        class_frequencies: passed to the terms that take them (the harness fills it).
        ignore_index: label to ignore, or ``None``.
    """

    def __init__(
        self,
        num_classes: int,
        terms: Sequence[Mapping[str, Any]],
        class_frequencies: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ):
        super().__init__(num_classes, ignore_index)
        if not terms or isinstance(terms, (str, Mapping)):
            raise ValueError("loss 'sum' needs terms: a list of {name, weight, params}, e.g. [{name: ce, weight: 1}, {name: dice, weight: 3}]")
        losses, weights = [], []
        for i, term in enumerate(terms, 1):
            if not isinstance(term, Mapping) or "name" not in term:
                raise ValueError(f"loss 'sum' term {i} must be a mapping with a name, got {term!r}")
            extra = sorted(set(term) - {"name", "weight", "params"})
            if extra:
                raise ValueError(f"loss 'sum' term {i} ({term['name']}) has unknown key(s) {', '.join(extra)}; a term takes name, weight, params")
            weight = term.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ValueError(f"loss 'sum' term {i} ({term['name']}): weight must be a number, got {weight!r}")
            params = dict(term.get("params") or {})
            try:
                spec = get_loss_spec(term["name"])
                check_params(term["name"], params)
            except ValueError as e:
                raise ValueError(f"loss 'sum' term {i}: {e}") from None
            if spec.uses_class_frequencies and "class_frequencies" not in params:
                params["class_frequencies"] = class_frequencies
            if "ignore_index" in spec.defaults:
                params.setdefault("ignore_index", ignore_index)
            losses.append(build_loss(term["name"], num_classes=num_classes, **params))
            weights.append(float(weight))
        self.terms = nn.ModuleList(losses)
        self.weights = weights
        self.names = [t["name"] for t in terms]

    def compute(self, prep: Prepared) -> Tensor:
        total = None
        for weight, loss in zip(self.weights, self.terms):
            if isinstance(loss, SegmentationLoss):
                value = loss.compute(prep)
            else:  # a plugin loss: called on the inputs as given
                value = loss(prep.as_images(prep.logits), prep.target.reshape(prep.target.shape[0], *prep.spatial))
            total = weight * value if total is None else total + weight * value
        return total

    def set_epoch(self, epoch: int) -> None:
        for loss in self.terms:
            hook = getattr(loss, "set_epoch", None)
            if callable(hook):
                hook(epoch)

    def extra_repr(self) -> str:
        return super().extra_repr() + ": " + " + ".join(f"{w:g}·{n}" for w, n in zip(self.weights, self.names))
