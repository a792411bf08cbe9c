"""How a ``lossbench`` command ends when something goes wrong: one line on stderr and an exit status.

Light on purpose — the command line imports it before it knows whether it will train anything, so
``lossbench status`` and ``lossbench losses`` never import the training stack.
"""

from __future__ import annotations

import sys

from lossbench.config import ConfigError


class SuiteError(RuntimeError):
    """The suite cannot go on (its folder cannot be written); finished runs are intact."""


DISK_FULL = 75
"""The exit status of a run process stopped by a full disk (EX_TEMPFAIL): the run is resumable, and ``compare`` stops the
suite with one sentence instead of failing run after run."""


class DiskFull(OSError):
    """A write found no space left: the run stops resumably and the suite stops (:data:`DISK_FULL`)."""

    def __str__(self) -> str:
        return str(self.strerror)


def exit_status(exc: BaseException) -> int:
    """The exit status of a ``lossbench`` process that ``exc`` ends, after one line on stderr saying why:
    2 for a problem with the config or data (told before training wherever it can be), 1 for a run that
    failed, 130 for an interrupt (resumable). Any other exception is raised again."""
    if isinstance(exc, (ConfigError, ValueError)):
        print(f"lossbench: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, FloatingPointError):
        print(f"lossbench: run failed: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, DiskFull):
        print(f"lossbench: {exc}", file=sys.stderr)
        return DISK_FULL
    if isinstance(exc, KeyboardInterrupt):
        print("lossbench: interrupted (resumable: run the same command again)", file=sys.stderr)
        return 130
    raise exc
