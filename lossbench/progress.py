"""How long work says where it is: durations as people read them, and "n of N, ETA" for data preparation."""

from __future__ import annotations

import sys
import time
from typing import Callable


def fmt_time(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: a duration in progress lines."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 run``, ``2 runs`` (``words``: an irregular plural)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Counter:
    """Progress of a preparation of ``total`` items (images, files, volumes): once it has taken longer than
    ``quiet_s``, a line ``<what>: n of N (p %), ETA …`` at most every ``every_s`` seconds, and one when it ends.
    Work that ends within ``quiet_s`` says nothing."""

    def __init__(self, what: str, total: int, unit: str = "items", quiet_s: float = 3.0, every_s: float = 5.0,
                 say: Callable[[str], None] = _stderr, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.what, self.total, self.unit = what, total, unit
        self.quiet_s, self.every_s, self.say, self.clock = quiet_s, every_s, say, clock
        self.done = 0
        self.start = clock()
        self.last = self.start
        self.spoke = False

    def add(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.start < self.quiet_s or (self.spoke and now - self.last < self.every_s) or self.done >= self.total:
            return
        self.last, self.spoke = now, True
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.say(f"{self.what}: {self.done} of {self.total} {self.unit} ({100 * self.done / max(self.total, 1):.0f} %), "
                 f"ETA {fmt_time(eta) if eta != float('inf') else '?'}")  # fmt: skip

    def finish(self) -> None:
        """Say the total time, if anything was said before."""
        if self.spoke:
            self.say(f"{self.what}: {self.total} {self.unit} in {fmt_time(self.clock() - self.start)}")
