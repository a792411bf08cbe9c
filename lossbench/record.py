"""The run record and the folder layout: the one definition of what a run writes, and where.

A suite's runs folder (``--out``, default ``runs/<suite>``)::

    <out>/suite.yaml                       the suite's resolved config (written by ``compare``)
    <out>/.submitit/<job>/                 submitit's job files and scheduler logs (``--launcher slurm``)
    <out>/<label>/seed<seed>-<hash>/       one run: its loss label, seed and config hash
        config.yaml                        the run's resolved config (:func:`lossbench.identity.run_config`)
        metrics.json                       the run record (:class:`RunRecord`), written atomically
        claim.json                         who trains the run now (:mod:`lossbench.claim`); gone when it is finished
        evidence.npz                       what the report's statistics are computed from (:class:`Evidence`),
                                           written before the record says ``ok``
        checkpoints/last.ckpt              written after every epoch; an interrupted run resumes from it;
                                           removed once the run succeeds (``trainer.keep_checkpoint`` keeps it)
        errors/rank<k>.json                what failed on each rank of a failed run (:func:`write_rank_error`)
        train.log                          the run process's output (runs started by ``compare``, SLURM jobs)
        wandb/                             the W&B run (a sink, never read back)

Every module that reads or writes these goes through this one: none spells a file name itself,
and the record (:class:`RunRecord`), its progress (:class:`Progress`) and the evidence
(:class:`Evidence`) are typed here, so no other module spells one of their keys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.config import RunConfig, SuiteConfig, dump_yaml, read_yaml_mapping, validate_config
from lossbench.identity import config_hash
from lossbench.io import atomic_file, read_json, write_json_atomic, write_text_atomic
from lossbench.progress import fmt_time  # noqa: F401 — progress lines and status read it from here too

SUITE_FILE = "suite.yaml"
RECORD_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last"  # checkpoints/last.ckpt
ERRORS_DIR = "errors"
EVIDENCE_FILE = "evidence.npz"
PREDICTIONS_DIR = "predictions"  # volumes: predictions/<test index>.npz, each test volume's predicted labels
CLAIM_FILE = "claim.json"
SUBMITIT_DIR = ".submitit"

RUNNING, OK, FAILED, INTERRUPTED = "running", "ok", "failed", "interrupted"
MISSING = "missing"  # no record yet
DAMAGED = "damaged"  # a record file that cannot be read
STATUSES = (RUNNING, OK, FAILED, INTERRUPTED)
"""A record's status: ``running`` (training now, or killed without a word), ``ok`` (tested),
``failed`` (an error, kept unless ``--retry-failed``), ``interrupted`` (Ctrl-C, SIGTERM, preemption:
resumed from its last checkpoint by the next ``compare``)."""


class DamagedRecord(ValueError):
    """A ``metrics.json`` that is not a run record (truncated, edited, not JSON)."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"run record {path} is damaged ({why})")
        self.path, self.why = path, why


@dataclass
class Progress:
    """Where a running attempt is: the record's ``progress``, what progress lines and ``lossbench status`` show."""

    epoch: int  # epochs done
    max_epochs: int
    val_miou: float | None  # after the latest epoch (None: undefined)
    step: int | None = None  # training batches done in the epoch under way (None: between epochs)
    steps: int | None = None  # training batches in an epoch
    rate: float | None = None  # training batches a second in the epoch under way
    epoch_s: float | None = None  # seconds the epochs done took, on average (training and validation)
    gpu_peak_mib: float | None = None  # on a GPU: the most memory torch's allocator reserved so far (MiB)
    gpu_free_mib: float | None = None  # on a GPU: its free memory after the latest epoch, all processes counted (MiB)
    test_step: int | None = None  # after training: test batches scored so far (None: not testing)
    test_steps: int | None = None  # test batches in all
    test_s: float | None = None  # the test's expected seconds (the suite's finished runs' median; before any, validation's pace)
    test_rate: float | None = None  # while testing: test batches a second so far

    @classmethod
    def from_json(cls, data: Any) -> Progress | None:
        if not isinstance(data, dict):
            return None

        def number(key: str, kind: type) -> Any:
            value = data.get(key)
            return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        return cls(number("epoch", int) or 0, number("max_epochs", int) or 0, number("val_miou", float),
                   number("step", int), number("steps", int), number("rate", float), number("epoch_s", float),
                   number("gpu_peak_mib", float), number("gpu_free_mib", float), number("test_step", int),
                   number("test_steps", int), number("test_s", float), number("test_rate", float))  # fmt: skip

    def describe(self) -> str:
        """``epoch 3/8, step 40/63 (3.1 it/s), val mIoU 0.412`` inside an epoch (the third, under way;
        the validation of the second), ``epoch 2/8, val mIoU 0.412`` between epochs: for people."""
        if self.test_step is not None:
            return f"testing, batch {self.test_step}/{self.test_steps or '?'} (after {self.epoch}/{self.max_epochs} epochs)"
        if self.step is None:
            text = f"epoch {self.epoch}/{self.max_epochs}"  # epochs done
        else:  # the epoch under way
            text = f"epoch {self.epoch + 1}/{self.max_epochs}, step {self.step}/{self.steps or '?'}"
            text += f" ({self.rate:.1f} it/s)" if self.rate else ""
        if self.val_miou is not None:
            text += f", val mIoU {self.val_miou:.3f}"
        return text

    def seconds_left(self) -> float | None:
        """The attempt's remaining time, test included: while testing, its batches left at its pace so far; before,
        the epochs left at the pace of those done and the test's expected time (``None`` before an epoch ends)."""
        if self.test_step is not None:
            if self.test_rate and self.test_steps:
                return max(self.test_steps - self.test_step, 0) / self.test_rate
            return self.test_s
        if not self.epoch_s:
            return None
        under_way = min(self.step / self.steps, 1.0) if self.step and self.steps else 0.0
        return max(self.epoch_s * (self.max_epochs - self.epoch - under_way), 0.0) + (self.test_s or 0.0)


@dataclass
class RunRecord:
    """What ``metrics.json`` holds. Identity fields first; results are filled when the run is ``ok``."""

    status: str
    suite: str
    loss: str  # registry name
    label: str  # the loss entry's label (names the run's folder)
    loss_params: dict[str, Any]
    seed: int
    config_hash: str
    budget: int | None = None  # the training budget, epochs (trainer.max_epochs)
    attempts: int = 1  # processes that have trained this run (a resume is a new attempt)
    started_at: float | None = None  # epoch seconds, this attempt
    finished_at: float | None = None
    progress: Progress | None = None  # while running
    # failed or interrupted: what happened, on which rank
    error: str | None = None
    failed_rank: int | None = None
    traceback: str | None = None
    # ok: the results
    classes: list[str] | None = None  # class names, by class id
    class_frequencies: list[int] | None = None  # training pixels per class
    test: dict[str, Any] | None = None  # per_class metrics, miou, pixels (lossbench.metrics)
    focus: str | None = None  # the class of the object metrics and the panel (report.focus, else the rarest)
    objects: dict[str, Any] | None = None  # focus-class objects on the test set (lossbench.metrics.object_summary)
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    epochs: int | None = None
    steps: int | None = None
    wall_s: float | None = None  # training + testing, summed over attempts
    test_s: float | None = None  # of wall_s, the testing (the last attempt's)
    resumed_after_epoch: int | None = None
    world_size: int | None = None
    precision: str | None = None
    device: str | None = None
    # where this attempt ran: host, SLURM job, CUDA_VISIBLE_DEVICES as given, the device ids it trained
    # on, CPU threads (what compare's placement gave it)
    placement: dict[str, Any] | None = None
    # the kind of machine it trained on (lossbench.run.machine_now): CPU model and the vector ISA torch uses, GPU, torch,
    # CUDA and oneDNN versions — the same seed gives other numbers on another kind; "earlier": the kinds of earlier
    # attempts when a resumed run changed machine
    machine: dict[str, Any] | None = None
    run_dir: Path | None = field(default=None, compare=False, repr=False)  # where it was read from; not stored

    @classmethod
    def start(cls, run_cfg: RunConfig, attempts: int) -> RunRecord:
        """The record of a run that starts (or resumes) now."""
        return cls(
            status=RUNNING,
            suite=run_cfg.suite,
            loss=run_cfg.loss.name,
            label=run_cfg.loss.label,
            loss_params=dict(run_cfg.loss.params),
            seed=run_cfg.seed,
            config_hash=config_hash(run_cfg),
            budget=run_cfg.trainer.max_epochs,
            attempts=attempts,
            started_at=time.time(),
        )

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def machine_kind(self) -> str | None:
        """The kind of machine the run trained on, in one line (``None`` for runs recorded before it was kept)."""
        return machine_kind(self.machine) if self.machine else None

    @property
    def miou(self) -> float | None:
        return (self.test or {}).get("miou")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("run_dir")
        return out

    @classmethod
    def from_json(cls, data: Any, path: Path) -> RunRecord:
        if not isinstance(data, dict):
            raise DamagedRecord(path, f"expected a JSON object, found {type(data).__name__}")
        names = {f.name for f in fields(cls)} - {"run_dir"}
        required = {f.name for f in fields(cls) if f.default is NO_DEFAULT and f.default_factory is NO_DEFAULT} - {"run_dir"}
        missing = sorted(required - set(data))
        if missing:
            raise DamagedRecord(path, f"missing {', '.join(missing)}")
        if data["status"] not in STATUSES:
            raise DamagedRecord(path, f"unknown status {data['status']!r}")
        wrong = _wrong_types(data)
        if wrong:
            raise DamagedRecord(path, wrong)
        values = {k: v for k, v in data.items() if k in names}
        values["progress"] = Progress.from_json(values.get("progress"))
        return cls(**values, run_dir=path.parent)


_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "suite": (str,), "loss": (str,), "label": (str,), "config_hash": (str,), "seed": (int,), "loss_params": (dict,),
    "budget": (int,), "attempts": (int,), "started_at": _NUMBER, "finished_at": _NUMBER, "error": (str,),
    "failed_rank": (int,), "classes": (list,), "class_frequencies": (list,), "test": (dict,), "focus": (str,),
    "objects": (dict,), "history": (list,), "epochs": (int,), "steps": (int,), "wall_s": _NUMBER, "test_s": _NUMBER,
    "resumed_after_epoch": (int,), "world_size": (int,), "precision": (str,), "device": (str,), "placement": (dict,), "machine": (dict,),
}  # fmt: skip


def _wrong_types(data: dict[str, Any]) -> str | None:
    """What in a record's JSON is not of its type (``None`` is allowed where a field may be unset), or ``None``:
    a hand-edited record with ``"miou": "high"`` is damaged, not a crash in the report."""

    def number_or_none(value: Any) -> bool:
        return value is None or (isinstance(value, _NUMBER) and not isinstance(value, bool))

    for key, kinds in _FIELD_TYPES.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            return f"{key} is {value!r:.60}, expected {' or '.join(k.__name__ for k in kinds)}"
    test = data.get("test")
    if isinstance(test, dict):
        if not number_or_none(test.get("miou")):
            return f"test.miou is {test.get('miou')!r:.60}, expected a number"
        per_class = test.get("per_class", {})
        if not isinstance(per_class, dict):
            return f"test.per_class is {per_class!r:.60}, expected an object"
        for name, row in per_class.items():
            if not isinstance(row, dict):
                return f"test.per_class.{name} is {row!r:.60}, expected an object"
            for metric, value in row.items():
                if not number_or_none(value) and not isinstance(value, (list, dict)):
                    return f"test.per_class.{name}.{metric} is {value!r:.60}, expected a number"
    for i, row in enumerate(data.get("history") or []):
        if not isinstance(row, dict) or not all(number_or_none(v) for v in row.values()):
            return f"history[{i}] is {row!r:.60}, expected an object of numbers"
    return None


def run_dir_for(out: str | Path, run_cfg: RunConfig) -> Path:
    """``<out>/<label>/seed<seed>-<hash>``: one folder per (loss label, seed, resolved config)."""
    return Path(out) / run_cfg.loss.label / f"seed{run_cfg.seed}-{config_hash(run_cfg)}"


def record_path(run_dir: Path) -> Path:
    return Path(run_dir) / RECORD_FILE


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG_FILE


def log_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOG_FILE


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def last_checkpoint(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir) / f"{LAST_CHECKPOINT}.ckpt"


def errors_dir(run_dir: Path) -> Path:
    return Path(run_dir) / ERRORS_DIR


def claim_path(run_dir: Path) -> Path:
    return Path(run_dir) / CLAIM_FILE


def submitit_dir(out: Path) -> Path:
    return Path(out) / SUBMITIT_DIR


def suite_path(out: Path) -> Path:
    return Path(out) / SUITE_FILE


def load_suite(out: Path) -> SuiteConfig | None:
    """The suite config in ``<out>/suite.yaml`` (as ``compare`` writes it, or a config file copied there)."""
    path = suite_path(out)
    if not path.exists():
        return None
    raw = read_yaml_mapping(path)
    raw.setdefault("suite", Path(out).name)
    return validate_config(raw, f"suite file {str(path)!r}")


def evidence_path(run_dir: Path) -> Path:
    return Path(run_dir) / EVIDENCE_FILE


EVIDENCE_ARRAYS = {
    "counts": "[N, C, 3] int64: per test image (in test-set order) and class, TP, FP and FN pixels",
    "confmat": "[C, C] int64: the test confusion matrix (rows: target, columns: prediction)",
    "objects": "[N, 4] int64: per test image, focus-class objects: ground truth, hit, predicted, false positive",
    "boundary": "[N, C, 2] float32: per test image and class, HD95 and NSD (lossbench.metrics.boundary_scores; NaN: undefined)",
    "panel_index": "[K] int64: the test images of the qualitative panel (most focus-class pixels first)",
    "panel_slice": "[K] int64: for volumes, the slice of each panel volume shown (the most focus-class voxels); -1 for images",
    "panel_image_<k>": "[H, W, 3] uint8: panel image k for display",
    "panel_target_<k>": "[H, W] int32: its mask",
    "panel_pred_<k>": "[H, W] int32: this run's prediction of it",
}
"""What ``evidence.npz`` holds (the arrays of :class:`Evidence`)."""


@dataclass
class PanelImage:
    """One test image of the qualitative panel: the image for display, its mask, this run's prediction."""

    image: np.ndarray  # [H, W, 3] uint8
    target: np.ndarray  # [H, W] int32
    pred: np.ndarray  # [H, W] int32


@dataclass
class Evidence:
    """What a run keeps of its test (``evidence.npz``, :data:`EVIDENCE_ARRAYS`): the report's statistics and
    pictures are computed from it, never by retraining."""

    counts: np.ndarray
    confmat: np.ndarray
    objects: np.ndarray
    boundary: np.ndarray | None = None  # runs tested before boundary metrics have none
    panel_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    panel: list[PanelImage] = field(default_factory=list)
    panel_slice: np.ndarray | None = None  # volumes: the slice shown of each panel volume (runs before it have none)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays as ``evidence.npz`` names them."""
        out = {"counts": self.counts, "objects": self.objects}
        if self.boundary is not None:
            out["boundary"] = self.boundary
        out["confmat"] = self.confmat
        out["panel_index"] = self.panel_index
        if self.panel_slice is not None:
            out["panel_slice"] = self.panel_slice
        for k, p in enumerate(self.panel):
            out |= {f"panel_image_{k}": p.image, f"panel_target_{k}": p.target, f"panel_pred_{k}": p.pred}
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Evidence:
        """The evidence in ``arrays``; a ``ValueError`` saying what is wrong when they are not what a run writes."""
        _check_evidence(arrays)
        index = arrays.get("panel_index", np.zeros(0, np.int64))
        panel = [PanelImage(arrays[f"panel_image_{k}"], arrays[f"panel_target_{k}"], arrays[f"panel_pred_{k}"])
                 for k in range(len(index))]  # fmt: skip
        return cls(arrays["counts"], arrays["confmat"], arrays["objects"], arrays.get("boundary"), index, panel,
                   arrays.get("panel_slice"))  # fmt: skip


def _check_evidence(a: dict[str, np.ndarray]) -> None:
    """Shapes, dtypes and values of :data:`EVIDENCE_ARRAYS` (a file edited or written by something else is refused)."""
    for key in ("counts", "confmat", "objects"):
        if key not in a:
            raise ValueError(f"it has no {key!r} array")
    counts, confmat, objects = a["counts"], a["confmat"], a["objects"]
    if counts.ndim != 3 or counts.shape[2] != 3:
        raise ValueError(f"counts is {list(counts.shape)}, expected [images, classes, 3]")
    n, c = counts.shape[:2]
    shapes = {"confmat": (confmat, (c, c)), "objects": (objects, (n, 4))}
    if "boundary" in a:
        shapes["boundary"] = (a["boundary"], (n, c, 2))
    for key, (arr, want) in shapes.items():
        if arr.shape != want:
            raise ValueError(f"{key} is {list(arr.shape)}, expected {list(want)} for {n} test images and {c} classes")
    for key in ("counts", "confmat", "objects"):
        if not np.issubdtype(a[key].dtype, np.integer) or (a[key] < 0).any():
            raise ValueError(f"{key} must hold non-negative integer counts, found {a[key].dtype}")
    if "boundary" in a and np.isinf(a["boundary"]).any():
        raise ValueError("boundary holds infinite distances")
    if "panel_slice" in a and a["panel_slice"].shape != a.get("panel_index", np.zeros(0)).shape:
        raise ValueError(f"panel_slice is {list(a['panel_slice'].shape)}, expected one slice per panel volume")


def machine_kind(machine: dict[str, Any]) -> str:
    """``AMD EPYC (AVX2); torch 2.14.1, oneDNN 3.12.0`` — what decides the last digits of a run's numbers."""
    hw = f"{machine.get('cpu') or 'unknown CPU'} ({machine.get('isa') or '?'})"
    if machine.get("gpu"):
        hw += f", {machine['gpu']}"
    sw = [f"torch {machine.get('torch')}"] + [f"{k} {machine[key]}" for k, key in (("CUDA", "cuda"), ("oneDNN", "onednn")) if machine.get(key)]
    return f"{hw}; {', '.join(sw)}"


class DamagedEvidence(ValueError):
    """An ``evidence.npz`` that is not what a run writes (truncated, edited, wrong shapes or types)."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path} is damaged ({why})")
        self.path, self.why = path, why


def write_evidence(run_dir: Path, evidence: Evidence) -> None:
    """Atomically write the run's ``evidence.npz`` (the report reads it; it never retrains)."""
    with atomic_file(evidence_path(run_dir), "wb") as fh:
        np.savez_compressed(fh, **evidence.arrays())


def predictions_dir(run_dir: Path) -> Path:
    return run_dir / PREDICTIONS_DIR


def write_prediction(folder: Path, index: int, pred: np.ndarray, spacing: list[float]) -> None:
    """Atomically write one test volume's predicted labels ``[D, H, W]`` and its spacing (mm) as ``<index>.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / f"{index:05d}.npz", "wb") as fh:
        np.savez_compressed(fh, pred=pred.astype(np.uint8 if pred.max(initial=0) < 256 else np.int32),
                            spacing=np.asarray(spacing, np.float64))  # fmt: skip


def read_prediction(run_dir: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Test volume ``index``'s predicted labels and spacing, as the test wrote them."""
    with np.load(predictions_dir(run_dir) / f"{index:05d}.npz", allow_pickle=False) as f:
        return f["pred"].astype(np.int64), f["spacing"]


def read_evidence(run_dir: Path) -> Evidence | None:
    """The run's evidence, or ``None`` when it has none (older runs); a damaged file raises :class:`DamagedEvidence`."""
    import zipfile

    path = evidence_path(run_dir)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return Evidence.from_arrays({k: f[k] for k in f.files})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DamagedEvidence(path, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None


def write_record(run_dir: Path, record: RunRecord) -> None:
    """Atomically write ``record`` as the run's ``metrics.json``."""
    write_json_atomic(record_path(run_dir), record.to_json())


def write_run_config(run_dir: Path, run_cfg: RunConfig) -> None:
    write_text_atomic(config_path(run_dir), dump_yaml(run_cfg))


def read_record(run_dir: Path) -> RunRecord | None:
    """The run's record; ``None`` if it has none yet. A damaged file raises :class:`DamagedRecord`."""
    path = record_path(run_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedRecord(path, f"cannot be read: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DamagedRecord(path, f"not valid JSON: {e}") from None
    return RunRecord.from_json(data, path)


def read_status(run_dir: Path) -> str:
    """``ok``, ``failed``, ``running``, ``interrupted``, ``missing`` — or ``damaged``."""
    try:
        rec = read_record(run_dir)
    except DamagedRecord:
        return DAMAGED
    return rec.status if rec else MISSING


@dataclass
class Scan:
    """Every run record under a runs folder, and the ``metrics.json`` files that are damaged."""

    records: list[RunRecord]
    damaged: list[DamagedRecord]


def run_dirs(out: Path) -> Iterator[Path]:
    """Run folders under ``out`` that hold a record file, sorted."""
    for path in sorted(Path(out).glob(f"*/*/{RECORD_FILE}")):
        yield path.parent


def planned_run_dirs(out: Path) -> list[Path]:
    """Run folders under ``out`` that a launcher has touched — a config, a record or a claim in them (queued,
    claimed, or further) — sorted, each once (a folder linked under a second name is the same run)."""
    found: dict[Path, Path] = {}
    for name in (CONFIG_FILE, RECORD_FILE, CLAIM_FILE):
        for path in sorted(Path(out).glob(f"*/*/{name}")):
            found.setdefault(path.parent.resolve(), path.parent)
    return sorted(found.values())


def scan_runs(out: Path) -> Scan:
    """Read every run record under ``out``."""
    records, damaged = [], []
    for run_dir in run_dirs(out):
        try:
            rec = read_record(run_dir)
        except DamagedRecord as e:
            damaged.append(e)
            continue
        if rec is not None:
            records.append(rec)
    return Scan(records, damaged)


# --- what each rank saw when a run failed ---------------------------------------------------------


def write_rank_error(
    run_dir: Path, rank: int, error: str, traceback: str, interrupted: bool, primary: bool = True
) -> None:
    """Write ``errors/rank<rank>.json``; best effort (a full disk must not hide the error being raised).

    ``primary`` is False for a rank that stops only because another rank failed (all ranks raise on a
    NaN seen on one), so the record names the rank where it happened, whichever wrote first.
    """
    entry = {"rank": rank, "time": time.time(), "interrupted": interrupted, "primary": primary,
             "error": error, "traceback": traceback}  # fmt: skip
    try:
        write_json_atomic(errors_dir(run_dir) / f"rank{rank}.json", entry)
    except OSError:
        pass


def clear_rank_errors(run_dir: Path) -> None:
    for path in errors_dir(run_dir).glob("rank*.json"):
        path.unlink(missing_ok=True)


def take_rank_error(record: RunRecord, run_dir: Path, world_size: int = 0, wait_s: float = 5.0) -> bool:
    """Put the earliest error any rank wrote into ``record`` (with its rank); False if no rank wrote one.

    Waits up to ``wait_s`` for ``world_size`` ranks to have written theirs.
    """
    deadline = time.monotonic() + wait_s
    while True:
        found = [e for e in (read_json(p) for p in errors_dir(run_dir).glob("rank*.json")) if e]
        if len(found) >= world_size or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    failures = [e for e in found if not e.get("interrupted")]
    if not failures:
        return False
    first = min([e for e in failures if e.get("primary", True)] or failures, key=lambda e: e["time"])
    record.error, record.failed_rank, record.traceback = first["error"], first["rank"], first["traceback"]
    if " on rank " not in record.error:
        record.error += f" (on rank {first['rank']})"
    return True
