"""Which runs a suite is made of: its losses, seeds and budgets — and in a tuned suite each loss's
points — each run with its resolved config and folder.

:func:`resolve_losses` is the one place that turns ``losses:`` entries plus ``--losses`` into
:class:`~lossbench.config.LossEntry` objects, :func:`loss_points` the one place that says which
settings a tuned suite searches for a loss, and :func:`plan_runs` the one place that crosses them
with the seeds and budgets: ``compare`` trains what it plans, and the report lists as *missing*
what it plans that has no record.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lossbench.config import ConfigError, LossEntry, Range, RunConfig, SuiteConfig, explain, reject_duplicates
from lossbench.identity import run_config
from lossbench.record import run_dir_for
from lossbench.progress import plural


def resolve_losses(
    cfg: SuiteConfig, wanted: Iterable[str] | None = None, check: bool = True, num_classes: int | None = None
) -> list[LossEntry]:
    """The suite's loss entries, or those named in ``wanted`` (labels of the config, else registry names).

    ``train``, ``compare`` and ``report`` pick losses through it. With ``check`` (plugins loaded
    first) each entry is checked — the name is registered, its parameters are accepted, and the loss
    builds and returns a differentiable scalar on a small batch, with the ignore index the runs will
    give it — before anything trains; the report, which trains nothing, only needs the entries.
    ``num_classes`` (default: the config's) is what the check builds the losses for; when neither
    says — a Python dataset whose factory names the classes — the run checks each loss as it builds it.
    """
    if wanted is None:
        if not cfg.losses:
            raise ConfigError("the config lists no losses: add them under losses: or pass --losses")
        chosen = list(cfg.losses)
    else:
        wanted = list(wanted)
        _reject_duplicate_picks(wanted)
        by_label = {e.label: e for e in cfg.losses}
        chosen = []
        for name in wanted:
            entry = by_label.get(name) or next((e for e in cfg.losses if e.name == name), None)
            chosen.append(entry or _entry(name))
        _reject_duplicate_picks([e.label for e in chosen], "--losses picks")
    num_classes = num_classes or cfg.data.num_classes
    for entry in chosen if check and num_classes else ():
        from lossbench.losses import check_loss  # torch: only when losses are built

        check_loss(
            entry.name,
            entry.params,
            num_classes=num_classes,
            ignore_index=cfg.data.loss_ignore_index(cfg.data.declared_ignore_index, num_classes),
            label=entry.label,
            dims=3 if cfg.data.is_volumes and cfg.model.dims == 3 else 2,
        )
    return chosen


def _entry(name: str) -> LossEntry:
    try:
        return LossEntry.model_validate(name)
    except ValidationError as e:
        raise explain(e, "--losses") from None


def _reject_duplicate_picks(values: list[str], what: str = "--losses names") -> None:
    try:
        reject_duplicates(values, "loss", f"{what} it more than once;")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def resolve_seeds(cfg: SuiteConfig, wanted: list[int] | None = None) -> list[int]:
    """The suite's seeds, or ``wanted`` (``--seeds``) checked exactly as ``seeds:`` is."""
    if wanted is None:
        return list(cfg.seeds)
    try:
        return SuiteConfig.model_validate({"seeds": wanted}).seeds
    except ValidationError as e:
        raise explain(e, "--seeds") from None


def race_schedule(cfg: SuiteConfig) -> list[int]:
    """A raced suite's seeds per loss at each round: the suite's seeds, then doubling up to ``race.max_seeds``
    (one round for a suite that does not race)."""
    n = [len(cfg.seeds)]
    while cfg.race is not None and n[-1] < cfg.race.max_seeds:
        n.append(min(2 * n[-1], cfg.race.max_seeds))
    return n


def race_seeds(cfg: SuiteConfig, n: int) -> list[int]:
    """The first ``n`` seeds of a race: the suite's seeds, then the next numbers not among them."""
    seeds, taken, candidate = list(cfg.seeds), set(cfg.seeds), 0
    while len(seeds) < n:  # linear in n: membership in a set
        if candidate not in taken:
            seeds.append(candidate)
        candidate += 1
    return seeds[:n]


@dataclass(frozen=True)
class Point:
    """One setting of a loss in a tuned suite: the config keys (``tune.grid``) and the loss's own
    parameters (``tune.params``) it sets. The empty point is the suite's own settings."""

    settings: tuple[tuple[str, Any], ...] = ()
    params: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        """``lr=0.01, gamma=3`` (a config key by its last part), or ``defaults``."""
        parts = [f"{k.rsplit('.', 1)[-1]}={_show(v)}" for k, v in self.settings] + [f"{k}={_show(v)}" for k, v in self.params]
        return ", ".join(parts) or "defaults"

    def values(self) -> dict[str, Any]:
        """``{"optim.lr": 0.01, "gamma": 3}``: each axis and its value at this point."""
        return {**dict(self.settings), **dict(self.params)}

    def entry(self, base: LossEntry) -> LossEntry:
        """The loss entry at this point (its label kept: every point of a loss is filed under it)."""
        if not self.params:
            return base
        return LossEntry(name=base.name, params={**base.params, **dict(self.params)}, label=base.label)


def point_of(cfg: SuiteConfig, run_cfg: RunConfig) -> Point | None:
    """The point of a tuned suite that ``run_cfg`` trains (its values of the searched axes); ``None`` untuned."""
    if cfg.tune is None:
        return None
    dumped = run_cfg.model_dump(mode="json")

    def at(key: str) -> Any:
        node: Any = dumped
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    own = cfg.tune.params.get(run_cfg.loss.label, {})
    return Point(tuple((k, at(k)) for k in cfg.tune.grid), tuple((k, run_cfg.loss.params.get(k)) for k in own if k in run_cfg.loss.params))


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def loss_points(cfg: SuiteConfig, entry: LossEntry) -> list[Point]:
    """The points a tuned suite searches for ``entry``: every combination of the shared axes
    (``tune.grid``) and the loss's own (``tune.params[label]``), or — with ``tune.trials: N`` — N of
    them drawn without replacement (all of them when there are N or fewer); with a range among the
    axes, N points of a Latin hypercube (each axis cut into N equal strata, one point in each, so every
axis is covered evenly and every loss gets exactly N). Draws are seeded by
    ``tune.sample_seed`` and the loss label, so adding a loss changes no other loss's draw."""
    tune = cfg.tune
    if tune is None:
        return [Point()]
    shared = list(tune.grid.items())
    own = list(tune.params.get(entry.label, {}).items())
    rng = random.Random(f"{tune.sample_seed}/{entry.label}")
    axes = [axis for _, axis in shared + own]
    if any(isinstance(axis, Range) for axis in axes):  # a Latin hypercube of trials points: each axis covered evenly
        n = tune.trials or 1
        strata = [rng.sample(range(n), n) for _ in axes]
        combos = [tuple(_draw(axis, (strata[k][i] + rng.random()) / n) for k, axis in enumerate(axes)) for i in range(n)]
    else:
        combos = list(itertools.product(*[values for _, values in shared + own]))
        if tune.trials is not None and len(combos) > tune.trials:
            combos = [combos[i] for i in sorted(rng.sample(range(len(combos)), tune.trials))]
    keys = [k for k, _ in shared], [k for k, _ in own]
    return [Point(tuple(zip(keys[0], c[: len(shared)])), tuple(zip(keys[1], c[len(shared) :]))) for c in combos]


def _draw(axis: Any, position: float) -> Any:
    """The value at ``position`` ∈ [0, 1) of an axis: a list's item, or a :class:`~lossbench.config.Range`'s
    value (uniform, or uniform in log space; 3 significant digits, or an integer)."""
    if not isinstance(axis, Range):
        return axis[min(int(position * len(axis)), len(axis) - 1)]
    if axis.log:
        value = math.exp(math.log(axis.low) + position * (math.log(axis.high) - math.log(axis.low)))
    else:
        value = axis.low + position * (axis.high - axis.low)
    return int(round(value)) if axis.integer else float(f"{value:.3g}")


SEARCH, FINAL, DEFAULT, RUN = "search", "final", "default", "run"
"""A planned run's role: a tuned suite's ``search`` point (on ``tune.seeds``), a loss's selected
point on the suite's seeds (``final``), its suite's own settings on them (``default``); else ``run``."""


@dataclass
class PlannedRun:
    """One (loss, seed, budget) of the suite — in a tuned suite, at one point — with its resolved config and folder."""

    entry: LossEntry
    seed: int
    run_cfg: RunConfig
    run_dir: Path
    several_budgets: bool = False
    point: Point | None = None  # a tuned suite's point
    role: str = RUN

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def budget(self) -> int:
        return self.run_cfg.trainer.max_epochs

    def __str__(self) -> str:
        where = f" ({plural(self.budget, 'epoch')})" if self.several_budgets else ""
        if self.point is not None and self.role == SEARCH:
            where += f" [{self.point.describe()}]"
        elif self.point is not None and self.role == FINAL:
            where += f" [selected: {self.point.describe()}]"
        return f"{self.label} seed {self.seed}{where}"


Selection = Mapping[tuple[str, int], Point]
"""The selected point of each (loss label, budget) of a tuned suite (:func:`lossbench.tune.select`)."""


def plan_runs(
    cfg: SuiteConfig,
    out: Path,
    losses: list[str] | None = None,
    seeds: list[int] | None = None,
    num_classes: int | None = None,
    check: bool = True,
    selection: Selection | None = None,
) -> list[PlannedRun]:
    """Every (loss, seed, budget) run of the suite with its resolved config and folder, losses first,
    then seeds, then budgets (plugins loaded first when ``check``: see :func:`resolve_losses`).

    A tuned suite (``tune:``) plans each loss's search points on ``tune.seeds``, its suite settings
    on ``seeds`` (unless ``tune.default_point`` is off) and, once ``selection`` says which point each
    loss won, that point on ``seeds``; a run folder planned in two roles (a selected point that is the
    default) is planned once, as ``final``.
    """
    seeds = resolve_seeds(cfg, seeds)
    budgets = cfg.budget_list()
    entries = resolve_losses(cfg, losses, check=check, num_classes=num_classes)
    several = len(budgets) > 1
    if cfg.tune is None:
        return [_planned(cfg, out, entry, seed, budget, several) for entry in entries for seed in seeds for budget in budgets]
    runs: list[PlannedRun] = []
    for entry in entries:
        points = loss_points(cfg, entry)
        variants = [p.entry(entry) for p in points if p.params]
        if check and variants:  # each parameter value is built and called before anything trains
            resolve_losses(cfg.model_copy(update={"losses": variants}), check=True, num_classes=num_classes)
        for budget in budgets:
            for point in points:
                runs += [_planned(cfg, out, entry, seed, budget, several, point, SEARCH) for seed in cfg.tune.seeds]
            chosen = (selection or {}).get((entry.label, budget))
            if chosen is not None:
                runs += [_planned(cfg, out, entry, seed, budget, several, chosen, FINAL) for seed in seeds]
            if cfg.tune.default_point:
                runs += [_planned(cfg, out, entry, seed, budget, several, Point(), DEFAULT) for seed in seeds]
    unique: dict[Path, PlannedRun] = {}
    for run in runs:
        if run.run_dir not in unique or run.role == FINAL:
            unique[run.run_dir] = run
    return list(unique.values())


def _planned(cfg: SuiteConfig, out: Path, entry: LossEntry, seed: int, budget: int, several: bool,
             point: Point | None = None, role: str = RUN) -> PlannedRun:  # fmt: skip
    settings = dict(point.settings) if point else {}
    loss = point.entry(entry) if point else entry
    rc = run_config(cfg, loss, seed, budget, settings)
    return PlannedRun(loss, seed, rc, run_dir_for(out, rc), several, point, role)
