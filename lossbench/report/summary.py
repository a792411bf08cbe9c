"""The suite's summary in W&B: the results and the leaderboard as tables, and the report's plots, in one run
of the suite's group. W&B is a sink: the report is complete without it."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.config import SuiteConfig
from lossbench.report.plots import PLOTS
from lossbench.wandb_sink import wandb_mode


def offline_note(cfg: SuiteConfig, out: Path) -> str | None:
    """Where the suite's offline W&B runs are and the line that uploads them; ``None`` when W&B is not offline."""
    if wandb_mode(cfg.wandb.mode) != "offline":
        return None
    return (f"W&B is offline: the runs are in {out}/*/*/wandb and the summary in {out}/wandb; upload them with\n"
            f"  wandb sync {out}/*/*/wandb/offline-run-* {out}/wandb/offline-run-*")


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
        # one W&B run per report: a fixed id made `wandb sync` find two offline summaries with one id after two compares
        id=re.sub(r"[^A-Za-z0-9_-]", "-", f"{cfg.suite[:32]}-summary-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"),
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
            "leaderboard": wandb.Table(dataframe=lb.astype({"in_best_set": "str", "focus_in_best_set": "str"})),
        }
        for name in PLOTS:
            if (report / name).exists():
                payload[f"plots/{name.removesuffix('.png')}"] = wandb.Image(str(report / name))
        run.log(payload)
    finally:
        run.finish()
