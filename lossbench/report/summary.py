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


def summary_id(suite: str, out: Path) -> str:
    """The W&B id of a suite's summary run: one per suite and runs folder, so each report updates it in place."""
    import hashlib
    import re

    where = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{suite[:40]}-summary-{where}")


def _log_summary(df: pd.DataFrame, lb: pd.DataFrame, cfg: SuiteConfig, out: Path, report: Path) -> None:
    import shutil

    import wandb

    w = cfg.wandb
    run_id, mode = summary_id(cfg.suite, out), wandb_mode(w.mode)
    if mode == "offline":  # the earlier reports' offline copies: superseded, and `wandb sync` wants one run per id
        for old in (out / "wandb").glob(f"offline-run-*-{run_id}"):
            shutil.rmtree(old, ignore_errors=True)
    run = wandb.init(
        project=w.project,
        entity=w.entity,
        group=cfg.suite,
        name=f"{cfg.suite} · summary",
        id=run_id,
        resume="allow",  # online: the suite's summary run, updated by each report; offline: the latest report's
        job_type="report",
        tags=[*w.tags, f"suite:{cfg.suite}", "summary"],
        dir=str(out),
        mode=mode,
        config={"suite": cfg.suite, "losses": [e.label for e in cfg.losses], "seeds": cfg.seeds, "budgets": cfg.budget_list()},
        reinit="finish_previous",
    )
    try:
        flags = {c: lb[c].map(lambda v: None if v is None or v != v else bool(v)).astype(object) for c in ("in_best_set", "focus_in_best_set")}
        payload: dict[str, Any] = {
            "results": wandb.Table(dataframe=df.astype({"epochs": "float", "wall_s": "float", "budget": "float"})),
            "leaderboard": wandb.Table(dataframe=lb.assign(**flags)),  # booleans, not the strings 'False'
        }
        for name in PLOTS:
            if (report / name).exists():
                payload[f"plots/{name.removesuffix('.png')}"] = wandb.Image(str(report / name))
        run.log(payload)
    finally:
        run.finish()
