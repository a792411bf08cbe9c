"""Read back what an offline W&B run logged (its ``.wandb`` file), without W&B's servers.

Offline runs keep no readable summary; their ``run-*.wandb`` file is a LevelDB-style log of
protobuf records. :func:`logged_values` returns the last value logged for each key, so tests (and
curious users) can check that W&B received the same numbers as ``metrics.json``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7  # ":W&B" + 2-byte magic + 1-byte version


def _records(data: bytes):
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # block trailer too small for a header: padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            break
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk
            pending = b""


def logged_values(wandb_file: str | Path) -> dict[str, Any]:
    """Last value of every history and summary key in an offline run's ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    values: dict[str, Any] = {}
    for raw in _records(Path(wandb_file).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind not in ("history", "summary"):
            continue
        items = record.history.item if kind == "history" else record.summary.update
        for item in items:
            values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def offline_run_files(run_dir: str | Path) -> list[Path]:
    """The ``.wandb`` files of the offline W&B runs under a lossbench run directory, oldest first."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))


def run_info(wandb_file: str | Path) -> dict[str, Any]:
    """The run's name, group and tags as an offline ``.wandb`` file holds them (the last ``run`` record)."""
    from wandb.proto import wandb_internal_pb2 as pb

    info: dict[str, Any] = {}
    for raw in _records(Path(wandb_file).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            run = record.run
            info = {"name": run.display_name, "group": run.run_group, "tags": list(run.tags)}
    return info
