"""Ctrl-C on `taskmaster up` in the middle of a run, then `taskmaster up` again on the same data."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from taskmaster.cluster.base import pid_alive
from taskmaster.cluster.local import LocalCluster, free_port
from tests.chaos.harness import (
    CHILD_ENV,
    FAST,
    Feed,
    Stack,
    assert_exactly_once,
    fast_settings,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos


class Up:
    """`taskmaster up` as a user runs it, in a terminal of its own."""

    def __init__(self, home: Path, database_url: str, scheduler_port: int) -> None:
        self.home = home
        self.database_url = database_url
        self.port = scheduler_port
        self.url = f"http://127.0.0.1:{scheduler_port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.output = home / "up.log"

    def env(self) -> dict[str, str]:
        """The user's environment: fast failure detection, the chaos handlers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
        env.update({f"TASKMASTER_{k.upper()}": str(v) for k, v in FAST.items()})
        env.update(CHILD_ENV)
        env["TASKMASTER_HOME"] = str(self.home)
        return env

    async def start(self) -> None:
        """Run it and wait until the API answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self.output.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "taskmaster", "up", "--workers", "3", "--concurrency", "4",
                "--database-url", self.database_url, "--scheduler-port", str(self.port),
                "--coordinator-port", str(free_port()), env=self.env(), stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        await wait_for(self._ready, 60, message="taskmaster up to serve its API", interval=0.1)

    async def _ready(self) -> bool:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with aiohttp.ClientSession() as http, http.get(self.url + "/readyz") as r:
                return r.status == 200
        return False

    async def ctrl_c(self, timeout: float = 60) -> int:
        """SIGINT, as a terminal sends on Ctrl-C; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        """Clean up after a failed test: Ctrl-C, Ctrl-C again, then SIGKILL."""
        for sig, wait in ((signal.SIGINT, 20), (signal.SIGINT, 10), (signal.SIGKILL, 5)):
            if self.proc is None or self.proc.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError, TimeoutError):
                self.proc.send_signal(sig)
                await asyncio.wait_for(self.proc.wait(), wait)


@contextlib.asynccontextmanager
async def up(home: Path, database_url: str, port: int) -> AsyncIterator[Up]:
    """A running `taskmaster up`."""
    u = Up(home, database_url, port)
    try:
        await u.start()
        yield u
    finally:
        await u.kill()


async def test_ctrl_c_and_up_again(database_url: str, tmp_path: Path) -> None:
    """Every task unfinished at Ctrl-C completes after the restart; none twice, none lost."""
    home, port = tmp_path / "tm", free_port()
    # a Stack only for its HTTP/SQL helpers; the processes are `taskmaster up`'s own
    s = Stack(LocalCluster(fast_settings(tmp_path, database_url), scheduler_port=port),
              database_url)
    try:
        async with Feed(f"http://127.0.0.1:{port}") as feed:
            async with up(home, database_url, port) as first:
                await wait_for(lambda: _workers_online(s, 3), 30, message="3 workers online")
                pids = {w["pid"] for w in await s.workers()}
                ids = await s.batch("chaos-sleep", 240, {"seconds": 0.3})
                await wait_for(lambda: _completed_at_least(s, ids, 40), 30, message="40 tasks done")
                assert await first.ctrl_c() == 0, first.output.read_text()
            assert not [p for p in pids if pid_alive(p)], "a worker outlived `taskmaster up`"
            left = await s.unfinished(ids)
            assert left > 0, "the run ended before Ctrl-C: the test proved nothing"

            async with up(home, database_url, port) as second:
                await s.wait_completed(ids, timeout=60)
                attempts = await assert_exactly_once(s, feed, ids)
                assert await second.ctrl_c() == 0, second.output.read_text()
        assert feed.connects >= 2  # it followed the feed across the restart
        # a clean stop let the workers finish what they ran (or hand back, unstarted, what
        # reached them while they drained): no task ran twice
        ran = feed.count("task_running")
        assert {t: n for t, n in ran.items() if t in attempts and n != 1} == {}
        # and a delivery that crossed a worker's goodbye went back without using an attempt
        assert not [e for e in feed.of("task_reassigned") if e["task_id"] in attempts]
        assert all(a == 1 or feed.count("task_rejected")[t] for t, a in attempts.items())
    finally:
        await s.http.close()


async def _workers_online(s: Stack, n: int) -> bool:
    return await s.online() >= n


async def _completed_at_least(s: Stack, ids: list[str], n: int) -> bool:
    return len(ids) - await s.unfinished(ids) >= n


async def test_a_second_ctrl_c_stops_at_once_and_leaves_nothing_behind(
    database_url: str, tmp_path: Path
) -> None:
    """Ctrl-C twice: the workers give their tasks back at once, no process stays behind,
    and the next `taskmaster up` runs those tasks to completion, once each."""
    home, port = tmp_path / "tm", free_port()
    s = Stack(LocalCluster(fast_settings(tmp_path, database_url), scheduler_port=port),
              database_url)
    try:
        async with Feed(f"http://127.0.0.1:{port}") as feed:
            async with up(home, database_url, port) as first:
                await wait_for(lambda: _workers_online(s, 3), 30, message="3 workers online")
                members = json.loads((home / "stack.json").read_text())["members"]
                pids = {m["pid"] for m in members}
                assert len(pids) == 5  # coordinator, scheduler, 3 workers
                ids = await s.batch("chaos-sleep", 6, {"seconds": 5.0})
                await wait_for(lambda: _running(s, ids), 10, message="all 6 tasks running")
                assert first.proc is not None
                first.proc.send_signal(signal.SIGINT)
                await wait_for(lambda: _draining(s), 5, message="the workers to start draining")
                started = time.monotonic()
                assert await first.ctrl_c(timeout=20) == 0, first.output.read_text()
                # at once: long before the 5 s tasks could have finished
                assert time.monotonic() - started < 4.0
            left = [p for p in pids if pid_alive(p)]
            for pid in left:  # do not leave them to the next test either
                os.kill(pid, signal.SIGKILL)
            assert not left, "a process outlived `taskmaster up`"
            assert await s.unfinished(ids) == len(ids)

            async with up(home, database_url, port) as second:
                await s.wait_completed(ids, timeout=60)
                attempts = await assert_exactly_once(s, feed, ids)
                assert await second.ctrl_c() == 0, second.output.read_text()
        # the hurried workers' deliveries may have run: they count as attempts
        assert set(attempts.values()) == {2}
    finally:
        await s.http.close()


async def _running(s: Stack, ids: list[str]) -> bool:
    rows = await s.fetch("SELECT count(*) AS n FROM tasks WHERE id = ANY($1::uuid[]) "
                         "AND status = 'running'", ids)
    return bool(rows[0]["n"] == len(ids))


async def _draining(s: Stack) -> bool:
    rows = await s.fetch("SELECT count(*) AS n FROM workers WHERE status = 'draining'")
    return bool(rows[0]["n"] > 0)
