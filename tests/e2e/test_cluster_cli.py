"""`taskmaster up` in one process, driven from "another terminal": scale, kill, crash.

The demo guide scales 3 -> 1 -> 5 and kills a worker with docker; here the same happens to
a running local stack with `taskmaster scale N`, `taskmaster kill WORKER [--graceful]` and
`taskmaster coordinator-crash`, each a separate process that finds the stack through
$TASKMASTER_HOME/stack.json. Throughput is compared between phases as ratios of completion
rates, never against absolute speeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.e2e.up import Stack, run_cli, stack_env
from tests.helpers import fetch, wait_for

ROOT = Path(__file__).resolve().parents[2]


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
    # one long task per worker: the killed worker's task waits until worker-3 is free, since
    # worker-2 is told to drain before its own task ends (with a spare task, or shorter
    # ones, worker-2 could take the requeued task before its SIGTERM arrived)
    await stack.post("/api/schedule/batch", {"command": "sleep", "count": 3,
                                             "payload": {"seconds": 5}})
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
    assert code == 1 and "cannot reach the stack at http://127.0.0.1:9" in out
    assert "Traceback" not in out
