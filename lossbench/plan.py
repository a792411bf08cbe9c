"""Which runs a suite is made of: its losses, seeds and budgets, each run with its resolved config and folder.

:func:`resolve_losses` is the one place that turns ``losses:`` entries plus ``--losses`` into
:class:`~lossbench.config.LossEntry` objects, and :func:`plan_runs` the one place that crosses them
with the seeds and budgets: ``compare`` trains what it plans, and the report lists as *missing*
what it plans that has no record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from lossbench.config import ConfigError, LossEntry, RunConfig, SuiteConfig, explain, reject_duplicates
from lossbench.identity import run_config
from lossbench.record import run_dir_for


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
    from lossbench.losses import check_loss

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
        check_loss(
            entry.name,
            entry.params,
            num_classes=num_classes,
            ignore_index=cfg.data.loss_ignore_index(cfg.data.declared_ignore_index, num_classes),
            label=entry.label,
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


@dataclass
class PlannedRun:
    """One (loss, seed, budget) of the suite: its entry, resolved config and folder."""

    entry: LossEntry
    seed: int
    run_cfg: RunConfig
    run_dir: Path
    several_budgets: bool = False

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def budget(self) -> int:
        return self.run_cfg.trainer.max_epochs

    def __str__(self) -> str:
        return f"{self.label} seed {self.seed}" + (f" ({self.budget} epochs)" if self.several_budgets else "")


def plan_runs(
    cfg: SuiteConfig,
    out: Path,
    losses: list[str] | None = None,
    seeds: list[int] | None = None,
    num_classes: int | None = None,
    check: bool = True,
) -> list[PlannedRun]:
    """Every (loss, seed, budget) run of the suite with its resolved config and folder, losses first,
    then seeds, then budgets (plugins loaded first when ``check``: see :func:`resolve_losses`)."""
    runs = []
    seeds = resolve_seeds(cfg, seeds)
    budgets = cfg.budget_list()
    for entry in resolve_losses(cfg, losses, check=check, num_classes=num_classes):
        for seed in seeds:
            for budget in budgets:
                rc = run_config(cfg, entry, seed, budget)
                runs.append(PlannedRun(entry, seed, rc, run_dir_for(out, rc), len(budgets) > 1))
    return runs
