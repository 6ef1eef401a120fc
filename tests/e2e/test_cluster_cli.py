"""`taskmaster up` in one process, driven from "another terminal": scale, kill, crash.

The demo guide scales 3 -> 1 -> 5 and kills a worker with docker; here the same happens to
a running local stack with `taskmaster scale N`, `taskmaster kill WORKER [--graceful]` and
`taskmaster coordinator-crash`, each a separate process that finds the stack through
$TASKMASTER_HOME/stack.json. Throughput is compared between phases as ratios of completion
rates, never against absolute speeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import fetch, wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """A `taskmaster up` process and what its stack file says."""

    proc: asyncio.subprocess.Process
    env: dict[str, str]
    home: Path
    info: dict[str, Any]
    database_url: str

    @property
    def url(self) -> str:
        return str(self.info["url"])

    async def cli(self, *args: str, check: bool = True) -> tuple[int, str]:
        """Run `taskmaster ARGS` as another process; (exit code, stdout + stderr)."""
        return await run_cli(self.env, *args, check=check)

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def post(self, path: str, body: Any) -> Any:
        async with aiohttp.ClientSession() as http, \
                http.post(self.url + path, json=body) as resp:
            assert resp.status in (200, 201), await resp.text()
            return await resp.json()

    async def completed(self) -> int:
        return int((await self.get("/api/stats"))["completed"])

    async def online(self) -> set[str]:
        return {w["name"] for w in await self.get("/api/workers") if w["status"] == "online"}

    async def members(self) -> dict[str, dict[str, Any]]:
        _, out = await self.cli("ps")
        rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
        return {r[0]: {"role": r[1], "pid": r[2], "state": r[4]} for r in rows}


async def run_cli(env: dict[str, str], *args: str, check: bool = True) -> tuple[int, str]:
    """Run `taskmaster ARGS` as another process; (exit code, stdout + stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    if check:
        assert proc.returncode == 0, f"taskmaster {' '.join(args)} failed:\n{text}"
    return proc.returncode or 0, text


def stack_env(home: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    env.update({
        "TASKMASTER_HOME": str(home), "TASKMASTER_DATABASE_URL": database_url,
        "TASKMASTER_METRICS_PORT": "0", "TASKMASTER_DRAIN_GRACE": "10",
        "TASKMASTER_HEARTBEAT_INTERVAL": "0.5", "TASKMASTER_RETRY_BASE": "0.05",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    })
    return env


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
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
    assert not stack_file.exists(), "`taskmaster up` left its stack file behind"


async def _len_is(names: Any, n: int) -> bool:
    return len(await names) == n


async def rate(stack: Stack, tasks: int, timeout: float = 20.0) -> float:
    """Completions per second while `tasks` more tasks complete."""
    start, t0 = await stack.completed(), time.monotonic()
    done = await wait_for(lambda: _at_least(stack, start + tasks), timeout,
                          message=f"{tasks} more completions")
    return (done - start) / (time.monotonic() - t0)


async def _at_least(stack: Stack, n: int) -> int | None:
    c = await stack.completed()
    return c if c >= n else None


async def test_scale_3_to_1_to_5_while_tasks_run_and_throughput_follows(stack: Stack) -> None:
    await stack.post("/api/schedule/batch", {"command": "sleep", "count": 600,
                                             "payload": {"seconds": 0.2}})
    rate3 = await rate(stack, 15)

    _, out = await stack.cli("scale", "1")
    assert "scaling from 3 to 1 workers" in out and "workers online: 1/1" in out
    assert (await stack.get("/api/stats"))["workers_online"] == 1
    assert await stack.online() == {"worker-1"}
    rate1 = await rate(stack, 5)

    _, out = await stack.cli("scale", "5")
    assert "workers online: 5/5" in out
    assert "started worker-5" in out
    assert (await stack.get("/api/stats"))["workers_online"] == 5
    assert await stack.online() == {f"worker-{i}" for i in range(1, 6)}
    rate5 = await rate(stack, 30)

    # five sleeping workers finish about five times the tasks one does: compare loosely
    assert rate3 > 1.8 * rate1, (rate1, rate3, rate5)
    assert rate5 > 1.25 * rate3, (rate1, rate3, rate5)
    members = await stack.members()
    assert [n for n, m in members.items() if m["state"] == "running"] == [
        "coordinator", "scheduler", *(f"worker-{i}" for i in range(1, 6))]


async def _current_task(stack: Stack, name: str) -> str | None:
    for w in await stack.get("/api/workers"):
        if w["name"] == name and w["status"] == "online" and w["current_task_id"]:
            return str(w["current_task_id"])
    return None


async def _task(stack: Stack, task_id: str) -> dict[str, Any]:
    return dict(await stack.get(f"/api/tasks/{task_id}"))


async def test_kill_and_graceful_stop_from_the_cli(stack: Stack) -> None:
    await stack.post("/api/schedule/batch", {"command": "sleep", "count": 4,
                                             "payload": {"seconds": 2}})
    held1 = await wait_for(lambda: _current_task(stack, "worker-1"), 10,
                           message="worker-1 to run a task")
    held2 = await wait_for(lambda: _current_task(stack, "worker-2"), 10,
                           message="worker-2 to run a task")

    _, out = await stack.cli("kill", "worker-1")
    assert "killing worker-1 (SIGKILL" in out and "exited(-9)" in out
    _, out = await stack.cli("kill", "worker-2", "--graceful")
    assert "stopping worker-2 (SIGTERM" in out and "exited(0)" in out
    assert await stack.online() == {"worker-3"}

    # the graceful worker finished its task; the killed one's went to another worker
    drained = await _task(stack, held2)
    assert (drained["status"], drained["attempt"]) == ("completed", 1)
    requeued = await wait_for(lambda: _finished(stack, held1), 20,
                              message="the killed worker's task to complete elsewhere")
    assert requeued["status"] == "completed" and requeued["attempt"] == 2
    assert requeued["worker_id"] != drained["worker_id"]

    members = await stack.members()
    assert members["worker-1"]["state"] == "exited(-9)"
    assert members["worker-2"]["state"] == "exited(0)"
    # a killed worker stays dead until the next scale, which brings it back under its name
    _, out = await stack.cli("scale", "3")
    assert "started worker-1" in out and "started worker-2" in out
    assert await stack.online() == {"worker-1", "worker-2", "worker-3"}


async def _finished(stack: Stack, task_id: str) -> dict[str, Any] | None:
    task = await _task(stack, task_id)
    return task if task["status"] in ("completed", "failed") else None


async def test_coordinator_crash_restarts_and_workers_come_back(stack: Stack) -> None:
    await stack.post("/api/schedule/batch", {"command": "sleep", "count": 400,
                                             "payload": {"seconds": 0.2}})
    await rate(stack, 5)
    before = await stack.members()
    (last_event,) = await fetch(stack.database_url, "SELECT coalesce(max(id), 0) FROM events")

    _, out = await stack.cli("coordinator-crash")
    assert "crashing the coordinator (SIGKILL)" in out and "coordinator back" in out
    after = await stack.members()
    assert after["coordinator"]["pid"] != before["coordinator"]["pid"]
    assert after["coordinator"]["state"] == "running"

    # every worker registered again with the new coordinator, and work goes on
    async def re_registered() -> bool:
        rows = await fetch(stack.database_url, "SELECT DISTINCT w.name FROM events e JOIN "
                           "workers w ON w.id = e.worker_id WHERE e.event = 'worker_online' "
                           "AND e.id > $1", last_event[0])
        return {r["name"] for r in rows} == {"worker-1", "worker-2", "worker-3"}

    await wait_for(re_registered, 20, message="the three workers to register again")
    assert await rate(stack, 15) > 0

    # --no-restart leaves it down, healthchecks say so, coordinator-start brings it back
    coordinator = stack.info["coordinator"]
    _, out = await stack.cli("coordinator-crash", "--no-restart")
    assert "it stays down" in out
    assert (await stack.members())["coordinator"]["state"] == "exited(-9)"
    code, out = await stack.cli("healthcheck", "grpc", coordinator, "--timeout", "1",
                                check=False)
    assert code == 1, out
    _, out = await stack.cli("coordinator-start")
    assert "coordinator back" in out
    code, out = await stack.cli("healthcheck", "grpc", coordinator)
    assert code == 0 and "SERVING" in out
    code, out = await stack.cli("healthcheck", "http", stack.url + "/readyz")
    assert code == 0 and "HTTP 200" in out
    assert await rate(stack, 10) > 0


async def test_the_cli_says_clearly_when_no_stack_runs(tmp_path: Path) -> None:
    env = stack_env(tmp_path, "postgresql://unused")

    code, out = await run_cli(env, "scale", "2", check=False)
    assert code == 1
    assert "no running stack" in out and "taskmaster up" in out and "Traceback" not in out

    # a stack file left by a process that is gone
    (tmp_path / "stack.json").write_text(json.dumps(
        {"pid": 2 ** 22 + 1, "control_url": "http://127.0.0.1:9", "url": "http://127.0.0.1:9"}))
    code, out = await run_cli(env, "ps", check=False)
    assert code == 1 and "which is gone" in out

    # a control URL nobody answers on
    code, out = await run_cli(env, "kill", "worker-1", "--control-url", "http://127.0.0.1:9",
                              check=False)
    assert code == 1 and "cannot reach the stack's control API" in out
    assert "Traceback" not in out
