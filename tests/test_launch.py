"""Placement on one machine's GPUs: which runs train at once, on which GPUs, started how."""

from __future__ import annotations

import pytest

from lossbench.config import ConfigError, TrainerConfig
from lossbench.launch import Placement, Slots, auto_per_gpu, one_process, place


# --- placement: G GPUs, d per run -> which runs start where and when --------------------------------


def gpus(n: int) -> list[str]:
    return [str(i) for i in range(n)]


@pytest.mark.parametrize(
    ("n_gpus", "devices", "slots"),
    [
        (8, 1, [("0",), ("1",), ("2",), ("3",), ("4",), ("5",), ("6",), ("7",)]),
        (8, 2, [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]),
        (8, 3, [("0", "1", "2"), ("3", "4", "5")]),  # two GPUs idle: a run never straddles groups
        (4, 4, [("0", "1", "2", "3")]),
        (4, -1, [("0", "1", "2", "3")]),
        (2, "auto", [("0", "1")]),
    ],
)
def test_g_gpus_with_d_per_run_give_g_over_d_runs_at_once_each_on_its_own_gpus(n_gpus, devices, slots):
    p = place(TrainerConfig(devices=devices), "auto", gpus(n_gpus), cores=32)
    assert p.gpu_slots == tuple(slots) and p.at_once == len(slots) and p.threads == 32 // len(slots)
    used = [g for s in p.gpu_slots for g in s]
    assert len(used) == len(set(used))  # no GPU in two groups


def test_placement_follows_the_visible_ids_and_a_number_of_jobs_caps_it():
    p = place(TrainerConfig(devices=1), "auto", ["3", "5", "6"], cores=12)
    assert p.gpu_slots == (("3",), ("5",), ("6",)) and p.threads == 4
    assert place(TrainerConfig(devices=1), 2, gpus(8), cores=16).at_once == 2  # jobs caps the runs at once
    assert place(TrainerConfig(devices=2), 16, gpus(4), cores=16).at_once == 2  # ...but never past one per group


def test_a_run_that_needs_more_gpus_than_are_visible_is_one_sentence_before_any_work():
    with pytest.raises(ConfigError, match=r"trainer.devices=4 asks for 4 GPUs per run, but 2 are visible \(0,1\)"):
        place(TrainerConfig(devices=4), "auto", gpus(2), cores=8)


def test_named_gpu_ids_and_the_cpu_keep_their_rules():
    p = place(TrainerConfig(devices=[2, 3]), "auto", gpus(4), cores=8)
    assert (p.at_once, p.gpu_slots) == (1, ()) and "one at a time" in p.note
    assert place(TrainerConfig(accelerator="cpu"), "auto", gpus(4), cores=8) == Placement(1, 8)  # CPU runs ignore GPUs
    assert place(TrainerConfig(), "auto", [], cores=2) == Placement(1, 2)  # auto on a CPU: one at a time
    assert place(TrainerConfig(), 2, [], cores=2) == Placement(2, 1)
    assert place(TrainerConfig(), -1, [], cores=6) == Placement(6, 1)
    ddp_cpu = place(TrainerConfig(devices=2), 2, [], cores=4)
    assert ddp_cpu.at_once == 1 and "one run at a time" in ddp_cpu.note


def test_only_one_process_runs_train_in_warm_workers():
    assert one_process(TrainerConfig(), None) and one_process(TrainerConfig(accelerator="cpu", devices="auto"), None)
    assert not one_process(TrainerConfig(devices=2, strategy="ddp"), None)  # DDP starts its ranks from the command line
    assert not one_process(TrainerConfig(num_nodes=2), None)
    assert one_process(TrainerConfig(devices=[1]), None) and not one_process(TrainerConfig(devices=[0, 1]), None)
    assert one_process(TrainerConfig(devices=-1), ("3",))  # all GPUs found, one of them in its group: one process
    assert not one_process(TrainerConfig(devices=2), ("0", "1"))


def test_slots_start_each_run_on_the_lowest_free_group_as_soon_as_one_frees_up():
    # 5 runs, 4 GPUs, 2 per run: runs 0 and 1 start at once on (0,1) and (2,3); run 2 waits for the
    # first group to free up and takes that one; a group given back twice is a bug, said so.
    slots = Slots(place(TrainerConfig(devices=2), "auto", gpus(4), cores=8).gpu_slots)
    started = [slots.take(), slots.take()]
    assert started == [("0", "1"), ("2", "3")] and slots.take() is None
    slots.give(("2", "3"))
    assert slots.take() == ("2", "3")
    slots.give(("0", "1"))
    slots.give(("2", "3"))
    assert [slots.take(), slots.take(), slots.take()] == [("0", "1"), ("2", "3"), None]
    slots.give(("0", "1"))
    with pytest.raises(ValueError, match="was not taken"):
        slots.give(("0", "1"))


# --- several runs per GPU (jobs_per_gpu), on simulated GPUs ------------------------------------------


def test_jobs_per_gpu_puts_n_runs_on_each_gpu_and_spreads_them_across_the_gpus():
    p = place(TrainerConfig(devices=1), "auto", gpus(2), cores=16, jobs_per_gpu=3)
    assert (p.at_once, p.per_group, p.threads, p.auto_per_gpu) == (6, 3, 2, False)
    slots = Slots(list(p.gpu_slots), p.per_group)
    taken = [slots.take() for _ in range(7)]
    assert taken == [("0",), ("1",), ("0",), ("1",), ("0",), ("1",), None]  # GPUs fill evenly, never past 3 each
    slots.give(("1",))
    assert slots.take() == ("1",) and slots.take() is None
    assert place(TrainerConfig(devices=1), 4, gpus(2), cores=16, jobs_per_gpu=3).at_once == 4  # jobs still caps it


def test_a_ddp_run_keeps_its_gpus_to_itself_whatever_jobs_per_gpu_says():
    p = place(TrainerConfig(devices=2, strategy="ddp"), "auto", gpus(4), cores=16, jobs_per_gpu=4)
    assert p.gpu_slots == (("0", "1"), ("2", "3")) and p.per_group == 1 and p.at_once == 2 and not p.auto_per_gpu
    auto = place(TrainerConfig(devices=2, strategy="ddp"), "auto", gpus(4), cores=16, jobs_per_gpu="auto")
    assert auto.per_group == 1 and not auto.auto_per_gpu


def test_jobs_per_gpu_auto_starts_at_one_per_gpu_and_grows_to_what_was_measured():
    p = place(TrainerConfig(devices=1), "auto", gpus(2), cores=16, jobs_per_gpu="auto")
    assert (p.at_once, p.per_group, p.auto_per_gpu) == (2, 1, True)
    grown = p.with_per_group(5, cores=16)
    assert (grown.at_once, grown.per_group, grown.threads, grown.auto_per_gpu) == (10, 5, 1, False)
    slots = Slots(list(p.gpu_slots), 1)
    assert [slots.take(), slots.take(), slots.take()] == [("0",), ("1",), None]
    slots.grow(5)
    assert slots.take() == ("0",)
    capped = place(TrainerConfig(devices=1), 3, gpus(2), cores=16, jobs_per_gpu="auto")
    assert capped.with_per_group(5, cores=16).at_once == 3  # a number of jobs still caps it


@pytest.mark.parametrize(
    ("peak", "free", "cores", "groups", "loader", "expected", "why"),
    [
        (400, 130_000, 16, 1, 0, 16, "an H200 and a small run: the CPU (16 cores) and the cap bound it"),
        (400, 130_000, 16, 1, 3, 4, "each run's loop and 3 loader workers need 4 cores: 16 // 4"),
        (400, 130_000, 16, 8, 0, 2, "16 cores shared by 8 GPUs: 2 runs each"),
        (30_000, 100_000, 64, 1, 0, 3, "big runs: 1 running + 85 % of the free memory // (30 GiB + a context)"),
        (70_000, 60_000, 64, 1, 0, 1, "one run nearly fills the GPU: it stays alone"),
        (1_000, 0, 64, 1, 0, 1, "nothing free: one"),
    ],
)
def test_auto_runs_per_gpu_fit_the_memory_and_the_cores(peak, free, cores, groups, loader, expected, why):
    assert auto_per_gpu(peak, free, cores, groups, loader) == expected, why


def test_the_pool_grows_to_the_runs_per_gpu_the_first_measured_epoch_allows(tmp_path):
    # jobs_per_gpu auto on two simulated GPUs: nothing changes until a run reports its peak memory after an
    # epoch; then every GPU takes as many runs as auto_per_gpu allows, and compare says why.
    import time

    from lossbench.config import SuiteConfig
    from lossbench.plan import plan_runs
    from lossbench.record import Progress
    from lossbench.suite import _Active, _Pool, _Watched

    cfg = SuiteConfig.model_validate({"losses": ["ce", "dice"], "data": {"kind": "synthetic"}})
    runs = plan_runs(cfg, tmp_path, num_classes=4, check=False)
    placement = place(TrainerConfig(devices=1), "auto", gpus(2), cores=16, jobs_per_gpu="auto")
    lines = []
    pool = _Pool(runs, placement, tmp_path, lines.append)
    pool.cores = 16  # a GPU machine's cores
    slot = pool.slots.take()
    pool.active[object()] = _Active(_Watched(runs[0], time.perf_counter(), progress=Progress(0, 8, None, 3, 10)), slot)
    pool._size_from_memory()
    assert pool.placement.at_once == 2 and not lines  # not measured yet
    pool.active.clear()
    measured = Progress(1, 8, 0.2, None, 10, None, 1.0, gpu_peak_mib=2000.0, gpu_free_mib=20_000.0)
    pool.active[object()] = _Active(_Watched(runs[0], time.perf_counter(), progress=measured), slot)
    pool._size_from_memory()
    expected = auto_per_gpu(2000.0, 20_000.0, 16, 2, 0)
    assert expected == 7  # 1 running + 0.85 · 20 000 // 2 600 = 7 by memory; 16 cores // 2 GPUs = 8 by CPU
    assert pool.placement.per_group == expected and pool.slots.per_group == expected
    assert pool.placement.at_once == 2 * expected and not pool.placement.auto_per_gpu  # sized once
    assert f"{expected} runs per GPU from now on" in lines[0] and "peaked at 2000 MiB" in lines[0]
    pool.workers.close()


def test_more_runs_at_once_than_cores_is_said():
    # issue 37 (minor): --jobs 1000 on 2 cores was accepted without a word
    from lossbench.launch import Placement

    assert Placement(1000, 1, cores=2).describe().endswith("— more runs than this machine's 2 CPU cores: they share them, each slower")
    assert "share them" not in Placement(2, 1, cores=2).describe()
