"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MEMBER_COLUMNS = ("name", "role", "pid", "host", "state", "restarts")


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = MEMBER_COLUMNS) -> str:
    """A plain-text table, one row per dict."""
    cells = [[str(r.get(c)) if r.get(c) is not None else "-" for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
