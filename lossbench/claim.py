"""Claims: the one rule that keeps two launchers from training one run.

A run is *claimed* before it trains: ``<run_dir>/claim.json`` (:func:`lossbench.record.claim_path`)
is created atomically — written to a temporary file, then hard-linked into place, which fails if a
claim is there — and holds its owner: host, pid (and that process's start time, so a reused pid is
not mistaken for it), the SLURM job id when a scheduler owns it, the time, and a *token*. The token
is what a launcher hands to whoever trains for it (the ``lossbench train`` process it starts, the
SLURM job it submits): a holder of the token owns the claim.

A claim is taken over only when its owner is provably gone: a pid that is dead on this host, or a
SLURM job that ``squeue`` no longer lists. A claim made on another host without a job id, or whose
job cannot be checked (no ``squeue``, the controller not answering), is kept: a run trained twice
is worse than a run that waits. Two launchers that find one stale claim race for one marker file
(``claim.takeover-<token>``, created exclusively): one wins, the other sees the run as claimed.
On this machine a claim is released when the run's process ends, however it ended (``compare``
releases it for the process it started; ``lossbench train`` releases its own): an interrupted run
is resumed by whoever claims it next. A SLURM job releases its claim only when the run is finished
(``ok`` or ``failed``): a job stopped by preemption or its time limit keeps it, so its requeued
attempt finds the claim still its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lossbench.io import temporary_beside, write_json_atomic
from lossbench.record import claim_path

TOKEN_ENV = "LOSSBENCH_CLAIM_TOKEN"  # set by a launcher for the ``lossbench train`` process it starts


@dataclass(frozen=True)
class Owner:
    """Who holds a claim."""

    token: str
    host: str
    pid: int
    pid_start: int | None  # the process's start time in clock ticks since boot (Linux), against pid reuse
    job: str | None  # SLURM job id (``<array>_<task>`` for an array task): alive while squeue lists it
    by: str  # compare, train or job: what made the claim
    time: float

    def describe(self) -> str:
        if self.damaged:
            return "nobody: its claim.json is damaged (not a claim lossbench wrote)"
        who = f"SLURM job {self.job}" if self.job else f"pid {self.pid} on {self.host}"
        return f"{who} ({self.by}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.time))})"

    @property
    def damaged(self) -> bool:
        """A claim file that is not a claim (broken JSON, wrong fields): its owner cannot be shown alive."""
        return self.by == DAMAGED

    @classmethod
    def from_json(cls, data: Any) -> Owner:
        """An owner from a claim file's JSON; a ``ValueError`` when it is not one (missing or mistyped fields)."""
        types = {"token": str, "host": str, "pid": int, "pid_start": (int, type(None)), "job": (str, type(None)),
                 "by": str, "time": (int, float)}  # fmt: skip
        if not isinstance(data, dict) or set(data) != set(types):
            raise ValueError(f"expected the fields {sorted(types)}, found {data!r:.200}")
        for key, kind in types.items():
            if not isinstance(data[key], kind) or isinstance(data[key], bool):
                raise ValueError(f"{key} is {data[key]!r}")
        return cls(**data)


DAMAGED = "damaged"
"""``Owner.by`` of a claim file that cannot be read as a claim."""


def new_token() -> str:
    return uuid.uuid4().hex


def me(by: str, token: str | None = None, job: str | None = None, pid: int | None = None) -> Owner:
    """An owner for this process (or ``pid`` on this host), with ``token`` (default: a new one)."""
    pid = os.getpid() if pid is None else pid
    return Owner(token or new_token(), socket.gethostname(), pid, process_start(pid), job, by, time.time())


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or ``None`` where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: after the parenthesised command name


def pid_alive(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` is the one that started at ``started`` and is alive (not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the pid exists
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return False
    return started is None or int(fields[19]) == started


def slurm_jobs() -> set[str] | None:
    """Every job id ``squeue`` lists now (array tasks one by one, ``<array>_<task>``), or ``None`` when
    SLURM cannot be asked (no ``squeue`` on the PATH, or it fails)."""
    if shutil.which("squeue") is None:
        return None
    try:
        r = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return {line.strip() for line in r.stdout.splitlines() if line.strip()}


class Liveness:
    """Answers "is this owner gone?" for many claims with one ``squeue`` call per refresh."""

    def __init__(self) -> None:
        self._jobs: set[str] | None = None
        self._asked = False

    def refresh(self) -> None:
        self._asked = False

    def alive(self, owner: Owner) -> bool:
        """False only when the owner is provably gone (or its claim is damaged: no one can show it alive)."""
        if owner.damaged:
            return False
        if owner.job:
            if not self._asked:
                self._jobs, self._asked = slurm_jobs(), True
            return self._jobs is None or owner.job in self._jobs
        if owner.host != socket.gethostname():
            return True  # another host's pid: cannot be checked from here
        return pid_alive(owner.pid, owner.pid_start)


def release_hint(owner: Owner, run_dir: Path) -> str:
    """How to release a claim lossbench cannot see the end of (another host's process, no SLURM job); "" otherwise."""
    if owner.damaged or owner.job or owner.host == socket.gethostname():
        return ""
    return (f"lossbench cannot see processes of {owner.host}: if pid {owner.pid} there is gone, delete "
            f"{claim_path(run_dir)} and the waiting compare takes the run over")


def read_claim(run_dir: Path) -> Owner | None:
    """The run's claim, or ``None``. Claims are written whole (a link or an atomic replace), so a file that still
    cannot be read as a claim after a second of retries is damaged: a damaged owner (:attr:`Owner.damaged`),
    which no one can show alive, so launchers take it over as they take over a stale claim."""
    path = claim_path(run_dir)
    for _ in range(20):
        try:
            text = path.read_text()
            return Owner.from_json(json.loads(text))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError):
            time.sleep(0.05)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    token = f"damaged-{stat.st_ino}-{stat.st_mtime_ns}"  # the same for every launcher that finds this file
    return Owner(token, "", -1, None, None, DAMAGED, stat.st_mtime)


def claim(run_dir: Path, owner: Owner, liveness: Liveness | None = None) -> Owner | None:
    """Claim ``run_dir`` for ``owner``: ``None`` when ``owner`` holds it now, else the live holder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = claim_path(run_dir)
    while True:
        if _create(path, owner):
            return None
        holder = read_claim(run_dir)
        if holder is None:
            continue  # released between our two looks
        if holder.token == owner.token:
            return None
        if (liveness or Liveness()).alive(holder):
            return holder
        # its owner is gone: one launcher wins the marker of this stale claim and replaces it
        if not _create(run_dir / f"claim.takeover-{holder.token}", owner):
            return holder
        write_json_atomic(path, asdict(owner))
        return None


def update(run_dir: Path, owner: Owner) -> bool:
    """Rewrite the claim (a job id, the process that trains) if ``owner``'s token holds it."""
    holder = read_claim(run_dir)
    if holder is None or holder.token != owner.token:
        return False
    write_json_atomic(claim_path(run_dir), asdict(owner))
    return True


def release(run_dir: Path, token: str) -> None:
    """Remove the claim if ``token`` holds it (and the takeover markers, which only guard a claim in place)."""
    run_dir = Path(run_dir)
    holder = read_claim(run_dir)
    if holder is not None and holder.token == token:
        claim_path(run_dir).unlink(missing_ok=True)
        for marker in run_dir.glob("claim.takeover-*"):
            marker.unlink(missing_ok=True)


def held_by(owner: Owner, job: str | None, pid: int | None = None) -> Owner:
    """``owner``'s claim (same token) now held by process ``pid`` of this host (default: this one),
    and by SLURM job ``job`` when a scheduler runs it."""
    pid = os.getpid() if pid is None else pid
    return replace(owner, host=socket.gethostname(), pid=pid, pid_start=process_start(pid), job=job, time=time.time())


def _create(path: Path, owner: Owner) -> bool:
    """Create ``path`` holding ``owner`` if it does not exist: whole or not at all (link fails if there)."""
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(owner), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
