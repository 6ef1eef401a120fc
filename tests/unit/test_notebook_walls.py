"""The wall around taskmaster.notebook, as a kernel sees it.

The panels' package shows and clicks; it talks to a stack only through taskmaster.client
(HTTP + SSE) and the shared model. lint-imports checks its imports (pyproject.toml,
tests/unit/test_walls.py); this checks what importing it really loads, dynamic imports
included.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import taskmaster

PACKAGE = Path(taskmaster.__file__).resolve().parent
NOTEBOOK_FORBIDDEN = (
    "taskmaster.store", "taskmaster.coordinator", "taskmaster.cluster", "taskmaster.scheduler",
    "taskmaster.worker", "taskmaster.lab", "asyncpg", "grpc",
)


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
