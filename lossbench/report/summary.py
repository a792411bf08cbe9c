"""The suite's summary in W&B: the results and the leaderboard as tables, and the report's plots, in one run
of the suite's group. W&B is a sink: the report is complete without it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.config import SuiteConfig
from lossbench.report.plots import PLOTS
from lossbench.wandb_sink import wandb_mode


def log_summary_to_wandb(df: pd.DataFrame, lb: pd.DataFrame, cfg: SuiteConfig, out: Path, report: Path) -> None:
    """Log the results and the leaderboard (with intervals) as ``wandb.Table``s, and the plots, in a summary run
    of the suite's group.

    W&B is a sink: if it cannot log (online without a login, no network), say so once and go on.
    """
    try:
        _log_summary(df, lb, cfg, out, report)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"lossbench: the W&B summary was not logged ({type(e).__name__}: {first}); the report is complete",
              file=sys.stderr, flush=True)  # fmt: skip


def _log_summary(df: pd.DataFrame, lb: pd.DataFrame, cfg: SuiteConfig, out: Path, report: Path) -> None:
    import re

    import wandb

    w = cfg.wandb
    run = wandb.init(
        project=w.project,
        entity=w.entity,
        group=cfg.suite,
        name=f"{cfg.suite} · summary",
        id=re.sub(r"[^A-Za-z0-9_-]", "-", f"{cfg.suite}-summary"),
        resume="allow",
        job_type="report",
        tags=[*w.tags, f"suite:{cfg.suite}", "summary"],
        dir=str(out),
        mode=wandb_mode(w.mode),
        config={"suite": cfg.suite, "losses": [e.label for e in cfg.losses], "seeds": cfg.seeds, "budgets": cfg.budget_list()},
        reinit="finish_previous",
    )
    try:
        payload: dict[str, Any] = {
            "results": wandb.Table(dataframe=df.astype({"epochs": "float", "wall_s": "float", "budget": "float"})),
            "leaderboard": wandb.Table(dataframe=lb.astype({"tied_with_best": "str", "focus_tied_with_best": "str"})),
        }
        for name in PLOTS:
            if (report / name).exists():
                payload[f"plots/{name.removesuffix('.png')}"] = wandb.Image(str(report / name))
        run.log(payload)
    finally:
        run.finish()
