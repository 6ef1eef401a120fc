"""End-to-end fixtures: a real stack of processes (LocalCluster, or `taskmaster up` in
another process) on this test's database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskmaster.cluster.local import LocalCluster
from taskmaster.config import Settings
from tests.e2e.up import Stack, _len_is, stack_env
from tests.helpers import interrupt, wait_for

ROOT = Path(__file__).resolve().parents[2]
# the workers import the tests' task module from this checkout, wherever pytest runs
CHILD_ENV = {
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
TASKS_MODULE = "tests.integration.sample_tasks"


def stack_settings(database_url: str, home: Path, **changes: object) -> Settings:
    """Settings of a test stack: its own database and home, no fixed ports."""
    return Settings(database_url=database_url, home=home, metrics_port=0,
                    tasks=TASKS_MODULE).with_(**changes)


async def workers_online(url: str, n: int, timeout: float = 30.0) -> None:
    """Until the scheduler lists n online workers (start() returns before they register)."""
    async with aiohttp.ClientSession() as http:
        async def online() -> bool:
            async with http.get(url + "/api/workers") as resp:
                return sum(w["status"] == "online" for w in await resp.json()) == n

        await wait_for(online, timeout, interval=0.05, message=f"{n} workers online")


@pytest.fixture
async def cluster(database_url: str, tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """Coordinator, scheduler and three workers (one slot each) as real processes."""
    stack = LocalCluster(stack_settings(database_url, tmp_path / "home"), workers=3,
                         scheduler_port=0, coordinator_port=0, extra_env=CHILD_ENV)
    try:
        await stack.start()
        await workers_online(stack.url, 3)
        yield stack
    finally:
        await stack.stop(grace=5.0)


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """`taskmaster up --workers 3` on this test's database, ports chosen freely."""
    home = tmp_path / "home"
    env = stack_env(home, database_url)
    log = (tmp_path / "up.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "up", "--workers", "3", "--scheduler-port", "0",
        "--coordinator-port", "0", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
    stack_file = home / "stack.json"

    def ready() -> dict[str, Any] | None:
        assert proc.returncode is None, (tmp_path / "up.log").read_text()
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(stack_file.read_text())
            workers = [m for m in info["members"] if m["role"] == "worker"]
            return info if len(workers) == 3 else None
        return None

    try:
        info = await wait_for(ready, 30, message="`taskmaster up` to write its stack file")
        s = Stack(proc, env, home, info, database_url)
        await wait_for(lambda: _len_is(s.online(), 3), 20, message="3 workers online")
        yield s
    finally:
        await interrupt(proc)
        log.close()
    assert not stack_file.exists(), "`taskmaster up` left its stack file behind"
