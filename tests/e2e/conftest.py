"""End-to-end fixtures: a real stack of processes (LocalCluster) on this test's database."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from taskmaster.cluster.local import LocalCluster
from taskmaster.config import Settings
from tests.helpers import wait_for

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
