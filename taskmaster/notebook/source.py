"""Show the real code: a named SQL query or a Python function, with the file and lines it comes from.

Deep-dive notebooks answer "show me in the code" with the code that runs, read from the
installed package at display time, never a copy that could drift.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import taskmaster

PACKAGE_ROOT = Path(taskmaster.__file__).resolve().parent
LINK_BASE = "../"  # from notebooks/ to the repository root


@dataclass(frozen=True, slots=True)
class Listing:
    """A piece of source with where it comes from; renders as Markdown in a notebook."""

    title: str
    path: str  # relative to the repository root, e.g. taskmaster/store/queries.sql
    first: int  # 1-based line numbers
    last: int
    code: str
    language: str

    @property
    def link(self) -> str:
        """A link to the lines relative to notebooks/, for a page that renders the
        repository (a Lab rooted at notebooks/ cannot open it: the listing shows the path)."""
        return f"{LINK_BASE}{self.path}#L{self.first}-L{self.last}"

    def _repr_markdown_(self) -> str:
        return (
            f"**{self.title}**: `{self.path}`, lines {self.first}-{self.last}\n\n"
            f"```{self.language}\n{self.code.rstrip()}\n```"
        )

    def __contains__(self, text: str) -> bool:
        return text in self.code

    def __repr__(self) -> str:
        return f"Listing({self.title!r}, {self.path!r})"


def sql(name: str) -> Listing:
    """The named query of taskmaster/store/queries.sql, with its comment header."""
    # read as a file of the package: the panels' side never imports the store
    text = resources.files("taskmaster").joinpath("store", "queries.sql").read_text()
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"-- name: {name}"), None)
    if start is None:
        raise KeyError(f"no query named {name!r} in queries.sql")
    end = start + 1
    while end < len(lines) and not lines[end].startswith("-- name: "):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return Listing(
        title=f"query {name}", path="taskmaster/store/queries.sql", first=start + 1, last=end,
        code="\n".join(lines[start:end]), language="sql",
    )


def code(obj: Any) -> Listing:
    """A Python function, method or class of the package, as it is in its file."""
    target = inspect.unwrap(obj)
    file = Path(inspect.getsourcefile(target) or "").resolve()
    lines, first = inspect.getsourcelines(target)
    try:
        path = file.relative_to(PACKAGE_ROOT.parent).as_posix()
    except ValueError:
        path = file.name
    return Listing(
        title=getattr(target, "__qualname__", str(target)), path=path, first=first,
        last=first + len(lines) - 1, code="".join(lines), language="python",
    )
