"""Load the named queries of queries.sql once."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.M)


def parse(text: str) -> dict[str, str]:
    """Split a file of `-- name: x` sections into {name: sql}."""
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in out:
            raise ValueError(f"query {name!r} is defined twice")
        out[name] = body.strip().rstrip(";")
    return out


@cache
def queries() -> dict[str, str]:
    """All named queries."""
    return parse(resources.files("taskmaster.store").joinpath("queries.sql").read_text())


def q(name: str) -> str:
    """One named query's SQL."""
    return queries()[name]
