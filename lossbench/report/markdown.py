"""Markdown that user strings cannot break: class names, paths and error messages come from the user's data.

A class named ``a|b`` must not add a table column, ``<script>`` must not reach the page as HTML, and a
backtick must not end a code span early.
"""

from __future__ import annotations

import re


def code(value: object) -> str:
    """``value`` as an inline code span that holds any text: the fence is longer than any run of backticks
    inside (CommonMark), padded when the text starts or ends with one. HTML inside a code span is shown, not run."""
    text = str(value)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def text(value: object) -> str:
    """``value`` as plain Markdown text: emphasis, link, heading and code characters escaped, HTML as entities.
    (``|`` is escaped where it matters, in table cells: :func:`table`.)"""
    escaped = re.sub(r"([\\`*_\[\]#])", r"\\\1", str(value))
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def table(header: list[str], rows: list[list[object]]) -> str:
    """A pipe table; a ``|`` inside any cell, the header's included, is escaped so it cannot add a column."""

    def cell(c: object) -> str:
        return re.sub(r"(?<!\\)\|", r"\\|", str(c))

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
