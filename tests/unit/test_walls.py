"""The walls between the rooms hold, and a machine says so when one is breached.

`make test` runs `lint-imports` with the contracts of pyproject.toml; these tests run the
same contracts here, show that breaching one (a panel importing asyncpg) fails them, and
check with grimp that no module of the package imports itself through others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts over the package found in package_parent."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
         "sys.exit(lint_imports_command())", "--config", str(ROOT / "pyproject.toml"),
         "--no-cache"],
        cwd=package_parent, env=env, capture_output=True, text=True, timeout=120)


def test_the_contracts_are_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 7 kept, 0 broken." in done.stdout


def test_a_panel_importing_asyncpg_breaks_the_walls(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "taskmaster", tmp_path / "taskmaster",
                    ignore=shutil.ignore_patterns("__pycache__"))
    views = tmp_path / "taskmaster" / "notebook" / "views.py"
    views.write_text(views.read_text() + "\nimport asyncpg  # a wall breached\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "taskmaster.notebook.views -> asyncpg" in done.stdout
    assert "Only the store speaks to PostgreSQL (imports asyncpg) BROKEN" in done.stdout


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan)."""
    modules = sorted(m for m in graph.modules if m.startswith("taskmaster"))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in sorted(graph.find_modules_directly_imported_by(m)):
            if not n.startswith("taskmaster"):
                continue
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = set()
            while True:
                n = stack.pop()
                on_stack.discard(n)
                group.add(n)
                if n == m:
                    break
            groups.append(group)

    for m in modules:
        if m not in index:
            visit(m)
    return groups


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("taskmaster", cache_dir=None)
    # a package's __init__ re-exporting its modules is how Python packages are made, not
    # a circle: leave out the imports of a package by its own descendants
    for module in list(graph.modules):
        for imported in list(graph.find_modules_directly_imported_by(module)):
            if module.startswith(imported + "."):
                graph.remove_import(importer=module, imported=imported)
    circles = [g for g in strongly_connected(graph) if len(g) > 1]
    assert circles == []
