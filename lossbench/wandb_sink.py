"""W&B, a sink: every run logs there and the report adds a summary, but no result ever depends on it.

:func:`wandb_mode` decides online or offline; :class:`SinkWandbLogger` is the Lightning logger of a run
(:func:`run_logger` names, groups and tags it); :func:`define_metrics` and :func:`log_panel` add the
summaries and prediction images a comparison needs. Anything W&B cannot do is said once and the run goes on.
"""

from __future__ import annotations

import netrc
import os
import re
import sys
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import _DummyExperiment
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lossbench.config import RunConfig
from lossbench.identity import config_hash
from lossbench.record import Evidence


def wandb_mode(mode: str | None) -> str:
    """The W&B mode: ``wandb.mode`` from the config, else ``WANDB_MODE``, else online only for a logged-in user."""
    mode = mode or os.environ.get("WANDB_MODE")
    if mode:
        return str(mode)
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class SinkWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` that never fails a run: W&B is a sink, results never depend on it.

    If W&B cannot start (a bad setting, no network in online mode, a damaged run folder), it warns
    once and the run goes on without W&B logging.
    """

    _failed = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)  # W&B warns that the setting is gone, in every run's log

    @property
    def experiment(self):  # type: ignore[override]
        if self._failed:
            return _DummyExperiment()
        try:
            return super().experiment
        except Exception as e:  # noqa: BLE001 — any W&B failure must leave the run alone
            self._failed = True
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(f"lossbench: W&B could not start ({type(e).__name__}: {first_line}); "
                  "this run goes on without W&B logging", file=sys.stderr, flush=True)  # fmt: skip
            return _DummyExperiment()

    @property
    def live_experiment(self):
        """The W&B run, or ``None`` where there is none (W&B could not start, or a rank other than 0)."""
        run = self.experiment
        return None if isinstance(run, _DummyExperiment) else run

    def log_hyperparams(self, params) -> None:  # type: ignore[override]
        if self.live_experiment is not None:
            super().log_hyperparams(params)


def run_logger(run_cfg: RunConfig, run_dir: Path) -> SinkWandbLogger:
    """The W&B logger of one run: named ``<label> · seed <s>``, grouped by suite, tagged, resumable, in the run folder."""
    w = run_cfg.wandb
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{run_cfg.suite}-{run_dir.parent.name}-{run_dir.name}")[:120]
    return SinkWandbLogger(
        project=w.project,
        entity=w.entity,
        name=f"{run_cfg.loss.label} · seed {run_cfg.seed}",
        group=run_cfg.suite,
        id=run_id,
        resume="allow",
        save_dir=str(run_dir),
        mode=wandb_mode(w.mode),
        tags=[*w.tags, f"suite:{run_cfg.suite}", f"loss:{run_cfg.loss.label}", f"seed:{run_cfg.seed}",
              f"config:{config_hash(run_cfg)}", f"epochs:{run_cfg.trainer.max_epochs}"],  # fmt: skip
        config=run_cfg.model_dump(mode="json"),
        job_type="train",
    )


@rank_zero_only
def define_metrics(logger: Any) -> None:
    """W&B summaries that show what a comparison needs: the test metrics, the best validation mIoU, the lowest loss."""
    run = logger.live_experiment
    if run is None:
        return
    try:
        run.define_metric("test/*", summary="last")
        run.define_metric("val/miou", summary="max,last")
        run.define_metric("train/loss", summary="min,last")
    except Exception:  # noqa: BLE001 — W&B is a sink
        pass


def log_panel(logger: Any, evidence: Evidence, class_names: list[str]) -> None:
    """The panel images with ground truth and prediction as W&B masks (class names as labels); W&B is a sink."""
    try:
        import wandb

        run = logger.live_experiment
        if run is None:
            return
        labels = dict(enumerate(class_names))
        images = []
        for index, p in zip(evidence.panel_index.tolist(), evidence.panel):
            masks = {
                "prediction": {"mask_data": p.pred, "class_labels": labels},
                "ground_truth": {"mask_data": p.target, "class_labels": labels},
            }
            images.append(wandb.Image(p.image, masks=masks, caption=f"test image {index}"))
        if images:
            run.log({"test/predictions": images})
    except Exception as e:  # noqa: BLE001
        print(f"lossbench: the prediction images were not logged to W&B ({type(e).__name__}: {e})", flush=True)


