"""The config schema: every section of a suite config as a typed model, with its defaults, ranges and the rules
that tie sections together (checked at load, before anything runs); how a pydantic error becomes one sentence
(:func:`explain`); dotted settings applied to a config (:func:`with_settings`).

Reading files, ``--set`` overrides and the packaged suites are :mod:`lossbench.config.loading`'s; a folder's
``classes.txt`` is read by :func:`lossbench.config.classes.read_class_list`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from lossbench.config.trainer import GPU_ACCELERATORS, PRECISIONS, _devices, _precision, trainer_arguments  # noqa: F401

from lossbench.config.classes import read_class_list


class ConfigError(ValueError):
    """A config problem, told in one sentence."""


# --- field types ----------------------------------------------------------------------------------


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
PosInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
BatchSize = Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=1 << 20)]  # more than a million images at once never trains
NonNegInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=0)]
PosFloat = Annotated[float, BeforeValidator(_no_bool), Field(gt=0)]
NonNegFloat = Annotated[float, BeforeValidator(_no_bool), Field(ge=0)]
Seed = Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=2**32 - 1)]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def safe_name(value: str, what: str) -> str:
    """``value`` if it can name a folder (letters, digits, ``_ . + -``, not starting with a dot)."""
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or len(value) > 100:
        raise ValueError(
            f"{what} {value!r} cannot name a folder: use letters, digits, '_', '.', '+' or '-', "
            "not starting with '.' or '-'"
        )
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _size(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    return value


Size = Annotated[tuple[PosInt, PosInt], BeforeValidator(_size)]
"""``[height, width]`` in pixels (a single number is a square)."""

Colour = tuple[Annotated[int, Field(ge=0, le=255)], Annotated[int, Field(ge=0, le=255)], Annotated[int, Field(ge=0, le=255)]]

IGNORE_COLOUR_KEY = "ignore"
"""The ``data.palette`` key whose colour marks ignored pixels (``data.ignore_index``)."""


class AugmentConfig(_Section):
    """``data.augment:`` — training-only augmentation (torchvision transforms v2), seeded per run, epoch and image.

    Masks are only ever resampled by nearest neighbour.
    """

    hflip: bool = False  # random horizontal flip (p = 0.5)
    vflip: bool = False  # random vertical flip (p = 0.5)
    rotate90: bool = False  # a random number of quarter turns
    scale: tuple[PosFloat, PosFloat] | None = None  # rescale by a factor drawn from [lo, hi] before the crop
    jitter: Annotated[float, BeforeValidator(_no_bool), Field(ge=0, lt=1)] = 0.0  # brightness and contrast × U[1 − j, 1 + j]

    @field_validator("scale")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"expected [low, high] with low ≤ high, got {list(value)}")
        return value

    @property
    def active(self) -> bool:
        return self.hflip or self.vflip or self.rotate90 or self.scale is not None or self.jitter > 0


SYNTHETIC_CLASSES = ["background", "blob", "curve", "spot"]
"""The classes of the synthetic data (:func:`lossbench.data.synthetic_splits`)."""

SYNTHETIC_VOLUME_CLASSES = ["background", "lesion", "vessel"]
"""The classes of the synthetic volumes (:func:`lossbench.data.volumes.write_synthetic_volumes`)."""

Spacing = tuple[PosFloat, PosFloat, PosFloat]
"""``[depth, height, width]`` grid step of a volume, millimetres per voxel."""


class VolumeConfig(_Section):
    """``data.volumes:`` — how volumes (``data.kind: volumes`` or ``synthetic_volumes``) are read and sampled.

    Volumes are reoriented to RAS (nibabel's closest canonical orientation, as MONAI's ``Orientation("RAS")``)
    and held slice-first, ``[D, H, W]`` = superior, anterior, right; the spacing follows the axes.
    """

    intensity: Literal["none", "ct", "mri"] = "none"  # ct: clip to window, scale to [0, 1]; mri: z-score per volume
    window: tuple[float, float] = (-1000.0, 1000.0)  # ct: the Hounsfield window [low, high]
    spacing: Spacing | None = None  # .npy volumes (no header): [D, H, W] mm per voxel; default 1, 1, 1
    patch: tuple[PosInt, PosInt, PosInt] = (32, 64, 64)  # model.dims 3: training patch and sliding window, [D, H, W]
    samples_per_volume: PosInt = 4  # training slices (dims 2) or patches (dims 3) drawn from each volume per epoch
    pos_fraction: Annotated[float, BeforeValidator(_no_bool), Field(ge=0, le=1)] = 0.5  # share of samples centred on a foreground class, each class present equally likely
    overlap: Annotated[float, BeforeValidator(_no_bool), Field(ge=0, lt=1)] = 0.25  # model.dims 3: sliding-window overlap at evaluation
    # synthetic_volumes only:
    depth: PosInt = 32  # slices per synthetic volume (each slice is data.image_size²)
    synthetic_spacing: Spacing = (2.5, 0.8, 0.8)  # mm per voxel of the synthetic volumes (anisotropic, as CT and MRI are)

    @field_validator("window")
    @classmethod
    def _window_ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] >= value[1]:
            raise ValueError(f"expected [low, high] with low < high, got {list(value)}")
        return value


class DataConfig(_Section):
    """``data:`` — which dataset, how its images are sized, augmented, normalised, split and batched."""

    kind: Literal["synthetic", "folder", "python", "volumes", "synthetic_volumes"] = "synthetic"
    seed: Seed = 0  # synthetic: generation seed, the same for every run of a suite
    image_size: PosInt = 64  # synthetic: images are image_size × image_size
    num_train: PosInt = 256  # synthetic: images per split
    num_val: PosInt = 64
    num_test: PosInt = 64
    imbalance: PosFloat = 1.0  # synthetic: > 1 makes the rare classes rarer, < 1 less rare
    noise: NonNegFloat = 0.08  # synthetic: std of the pixel noise
    cache_dir: str = "data"  # where generated data and decoded folder data are cached (not part of a run's identity)
    path: str | None = None  # folder, volumes: root holding train/ val/ test/, each with images/ and masks/
    class_names: list[str] | None = None  # folder: one name per class id (default: <path>/classes.txt, or the palette's names)
    ignore_index: Int | None = None  # folder/python: mask value excluded from losses and metrics
    palette: dict[str, Colour] | None = None  # folder: RGB colour masks, {class name: [r, g, b]}; key 'ignore': the void colour
    target: str | None = None  # python: "package.module:factory" returning the splits (see README, "Your own Dataset")
    kwargs: dict[str, Any] = Field(default_factory=dict)  # python: keyword arguments of the factory
    resize: Size | None = None  # [H, W]: training and evaluation input size (metrics stay at each mask's own size)
    crop: Size | None = None  # [H, W]: random training crop (after resize and augment.scale); padded if larger
    augment: AugmentConfig | None = None  # training-only augmentation; absent: none
    normalize: Literal["none", "imagenet", "dataset"] = "none"  # dataset: per-channel mean/std of the training split
    batch_size: BatchSize = 16  # training batch per process (per GPU under DDP)
    eval_batch_size: BatchSize | None = None  # validation/test batch; default batch_size
    num_workers: NonNegInt | Literal["auto"] = "auto"  # DataLoader workers; auto: the run's CPU cores less one, at most 8
    volumes: VolumeConfig | None = None  # volumes, synthetic_volumes: intensity, spacing, patches, sampling (README, "Volumes")

    @model_validator(mode="after")
    def _kind_needs(self) -> DataConfig:
        if self.is_volumes:
            if self.volumes is None:
                self.volumes = VolumeConfig()
            for key in ("resize", "crop", "augment"):
                if getattr(self, key) is not None:
                    raise ValueError(f"data.{key} is for 2-D images; volumes are read at their own spacing (data.kind is {self.kind!r})")
            if self.normalize != "none":
                raise ValueError(f"data.normalize {self.normalize!r} is for 2-D images; for volumes set data.volumes.intensity (ct or mri)")
        elif self.volumes is not None:
            raise ValueError(f"data.volumes describes volume data, but data.kind is {self.kind!r}")
        builtin = {"synthetic": SYNTHETIC_CLASSES, "synthetic_volumes": SYNTHETIC_VOLUME_CLASSES}.get(self.kind)
        if builtin is not None and self.class_names is not None and list(self.class_names) != list(builtin):
            raise ValueError(f"data.class_names is for folder and volume data; the {self.kind} set's classes are fixed "
                             f"({', '.join(builtin)}): leave it out, or set report.focus to choose the class the report follows")  # fmt: skip
        if self.kind == "synthetic_volumes":
            self.class_names = list(SYNTHETIC_VOLUME_CLASSES)
        if self.palette is not None and self.kind != "folder":
            raise ValueError(f"data.palette reads colour masks of folder data, but data.kind is {self.kind!r}")
        if self.kind in ("folder", "volumes"):
            if not self.path:
                raise ValueError(f"data.kind is {self.kind!r} but data.path is not set")
            self.class_names = _folder_class_names(self)
        if self.kind == "python":
            if not self.target or ":" not in self.target:
                raise ValueError(f"data.kind is 'python': data.target must be 'package.module:factory', got {self.target!r}")
        if self.class_names is not None:
            if len(self.class_names) < 2:
                raise ValueError(f"data.class_names needs at least two names, got {self.class_names}")
            reject_duplicates(self.class_names, "class name", "data.class_names:")
        return self

    @property
    def is_volumes(self) -> bool:
        """Whether the data are 3-D volumes (``volumes`` or ``synthetic_volumes``)."""
        return self.kind in ("volumes", "synthetic_volumes")

    @property
    def num_classes(self) -> int | None:
        """Classes of the data; ``None`` for a Python dataset whose factory names them."""
        if self.kind == "synthetic":
            return len(SYNTHETIC_CLASSES)
        return len(self.class_names) if self.class_names else None

    @property
    def declared_ignore_index(self) -> int | None:
        """The data's ignore index as the config declares it (synthetic data has none; a Python dataset's factory may name its own)."""
        return self.ignore_index if self.kind != "synthetic" else None

    def may_pad(self) -> bool:
        """Whether a batch can need padding (then padded pixels carry a label the losses ignore).

        Synthetic images of a multiple of 32 with no crop or rescale never do; data of any size may.
        """
        if self.is_volumes:
            return True  # slices and patches are padded to the model's multiple, volumes to a patch
        if self.kind != "synthetic" or self.crop is not None:
            return True
        if self.augment is not None and self.augment.scale is not None:
            return True
        size = self.resize or (self.image_size, self.image_size)
        return any(n % 32 for n in size)

    def loss_ignore_index(self, ignore_index: int | None, num_classes: int) -> int | None:
        """What the losses and metrics ignore, and the mask value of padded pixels: the data's
        ``ignore_index``, else ``num_classes`` when a batch may be padded, else none."""
        if ignore_index is not None:
            return ignore_index
        return num_classes if self.may_pad() else None

    def palette_ids(self) -> dict[tuple[int, int, int], int] | None:
        """``{(r, g, b): mask value}`` from ``palette`` (the ``ignore`` colour maps to ``ignore_index``)."""
        if self.palette is None:
            return None
        names = self.class_names or []
        return {tuple(c): (self.ignore_index if n == IGNORE_COLOUR_KEY else names.index(n)) for n, c in self.palette.items()}


def _folder_class_names(d: DataConfig) -> list[str]:
    """``data.class_names``, else the palette's names, else ``<path>/classes.txt`` (one name per line)."""
    if d.palette is not None:
        if IGNORE_COLOUR_KEY in d.palette and d.ignore_index is None:
            raise ValueError("data.palette has an 'ignore' colour but data.ignore_index is not set")
        named = [n for n in d.palette if n != IGNORE_COLOUR_KEY]
        colours = [tuple(c) for c in d.palette.values()]
        if len(set(colours)) != len(colours):
            raise ValueError("data.palette gives one colour to two names")
        if d.class_names is None:
            return named
        unknown = [n for n in named if n not in d.class_names]
        if unknown:
            raise ValueError(f"data.palette names {unknown[0]!r}, which is not in data.class_names {d.class_names}")
    if d.class_names is not None:
        return d.class_names
    listing = Path(d.path) / "classes.txt"
    if not listing.is_file():
        raise ValueError(f"a folder dataset needs data.class_names, data.palette or {listing} (one class name per line)")
    return read_class_list(listing)

_MODEL_OWNED = {
    "encoder_name": "set model.encoder",
    "encoder_weights": "set model.encoder_weights",
    "arch": "set model.arch",
    "in_channels": "lossbench sets it from the data",
    "classes": "lossbench sets it from the data",
    "out_channels": "lossbench sets it from the data",
    "spatial_dims": "set model.dims",
}


class ModelConfig(_Section):
    """``model:`` — the segmentation-models-pytorch model (``smp.create_model``), or for volumes at
    ``dims: 3`` a network of ``monai.networks.nets``."""

    arch: str = "Unet"  # dims 2: an smp architecture; dims 3: a monai.networks.nets class (UNet, SegResNet, BasicUNet, ...)
    encoder: str = "resnet18"  # dims 2 only
    encoder_weights: str | None = None  # e.g. imagenet: pretrained encoder (downloaded once, or from the cache); null: random
    kwargs: dict[str, Any] = Field(default_factory=dict)  # more smp.create_model (or MONAI network) arguments
    dims: Literal[2, 3] = 2  # volumes: 2 trains the 2-D model on slices, 3 a 3-D MONAI network on patches
    context: NonNegInt = 0  # dims 2 on volumes: neighbouring slices on each side as extra channels ("2.5-D")

    @model_validator(mode="after")
    def _dims(self) -> ModelConfig:
        if self.dims == 3 and self.context:
            raise ValueError(f"model.context ({self.context}) adds neighbouring slices to a 2-D model; model.dims is 3")
        if self.dims == 3 and self.encoder_weights is not None:
            raise ValueError("model.encoder_weights loads a 2-D smp encoder; model.dims is 3 (a MONAI network, trained from scratch)")
        return self

    @field_validator("kwargs")
    @classmethod
    def _not_owned(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        for key in sorted(set(kwargs) & set(_MODEL_OWNED)):
            raise ValueError(f"model.kwargs may not set {key}: {_MODEL_OWNED[key]}")
        return kwargs


class OptimConfig(_Section):
    """``optim:`` — AdamW with a per-step cosine schedule to 0."""

    lr: PosFloat = 1e-3
    weight_decay: NonNegFloat = 1e-4


_TRAINER_OWNED = {
    "logger": "lossbench logs to W&B itself",
    "callbacks": "lossbench sets its own",
    "default_root_dir": "the run folder is used",
    "enable_checkpointing": "lossbench checkpoints every epoch so runs resume",
    "use_distributed_sampler": "lossbench shards evaluation without padding",
    "enable_model_summary": "lossbench turns it off",
    "plugins": "not supported by lossbench",
    "model_registry": "not supported by lossbench",
}
"""Trainer arguments lossbench sets itself, with the reason a config may not."""


class TrainerConfig(BaseModel):
    """``trainer:`` — ``lightning.Trainer`` arguments; the common ones are typed here, any other is
    checked against ``Trainer``'s signature."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    max_epochs: PosInt = 10  # the training budget; the learning rate reaches 0 at its end
    accelerator: str = "auto"
    devices: Annotated[int | str | list[NonNegInt], BeforeValidator(_devices)] = 1  # per node; -1: all
    num_nodes: PosInt = 1
    strategy: str = "auto"
    # auto: bf16-mixed on a GPU that supports it, else 32-true; otherwise what Lightning's Trainer accepts
    precision: Annotated[str, BeforeValidator(_precision)] = "auto"
    log_every_n_steps: PosInt = 10
    deterministic: bool | Literal["warn"] = False
    # keep checkpoints/last.ckpt once the run has succeeded (the report and a resume never need it then; it is the
    # model's weights, 165 MB a run of a UNet on a ResNet-34); not a Trainer argument, not part of a run's identity
    keep_checkpoint: bool = False

    @model_validator(mode="after")
    def _known_keys(self) -> TrainerConfig:
        for key in self.model_extra or {}:  # lightning is imported only when there is a key to check
            accepted = trainer_arguments()
            if key in _TRAINER_OWNED:
                raise ValueError(f"trainer.{key} cannot be set: {_TRAINER_OWNED[key]}")
            if key not in accepted:
                raise ValueError(f"unknown key {key!r} in trainer{_did_you_mean(key, accepted)} (lightning.Trainer takes no such argument)")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Every argument for ``lightning.Trainer``."""
        return self.model_dump(exclude={"keep_checkpoint"})

    @property
    def wants_gpu(self) -> bool:
        """Whether the runs train on GPUs when the machine has any (:data:`GPU_ACCELERATORS`)."""
        return self.accelerator in GPU_ACCELERATORS


class WandbConfig(_Section):
    """``wandb:`` — where runs are logged. W&B is a sink: results never depend on it."""

    project: str = "lossbench"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled", "shared"] | None = None  # default: WANDB_MODE, else online when logged in
    tags: list[str] = Field(default_factory=list)


class LossEntry(_Section):
    """One ``losses:`` item: a registry ``name``, its ``params``, and the ``label`` naming its runs."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str = ""  # default: the name

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, Mapping) and "name" not in value:
            raise ValueError(f"a losses: item must be a name or a mapping with 'name', got {dict(value)!r}")
        return value

    @model_validator(mode="after")
    def _label(self) -> LossEntry:
        self.label = safe_name(self.label or self.name, "loss label")
        return self


class ReportConfig(_Section):
    """``report:`` — what the report compares and how; it changes no run's training (not part of a run's identity)."""

    focus: str | None = None  # the class of the focus leaderboard, object metrics and panel; default: the rarest training class
    object_iou: Annotated[float, BeforeValidator(_no_bool), Field(gt=0, le=1)] = 0.1  # IoU for an object to count as found
    panel: Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=16)] = 4  # test images in the qualitative panel
    bootstrap: Annotated[int, BeforeValidator(_no_bool), Field(ge=100)] = 2000  # replicates of the bootstrap over the test images (the image part of every interval)
    alpha: Annotated[float, BeforeValidator(_no_bool), Field(gt=0, lt=1)] = 0.05  # family-wise level of the best set: 0.05 rules a loss out as the best at 95 %
    nsd_tolerance: Annotated[float, BeforeValidator(_no_bool), Field(ge=0)] = 2.0  # pixels; used when a run is tested (its record says which)
    # the epochs the data wanted when `init --minutes` gave fewer to fit: the report says the share trained
    wanted_epochs: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=1_000_000)] | None = None


class RunSections(_Section):
    """The sections every run of a suite shares (a run's config is these plus its loss and seed)."""

    suite: str = "adhoc"  # the suite's name: its runs and report folders and the W&B group
    plugins: list[str] = Field(default_factory=list)  # modules or .py files that register losses
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("suite")
    @classmethod
    def _suite_name(cls, value: str) -> str:
        return safe_name(value, "suite name")

    @model_validator(mode="after")
    def _focus_is_a_class(self) -> RunSections:
        focus, names = self.report.focus, self.data.class_names
        if self.data.kind == "synthetic":
            names = SYNTHETIC_CLASSES
        if focus is not None and names and focus not in names:
            raise ValueError(f"report.focus {focus!r} is not a class of the data{_did_you_mean(focus, names)} (classes: {', '.join(names)})")
        if not self.data.is_volumes and (self.model.dims == 3 or self.model.context):
            key = "model.dims is 3" if self.model.dims == 3 else f"model.context is {self.model.context}"
            raise ValueError(f"{key}, which needs volumes (data.kind volumes or synthetic_volumes), but data.kind is {self.data.kind!r}")
        return self


def check_jobs(value: Any) -> int | str:
    """``jobs`` (the config key and ``--jobs``): ``auto``, a number of runs at once ≥ 1, or -1 for one per CPU core."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
        raise ValueError(f"expected 'auto', a number of runs at once ≥ 1, or -1 for one per CPU core, got {value!r}")
    return value


def check_jobs_per_gpu(value: Any) -> int | str:
    """``jobs_per_gpu``: ``auto`` or a number of runs at once on one GPU ≥ 1."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected 'auto' or a number of runs at once on one GPU ≥ 1, got {value!r}")
    return value


LauncherKind = Literal["local", "slurm", "submitit-local"]
LAUNCHERS: tuple[str, ...] = get_args(LauncherKind)
"""Where ``compare`` trains its runs (``launcher.kind``, ``--launcher``)."""


class LauncherConfig(_Section):
    """``launcher:`` — where ``compare`` trains its runs; not part of a run's identity.

    ``local`` (default): processes on this machine, placed on its GPUs. ``slurm``: one SLURM job per
    run, submitted as one job array through submitit, requeued on preemption or time limit and
    resumed from the run's last checkpoint. ``submitit-local``: the SLURM code path with submitit's
    local executor (jobs are processes of this machine) — to try a cluster setup without a cluster.
    """

    kind: LauncherKind = "local"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: PosInt = 240  # each job's time limit, minutes; a run that needs more is requeued and resumes
    cpus_per_task: PosInt | None = None
    mem_gb: Annotated[float, BeforeValidator(_no_bool), Field(gt=0)] | None = None
    gpus_per_node: Annotated[int, BeforeValidator(_no_bool), Field(ge=0)] | None = None  # default: trainer.devices, 0 with accelerator cpu
    array_parallelism: PosInt | None = None  # array jobs running at once (default: submitit's, 256)
    max_requeues: Annotated[int, BeforeValidator(_no_bool), Field(ge=0)] = 3  # time-limit requeues of one job (preemptions are not counted)
    sbatch: dict[str, Any] = Field(default_factory=dict)  # more sbatch options, e.g. {constraint: a100, exclusive: true}
    setup: list[str] = Field(default_factory=list)  # shell lines each job runs first, e.g. "module load cuda"


class Range(_Section):
    """A tuned axis drawn from an interval instead of listed: ``{low: 0.0005, high: 0.02, log: true}``
    (with ``tune.trials``; values are rounded to 3 significant digits, or to integers with ``integer``)."""

    low: float
    high: float
    log: bool = False  # draw uniformly in log space (learning rates, weights)
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got low {self.low:g}, high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low:g}")
        return self


def _axis(value: Any) -> Any:
    """A tuned axis: a list of values, or a mapping read as a :class:`Range` (its own errors, not the list's)."""
    if isinstance(value, Mapping):
        try:
            return Range.model_validate(dict(value))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"a range {dict(value)}: {(where + ' ') if where else ''}{first['msg'].removeprefix('Value error, ')}") from None
    if not isinstance(value, list):
        raise ValueError(f"expected a list of values or a range {{low, high, log}}, got {value!r}")
    return value


Axis = Annotated[list[Any] | Range, BeforeValidator(_axis)]


TUNABLE_SECTIONS = ("model", "optim", "trainer")
"""The sections whose keys ``tune.grid`` may vary: the training's settings. Of ``data``, only how the training
reads it (:data:`TUNABLE_DATA_KEYS`): a key that changes the data itself would select each point on another
validation set and judge the losses on other test sets."""

TUNABLE_DATA_KEYS = ("data.augment", "data.batch_size")
"""The ``data`` keys (and the keys under them) ``tune.grid`` may vary: augmentation and the batch size."""


def _tunable(key: str) -> bool:
    section = key.split(".")[0]
    if section == "data":
        return any(key == k or key.startswith(k + ".") for k in TUNABLE_DATA_KEYS)
    return section in TUNABLE_SECTIONS and "." in key


class TuneConfig(_Section):
    """``tune:`` — a fair fight: each loss searched over the same settings with the same budget, the
    point with the best validation score selected, and the verdict given on the test set at the
    selected points, trained again on the suite's ``seeds`` (:mod:`lossbench.tune`)."""

    grid: dict[str, Axis] = Field(default_factory=dict)  # shared axes: a config key → its values (or a Range), e.g. {optim.lr: [0.001, 0.003, 0.01]}
    params: dict[str, dict[str, Axis]] = Field(default_factory=dict)  # each loss's own axes, by label: {focal: {gamma: [1, 2, 3]}}
    trials: PosInt | None = None  # points per loss: null, every point of its grid; N, N points drawn at random (a grid of lists: all, if it has fewer)
    sample_seed: NonNegInt = 0  # the draw of trials (each loss's own, whatever the other losses)
    seeds: list[Seed] = Field(default_factory=lambda: [0])  # the seeds the search trains; keep them apart from seeds: (see README)
    select_on: str = "miou"  # miou, focus (report.focus) or a class name: its validation IoU at the last epoch, mean over tune.seeds
    default_point: bool = True  # also train every loss at the suite's own settings on seeds: (the ranking without tuning)

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, grid: dict[str, Axis]) -> dict[str, Axis]:
        for key, values in grid.items():
            if key.split(".")[0] == "data" and not _tunable(key):
                raise ValueError(f"key {key!r} changes the data, so each point would be selected on another validation "
                                 f"set and judged on another test set: of data, only {' and '.join(TUNABLE_DATA_KEYS)} "
                                 "may be searched")  # fmt: skip
            if not _tunable(key):
                raise ValueError(f"key {key!r} is not a run setting: use a key of {', '.join(TUNABLE_SECTIONS)}, "
                                 f"{' or '.join(TUNABLE_DATA_KEYS)} (e.g. optim.lr); a loss's own parameters go under "
                                 "tune.params")  # fmt: skip
            if key == "trainer.max_epochs":
                raise ValueError("trainer.max_epochs is the training budget, not a setting to select: list the budgets "
                                 "under budgets: (the search runs at each, and each is reported on its own)")  # fmt: skip
            _check_axis(values, f"tune.grid[{key!r}]")
        return grid

    @field_validator("params")
    @classmethod
    def _param_axes(cls, params: dict[str, dict[str, Axis]]) -> dict[str, dict[str, Axis]]:
        for label, axes in params.items():
            if not axes:
                raise ValueError(f"tune.params.{label} lists no parameter; leave it out instead")
            for name, values in axes.items():
                _check_axis(values, f"tune.params.{label}.{name}")
        return params

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("tune.seeds lists no seed; the search needs at least one")
        reject_duplicates(seeds, "seed", "tune.seeds:")
        return seeds


def _check_axis(values: Any, where: str) -> None:
    if isinstance(values, Range):
        return
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where} must be a non-empty list of values, got {values!r}")
    reject_duplicates([repr(v) for v in values], "value", f"{where}:")


SEED_LEVEL_MIN = 3
"""Seeds per loss from which the report measures training randomness (:mod:`lossbench.report.stats`), and a race starts."""


class RaceConfig(_Section):
    """``race:`` — seeds spent where they decide (:mod:`lossbench.report.race`): every loss trains the suite's
    ``seeds``; each round doubles the seeds per loss (up to ``max_seeds``) for the losses still in the best set
    only, until one is left, ``max_seeds`` is reached, or the next round would pass ``max_runs`` or — at the pace
    of the rounds so far — ``max_minutes``."""

    # the most seeds a loss trains: at most 256 (each round doubles the seeds; a race of more rounds spends its level so
    # thinly over them that its early rounds could rule nothing out)
    max_seeds: Annotated[int, Field(ge=1, le=256)]
    max_runs: PosInt | None = None  # the most runs of the whole suite (all rounds, every budget counted once per seed)
    # the most wall-clock minutes of training for all rounds: a round trains only when the rounds so far (each the time
    # its runs trained, from the runs' records, pauses and queues left out) say it ends within them — so a slower
    # machine races less, and a rerun decides the same as the compare that trained the runs; a round whose runs exist is
    # always judged
    max_minutes: Annotated[float, BeforeValidator(_no_bool), Field(gt=0, allow_inf_nan=False)] | None = None
    score: Literal["miou", "focus"] = "miou"  # what the race rules losses out on: mean IoU or the focus class's IoU (not "on": YAML reads it as true)


class SuiteConfig(RunSections):
    """A whole suite: the runs' sections plus the losses and seeds to cross, and how many run at once."""

    losses: list[LossEntry] = Field(default_factory=list)
    seeds: list[Seed] = Field(default_factory=lambda: [0])
    budgets: list[PosInt] | None = None  # training budgets in epochs: every (loss, seed) runs at each; default [trainer.max_epochs]
    # runs trained at once by compare on this machine: auto — one per GPU group (visible GPUs //
    # trainer.devices), one at a time on the CPU; N — N at once (on GPUs, at most one per group); -1 — one per CPU core
    jobs: Annotated[int | Literal["auto"], BeforeValidator(check_jobs)] = "auto"
    # runs sharing one GPU at once when each run trains on one GPU (a DDP run keeps its GPUs to itself):
    # auto — one until the first run has measured its peak GPU memory after an epoch, then as many as fit
    # in the free memory and the CPU cores can feed (lossbench.launch.auto_per_gpu); N — N per GPU
    jobs_per_gpu: Annotated[int | Literal["auto"], BeforeValidator(check_jobs_per_gpu)] = "auto"
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)
    tune: TuneConfig | None = None  # search each loss's settings, select on validation, report on test (see TuneConfig)
    race: RaceConfig | None = None  # add seeds in rounds to the losses still in the best set (see RaceConfig)

    @model_validator(mode="after")
    def _race_fits(self) -> SuiteConfig:
        if self.race is None:
            return self
        if self.tune is not None:
            raise ValueError("race: and tune: cannot be combined yet: race the losses at their tuned settings in a suite "
                             "of its own (copy each selected point into losses:)")  # fmt: skip
        if len(self.seeds) < SEED_LEVEL_MIN:
            raise ValueError(f"race: starts from the suite's seeds, and seeds: lists {len(self.seeds)}; list at least "
                             f"{SEED_LEVEL_MIN}, the fewest that measure training randomness")  # fmt: skip
        if self.race.max_seeds <= len(self.seeds):
            raise ValueError(f"race.max_seeds ({self.race.max_seeds}) must be above the {len(self.seeds)} seeds every loss "
                             "starts with (seeds:), or there is no round to race")  # fmt: skip
        first = len(self.seeds) * max(len(self.losses), 1)
        if self.race.max_runs is not None and self.race.max_runs <= first:
            raise ValueError(f"race.max_runs ({self.race.max_runs}) leaves no run for a second round: the first trains "
                             f"{first} (every loss on seeds:)")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _tune_fits(self) -> SuiteConfig:
        if self.tune is None:
            return self
        labels = [e.label for e in self.losses]
        for label in self.tune.params:
            if labels and label not in labels:
                raise ValueError(f"tune.params names {label!r}, which is not a loss label of this suite{_did_you_mean(label, labels)}")
        ranges = [k for k, v in self.tune.grid.items() if isinstance(v, Range)]
        ranges += [f"{label}.{k}" for label, own in self.tune.params.items() for k, v in own.items() if isinstance(v, Range)]
        if ranges and self.tune.trials is None:
            raise ValueError(f"tune axis {ranges[0]} is a range: its values are drawn, so set tune.trials (points per loss)")
        base = self.model_dump(include=set(RunSections.model_fields))
        for key, axis in self.tune.grid.items():  # every value is checked now, before anything trains
            values = [axis.low, axis.high] if isinstance(axis, Range) else axis
            if isinstance(axis, Range) and axis.integer:
                values = [int(axis.low), int(axis.high)]
            for value in values:
                try:
                    RunSections.model_validate(with_settings(base, {key: value}))
                except ValidationError as e:
                    raise ValueError(f"tune.grid[{key!r}] value {value!r}: {explain(e, 'the config').args[0].removeprefix('the config: ')}") from None
        names = SYNTHETIC_CLASSES if self.data.kind == "synthetic" else self.data.class_names
        chosen = self.tune.select_on
        if chosen not in ("miou", "focus") and names and chosen not in names:
            raise ValueError(f"tune.select_on {chosen!r} is neither miou, focus nor a class of the data"
                             f"{_did_you_mean(chosen, names)} (classes: {', '.join(names)})")  # fmt: skip
        return self

    @field_validator("losses")
    @classmethod
    def _unique_labels(cls, losses: list[LossEntry]) -> list[LossEntry]:
        reject_duplicates([e.label for e in losses], "loss label", "give each variant its own label:")
        return losses

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        reject_duplicates(seeds, "seed", "seeds:")
        return seeds

    @field_validator("budgets")
    @classmethod
    def _unique_budgets(cls, budgets: list[int] | None) -> list[int] | None:
        if budgets is not None:
            if not budgets:
                raise ValueError("budgets: lists no budget; leave it out to train for trainer.max_epochs")
            reject_duplicates(budgets, "budget", "budgets:")
        return sorted(budgets) if budgets else budgets

    def budget_list(self) -> list[int]:
        """The training budgets in epochs (``budgets``, else ``[trainer.max_epochs]``)."""
        return list(self.budgets) if self.budgets else [self.trainer.max_epochs]



class RunConfig(RunSections):
    """The resolved config of one run (its ``config.yaml``): the suite's run sections, one loss, one seed."""

    loss: LossEntry
    seed: Seed


def reject_duplicates(values: list, what: str, hint: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} appears twice; {hint} each must be unique")
        seen.add(v)



def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def explain(error: ValidationError, source: str) -> ConfigError:
    """The first problem of a pydantic error as one sentence naming the key."""
    err = error.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "the config"
    if err["type"] == "extra_forbidden":
        section = ".".join(loc[:-1])
        model = _section_model(loc[:-1])
        known = list(model.model_fields) if model else []
        where = f"section {section!r}" if section else "the config"
        hint = _did_you_mean(loc[-1], known) + (f"; known keys: {', '.join(known)}" if known else "")
        return ConfigError(f"{source}: unknown key {loc[-1]!r} in {where}{hint}")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("value_error", "assertion_error"):
        return ConfigError(f"{source}: {key}: {msg}" if loc else f"{source}: {msg}")
    given = err.get("input")
    return ConfigError(f"{source}: {key} {msg[0].lower() + msg[1:]}, got {given!r}")


def _section_model(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = SuiteConfig
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        inner = getattr(ann, "__args__", (ann,))
        nxt = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``override`` (dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def with_settings(raw: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with each dotted key of ``settings`` set to its value (``{"optim.lr": 0.01}``)."""
    nested: dict[str, Any] = {}
    for key, value in settings.items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return deep_merge(raw, nested)
