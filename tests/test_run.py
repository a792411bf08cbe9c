"""One run: the CLI end to end, one checkpoint, interrupts, DDP (spawn and real ddp), failures by rank, W&B."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
from helpers.cli import ROOT, SMOKE, lossbench_cli, sigterm_once_checkpointed

from lossbench.config import SYNTHETIC_CLASSES, load_config
from lossbench.data import SegmentationDataModule, load_data
from lossbench.io import json_safe
from lossbench.module import LossbenchModule
from lossbench.metrics import object_summary

from helpers.wandb_offline import logged_values, offline_run_files, run_info

pytestmark = pytest.mark.slow

# --- DDP, in-process (ddp_spawn) ------------------------------------------------------------------


def _module_and_data(cache, loss="dice"):
    cfg = load_config(SMOKE, [f"data.cache_dir={cache}"])
    bundle = load_data(cfg.data)
    L.seed_everything(0, verbose=False)
    module = LossbenchModule(
        cfg.model.model_dump(), loss, {}, bundle.class_names, bundle.ignore_index, bundle.in_channels,
        bundle.class_frequencies,
    )  # fmt: skip
    dm = SegmentationDataModule(bundle, cfg.data.model_copy(update={"batch_size": 8, "eval_batch_size": None, "num_workers": 0}), seed=0)
    return module, dm, bundle


def test_ddp_spawn_evaluation_pools_every_test_pixel_exactly_once(data_cache):
    module, dm, bundle = _module_and_data(data_cache)
    assert len(bundle.test) % (2 * 8) != 0  # shards are uneven: a padding sampler would skew metrics
    common = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "use_distributed_sampler": False}
    single = L.Trainer(devices=1, **common).test(module, datamodule=dm, verbose=False)[0]
    spawned = L.Trainer(devices=2, strategy="ddp_spawn", **common).test(module, datamodule=dm, verbose=False)[0]
    keys = [k for k in single if k.startswith("test/") and k != "test/loss"]
    assert "test/iou/spot" in keys and "test/specificity/curve" in keys
    for k in keys:
        assert spawned[k] == single[k], k


# --- one run through the CLI ---------------------------------------------------------------------


def _read_metrics(out):
    files = list(out.glob("*/*/metrics.json"))
    assert len(files) == 1, files
    return files[0].parent, json.loads(files[0].read_text())


def test_smoke_run_end_to_end_writes_metrics_and_an_offline_wandb_run(tmp_path, data_cache):
    r = lossbench_cli(
        "train", "--config", str(SMOKE), "--loss", "tversky", "--seed", "3",
        "--out", str(tmp_path), "--set", f"data.cache_dir={data_cache}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, m = _read_metrics(tmp_path)
    assert run_dir.parent.name == "tversky" and run_dir.name.startswith("seed3-")
    assert m["status"] == "ok" and m["epochs"] == 2 and m["wall_s"] > 0 and m["seed"] == 3
    # the test's share of the wall time, and the load the time was measured under (start, end), are kept
    assert 0 < m["test_s"] < m["wall_s"] and len(m["placement"]["load"]) == 2 and m["placement"]["cores"] >= 1
    assert not (run_dir / "checkpoints").exists()  # issue 36 (5): no empty checkpoints/ folder left
    assert list(m["test"]["per_class"]) == SYNTHETIC_CLASSES
    for row in m["test"]["per_class"].values():
        assert set(row) >= {"iou", "sensitivity", "specificity", "precision", "dice"}
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert (run_dir / "config.yaml").exists() and (run_dir / "evidence.npz").exists()
    # issue 30 (9): a finished run is never trained again, so its weights are not kept (165 MB a run on real data)
    assert not list(tmp_path.rglob("*.ckpt"))
    assert "test mIoU" in r.stdout
    assert "testing: batch 1/" in r.stdout  # issue 30 (7): scoring the test set shows progress too

    (wandb_file,) = offline_run_files(run_dir)
    logged = logged_values(wandb_file)
    assert logged["test/miou"] == pytest.approx(m["test"]["miou"], rel=1e-6)
    info = run_info(wandb_file)  # issue 10: named and tagged so the dashboard can group by loss
    assert info["name"] == "tversky · seed 3" and info["group"] == "smoke"
    assert {"suite:smoke", "loss:tversky", "seed:3", f"config:{m['config_hash']}"} <= set(info["tags"])
    assert logged["test/predictions/_type"] == "images/separated" and logged["test/predictions/count"] == 4
    for name, row in m["test"]["per_class"].items():
        for metric in ("iou", "sensitivity", "specificity"):
            assert logged[f"test/{metric}/{name}"] == pytest.approx(row[metric], rel=1e-6, abs=1e-7)

    again = lossbench_cli("train", "--config", str(SMOKE), "--loss", "tversky", "--seed", "3",
                          "--out", str(tmp_path), "--set", f"data.cache_dir={data_cache}")  # fmt: skip
    assert again.returncode == 0
    assert json.loads((run_dir / "metrics.json").read_text())["finished_at"] == m["finished_at"]  # not retrained


def test_ddp_run_through_the_cli_equals_a_single_process_evaluation(tmp_path, data_cache):
    from lossbench.run import evaluate_checkpoint

    r = lossbench_cli(
        "train", "--config", str(SMOKE), "--loss", "ce", "--out", str(tmp_path), "--no-progress",
        "--set", f"data.cache_dir={data_cache}", "trainer.devices=2", "trainer.strategy=ddp", "trainer.keep_checkpoint=true",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, m = _read_metrics(tmp_path)
    assert m["status"] == "ok" and m["world_size"] == 2
    single, evidence = evaluate_checkpoint(run_dir)
    assert m["test"]["pixels"] == single["pixels"] == 20 * 32 * 32
    assert m["test"] == json_safe(single)  # exactly equal, class by class (undefined ratios as null)
    # issue 10: the evidence gathered from the two ranks' shards equals one process's, image by image
    stored = np.load(run_dir / "evidence.npz")
    for key in ("counts", "objects", "confmat"):
        assert np.array_equal(stored[key], getattr(evidence, key)), key
    assert stored["counts"].shape == (20, 4, 3) and stored["counts"].sum((0, 2)).tolist() != [0, 0, 0, 0]
    assert np.array_equal(stored["counts"][:, :, 0].sum(0), np.diag(stored["confmat"]))  # per-image TP sum to the matrix
    assert m["objects"] == json_safe({"iou_threshold": 0.1} | object_summary(evidence.objects))
    assert m["focus"] == "spot" and m["objects"]["gt"] > 0
    # bug 5: one checkpoint per run, in the run's folder — not a second one under a W&B-project folder
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.ckpt")) == [
        run_dir.relative_to(tmp_path) / "checkpoints" / "last.ckpt"
    ]
    assert not (ROOT / "lossbench-smoke").exists()


def test_a_wandb_failure_does_not_fail_the_run(tmp_path, data_cache):
    r = lossbench_cli(
        "train", "--config", str(SMOKE), "--loss", "ce", "--out", str(tmp_path), "--no-progress",
        "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=1",
        env={"WANDB_MODE": "not-a-mode"},  # the config's wandb.mode is checked at load; the environment is not
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "W&B could not start" in r.stderr
    _, m = _read_metrics(tmp_path)
    assert m["status"] == "ok" and m["test"]["miou"] is not None


def test_sigterm_leaves_the_run_interrupted_and_resumable(tmp_path, data_cache):
    # issue 8 (faults): SIGTERM — what timeout and SLURM preemption send — marked the run failed for good
    args = ["train", "--config", str(SMOKE), "--loss", "dice", "--out", str(tmp_path), "--no-progress",
            "--set", f"data.cache_dir={data_cache}", "trainer.max_epochs=12"]  # fmt: skip
    returncode, output = sigterm_once_checkpointed(args, "dice/*/checkpoints/last.ckpt", tmp_path)
    assert returncode == 130, output[-2000:]
    run_dir, m = _read_metrics(tmp_path)
    assert m["status"] == "interrupted", m.get("error")
    assert (run_dir / "checkpoints" / "last.ckpt").exists()

    r = lossbench_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    _, m = _read_metrics(tmp_path)
    assert m["status"] == "ok" and m["attempts"] == 2 and m["resumed_after_epoch"] >= 1
    assert [h["epoch"] for h in m["history"]] == list(range(1, 13))


RANK_PLUGIN = """
import torch
import torch.distributed as dist
from lossbench.losses import SegmentationLoss, register_loss


def _rank1():
    return dist.is_available() and dist.is_initialized() and dist.get_rank() == 1


@register_loss("raises_on_rank1")
class RaisesOnRank1(SegmentationLoss):
    def compute(self, prep):
        if _rank1():
            raise RuntimeError("rank one ran out of luck")
        return torch.nn.functional.cross_entropy(prep.logits, prep.labels)


@register_loss("nan_on_rank1")
class NanOnRank1(SegmentationLoss):
    def compute(self, prep):
        value = torch.nn.functional.cross_entropy(prep.logits, prep.labels)
        return value * float("nan") if _rank1() else value
"""


@pytest.mark.parametrize(
    ("loss", "expected"),
    [("raises_on_rank1", "RuntimeError: rank one ran out of luck"), ("nan_on_rank1", "became nan on rank 1 of 2")],
)
def test_a_failure_on_one_ddp_rank_is_recorded_as_it_happened(tmp_path, data_cache, loss, expected):
    # issue 8 (DDP): the record held rank 0's "Connection closed by peer", or its own finite value
    plugin = tmp_path / "rank_plugin.py"
    plugin.write_text(RANK_PLUGIN)
    out = tmp_path / "runs"
    r = lossbench_cli(
        "train", "--config", str(SMOKE), "--loss", loss, "--out", str(out), "--no-progress",
        "--set", f"data.cache_dir={data_cache}", f"plugins=[{plugin}]", "trainer.devices=2", "trainer.strategy=ddp",
    )  # fmt: skip
    assert r.returncode != 0
    _, m = _read_metrics(out)
    assert m["status"] == "failed"
    assert expected in m["error"] and m["failed_rank"] == 1, m["error"]
    assert "Connection closed" not in m["error"]


def test_a_resumed_run_resumes_the_losss_schedule(tmp_path, data_cache):
    # The training-progress hook: the module calls loss.set_epoch(epoch) at every epoch start, and
    # a run resumed from its checkpoint continues boundary's α schedule where it stopped.
    from lightning.pytorch.callbacks import Callback

    seen = []

    class Alpha(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                seen.append((trainer.current_epoch, round(pl_module.loss.alpha, 6)))

    def fit(max_epochs, ckpt):
        module, dm, _ = _module_and_data(data_cache, loss="boundary")
        module.loss.alpha0, module.loss.alpha_step = 1.0, 0.2
        trainer = L.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                            default_root_dir=tmp_path, callbacks=[Alpha()], limit_val_batches=0, enable_model_summary=False)  # fmt: skip
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        return trainer

    first = fit(2, None)
    ckpt = tmp_path / "two.ckpt"
    first.save_checkpoint(ckpt)
    fit(4, str(ckpt))  # a new process would build everything anew like this
    assert seen == [(0, 1.0), (1, 0.8), (2, 0.6), (3, 0.4)]


def test_a_broken_last_checkpoint_is_set_aside_and_the_run_trains_from_the_start(tmp_path, data_cache):
    # issue 30 (11): a disk that filled while last.ckpt was written left it truncated; the rerun failed on the zip
    from lossbench.config import load_config
    from lossbench.identity import run_config
    from lossbench.record import checkpoint_dir, read_record, run_dir_for
    from lossbench.run import run_process

    cfg = load_config(SMOKE, [f"data.cache_dir={data_cache}", "trainer.max_epochs=1", "wandb.mode=disabled",
                              "trainer.keep_checkpoint=true"])  # fmt: skip
    run_cfg = run_config(cfg, cfg.losses[0], 0)
    run_dir = run_dir_for(tmp_path, run_cfg)
    assert run_dir == run_dir_for(tmp_path, run_config(load_config(SMOKE, [f"data.cache_dir={data_cache}", "trainer.max_epochs=1"]),
                                                     cfg.losses[0], 0))  # keeping the checkpoint is not the run's identity
    checkpoint_dir(run_dir).mkdir(parents=True)
    (checkpoint_dir(run_dir) / "last.ckpt").write_bytes(b"PK\x03\x04 a checkpoint cut short")
    assert run_process(run_dir, None, run_cfg=run_cfg) == 0
    rec = read_record(run_dir)
    assert rec.ok and rec.resumed_after_epoch is None and rec.epochs == 1
    assert (checkpoint_dir(run_dir) / "last.ckpt.damaged").read_bytes().startswith(b"PK\x03\x04 a checkpoint")
    from lossbench.run import checkpoint_problem

    assert checkpoint_problem(checkpoint_dir(run_dir) / "last.ckpt") is None  # the new one is whole
    assert not [p for p in checkpoint_dir(run_dir).iterdir() if p.name.endswith(".tmp")]


def test_a_checkpoint_write_that_fails_leaves_the_previous_one_whole(tmp_path):
    import pytest as _pytest
    import torch

    from lossbench.run import AtomicCheckpointIO, checkpoint_problem

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with _pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "w": torch.ones(1000), "bad": Unpicklable()}, path)
    assert checkpoint_problem(path) is None and torch.load(path, weights_only=False)["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_a_run_served_device_batches_trains_validates_and_tests_like_the_host_loader(data_cache, tmp_path, monkeypatch):
    # issue 35: every run with device-resident batches crashed at its first validation (Lightning reads
    # `batch_sampler` on every loader). The resident path is forced open on the CPU: the same run, trained through a
    # real Trainer from DeviceBatches and from the host loader, must have the same history and test metrics.
    from lossbench.config import load_config
    from lossbench.data.datamodule import DeviceBatches, SegmentationDataModule
    from lossbench.identity import run_config
    from lossbench.record import read_record, run_dir_for
    from lossbench.run import run_process

    served = []
    real_init = DeviceBatches.__init__

    def counting_init(self, *args, **kwargs):
        served.append(kwargs.get("evaluation", False) or (len(args) > 4 and args[4]))
        real_init(self, *args, **kwargs)

    records = {}
    for path in ("host", "device"):
        if path == "device":
            monkeypatch.setattr(SegmentationDataModule, "resident_on", ("cuda", "cpu"))
            monkeypatch.setattr(DeviceBatches, "__init__", counting_init)
        cfg = load_config(SMOKE, [f"data.cache_dir={data_cache}", "trainer.max_epochs=2", "wandb.mode=disabled",
                                  "trainer.accelerator=cpu", "data.num_workers=0"])  # fmt: skip
        run_cfg = run_config(cfg, next(e for e in cfg.losses if e.label == "dice"), 0)
        run_dir = run_dir_for(tmp_path / path, run_cfg)
        assert run_process(run_dir, None, run_cfg=run_cfg) == 0
        records[path] = read_record(run_dir)
    assert True in served and False in served  # training and evaluation were served from "the device"
    host, device = records["host"], records["device"]
    assert host.ok and device.ok, (host.error, device.error)
    assert [h["train_loss"] for h in device.history] == pytest.approx([h["train_loss"] for h in host.history], rel=1e-5)
    assert [h["val_miou"] for h in device.history] == pytest.approx([h["val_miou"] for h in host.history], abs=1e-6)
    assert device.miou == pytest.approx(host.miou, abs=1e-6)
    # each run records the kind of machine it trained on (issue 34: the same seed gives other numbers on AVX-512)
    import torch

    assert host.machine["isa"] == torch.backends.cpu.get_cpu_capability() and host.machine["torch"] in torch.__version__
    assert host.machine_kind == device.machine_kind and "(" + host.machine["isa"] + ")" in host.machine_kind
