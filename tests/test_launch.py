"""Placement on one machine's GPUs: which runs train at once, on which GPUs, started how."""

from __future__ import annotations

import pytest

from lossbench.config import ConfigError, TrainerConfig
from lossbench.launch import Placement, Slots, forkable, place


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


def test_only_one_process_runs_on_the_cpu_start_as_forks_of_the_preloaded_server():
    cpu = place(TrainerConfig(), 2, [], cores=2)
    assert forkable(TrainerConfig(), cpu) and forkable(TrainerConfig(accelerator="cpu", devices="auto"), cpu)
    assert not forkable(TrainerConfig(devices=2, strategy="ddp"), cpu)  # DDP starts its ranks from the command line
    assert not forkable(TrainerConfig(num_nodes=2), cpu)
    on_gpus = place(TrainerConfig(), "auto", gpus(2), cores=8)
    named = place(TrainerConfig(devices=[1]), "auto", gpus(2), cores=8)
    assert on_gpus.on_gpu and named.on_gpu  # CUDA must be pinned before it starts, in a fresh process
    assert not forkable(TrainerConfig(), on_gpus) and not forkable(TrainerConfig(devices=[1]), named)
    assert forkable(TrainerConfig(accelerator="cpu"), place(TrainerConfig(accelerator="cpu"), "auto", gpus(2), cores=8))


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
