"""The wall around taskmaster.notebook, checked by machine until import-linter contracts land.

The panels' package shows and clicks; it talks to a stack only through taskmaster.client
(HTTP + SSE) and the shared model. Every import in its modules, at module level or inside
a function, relative or absolute, and every module named to importlib, is checked here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskmaster

PACKAGE = Path(taskmaster.__file__).resolve().parent
NOTEBOOK_FORBIDDEN = (
    "taskmaster.store", "taskmaster.coordinator", "taskmaster.cluster", "taskmaster.scheduler",
    "taskmaster.worker", "taskmaster.lab", "asyncpg", "grpc",
)
# calls whose first argument names a module they import
_IMPORTING_CALLS = frozenset({"import_module", "__import__", "files", "find_spec"})


def imports(source: str, package: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every module the source imports or names to an importing call;
    `from a import b` yields both a and a.b (b may be a module)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package the module is in
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in _IMPORTING_CALLS and isinstance(first, ast.Constant) \
                    and isinstance(first.value, str):
                yield node.lineno, first.value


def forbidden_imports(source: str, package: str, forbidden: tuple[str, ...]
                      ) -> dict[int, str]:
    """{line: module} of the imports of forbidden modules (or of modules inside them)."""
    found: dict[int, str] = {}
    for line, module in imports(source, package):
        if any(module == f or module.startswith(f + ".") for f in forbidden):
            found.setdefault(line, module)
    return found


def violations(folder: Path, package: str, forbidden: tuple[str, ...]) -> list[str]:
    """`path:line imports module` for each forbidden import under folder."""
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in sorted(folder.rglob("*.py"))
        for line, module in forbidden_imports(path.read_text(), package, forbidden).items()
    ]


def test_the_checker_sees_every_kind_of_import() -> None:
    source = '''
import grpc.aio
from taskmaster import store
from ..cluster.local import LocalCluster
from . import state

def later():
    import asyncpg
    importlib.import_module("taskmaster.lab.stack")
    resources.files("taskmaster.scheduler")
'''
    found = [m for _, m in imports(source, "taskmaster.notebook")]
    for module in ("grpc.aio", "taskmaster.store", "taskmaster.cluster.local",
                   "taskmaster.notebook.state", "asyncpg", "taskmaster.lab.stack",
                   "taskmaster.scheduler"):
        assert module in found
    lines = forbidden_imports(source, "taskmaster.notebook", NOTEBOOK_FORBIDDEN)
    assert sorted(lines) == [2, 3, 4, 8, 9, 10]  # all but the sibling module


def test_the_notebook_package_speaks_only_http_and_sse() -> None:
    modules = sorted((PACKAGE / "notebook").rglob("*.py"))
    assert len(modules) >= 9, "the panels' modules are where this test looks for them"
    assert violations(PACKAGE / "notebook", "taskmaster.notebook", NOTEBOOK_FORBIDDEN) == []


@pytest.mark.timeout(60)
def test_importing_the_panels_loads_nothing_behind_the_wall() -> None:
    # transitive imports too: what a kernel loads for the panels alone
    code = (
        "import sys, taskmaster.notebook\n"
        "from taskmaster.notebook import source\n"
        "source.sql('assign_tasks')\n"
        f"bad = {NOTEBOOK_FORBIDDEN!r}\n"
        "print(sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
