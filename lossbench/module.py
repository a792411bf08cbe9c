"""``LossbenchModule``: one LightningModule for every loss — an smp model, any registered loss, metrics."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from lossbench.config import OptimConfig, ReportConfig
from lossbench.losses import build_loss, check_output, get_loss_spec
from lossbench.metrics import (
    BOUNDARY_METRICS,
    confusion_matrix_metric,
    flat_scalars,
    focus_class,
    image_scores,
    per_class_metrics,
    per_image_counts,
)
from lossbench.models import build_model, input_multiple
from lossbench.record import Evidence


PENDING_PER_THREAD = 16
"""Test images whose scores may wait per metric thread: beyond, the test waits for the oldest (their masks held)."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (``on_this_rank``: here, or only on another rank)."""

    def __init__(self, message: str, on_this_rank: bool = True):
        super().__init__(message)
        self.on_this_rank = on_this_rank


def original_resolution(logits: Tensor, batch: dict[str, Tensor]):
    """``(prediction, original mask)`` pairs at each mask's own resolution, as mmsegmentation evaluates.

    Padding is cut off the logits (``batch["size"]``); if the input was resized, the logits are
    resized back to the mask (bilinear) before the argmax. When nothing was resized or padded the
    batch is one pair.
    """
    size, target_size, target = batch["size"], batch["target_size"], batch["target"]
    h, w = logits.shape[-2:]
    if bool((size == target_size).all()) and bool((target_size == torch.tensor([h, w], device=size.device)).all()):
        yield logits.argmax(1), target
        return
    for i in range(logits.shape[0]):
        hi, wi = size[i].tolist()
        th, tw = target_size[i].tolist()
        li = logits[i : i + 1, :, :hi, :wi]
        if (hi, wi) != (th, tw):
            li = torch.nn.functional.interpolate(li.float(), size=(th, tw), mode="bilinear", align_corners=False)
        yield li.argmax(1), target[i : i + 1, :th, :tw]


class LossbenchModule(L.LightningModule):
    """Trains an smp model with one registered loss and measures per-class metrics.

    Args:
        model_cfg: ``{"arch", "encoder", "kwargs"}`` for ``smp.create_model``.
        loss_name: registry name of the loss; ``loss_params`` its parameters; ``loss_label`` the
            name of its entry in the suite (errors name it).
        class_names: one name per class (``C >= 2``; the model has ``C`` output channels).
        ignore_index: mask value excluded from loss and metrics (the data's ignore index, or the
            label of padded pixels); if it is a class id, that class is left out of the metrics too.
        in_channels: image channels.
        class_frequencies: training-split pixel counts per class, handed to losses that take them.
        lr, weight_decay: AdamW settings; the learning rate follows a per-step cosine schedule to 0.
        focus: the class whose objects the test counts (``report.focus``; default the rarest training class).
        object_iou: the IoU a predicted object needs with a ground-truth object to find it.
        nsd_tolerance: the normalised surface Dice's tolerance, pixels (millimetres on volumes).
        dims: on volumes, 2 (the smp model on slices) or 3 (a MONAI network on patches); images: 2.
        context: dims 2 on volumes, neighbouring slices on each side as extra channels.
        patch, overlap: dims 3, the training patch (and sliding window) and the windows' overlap.
        loss_spacing: volumes, the spacing handed to losses that take one (millimetres per voxel of
            the training volumes, median per axis; the in-plane two at dims 2).

    On volumes (``dims`` and a batch with ``"spacing"``) validation and test predict each volume whole
    (:mod:`lossbench.models`) and score it at its own spacing: HD95 and NSD in millimetres, objects as
    26-connected components. With :attr:`predictions_dir` set, the test writes each volume's prediction there.

    The test keeps its evidence (:attr:`test_evidence`, a :class:`~lossbench.record.Evidence`): per
    test image and class the TP/FP/FN pixels and boundary scores, the focus-class object counts
    (:func:`lossbench.metrics.object_counts`), and the confusion matrix — gathered over DDP ranks and
    put in test-set order (:attr:`test_index`), so a sharded test gives exactly the numbers of one process.
    """

    def __init__(
        self,
        model_cfg: dict[str, Any],
        loss_name: str,
        loss_params: dict[str, Any],
        class_names: list[str],
        ignore_index: int | None,
        in_channels: int,
        class_frequencies: list[int],
        lr: float = OptimConfig.model_fields["lr"].default,
        weight_decay: float = OptimConfig.model_fields["weight_decay"].default,
        loss_label: str | None = None,
        focus: str | None = None,
        object_iou: float = ReportConfig.model_fields["object_iou"].default,
        nsd_tolerance: float = ReportConfig.model_fields["nsd_tolerance"].default,
        dims: int = 2,
        context: int = 0,
        patch: tuple[int, int, int] | None = None,
        overlap: float = 0.25,
        loss_spacing: list[float] | None = None,
        volumes: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.loss_label = loss_label or loss_name
        num_classes = len(self.class_names)
        self.model = self._build_model(model_cfg, in_channels, num_classes)
        self.loss = self._build_loss(loss_name, loss_params, num_classes, class_frequencies)
        self.val_cm = confusion_matrix_metric(num_classes, ignore_index)
        self.test_cm = confusion_matrix_metric(num_classes, ignore_index)
        self.history: list[dict[str, float]] = []  # one row per epoch; saved in checkpoints
        self.resumed_after_epoch: int | None = None  # epochs completed in the checkpoint resumed from
        self.test_result: dict[str, Any] | None = None
        scored = [i for i in range(num_classes) if i != ignore_index]
        self.focus = focus_class(self.class_names, class_frequencies, scored, focus)
        self.test_evidence: Evidence | None = None
        self.test_index: np.ndarray | None = None  # the test image of each evidence row
        self._test_rows: list[Tensor] = []
        self.predictions_dir = None  # volumes: where the test writes each volume's prediction (lossbench.run sets it)
        self._train_loss_sum = torch.zeros(())
        self._train_batches = 0

    def _build_model(self, model_cfg: dict[str, Any], in_channels: int, num_classes: int) -> torch.nn.Module:
        """The network: a 3-D one for volumes (``dims: 3``), else smp's, taking ``2 × context + 1`` slices as channels."""
        h = self.hparams
        if h.dims == 3:
            from lossbench.models import build_volume_model

            return build_volume_model(model_cfg, in_channels, num_classes, tuple(h.patch))
        return build_model(model_cfg, in_channels * (2 * h.context + 1), num_classes)

    def _build_loss(self, loss_name: str, loss_params: dict[str, Any], num_classes: int, class_frequencies: list[int]) -> torch.nn.Module:
        """The registered loss, given the training split's class frequencies and the voxel spacing where it takes them."""
        params = dict(loss_params)
        spec = get_loss_spec(loss_name)
        if spec.uses_class_frequencies and "class_frequencies" not in params:
            params["class_frequencies"] = list(class_frequencies)
        spacing = self.hparams.loss_spacing
        if spacing is not None and "spacing" in spec.defaults and params.get("spacing") is None:
            params["spacing"] = list(spacing)
        return build_loss(loss_name, num_classes=num_classes, ignore_index=self.hparams.ignore_index, **params)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # --- training -----------------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        check_output(loss, self.loss_label)  # a plugin loss that breaks the contract is named
        self._stop_if_not_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=x.shape[0])
        self._train_loss_sum = self._train_loss_sum.to(loss.device) + loss.detach()
        self._train_batches += 1
        return loss

    def _stop_if_not_finite(self, loss: Tensor) -> None:
        """Raise :class:`NonFiniteLossError` on every rank if the loss is NaN or infinite on any rank.

        Under DDP the ranks' values are gathered (one collective, as a boolean reduction would cost),
        so every rank stops together and the error names the ranks where it happened.
        """
        values = loss.detach().float().reshape(1)
        if self.trainer.world_size > 1:
            values = self.all_gather(values).reshape(-1)
        bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
        if not bad:
            return
        where = f" on rank {', '.join(map(str, bad))} of {len(values)}" if len(values) > 1 else ""
        raise NonFiniteLossError(
            f"loss {self.loss_label!r} became {values[bad[0]].item()}{where} at epoch {self.current_epoch}, "
            f"step {self.global_step}",
            on_this_rank=self.global_rank in bad or len(values) == 1,
        )

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum = torch.zeros((), device=self.device)
        self._train_batches = 0
        set_epoch = getattr(self.loss, "set_epoch", None)  # the training-progress hook (SegmentationLoss.set_epoch)
        if callable(set_epoch):
            set_epoch(self.current_epoch)

    # --- evaluation ---------------------------------------------------------------------------

    def predict_volume(self, volume: Tensor) -> Tensor:
        """Logits ``[1, C, D, H, W]`` of a whole volume ``[1, C_in, D, H, W]`` (:mod:`lossbench.models`)."""
        from lossbench.models import predict_patches, predict_slices

        h = self.hparams
        if h.dims == 3:
            return predict_patches(self.model, volume, tuple(h.patch), h.overlap, batch=2)
        return predict_slices(self.model, volume, h.context, input_multiple(self.model), batch=16)

    def predict_pairs(self, batch: dict[str, Tensor]) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """The batch's logits (for the loss) and its ``(prediction, original mask)`` pairs (for the metrics)."""
        if "spacing" in batch:
            logits = self.predict_volume(batch["image"])
            return logits, [(logits.argmax(1), batch["target"])]
        logits = self(batch["image"])
        return logits, list(original_resolution(logits, batch))

    def _eval_step(self, batch: dict[str, Tensor], cm, stage: str) -> None:
        x, y = batch["image"], batch["mask"]
        logits, pairs = self.predict_pairs(batch)
        if "spacing" in batch and self.hparams.dims == 2:  # a 2-D model's loss, on the volume's slices
            loss = self.loss(logits[0].transpose(0, 1), y[0])
        else:
            loss = self.loss(logits, y)
        done = 0
        for pred, target in pairs:
            cm.update(pred, target)
            if stage == "test":
                spacing = batch["spacing"][0].tolist() if "spacing" in batch else None
                self._keep_evidence(pred, target, batch["index"][done : done + pred.shape[0]], spacing)
            done += pred.shape[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=x.shape[0])

    def _keep_evidence(self, pred: Tensor, target: Tensor, index: Tensor, spacing: list[float] | None = None) -> None:
        """The test's per-image evidence: pixel counts now (on the device), objects and boundary distances on the
        thread pool (:func:`lossbench.metrics.image_scores`) while the next batch's forward pass runs."""
        num_classes, ignore = len(self.class_names), self.hparams.ignore_index
        if spacing is not None and self.predictions_dir is not None:
            from lossbench.record import write_prediction

            write_prediction(self.predictions_dir, int(index[0]), pred[0].cpu().numpy(), spacing)
        counts = per_image_counts(pred, target, num_classes, ignore).reshape(pred.shape[0], -1).cpu()
        h = self.hparams
        scores = [self._metric_pool.submit(image_scores, p, t, num_classes, ignore, self.focus, h.object_iou, h.nsd_tolerance, spacing)
                  for p, t in zip(pred.cpu().numpy(), target.cpu().numpy())]  # fmt: skip
        self._test_pending.append((index.cpu().view(-1, 1), counts, scores))
        while sum(len(f) for *_, f in self._test_pending) > PENDING_PER_THREAD * self._metric_threads:
            self._settle(self._test_pending.pop(0))  # a bounded queue: the oldest images' masks are let go

    def _settle(self, pending: tuple[Tensor, Tensor, list]) -> None:
        """One batch's rows once its images' scores are in (a failure in them raises here, naming nothing new)."""
        index, counts, scores = pending
        objects, boundary = zip(*(f.result() for f in scores))
        rows = torch.cat([index, counts, torch.tensor(objects, dtype=torch.int64).view(-1, 4)], 1)
        self._test_rows.append(rows.long())
        flat = torch.as_tensor(np.stack(boundary).reshape(len(boundary), -1))
        self._test_boundary.append(torch.cat([index.double(), flat], 1))

    def on_test_epoch_start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._test_rows, self._test_boundary, self._test_pending = [], [], []
        # as many threads as the run's CPU threads (SciPy's distance transforms and labelling let go of the GIL)
        self._metric_threads = max(1, torch.get_num_threads())
        self._metric_pool = ThreadPoolExecutor(self._metric_threads, thread_name_prefix="lossbench-metrics")

    def teardown(self, stage: str) -> None:
        pool, self._metric_pool = getattr(self, "_metric_pool", None), None  # a module with a pool cannot be pickled (ddp_spawn)
        if pool is not None:  # a test that stopped midway (an error, an interrupt): its queued images are dropped
            pool.shutdown(wait=False, cancel_futures=True)

    def _finish_pending(self) -> None:
        try:
            while self._test_pending:
                self._settle(self._test_pending.pop(0))
        finally:
            self._metric_pool.shutdown(wait=True, cancel_futures=True)
            self._metric_pool = None

    def _gather_rows(self, parts: list[Tensor], width: int, dtype: torch.dtype) -> Tensor:
        """Every rank's rows (column 0: the test image's index), on every rank, in test-set order."""
        rows = torch.cat(parts) if parts else torch.zeros((0, width), dtype=dtype)
        if self.trainer.world_size > 1:
            n = self.all_gather(torch.tensor([rows.shape[0]], device=self.device)).reshape(-1)
            padded = torch.full((int(n.max()), rows.shape[1]), -1, dtype=dtype)
            padded[: rows.shape[0]] = rows
            rows = self.all_gather(padded.to(self.device)).reshape(-1, rows.shape[1]).cpu()
            rows = rows[rows[:, 0] >= 0]
        return rows[rows[:, 0].argsort()]

    def _gather_evidence(self, confmat: Tensor) -> tuple[Evidence, np.ndarray]:
        """Every rank's evidence, on every rank, in test-set order; and the test image of each row."""
        c = len(self.class_names)
        rows = self._gather_rows(self._test_rows, 1 + 3 * c + 4, torch.long).numpy()
        boundary = self._gather_rows(self._test_boundary, 1 + 2 * c, torch.float64).numpy()
        evidence = Evidence(
            counts=rows[:, 1 : 1 + 3 * c].reshape(-1, c, 3),
            confmat=confmat.detach().cpu().long().numpy(),
            objects=rows[:, 1 + 3 * c :],
            boundary=boundary[:, 1:].reshape(-1, c, 2).astype(np.float32),
        )
        return evidence, rows[:, 0]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_cm, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_cm, "test")

    def on_validation_epoch_end(self) -> None:
        result = per_class_metrics(self.val_cm.compute(), self.class_names, self.hparams.ignore_index)
        self.val_cm.reset()
        self.log_dict(flat_scalars(result, "val"), sync_dist=False)  # already synced by torchmetrics
        if self.trainer.sanity_checking:
            return
        train_loss = self._train_loss_sum.item() / max(self._train_batches, 1)
        if self.trainer.world_size > 1:
            train_loss = float(self.trainer.strategy.reduce(torch.tensor(train_loss, device=self.device), reduce_op="mean"))
        val_loss = self.trainer.callback_metrics.get("val/loss")
        self.history.append(
            {
                "epoch": self.current_epoch + 1,
                "train_loss": train_loss if self._train_batches else math.nan,
                "val_loss": float(val_loss) if val_loss is not None else math.nan,
                "val_miou": result["miou"],
                **{f"val_iou/{k}": v["iou"] for k, v in result["per_class"].items()},
            }
        )

    def on_test_epoch_end(self) -> None:
        self._finish_pending()
        confmat = self.test_cm.compute()
        result = per_class_metrics(confmat, self.class_names, self.hparams.ignore_index)
        self.test_evidence, self.test_index = self._gather_evidence(confmat)
        boundary = self.test_evidence.boundary
        for i, name in enumerate(self.class_names):
            if name in result["per_class"]:
                for j, m in enumerate(BOUNDARY_METRICS):
                    defined = boundary[:, i, j][~np.isnan(boundary[:, i, j])]
                    result["per_class"][name][m] = float(defined.mean()) if defined.size else math.nan
                result["per_class"][name]["boundary_images"] = int((~np.isnan(boundary[:, i, 0])).sum())
        result["nsd_tolerance"] = self.hparams.nsd_tolerance
        result["distance_unit"] = "mm" if self.hparams.get("volumes") else "px"
        self.test_cm.reset()
        self.log_dict(flat_scalars(result, "test"), sync_dist=False)
        self.test_result = result

    # --- optimisation and checkpoints ---------------------------------------------------------

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lossbench_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("lossbench_history", []))
        self.resumed_after_epoch = len(self.history)
