"""A folder's class list: ``classes.txt``, one class name per line (the class with mask value k on line k + 1).

Light on purpose (no torch): the config reads it when a folder suite is loaded, and init when it surveys a folder.
"""

from __future__ import annotations

from pathlib import Path


def read_class_list(listing: Path) -> list[str]:
    """The class names of a ``classes.txt``: one per line, the class with mask value k on line k + 1."""
    lines = [line.strip() for line in listing.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()  # trailing blank lines end the file
    if "" in lines:
        raise ValueError(f"{listing} line {lines.index('') + 1} is empty: write one class name per line, the "
                         "class with mask value k on line k + 1")  # fmt: skip
    if len(lines) < 2:
        raise ValueError(f"{listing} names {len(lines)} class(es); a dataset needs at least two")
    return lines
