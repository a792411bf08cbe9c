"""``lossbench init --data DIR``: a commented suite config written from the user's folder.

The folder is read as folder data is (:class:`lossbench.data.folder.SplitFiles`: the same layout and
the same errors): the split sizes, the image sizes and channels, the mask values and how often each
class occurs. Class names come from ``classes.txt`` when the folder has one; otherwise the mask
values found name the classes (``class_0`` …, to be renamed) and a value of 255 is taken as the void
label. RGB colour masks get a ``data.palette`` of the colours found.

A mask value beyond the classes of ``classes.txt`` (the void label of many public sets), a
``classes.txt`` entry named void (:data:`VOID_NAMES`) or the value given with ``--void`` becomes
``data.ignore_index``, with a comment saying why.

The time estimate is measured, not guessed: training steps of the config's model at its input size,
and the test's own work on a batch — the model's forward pass and the metrics every test image gets
(counts, boundary distances, objects) — on this machine (its first GPU if it has one), within a tenth
of ``--minutes``; scaled by the steps, validation and test images the suite will have, each run's
start-up and reading the folder once. With ``--minutes`` :func:`fit_plan` proposes a plan that fits:
it gives up, in this order, epochs (down to :data:`MIN_EPOCHS`), input size (halved down to a short
side of :data:`MIN_SIDE`), losses (the user's favourites kept first, then the documents' classics,
down to three), seeds (to one), then the last epochs; the config says what was given up and whether
the budget was met.

A folder of volumes (NIfTI or ``.npy``) gets a volume config: ``data.kind: volumes``, a 3-D model by
default, the spacing read from the headers, a patch that fits the volumes; without nibabel for NIfTI
files, ``init`` says so before reading anything, with the install command for how lossbench was
installed.
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
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.config import ConfigError, load_config, read_class_list
from lossbench.data.checks import SPLITS
from lossbench.data.folder import SplitFiles
from lossbench.data.images import decode_image_array, read_mask
from lossbench.data.volumes import VolumeFiles, case_name, install_extra, missing_for_volumes, read_volume
from lossbench.progress import plural

LOSSES = ["ce", "dice", "lovasz_softmax", "focal", "weighted_ce", "generalized_dice", "combo"]
"""The losses a new suite compares, in the order a plan keeps them: a pixel baseline, a region loss and a
direct IoU surrogate (three kinds of answer), then the two baselines of imbalance (focal, class weights), then
the rest."""
IMBALANCE_FIRST = 5  # a plan keeps the user's favourites and the first five of LOSSES until the input reaches RARE_OBJECT_SIDE
RARE_OBJECT_SIDE = 2.0  # the input size a plan keeps: where the rarest class's median object is still this many pixels across
SEEDS = [0, 1, 2]  # three seeds: the report's seed-level verdict needs at least three per loss
EPOCHS = 40
BATCH = 8
MAX_SIDE = 512  # the suggested input size keeps the long side at most this (a multiple of 32)
SAMPLE = 100  # masks read per split for sizes and class frequencies
VOID = 255
VOID_16 = 65535  # the 16-bit masks' void label (the largest 16-bit value, as 255 is of 8-bit masks)
SPARSE_CLASSES = 32  # mask values implying more classes than this, most of them absent, are ids to relabel, not classes
START_S = 3.0  # a run's start-up (forked from a server that imported torch once; data, model): not measured by the timed steps
MIN_SIDE = 64  # --minutes halves the input size to fit, down to this short side
MIN_EPOCHS = 10  # --minutes gives up epochs down to this before anything else (fewer: a loss has barely started)
MIN_LOSSES = 3  # --minutes keeps at least this many losses (fewer answers no "which loss?")
MEASURE_SHARE = 0.1  # --minutes: the measuring takes at most this share of the budget
VOID_NAMES = ("void", "ignore", "unlabeled", "unlabelled", "unknown")
"""``classes.txt`` entries read as the void label (case-insensitive)."""


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
    elsewhere: dict[Any, list[str]] = field(default_factory=dict)  # values or colours only in val/test masks -> the splits
    void: int | None = None  # the value the user named as void (--void)
    sample_mask: np.ndarray | None = None  # one test mask (class ids), to time the test's metrics on
    sample_image: np.ndarray | None = None  # its image, as decoded ([C, H, W]), to time the loader's transforms on
    train_masks: list[np.ndarray] = field(default_factory=list, repr=False)  # the training masks read (class ids)

    def rarest(self) -> int | None:
        """The scored class with the fewest training pixels read, among those with some."""
        freq = self.frequencies()
        held = [i for i in self.scored if freq[i] > 0]
        return min(held, key=lambda i: freq[i]) if held and not self.colours else None

    @cached_property
    def rare_object_side(self) -> float | None:
        """The median short side, in pixels at the masks' own size, of the rarest class's objects (8-connected
        components; their bounding boxes) in the training masks read: a pole 5 pixels wide is 5, however tall —
        what shrinking the input does to the class the suite is for."""
        from scipy import ndimage

        c = self.rarest()
        if c is None:
            return None
        sides = []
        for m in self.train_masks:
            labels, n = ndimage.label(m == c, structure=np.ones((3, 3), bool))
            sides += [min(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in ndimage.find_objects(labels)] if n else []
        return float(np.median(sides)) if sides else None

    def object_side_at(self, size: tuple[int, int]) -> float | None:
        """The rarest class's median object short side in pixels at the input ``size`` (the masks' median size scaled)."""
        side = self.rare_object_side
        if side is None or not self.sizes:
            return None
        h, w = (float(np.median([s[i] for s in self.sizes])) for i in (0, 1))
        return side * math.sqrt(size[0] * size[1] / (h * w))

    @property
    def ids(self) -> list[int]:
        """Every mask value read, in any split (a class may be in the test masks only)."""
        return sorted({*self.values, *(v for v in self.elsewhere if isinstance(v, int))})

    @property
    def all_colours(self) -> list[tuple[int, int, int]]:
        """Every mask colour read, in any split."""
        return sorted({*self.colours, *(c for c in self.elsewhere if isinstance(c, tuple))})

    @property
    def beyond(self) -> list[int]:
        """Mask values past the last class of ``classes.txt``."""
        return [v for v in self.ids if self.class_names is not None and v >= len(self.class_names)]

    @property
    def ignore_index(self) -> int | None:
        return self._ignore()[0]

    @property
    def ignore_why(self) -> str:
        return self._ignore()[1]

    def _ignore(self) -> tuple[int | None, str]:
        if self.colours:
            return None, ""
        if self.void is not None:
            return self.void, "named void with --void"
        named = [i for i, n in enumerate(self.class_names or []) if n.strip().lower() in VOID_NAMES]
        if named:
            return named[0], f"classes.txt names it {self.class_names[named[0]]!r}"
        if len(self.beyond) == 1:
            v = self.beyond[0]
            return v, f"value {v} is in the masks but beyond the {len(self.class_names)} classes of classes.txt: the void label"
        for value, what in ((VOID, "the usual void label"), (VOID_16, "the void label of 16-bit masks")):
            if value in self.ids and (self.class_names is None or len(self.class_names) <= value):
                return value, f"value {value} is in the masks: {what}"
        return None, ""

    @property
    def names(self) -> list[str]:
        if self.class_names:
            return self.class_names
        if self.colours:
            return [f"class_{i}" for i in range(len(self.all_colours))]
        top = max((v for v in self.ids if v != self.ignore_index), default=0)
        return [f"class_{i}" for i in range(top + 1)]

    @property
    def scored(self) -> list[int]:
        """The class ids scored (the void one, when it is a named class, left out)."""
        return [i for i in range(len(self.names)) if i != self.ignore_index]

    def frequencies(self) -> list[float]:
        """Each class's share of the scored training pixels read."""
        if self.colours:
            pixels = [self.colours.get(c, 0) for c in self.all_colours]
        else:
            pixels = [self.values.get(i, 0) if i != self.ignore_index else 0 for i in range(len(self.names))]
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


def holds_volumes(root: Path) -> bool:
    """Whether ``root/train/images`` holds volume files (NIfTI or ``.npy``)."""
    images = root / "train" / "images"
    return images.is_dir() and any(case_name(p) for p in images.iterdir())


def survey(root: str | Path, void: int | None = None) -> Survey:
    """Read the folder's layout, sizes, channels and mask values (a sample of :data:`SAMPLE` per split)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--data {str(root)!r} is not a folder (resolved to {root.resolve()})")
    files = {split: SplitFiles.find(root, split) for split in SPLITS}
    listing = root / "classes.txt"
    names = read_class_list(listing) if listing.is_file() else None  # read as training reads it
    found = Survey(root, {s: len(f.images) for s, f in files.items()}, decode_image_array(files["train"].images[0]).shape[0], [], names,
                   void=void)  # fmt: skip
    for split, f in files.items():
        for i in np.unique(np.linspace(0, len(f.masks) - 1, min(SAMPLE, len(f.masks))).astype(int)):
            mask = _read_ids_or_colours(f.masks[i])
            found.sizes.append(mask.shape[:2])
            if split == "test" and mask.ndim == 2 and found.sample_mask is None:
                found.sample_mask = mask
                found.sample_image = decode_image_array(f.images[i])
            if split == "train" and mask.ndim == 2:
                found.train_masks.append(mask)
            if mask.ndim == 3:
                keys, n = np.unique(mask.reshape(-1, 3), axis=0, return_counts=True)
                tally = found.colours
            else:
                keys, n = np.unique(mask, return_counts=True)
                tally = found.values
            for key, k in zip(keys.tolist(), n.tolist()):
                key = tuple(key) if isinstance(key, list) else key
                if split == "train":
                    tally[key] = tally.get(key, 0) + k
                elif split not in (splits := found.elsewhere.setdefault(key, [])):
                    splits.append(split)
    found.elsewhere = {k: v for k, v in found.elsewhere.items() if k not in found.values and k not in found.colours}
    _check_classes(found)
    return found


def _check_classes(found: Survey) -> None:
    """Refuse, in a sentence, mask values that are no class ids: every mask of one value (nothing to segment: P28,
    P71, where init invented ``class_1``), and values so sparse that they would be hundreds of absent classes
    (``0, 1, 1000``: 1,001 classes; P27)."""
    if found.colours or found.class_names is not None:
        return
    ids = [v for v in found.ids if v != found.ignore_index]
    read = len(found.sizes)
    if len(ids) <= 1:
        only = f"value {ids[0]}" if ids else "the void label"
        raise ConfigError(f"every mask init read in {found.root} ({plural(read, 'mask')}, all splits) holds only {only}: there "
                          "is nothing to segment — check that the masks are the class ids (a mask of 0 and 1 looks black; "
                          "that is fine), or list the classes in classes.txt")  # fmt: skip
    top = max(ids)
    if top + 1 > SPARSE_CLASSES and top + 1 > 2 * len(ids):
        shown = ", ".join(map(str, ids[:12])) + (" …" if len(ids) > 12 else "")
        raise ConfigError(f"the masks in {found.root} hold {len(ids)} values ({shown}), but class ids run 0 to N-1: they would "
                          f"make {top + 1:,} classes, {top + 1 - len(ids):,} of them in no mask. Relabel the masks to 0..{len(ids) - 1} "
                          "(and one void value, 255 or 65535), or name the classes in classes.txt (a value beyond them is void)")  # fmt: skip


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
    """Seconds, measured on ``device``: a training step of :data:`BATCH` and a model's forward pass per image at
    ``size`` (H, W) — both grow with the input's pixels (:meth:`at`) — and, at the masks' own size (which the
    metrics use whatever the input size), bringing an image's logits back to its mask (validation and test) and
    the test's own metrics (counts, boundary distances, objects). ``spent``: the seconds the measuring took."""

    step: float
    forward_image: float
    native_image: float = 0.0
    metrics_image: float = 0.0
    device: str = "cpu"
    size: tuple[int, int] = (0, 0)
    spent: float = 0.0

    @property
    def val_image(self) -> float:
        return self.forward_image + self.native_image

    @property
    def test_image(self) -> float:
        return self.forward_image + self.native_image + self.metrics_image

    def at(self, size: tuple[int, int]) -> Timing:
        """The timing at another input size, scaled by its pixels (a convolutional net's work; the masks' does not
        change) — an upper bound for smaller inputs, whose steps cost more per pixel: :class:`Timer` measures instead."""
        if not self.size[0] or tuple(size) == tuple(self.size):
            return self
        scale = size[0] * size[1] / (self.size[0] * self.size[1])
        return Timing(self.step * scale, self.forward_image * scale, self.native_image, self.metrics_image, self.device,
                      tuple(size), 0.0)  # type: ignore[arg-type]  # fmt: skip


def measure(channels: int, classes: int, size: tuple[int, int], batch: int, budget_s: float | None = None,
            steps: int = 3, mask: np.ndarray | None = None, image: np.ndarray | None = None) -> Timing:  # fmt: skip
    """Train the default model at ``size`` (one step to warm up, then up to ``steps`` timed ones, fewer when
    ``budget_s`` would be passed), time its forward pass on a batch, and time what a run does per image at the
    mask's own size: the logits brought back to the mask (bilinear) and their argmax, then the test's metrics
    of :mod:`lossbench.metrics` on ``mask`` (one of the user's) against itself shifted by a few pixels with 1 % of
    its pixels speckled — a prediction with real edges and an early model's scattered errors."""
    import torch

    from lossbench.metrics import image_scores, per_image_counts
    from lossbench.models import build_model

    begun = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model({"arch": "Unet", "encoder": "resnet18", "encoder_weights": None}, channels, classes).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, channels, *size, device=device)
    y = torch.randint(0, classes, (batch, *size), device=device)
    if mask is None:  # blocks of classes at the input size
        mask = (np.arange(size[0])[:, None] // 16 + np.arange(size[1])[None, :] // 16) % classes
    mask = np.where(mask < classes, mask, 0).astype(np.int64)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> float:
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sync()
        return time.perf_counter() - start

    warm = train_step()
    timed = []
    for _ in range(steps):
        last = timed[-1] if timed else warm
        if timed and budget_s is not None and time.perf_counter() - begun + 2 * last > budget_s:
            break  # keep a step's time for the test below
        timed.append(train_step())
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        logits = model(x)
        sync()
        forward = (time.perf_counter() - start) / batch
        start = time.perf_counter()
        native = torch.nn.functional.interpolate(logits[:1].float(), size=mask.shape, mode="bilinear", align_corners=False).argmax(1)
        sync()
        back = time.perf_counter() - start
        data_train = data_eval = 0.0
        if device.type == "cpu" and image is not None:  # on a CPU the loader runs in the training process (no workers)
            data_train, data_eval = _data_path_s(image, mask, size)
        target = torch.as_tensor(mask)[None]
        pred = torch.roll(target, shifts=(3, 3), dims=(1, 2))  # a model's edges a few pixels off ...
        speckle = torch.as_tensor(np.random.default_rng(0).random(mask.shape) < 0.01)[None]
        pred[speckle] = torch.as_tensor(np.random.default_rng(1).integers(0, classes, int(speckle.sum())))  # ... and its early speckle
        start = time.perf_counter()
        per_image_counts(pred, target, classes, None)
        p, t = pred[0].numpy(), target[0].numpy()
        image_scores(p, t, classes, None, int(np.bincount(t.ravel(), minlength=classes).argmin()), 0.1, 2.0)
        metrics = time.perf_counter() - start
        del native
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    step = (float(np.median(timed)) if timed else warm) + batch * data_train
    return Timing(step, forward + data_eval, back, metrics, name, tuple(size),  # type: ignore[arg-type]
                  time.perf_counter() - begun)  # fmt: skip


def _data_path_s(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[float, float]:
    """Seconds per image of the training and the evaluation transforms (resize, flip, normalisation) on one of the
    user's images: on a CPU the loader runs in the training process and its time adds to every step."""
    import types

    import torch
    from torchvision import tv_tensors

    from lossbench.data.transforms import eval_transform, train_transform

    channels = image.shape[0]
    flip = types.SimpleNamespace(rotate90=False, hflip=True, vflip=False, scale=None, jitter=0.0)
    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)))
    msk = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)))
    out = []
    for transform in (train_transform(size, None, flip, None, [0.5] * channels, [0.25] * channels),
                      eval_transform(size, [0.5] * channels, [0.25] * channels)):  # fmt: skip
        transform(img, msk)
        start = time.perf_counter()
        for _ in range(5):
            transform(img, msk)
        out.append((time.perf_counter() - start) / 5)
    return out[0], out[1]


class Timer:
    """Timings measured at each input size a plan tries (``measure_at(size)``, once a size), not scaled from one: a
    step at 96x128 took 2.3–4.6 s and at 352x480 17.6–20.1 s on one machine, a factor of 6 where the pixels say 13.75.
    ``known``: timings already had (the suite's finished runs), used for their size instead of measuring."""

    def __init__(self, measure_at: Any, known: dict[tuple[int, int], Timing] | None = None):
        self.measure_at, self.timings = measure_at, dict(known or {})

    def at(self, size: tuple[int, int]) -> Timing:
        size = (int(size[0]), int(size[1]))
        if size not in self.timings:
            self.timings[size] = self.measure_at(size)
        return self.timings[size]

    def prepare(self, sizes: list[tuple[int, int]]) -> None:
        """Measure ``sizes`` smallest first: a small input timed after a large one reuses the large one's memory and
        ran 20–25 % faster than in a run of its own (0.78 s a step at 96x128 after 352x480, 1.01 s before it)."""
        for size in sorted(sizes, key=lambda hw: hw[0] * hw[1]):
            self.at(size)

    @property
    def spent(self) -> float:
        return sum(t.spent for t in self.timings.values())


def timing_from_runs(found: Survey, runs: Path) -> tuple[dict[tuple[int, int], Timing], str]:
    """What the suite's finished runs in ``runs`` (its ``runs/<suite>``) say a run costs, per input size: an epoch
    (training and validation) and the test, from their records — the machine's own time, load included — as a
    :class:`Timing` whose step folds the validation in; and a phrase saying how many runs it came from."""
    from lossbench.config.loading import load_run_config
    from lossbench.record import config_path, scan_runs

    per_size: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for rec in scan_runs(runs).records:
        if not (rec.ok and rec.epochs and rec.wall_s and rec.test_s is not None and rec.run_dir is not None):
            continue
        try:
            resize = load_run_config(config_path(rec.run_dir)).data.resize
        except (ConfigError, OSError):  # an unreadable config: that run says nothing here
            continue
        size = tuple(resize) if resize else tuple(found.sizes[0]) if found.sizes else None
        if size is None:
            continue
        epoch_s = max(rec.wall_s - rec.test_s - START_S, 0.0) / rec.epochs
        per_size.setdefault(size, []).append((epoch_s, rec.test_s))  # type: ignore[arg-type]
    steps = max(math.ceil(found.counts["train"] / BATCH), 1)
    out = {size: Timing(step=float(np.median([e for e, _ in v])) / steps, forward_image=0.0,
                        metrics_image=float(np.median([t for _, t in v])) / max(found.counts["test"], 1),
                        device=_device(), size=size)  # type: ignore[arg-type]
           for size, v in per_size.items()}  # fmt: skip
    said = ", ".join(f"{plural(len(v), 'run')} at {h}x{w}" for (h, w), v in per_size.items())
    return out, (f"from the records of {said} in {runs}" if said else "")


def suite_seconds(found: Survey, timing: Timing, epochs: int, runs: int, batch: int = BATCH) -> float:
    """The suite's time, one run at a time: per run the training steps, every epoch's validation, the test and
    the start-up (:data:`START_S`). Reading the folder into the data cache is not in it: init does it before it
    keeps the config (the dry run's checks), and compare reads the cache."""
    steps = math.ceil(found.counts["train"] / batch)
    per_run = epochs * (steps * timing.step + found.counts["val"] * timing.val_image) + found.counts["test"] * timing.test_image
    return runs * (per_run + START_S)


def epochs_to_fit(found: Survey, timing: Timing, minutes: float, runs: int) -> int:
    """The most epochs (at least one) whose suite takes at most ``minutes``, by :func:`suite_seconds`."""
    fixed = suite_seconds(found, timing, 0, runs)  # start-up and test: paid whatever the epochs
    return max(1, int((minutes * 60 - fixed) // (suite_seconds(found, timing, 1, runs) - fixed)))


@dataclass
class Plan:
    """A suite that fits (or the smallest tried): what it trains, its estimated time, what was given up."""

    losses: list[str]
    seeds: list[int]
    size: tuple[int, int]
    epochs: int
    seconds: float
    minutes: float | None
    gave_up: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.losses) * len(self.seeds)

    @property
    def fits(self) -> bool:
        return self.minutes is None or self.seconds <= self.minutes * 60

    def describe(self) -> str:
        what = (f"{plural(len(self.losses), 'loss', 'losses')} × {plural(len(self.seeds), 'seed')} ({plural(self.runs, 'run')}) "
                f"of {plural(self.epochs, 'epoch')} at {self.size[0]}x{self.size[1]}, one at a time")  # fmt: skip
        if self.minutes is None:
            return f"about {duration(self.seconds)} for {what}"
        if not self.fits:
            return (f"does NOT fit --minutes {self.minutes:g}: even the smallest plan, {what}, takes about "
                    f"{duration(self.seconds)}")  # fmt: skip
        return f"fits --minutes {self.minutes:g}: about {duration(self.seconds)} for {what}"


def halved(size: tuple[int, int]) -> tuple[int, int]:
    return tuple(max(MIN_SIDE, round(n / 2 / 32) * 32) for n in size)  # type: ignore[return-value]


def fit_plan(found: Survey, timing: Timing | Timer, size: tuple[int, int], minutes: float | None, losses: list[str],
             seeds: list[int] = SEEDS) -> Plan:  # fmt: skip
    """The plan to write: with ``minutes``, the most that fits, giving up first what imbalance needs least — epochs
    down to :data:`MIN_EPOCHS`; the losses after the user's favourites and the first :data:`IMBALANCE_FIRST` of
    :data:`LOSSES` (``losses`` lists them first: :func:`chosen_losses`); the input size
    (halved) down to the smallest at which the rarest class's objects stay :data:`RARE_OBJECT_SIDE` pixels across;
    seeds to one; losses down to :data:`MIN_LOSSES`; epochs below :data:`MIN_EPOCHS` at that size; only then the
    input size below it (down to a short side of :data:`MIN_SIDE`) — and what was given up; without, :data:`EPOCHS`
    epochs of everything. ``timing`` at each size tried: a :class:`Timer` measures it there."""
    def plan(n_losses: int, n_seeds: int, hw: tuple[int, int], floor: int) -> Plan:
        t = timing.at(hw)
        runs = n_losses * n_seeds
        epochs = EPOCHS if minutes is None else min(EPOCHS, epochs_to_fit(found, t, minutes, runs))
        epochs = max(epochs, floor)
        return Plan(losses[:n_losses], seeds[:n_seeds], hw, epochs, suite_seconds(found, t, epochs, runs), minutes)

    sizes = [size]
    while min(sizes[-1]) >= 2 * MIN_SIDE:
        sizes.append(halved(sizes[-1]))
    if isinstance(timing, Timer) and minutes is not None:
        timing.prepare(sizes)  # the sizes a plan may take, smallest first
    full = plan(len(losses), len(seeds), size, 1)
    if minutes is None or (full.fits and full.epochs >= MIN_EPOCHS):
        return _gave_up(full, found, losses, seeds, size)
    keep = [hw for hw in sizes if (side := found.object_side_at(hw)) is None or side >= RARE_OBJECT_SIDE] or sizes[:1]
    below = [hw for hw in sizes if hw not in keep]
    n, s = len(losses), len(seeds)
    first = max((losses.index(k) + 1 for k in LOSSES[:IMBALANCE_FIRST] if k in losses), default=min(IMBALANCE_FIRST, n))
    least = min(MIN_LOSSES, n)
    tries = [(k, s, size) for k in range(n - 1, first - 1, -1)]  # the losses after the imbalance baselines
    tries += [(first, s, hw) for hw in keep[1:]]  # the input size, while the rare class keeps its objects
    tries += [(first, 1, keep[-1])] if s > 1 else []  # seeds (2 measure no more than 1)
    tries += [(k, 1, keep[-1]) for k in range(first - 1, least - 1, -1)]  # the imbalance baselines, down to three
    tries = [(*t, MIN_EPOCHS) for t in tries] + [(least, 1, keep[-1], 1)]  # then epochs below 10, at the rare class's size
    tries += [(least, 1, hw, 1) for hw in below]  # only then an input too small for the rare class
    for n_losses, n_seeds, hw, floor in tries:
        p = plan(n_losses, n_seeds, hw, floor)
        if p.fits:
            return _gave_up(p, found, losses, seeds, size)
    return _gave_up(plan(least, 1, sizes[-1], 1), found, losses, seeds, size)  # nothing fits: the smallest plan


def _gave_up(p: Plan, found: Survey, losses: list[str], seeds: list[int], size: tuple[int, int]) -> Plan:
    if p.minutes is None:
        return p
    if p.epochs < EPOCHS:
        p.gave_up.append(f"epochs {EPOCHS} → {p.epochs} ({p.epochs / EPOCHS:.0%} of the training wanted)")
    if tuple(p.size) != tuple(size):
        side = found.object_side_at(p.size)
        rare = (f" (the rarest class's objects: about {side:.1f} px across there, {found.object_side_at(size):.1f} at full size)"
                if side is not None else "")  # fmt: skip
        p.gave_up.append(f"input size {size[0]}x{size[1]} → {p.size[0]}x{p.size[1]}{rare}")
    if len(p.losses) < len(losses):
        p.gave_up.append(f"losses {', '.join(losses[len(p.losses):])}")
    if len(p.seeds) < len(seeds):
        p.gave_up.append(f"seeds {len(seeds)} → {len(p.seeds)} (the verdict then speaks of these trained models only)")
    return p


def duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 90:
        return f"{max(1, round(minutes))} min"
    return f"{int(minutes // 60)} h {round(minutes % 60):02d} min"


def chosen_losses(favourites: list[str] | None) -> list[str]:
    """The losses a plan keeps first: the user's favourites, then the documents' classics (:data:`LOSSES`)."""
    out = list(dict.fromkeys(favourites or []))
    return out + [k for k in LOSSES if k not in out]


def write_config(data: str | Path, config: str | Path | None = None, minutes: float | None = None,
                 force: bool = False, estimate: bool = True, favourites: list[str] | None = None,
                 void: int | None = None) -> tuple[Path, str]:  # fmt: skip
    """Survey ``data``, write a commented suite config to ``config`` (default ``./<folder name>.yaml``)
    and return its path and a summary line for the console."""
    root = Path(data)
    if root.is_dir() and holds_volumes(root):
        return write_volume_config(root, config, force, favourites or [], void)
    found = survey(data, void)
    _check_void(found, void)
    path = _config_path(found.root, config, force)
    size = found.input_size()
    hw = size or found.sizes[0]
    losses = chosen_losses(favourites)
    plan = Plan(losses, list(SEEDS), tuple(hw), EPOCHS, math.nan, None)  # type: ignore[arg-type]
    note = "no time estimate (--no-estimate)"
    if estimate:
        classes = len(found.names) if not found.colours else len(found.colours)
        budget = MEASURE_SHARE * minutes * 60 if minutes is not None else None
        load = _load()
        known, source = timing_from_runs(found, Path("runs") / suite_name(path))
        timer = Timer(lambda at: measure(found.channels, classes, at, BATCH, None if budget is None else max(budget - timer.spent, 1.0),
                                         mask=found.sample_mask, image=found.sample_image), known)  # fmt: skip
        plan = fit_plan(found, timer, tuple(hw), minutes, losses)  # type: ignore[arg-type]
        t = timer.at(plan.size)
        measured = [f"{t.step:.2f} s a training step of {BATCH} at {h}x{w}" for (h, w), t in timer.timings.items() if (h, w) not in known]
        how = (source + ("; measured " if measured and source else "measured " if measured else "")
               + (f"in {timer.spent:.0f} s: " + ", ".join(measured) if measured else ""))
        note = (plan.describe() + (f"; gave up to fit: {'; '.join(plan.gave_up)}" if plan.gave_up else "")
                + f" ({how}; {t.test_image:.3f} s a test image"
                + (" — the runs' whole test —" if tuple(plan.size) in known else
                   f" — {t.metrics_image:.3f} s of it the test's metrics at the masks' own size —")
                + f", {t.device}{load}; "
                f"{START_S:.0f} s start-up a run)")  # fmt: skip
    elif minutes is not None:
        raise ConfigError("--minutes chooses the epochs from a measured time; leave out --no-estimate")
    resize = tuple(plan.size) if (size is not None or tuple(plan.size) != tuple(hw)) else None
    text = _render(found, path, resize, plan, note)
    return _write_checked(path, text), note


def suite_name(path: Path) -> str:
    """The suite name init writes for a config at ``path`` (its runs go to ``runs/<suite>``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", Path(path).stem).lstrip(".-") or "mine"


def _load() -> str:
    """``, load 1.3 on 2 cores``: what the machine was doing while init timed it (the estimate holds at that load)."""
    try:
        return f", load {os.getloadavg()[0]:.1f} on {plural(os.cpu_count() or 1, 'core')}"
    except (AttributeError, OSError):
        return ""


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"


def _check_void(found: Survey, void: int | None) -> None:
    """``--void N`` must be a value the masks hold that is not one of classes.txt's classes (P65: ``--void 300`` on 8-bit
    masks and ``--void 1`` where classes.txt names ``fg`` were accepted silently)."""
    if void is None or found.colours:
        return
    names = found.class_names or []
    if void < len(names) and names[void].strip().lower() not in VOID_NAMES:
        raise ConfigError(f"--void {void} is class {names[void]!r} of classes.txt (its classes are values 0 to {len(names) - 1}); "
                          "the void label is a mask value that is no class: give that value, or leave --void out")  # fmt: skip
    if void not in found.ids:
        shown = ", ".join(map(str, found.ids[:12])) + (" …" if len(found.ids) > 12 else "")
        raise ConfigError(f"--void {void} is not among the mask values init read ({shown}): check the value, or leave "
                          "--void out (init finds a value beyond classes.txt's classes, or 255, by itself)")  # fmt: skip


def _config_path(root: Path, config: str | Path | None, force: bool) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", root.resolve().name).lstrip(".-") or "mine"
    path = Path(config) if config else Path(f"{name}.yaml")
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; expected the path of the YAML file to write (e.g. {path / 'mine.yaml'})")
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; choose another --config or add --force to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"cannot write --config {path}: {existing if not path.exists() else path} is not writable; choose another --config")
    return path


def _write_checked(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:  # a read-only file system, a full disk: one sentence, not a traceback
        raise ConfigError(f"cannot write --config {path}: {e.strerror or e}") from None
    try:
        cfg = load_config(path)
    except ConfigError as e:
        path.unlink()
        raise ConfigError(f"lossbench init wrote a config it cannot load (a bug; please report it): {e}") from None
    from lossbench.data import load_data

    try:  # every check the dry run and each run make on the data, now (P89), and the data cache compare then reads
        load_data(cfg.data)
    except (ValueError, OSError) as e:
        path.unlink()
        raise ConfigError(f"{e} — init stops here, as the dry run and every run would; fix that file and run init again") from None
    return path


def cached_weights(encoder: str = "resnet18", weights: str = "imagenet") -> str | None:
    """Where smp's pretrained ``weights`` for ``encoder`` lie in the Hugging Face cache (``HF_HUB_CACHE``,
    ``~/.cache/huggingface``), or ``None``: init proposes them only when no download is needed."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from segmentation_models_pytorch.encoders import encoders

        settings = encoders[encoder]["pretrained_settings"][weights]
        found = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings["revision"])
    except (ImportError, KeyError):
        return None
    return found if isinstance(found, str) else None


def _model_lines(channels: int) -> list[str]:
    """The model line, and a pretrained encoder proposed — the largest speed-up on a small budget — with the line
    that asks for it: said to be on disk when its weights are (no download), else that they download once."""
    line = "model: {arch: Unet, encoder: resnet18, encoder_weights: null}   # from scratch"
    if channels != 3:
        return [line]
    where = cached_weights()
    why = f"its weights are on disk ({where})" if where else "downloaded once, 45 MB, then cached"
    return [line, f"# model: {{arch: Unet, encoder: resnet18, encoder_weights: imagenet}}   # pretrained: {why}; learns in far "
                  "fewer epochs, the largest speed-up on a small budget (with data.normalize: imagenet)"]  # fmt: skip


def _only_in(found: Survey, i: int) -> str:
    """`` — only in the test masks read …`` for a class no training mask read holds, else ``""``."""
    key = found.all_colours[i] if found.colours else i
    splits = found.elsewhere.get(key)
    if splits is None and (found.colours or found.values.get(i) or i == found.ignore_index):
        return ""
    where = f"only in the {' and '.join(splits)} masks read" if splits else "in no mask read"
    return f"   <- {where}: no training pixel, so no loss can learn it here"


def _render(found: Survey, path: Path, size: tuple[int, int] | None, plan: Plan, note: str) -> str:
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
        *[f"#     {n:<20} {100 * f:6.2f} %{_only_in(found, i)}" for i, (n, f) in enumerate(zip(names, freq))],
        f"#   time: {note}",
        f"# Check it, then run it:  lossbench compare --config {path} --dry-run   (then without --dry-run)",
        f"suite: {suite_name(path)}   # runs/<suite> and reports/<suite>",
        f"losses: [{', '.join(plan.losses)}]   # lossbench losses: every loss you can add",
        f"seeds: [{', '.join(map(str, plan.seeds))}]            # three or more per loss: the verdict then speaks of the losses, not just these runs",
        "jobs: auto                # runs at once: one per GPU; on a CPU one at a time",
        "data:",
        "  kind: folder",
        f"  path: {json.dumps(shown)}   # relative paths are read from this file's folder",
    ]
    if found.colours:
        palette = ", ".join(f"class_{i}: [{r}, {g}, {b}]" for i, (r, g, b) in enumerate(found.all_colours))
        lines.append(f"  palette: {{{palette}}}   # RGB colour masks: name the classes (key 'ignore': a void colour)")
    elif found.class_names is None:
        lines.append(f"  class_names: [{', '.join(map(json.dumps, names))}]   # from the mask values found: give them real names (or write classes.txt)")
    else:
        lines.append("  # class names: classes.txt")
    ignore = found.ignore_index
    if ignore is not None:
        lines.append(f"  ignore_index: {ignore}         # {found.ignore_why} — excluded from losses and metrics")
    elif len(found.beyond) > 1:
        lines.append(f"  ignore_index: null        # values {', '.join(map(str, found.beyond))} are beyond the classes of classes.txt: "
                     "name them there, or set the one that is void here (lossbench init --void N)")  # fmt: skip
    else:
        lines.append("  ignore_index: null        # a mask value to leave out of losses and metrics, if any")
    lines.append(f"  resize: [{size[0]}, {size[1]}]      # [H, W] the model sees (metrics stay at each mask's own size)"
                 if size else "  # resize: [H, W]        # every image already has one size, a multiple of 32")  # fmt: skip
    lines += [
        "  augment: {hflip: true}  # training only; vflip / rotate90 for aerial or medical data, scale / jitter too",
        "  normalize: dataset      # per-channel mean/std of the training split (imagenet: with pretrained weights)",
        f"  batch_size: {BATCH}",
        *_model_lines(found.channels),
        "optim: {lr: 0.001, weight_decay: 0.0001}",
        "trainer:",
        f"  max_epochs: {plan.epochs}" + (f"   # {plan.epochs} of the {EPOCHS} this data wants ({plan.epochs / EPOCHS:.0%}), to fit --minutes "
                                          f"{plan.minutes:g}" if plan.epochs < EPOCHS and plan.minutes else ""),
        "  accelerator: auto",
        "  devices: 1",
        "wandb: {project: lossbench}   # offline unless you are logged in (wandb login)",
    ]
    if plan.epochs < EPOCHS and plan.minutes:
        lines.append(f"report: {{wanted_epochs: {EPOCHS}}}   # the report says which share of the wanted training the runs had")
    lines.append("")
    return "\n".join(lines)


VOLUME_LOSSES = ["ce", "dice", "generalized_dice", "focal_tversky", "lovasz_softmax", "boundary", "cldice"]
"""A volume suite's losses: the baselines and the 3-D favourites (README, "Volumes")."""
PATCH = (32, 64, 64)  # the largest training patch init proposes, [D, H, W]


def write_volume_config(root: Path, config: str | Path | None, force: bool, favourites: list[str],
                        void: int | None) -> tuple[Path, str]:  # fmt: skip
    """A folder of volumes: a ``data.kind: volumes`` config with a 3-D model, the spacing its headers give, a patch
    that fits every volume, and the class shares of its training masks. A missing package of the ``volumes``
    extra is said first, before any volume is read."""
    files = {split: VolumeFiles.find(root, split) for split in SPLITS}
    nifti = any(not p.name.lower().endswith(".npy") for f in files.values() for p in f.images)
    missing = missing_for_volumes(nifti)
    if missing:
        raise ConfigError(f"--data {str(root)!r} holds volumes, which need {' and '.join(missing)} (the volumes extra): "
                          f"{install_extra()}")  # fmt: skip
    path = _config_path(root, config, force)
    listing = root / "classes.txt"
    found = Survey(root, {s: len(f.images) for s, f in files.items()}, 0, [], read_class_list(listing) if listing.is_file() else None,
                   void=void)  # fmt: skip
    shapes, spacings, low = [], [], math.inf
    for split, f in files.items():
        for i in np.unique(np.linspace(0, len(f.images) - 1, min(8, len(f.images))).astype(int)):
            image = read_volume(f.images[i])
            found.channels = image.array.shape[0]
            shapes.append(image.array.shape[1:])
            spacings.append(image.spacing)
            low = min(low, float(image.array.min()))
            if split == "train":
                keys, n = np.unique(read_volume(f.masks[i], mask=True).array, return_counts=True)
                for key, k in zip(keys.tolist(), n.tolist()):
                    found.values[int(key)] = found.values.get(int(key), 0) + k
    smallest = np.min(np.array(shapes), axis=0)
    patch = [int(max(4, min(p, (s // 4) * 4))) for p, s in zip(PATCH, smallest)]  # the UNet's two strides of 2: multiples of 4
    spacing = np.median(np.array(spacings), axis=0)
    ct = low <= -500  # Hounsfield units: air at -1000
    losses = list(dict.fromkeys([*favourites, *VOLUME_LOSSES]))  # the user's favourites first
    names, freq = found.names, found.frequencies()
    here = Path(os.path.abspath(path)).parent
    shown = os.path.relpath(root.resolve(), here)
    npy = not nifti
    ignore = found.ignore_index
    rare = min(found.scored, key=lambda i: freq[i]) if found.scored else None
    lines = [
        f"# lossbench volume suite for {root.resolve()}, written by `lossbench init` — edit freely.",
        f"#   volumes: train {found.counts['train']}, val {found.counts['val']}, test {found.counts['test']}; "
        f"{found.channels} channel(s); smallest [D, H, W] read {list(map(int, smallest))}; median spacing "
        f"{' x '.join(f'{v:g}' for v in spacing)} mm ({'from the NIfTI headers' if nifti else '.npy: set data.volumes.spacing'})",
        "#   class share of the training voxels read (the rarer, the more the choice of loss matters):",
        *[f"#     {n:<20} {100 * f:6.2f} %" for n, f in zip(names, freq)],
        "#   time: not estimated for volumes; try one epoch first (--set trainer.max_epochs=1) and scale",
        f"# Check it, then run it:  lossbench compare --config {path} --dry-run   (then without --dry-run)",
        f"suite: {suite_name(path)}",
        f"losses: [{', '.join(losses)}]   # lossbench losses: every loss you can add",
        "seeds: [0, 1, 2]",
        "data:",
        "  kind: volumes",
        f"  path: {json.dumps(shown)}   # relative paths are read from this file's folder",
    ]
    if found.class_names is None:
        lines.append(f"  class_names: [{', '.join(map(json.dumps, names))}]   # from the mask values found: give them real names (or write classes.txt)")
    if ignore is not None:
        lines.append(f"  ignore_index: {ignore}         # {found.ignore_why} — excluded from losses and metrics")
    lines += [
        "  batch_size: 2",
        "  volumes:",
        (f"    intensity: ct           # intensities down to {low:g}: Hounsfield units\n    window: [-100, 300]     # soft tissue; "
         "widen for bone or lung" if ct else "    intensity: mri          # z-score per volume (ct: a Hounsfield window; none: as stored)"),
        *([f"    spacing: [{', '.join(f'{v:g}' for v in spacing)}]   # .npy has no header: mm per voxel, [D, H, W]"] if npy else []),
        f"    patch: [{', '.join(map(str, patch))}]   # training patch and sliding window [D, H, W], within every volume",
        "    samples_per_volume: 4",
        "    pos_fraction: 0.5      # half the patches centred on a foreground class",
        "model:",
        "  dims: 3                 # a 3-D MONAI UNet; dims 2 (with context) trains on slices instead",
        "  arch: UNet",
        "  kwargs: {channels: [16, 32, 64], strides: [2, 2], num_res_units: 1}",
        "optim: {lr: 0.001, weight_decay: 0.0001}",
        "trainer:",
        f"  max_epochs: {EPOCHS}",
        "  accelerator: auto",
        "  devices: 1",
        "wandb: {project: lossbench}",
        # quoted: a class named `no` or `#lesion` is a string, not YAML's false or a comment (P67)
        f"report: {{focus: {json.dumps(names[rare])}, nsd_tolerance: 2.0}}   # the rarest class; NSD tolerance in mm" if rare is not None else "",
        "",
    ]
    note = (f"a volume suite: {len(losses)} losses × 3 seeds, {found.counts['train']} training volumes, patch "
            f"{'x'.join(map(str, patch))}, spacing {' x '.join(f'{v:g}' for v in spacing)} mm; time not estimated")  # fmt: skip
    return _write_checked(path, "\n".join(lines)), note
