"""``lossbench init --data DIR``: a commented suite config written from the user's folder.

The folder is read as folder data is (:class:`lossbench.data.folder.SplitFiles`: the same layout and
the same errors): the split sizes, the image sizes and channels, the mask values and how often each
class occurs. Class names come from ``classes.txt`` when the folder has one; otherwise the mask
values found name the classes (``class_0`` …, to be renamed) and a value of 255 is taken as the void
label. RGB colour masks get a ``data.palette`` of the colours found.

The time estimate is measured, not guessed: a few training steps and evaluation batches of the
config's model at its input size, on this machine (its first GPU if it has one), scaled by the
number of steps the suite will take. With ``--minutes`` the epochs are chosen to fit that time, and
when even one epoch does not fit, the input size is halved (measured again each time) down to a
short side of :data:`MIN_SIDE`; the config says so.
The config written is loaded back through :func:`lossbench.config.load_config` before ``init``
returns, so it is valid by the same rules as any other.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lossbench.config import ConfigError, load_config, read_class_list
from lossbench.data.checks import SPLITS
from lossbench.data.folder import SplitFiles
from lossbench.data.images import decode_image_array, read_mask
from lossbench.data.volumes import case_name

LOSSES = ["ce", "weighted_ce", "focal", "dice", "generalized_dice", "lovasz_softmax", "combo"]
"""The losses a new suite compares: the common baselines and the imbalance-aware favourites."""
SEEDS = [0, 1, 2]  # three seeds: the report's seed-level verdict needs at least three per loss
EPOCHS = 40
BATCH = 8
MAX_SIDE = 512  # the suggested input size keeps the long side at most this (a multiple of 32)
SAMPLE = 100  # masks read per split for sizes and class frequencies
VOID = 255
START_S = 3.0  # a run's start-up (forked from a server that imported torch once; data, model): not measured by the timed steps
MIN_SIDE = 64  # --minutes halves the input size to fit, down to this short side


@dataclass
class Survey:
    """What ``init`` found in a data folder."""

    root: Path
    counts: dict[str, int]  # images per split
    channels: int
    sizes: list[tuple[int, int]]  # (H, W) of the masks read
    class_names: list[str] | None  # from classes.txt
    values: dict[int, int] = field(default_factory=dict)  # mask value -> pixels (training masks read)
    colours: dict[tuple[int, int, int], int] = field(default_factory=dict)  # RGB masks: colour -> pixels

    @property
    def ignore_index(self) -> int | None:
        if self.colours:
            return None
        return VOID if VOID in self.values and (self.class_names is None or len(self.class_names) <= VOID) else None

    @property
    def names(self) -> list[str]:
        if self.class_names:
            return self.class_names
        if self.colours:
            return [f"class_{i}" for i in range(len(self.colours))]
        top = max((v for v in self.values if v != self.ignore_index), default=1)
        return [f"class_{i}" for i in range(max(top, 1) + 1)]

    def frequencies(self) -> list[float]:
        """Each class's share of the scored training pixels read."""
        if self.colours:
            pixels = [self.colours[c] for c in sorted(self.colours)]
        else:
            pixels = [self.values.get(i, 0) for i in range(len(self.names))]
        total = sum(pixels) or 1
        return [p / total for p in pixels]

    def input_size(self) -> tuple[int, int] | None:
        """``data.resize`` to suggest: the median size, the long side at most :data:`MAX_SIDE`, both
        sides multiples of 32; ``None`` when every image already has one such size."""
        h, w = (int(np.median([s[i] for s in self.sizes])) for i in (0, 1))
        scale = min(1.0, MAX_SIDE / max(h, w))
        size = tuple(max(32, round(n * scale / 32) * 32) for n in (h, w))
        if len(set(self.sizes)) == 1 and self.sizes[0] == size:
            return None
        return size  # type: ignore[return-value]


def survey(root: str | Path) -> Survey:
    """Read the folder's layout, sizes, channels and mask values (a sample of :data:`SAMPLE` per split)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--data {str(root)!r} is not a folder (resolved to {root.resolve()})")
    volumes = root / "train" / "images"
    if volumes.is_dir() and any(case_name(p) for p in volumes.iterdir()):
        raise ConfigError(f"--data {str(root)!r} holds volumes ({volumes} has NIfTI or .npy files); lossbench init writes "
                          "configs for 2-D image folders: write data.kind volumes by hand, as experiments/volumes.yaml "
                          "does (README, 'Volumes')")  # fmt: skip
    files = {split: SplitFiles.find(root, split) for split in SPLITS}
    listing = root / "classes.txt"
    names = read_class_list(listing) if listing.is_file() else None  # read as training reads it
    found = Survey(root, {s: len(f.images) for s, f in files.items()}, decode_image_array(files["train"].images[0]).shape[0], [], names)
    for split, f in files.items():
        for i in np.unique(np.linspace(0, len(f.masks) - 1, min(SAMPLE, len(f.masks))).astype(int)):
            mask = _read_ids_or_colours(f.masks[i])
            found.sizes.append(mask.shape[:2])
            if split != "train":
                continue
            if mask.ndim == 3:
                keys, n = np.unique(mask.reshape(-1, 3), axis=0, return_counts=True)
                tally = found.colours
            else:
                keys, n = np.unique(mask, return_counts=True)
                tally = found.values
            for key, k in zip(keys.tolist(), n.tolist()):
                key = tuple(key) if isinstance(key, list) else key
                tally[key] = tally.get(key, 0) + k
    return found


def _read_ids_or_colours(path: Path) -> np.ndarray:
    """A mask as ``[H, W]`` class ids, or ``[H, W, 3]`` colours when it is an RGB colour mask."""
    try:
        return read_mask(path)
    except ValueError as e:
        if "expected single-channel class ids" not in str(e):
            raise
    return np.moveaxis(decode_image_array(path)[:3], 0, -1)


@dataclass
class Timing:
    """Seconds per training step and per evaluated image, measured on ``device``."""

    step: float
    eval_image: float
    device: str


def measure(channels: int, classes: int, size: tuple[int, int], batch: int, steps: int = 3) -> Timing:
    """Train ``steps`` steps (after one to warm up) of the default model at ``size`` and evaluate one batch."""
    import torch

    from lossbench.module import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model({"arch": "Unet", "encoder": "resnet18", "encoder_weights": None}, channels, classes).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, channels, *size, device=device)
    y = torch.randint(0, classes, (batch, *size), device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    train_step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    step = (time.perf_counter() - start) / steps
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        model(x)
        sync()
        per_image = (time.perf_counter() - start) / batch
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return Timing(step, per_image, name)


def suite_seconds(found: Survey, timing: Timing, epochs: int, runs: int, batch: int = BATCH) -> float:
    """The suite's time, one run at a time: steps × step time, every epoch's validation, the final
    test and each run's start-up (:data:`START_S`)."""
    steps = math.ceil(found.counts["train"] / batch)
    per_run = epochs * (steps * timing.step + found.counts["val"] * timing.eval_image) + found.counts["test"] * timing.eval_image
    return runs * (per_run + START_S)


def epochs_to_fit(found: Survey, timing: Timing, minutes: float, runs: int) -> int:
    """The most epochs (at least one) whose suite takes at most ``minutes``, by :func:`suite_seconds`."""
    fixed = suite_seconds(found, timing, 0, runs)  # start-up and test: paid whatever the epochs
    return max(1, int((minutes * 60 - fixed) // (suite_seconds(found, timing, 1, runs) - fixed)))


def duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 90:
        return f"{max(1, round(minutes))} min"
    return f"{int(minutes // 60)} h {round(minutes % 60):02d} min"


def write_config(data: str | Path, config: str | Path | None = None, minutes: float | None = None,
                 force: bool = False, estimate: bool = True) -> tuple[Path, str]:  # fmt: skip
    """Survey ``data``, write a commented suite config to ``config`` (default ``./<folder name>.yaml``)
    and return its path and a summary line for the console."""
    found = survey(data)
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", found.root.resolve().name).lstrip(".-") or "mine"
    path = Path(config) if config else Path(f"{name}.yaml")
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; choose another --config or add --force to replace it")
    size = found.input_size()
    hw = size or found.sizes[0]
    runs = len(LOSSES) * len(SEEDS)
    epochs, timing, note = EPOCHS, None, "no time estimate (--no-estimate)"
    if estimate:
        classes = len(found.names) if not found.colours else len(found.colours)
        first, shrunk = hw, ""
        timing = measure(found.channels, classes, hw, BATCH)
        while minutes is not None and suite_seconds(found, timing, 1, runs) > minutes * 60 and min(hw) >= 2 * MIN_SIDE:
            hw = size = tuple(max(MIN_SIDE, round(n / 2 / 32) * 32) for n in hw)  # type: ignore[assignment]
            shrunk = f"input size halved to {hw[0]}x{hw[1]} (from {first[0]}x{first[1]}) to fit --minutes; "
            timing = measure(found.channels, classes, hw, BATCH)
        if minutes is not None:
            epochs = epochs_to_fit(found, timing, minutes, runs)
        seconds = suite_seconds(found, timing, epochs, runs)
        short = f"more than --minutes {minutes:g} even at one epoch: " if minutes is not None and seconds > minutes * 60 else ""
        note = (f"{short}{shrunk}about {duration(seconds)} for {runs} run{'s' * (runs != 1)} of {epochs} epoch{'s' * (epochs != 1)}, one at a "
                f"time (measured: {timing.step:.2f} s a training step of {BATCH} at {hw[0]}x{hw[1]}, {timing.device}; "
                f"{START_S:.0f} s start-up a run)")  # fmt: skip
    elif minutes is not None:
        raise ConfigError("--minutes chooses the epochs from a measured time; leave out --no-estimate")
    text = _render(found, path, size, epochs, note)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as e:
        path.unlink()
        raise ConfigError(f"lossbench init wrote a config it cannot load (a bug; please report it): {e}") from None
    return path, note


def _render(found: Survey, path: Path, size: tuple[int, int] | None, epochs: int, note: str) -> str:
    root = found.root.resolve()
    here = Path(os.path.abspath(path)).parent
    cwd = Path.cwd().resolve()
    inside = all(p == cwd or cwd in p.parents for p in (root, here.resolve()))
    shown = os.path.relpath(root, here) if inside else str(root)  # relative within the project, else absolute
    names, freq = found.names, found.frequencies()
    sizes = sorted(set(found.sizes))
    median = [int(np.median([s[i] for s in found.sizes])) for i in (0, 1)]
    size_line = f"{len(sizes)} sizes, median {median[0]}x{median[1]}" if len(sizes) > 1 else f"all {sizes[0][0]}x{sizes[0][1]}"
    lines = [
        f"# lossbench suite for {root}, written by `lossbench init` — edit freely.",
        f"#   images: train {found.counts['train']}, val {found.counts['val']}, test {found.counts['test']}; "
        f"{found.channels} channel(s); sizes (H x W) read: {size_line}",
        "#   class share of the training pixels read (the rarer, the more the choice of loss matters):",
        *[f"#     {n:<20} {100 * f:6.2f} %" for n, f in zip(names, freq)],
        f"#   time: {note}",
        f"# Check it, then run it:  lossbench compare --config {path} --dry-run   (then without --dry-run)",
        f"suite: {re.sub(r'[^A-Za-z0-9_.+-]+', '-', path.stem).lstrip('.-') or 'mine'}   # runs/<suite> and reports/<suite>",
        f"losses: [{', '.join(LOSSES)}]   # lossbench losses: every loss you can add",
        f"seeds: [{', '.join(map(str, SEEDS))}]            # three or more per loss: the verdict then speaks of the losses, not just these runs",
        "jobs: auto                # runs at once: one per GPU; on a CPU one at a time",
        "data:",
        "  kind: folder",
        f"  path: {json.dumps(shown)}   # relative paths are read from this file's folder",
    ]
    if found.colours:
        palette = ", ".join(f"class_{i}: [{r}, {g}, {b}]" for i, (r, g, b) in enumerate(sorted(found.colours)))
        lines.append(f"  palette: {{{palette}}}   # RGB colour masks: name the classes (key 'ignore': a void colour)")
    elif found.class_names is None:
        lines.append(f"  class_names: [{', '.join(names)}]   # from the mask values found: give them real names (or write classes.txt)")
    else:
        lines.append("  # class names: classes.txt")
    ignore = found.ignore_index
    lines.append(f"  ignore_index: {'null' if ignore is None else ignore}" + ("         # the void label found in the masks: excluded from losses and metrics"
                                               if ignore is not None else "        # a mask value to leave out of losses and metrics, if any"))  # fmt: skip
    lines.append(f"  resize: [{size[0]}, {size[1]}]      # [H, W] the model sees (metrics stay at each mask's own size)"
                 if size else "  # resize: [H, W]        # every image already has one size, a multiple of 32")  # fmt: skip
    lines += [
        "  augment: {hflip: true}  # training only; vflip / rotate90 for aerial or medical data, scale / jitter too",
        "  normalize: dataset      # per-channel mean/std of the training split (imagenet: with pretrained weights)",
        f"  batch_size: {BATCH}",
        "model: {arch: Unet, encoder: resnet18, encoder_weights: null}   # imagenet weights: downloaded once",
        "optim: {lr: 0.001, weight_decay: 0.0001}",
        "trainer:",
        f"  max_epochs: {epochs}",
        "  accelerator: auto",
        "  devices: 1",
        "wandb: {project: lossbench}   # offline unless you are logged in (wandb login)",
        "",
    ]
    return "\n".join(lines)
