"""The demo guide's compose narrative on a real Docker engine, asserted through the API.

One compose project (built from this checkout) goes through the guide in order: up with 3
workers, 50 demo-jobs, scale to 1 and to 5 with throughput following, `docker stop` and
`docker kill` of a worker with tasks in flight, a coordinator crash undone by the restart
policy and a `docker kill` of it that no policy undoes, then `down -v`. The commands are the
ones the scheduler's /api/pool answers with (501 and the command to run), run as a person
would paste them, and ComposeCluster's, the compose backend of `taskmaster.cluster`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from taskmaster.cluster.base import MemberInfo
from taskmaster.pool import CRASH_SNIPPET, compose_command
from tests.compose.conftest import Stack, run
from tests.helpers import SseReader, wait_for

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(900)]


# ---- what the API says ----

async def online(stack: Stack) -> dict[str, dict[str, Any]]:
    """The online workers by name."""
    return {w["name"]: w for w in await stack.get("/api/workers") if w["status"] == "online"}


async def until_online(stack: Stack, n: int, timeout: float = 90) -> dict[str, dict[str, Any]]:
    """Until exactly n workers are online; them."""
    async def exactly() -> dict[str, dict[str, Any]] | None:
        workers = await online(stack)
        return workers if len(workers) == n else None

    found: dict[str, dict[str, Any]] = await wait_for(exactly, timeout, interval=0.2,
                                                      message=f"{n} workers online")
    return found


async def completed(stack: Stack) -> int:
    return int((await stack.get("/api/stats"))["completed"])


async def rate(stack: Stack, tasks: int, timeout: float = 60) -> float:
    """Completions per second while `tasks` more tasks complete."""
    start, t0 = await completed(stack), time.monotonic()

    async def reached() -> int | None:
        done = await completed(stack)
        return done if done >= start + tasks else None

    done = await wait_for(reached, timeout, interval=0.1, message=f"{tasks} more completions")
    return float(done - start) / (time.monotonic() - t0)


async def create(stack: Stack, count: int, command: str = "sleep",
                 payload: dict[str, Any] | None = None) -> list[str]:
    """POST /api/schedule/batch; the ids."""
    body: dict[str, Any] = {"command": command, "count": count, "delay_seconds": 0}
    if payload is not None:
        body["payload"] = payload
    status, created = await stack.call("POST", "/api/schedule/batch", body)
    assert status == 201, created
    ids: list[str] = created["ids"]
    assert len(set(ids)) == count
    stack.created += count
    return ids


async def all_done(stack: Stack, ids: list[str], timeout: float = 120) -> list[dict[str, Any]]:
    """Until every task of ids is completed (none failed); the tasks."""
    wanted = set(ids)

    async def finished() -> list[dict[str, Any]] | None:
        # the newest 1000 (the largest page): more than this module ever creates
        tasks = [t for t in await stack.get("/api/tasks?limit=1000")
                 if t["id"] in wanted]
        assert not [t for t in tasks if t["status"] in ("failed", "cancelled")], tasks
        done = [t for t in tasks if t["status"] == "completed"]
        return done if len(done) == len(wanted) else None

    tasks: list[dict[str, Any]] = await wait_for(finished, timeout, interval=0.5,
                                                 message=f"{len(ids)} tasks to complete")
    return tasks


async def hint(stack: Stack, method: str, path: str, body: Any = None) -> str:
    """The command the scheduler answers a pool request with (no pool manager in compose)."""
    status, answer = await stack.call(method, path, body)
    assert status == 501, answer
    assert "TASKMASTER_POOL_URL" in answer["error"]
    command: str = answer["command"]
    return command


def by_role(members: list[MemberInfo], role: str) -> list[MemberInfo]:
    return [m for m in members if m["role"] == role]


# ---- the narrative ----

async def test_up_with_three_workers_runs_fifty_demo_jobs(stack: Stack) -> None:
    # `docker compose up --scale worker=3 -d`, waited for by ComposeCluster.start
    members = await stack.cluster.members()
    assert [(m["role"], m["state"]) for m in members if m["role"] != "worker"] == [
        ("postgres", "running (healthy)"), ("coordinator", "running (healthy)"),
        ("coordinator", "running (healthy)"), ("scheduler", "running (healthy)"),
        ("scheduler", "running (healthy)")]
    workers = await until_online(stack, 3)
    # a worker is named after its container's hostname: the id `docker stop` takes
    assert set(workers) == {m["host"] for m in by_role(members, "worker")}

    # the compose command of GET /api/pool lists this project's containers
    ps = await stack.shell(stack.hint(await hint(stack, "GET", "/api/pool")))
    assert ps.count(stack.project) >= 6, ps

    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as http, \
            http.get(stack.url + "/api/logs/stream") as stream:
        assert stream.status == 200
        ids = await create(stack, 50, "demo-job")
        events = await SseReader(stream).events(
            lambda evs: len({e.data["task_id"] for e in evs
                             if e.data and e.data["event"] == "task_completed"}) == 50,
            timeout=120)
    finished = [e.data["task_id"] for e in events if e.data and e.data["event"] == "task_completed"]
    assert sorted(finished) == sorted(ids)  # each once

    tasks = await all_done(stack, ids)
    assert {t["attempt"] for t in tasks} == {1}
    shares = Counter(t["worker_id"] for t in tasks)
    assert set(shares) == {w["id"] for w in workers.values()}, shares
    assert min(shares.values()) >= 10, shares
    stats = await stack.get("/api/stats")
    assert (stats["completed"], stats["pending"], stats["running"], stats["workers_online"]) == (
        50, 0, 0, 3)


async def test_scale_to_one_then_five_and_throughput_follows(stack: Stack) -> None:
    await until_online(stack, 3)
    ids = await create(stack, 300, payload={"seconds": 0.25})
    rate3 = await rate(stack, 24)

    # the scheduler's answer to "scale to 1", run as given: `docker compose up --scale worker=1 -d`
    command = await hint(stack, "POST", "/api/pool/scale", {"workers": 1})
    assert command == compose_command("scale", 1) == "docker compose up --scale worker=1 -d"
    await stack.shell(stack.hint(command))
    assert len(by_role(await stack.cluster.members(), "worker")) == 1
    await until_online(stack, 1)
    rate1 = await rate(stack, 8)

    # and to 5 with the compose backend
    members = await stack.cluster.scale(5)
    assert [m["state"] for m in by_role(members, "worker")] == ["running"] * 5
    await until_online(stack, 5)
    rate5 = await rate(stack, 40)

    # five sleeping workers finish about five times what one does: compare loosely
    assert rate3 > 1.8 * rate1, (rate1, rate3, rate5)
    assert rate5 > 1.25 * rate3, (rate1, rate3, rate5)
    # the workers scaled away drained: nothing lost, nothing failed
    await all_done(stack, ids)


async def busy_worker(stack: Stack, within: float = 1.5) -> tuple[str, str] | None:
    """A worker whose task started less than `within` seconds ago: (name, task id)."""
    for name, worker in (await online(stack)).items():
        if not worker["current_task_id"]:
            continue
        task = await stack.get(f"/api/tasks/{worker['current_task_id']}")
        started = task["started_at"] or task["assigned_at"]
        if task["status"] in ("assigned", "running") and started and (
                time.time() - datetime.fromisoformat(started).timestamp() < within):
            return name, str(task["id"])
    return None


async def test_docker_stop_drains_a_worker_and_docker_kill_hands_its_task_on(stack: Stack) -> None:
    await stack.cluster.scale(5)
    workers = await until_online(stack, 5)
    # long enough that a task taken just now still runs when its worker is killed: finding
    # the container and killing it takes a few docker-compose runs (about 1 s each when busy)
    ids = await create(stack, 10, payload={"seconds": 8})

    # "docker stop" (SIGTERM): the worker finishes its task, leaves and stays down
    stopped, drained_task = await wait_for(lambda: busy_worker(stack), 30, interval=0.1,
                                           message="a worker that just took a task")
    command = await hint(stack, "POST", f"/api/pool/workers/{stopped}/kill", {"graceful": True})
    assert command == compose_command("kill_worker", stopped, graceful=True)
    assert command == f"docker stop {stopped}"
    await stack.shell(command)  # returns once the container has exited
    drained = await stack.get(f"/api/tasks/{drained_task}")
    assert (drained["status"], drained["attempt"]) == ("completed", 1), drained
    assert drained["worker_id"] == workers[stopped]["id"]

    # "docker kill" (SIGKILL), with the compose backend: the task runs again elsewhere
    killed, lost_task = await wait_for(lambda: busy_worker(stack, within=1.0), 30,
                                       interval=0.1, message="a worker that just took a task")
    member = await stack.cluster.kill_worker(killed)
    assert member["state"] == "exited(137)"

    async def finished_elsewhere() -> dict[str, Any] | None:
        task = await stack.get(f"/api/tasks/{lost_task}")
        return task if task["status"] == "completed" else None

    moved = await wait_for(finished_elsewhere, 60, interval=0.2,
                           message="the killed worker's task to complete elsewhere")
    assert moved["attempt"] == 2 and moved["worker_id"] != workers[killed]["id"]
    assert moved["attempts"][0]["worker_id"] == workers[killed]["id"]
    await all_done(stack, ids)

    # both stay down (restart: "no"), and the API says they left
    states = {m["host"]: m["state"] for m in by_role(await stack.cluster.members(), "worker")}
    assert (states[stopped], states[killed]) == ("exited(0)", "exited(137)"), states
    status = {w["name"]: w["status"] for w in await stack.get("/api/workers")}
    assert (status[stopped], status[killed]) == ("offline", "offline")
    assert len(await online(stack)) == 3

    # the guide's "restart the worker": `up --scale worker=5 -d` starts both containers again
    await stack.shell(stack.hint(await hint(stack, "POST", "/api/pool/scale", {"workers": 5})))
    assert {stopped, killed} <= set(await until_online(stack, 5))


async def test_a_coordinator_crash_is_undone_by_the_restart_policy(stack: Stack) -> None:
    await stack.cluster.scale(5)
    await until_online(stack, 5)
    ids = await create(stack, 200, payload={"seconds": 0.2})
    assert await rate(stack, 10) > 0
    before = by_role(await stack.cluster.members(), "coordinator")[0]

    # the crash: the coordinator's process killed inside its container, which exits with it
    command = await hint(stack, "POST", "/api/pool/coordinator/kill")
    assert command == compose_command("coordinator", "kill")
    assert CRASH_SNIPPET in command
    await stack.shell(stack.hint(command))

    def restarted(members: list[MemberInfo]) -> MemberInfo | None:
        m = by_role(members, "coordinator")[0]
        return m if m["restarts"] > before["restarts"] and m["state"] == "running (healthy)" else None

    after = await stack.cluster.wait_for(restarted, "the coordinator to be restarted", 120)
    assert after["restarts"] == before["restarts"] + 1 and after["pid"] != before["pid"]
    # the workers dial the new coordinator: what it alone can assign completes, and so does
    # what was pending or running at the crash
    await until_online(stack, 5)
    ids += await create(stack, 50, payload={"seconds": 0.2})
    await all_done(stack, ids)

    # `docker compose kill coordinator` is a manual stop: no restart policy undoes it
    command = await hint(stack, "POST", "/api/pool/coordinator/kill", {"restart": False})
    assert command == "docker compose kill coordinator"
    await stack.shell(stack.hint(command))
    down, other = by_role(await stack.cluster.members(), "coordinator")
    assert down["state"] == "exited(137)" and other["state"] == "running (healthy)"
    # no single point of failure: the workers move to coordinator-2, so the tasks created
    # meanwhile run and complete while the first coordinator stays down
    frozen = await completed(stack)
    ids += await create(stack, 60, payload={"seconds": 0.2})
    # watched for 5 s, long past the restart policy's first delay (100 ms): it stays down
    watch_until = time.monotonic() + 5
    while time.monotonic() < watch_until:
        still = by_role(await stack.cluster.members(), "coordinator")[0]
        assert (still["state"], still["restarts"]) == ("exited(137)", after["restarts"])
        await asyncio.sleep(0.5)
    assert await completed(stack) > frozen
    workers = await stack.get("/api/workers")
    assert {w["coordinator"] for w in workers if w["status"] == "online"} == {"coordinator-2"}
    await all_done(stack, ids)

    # `docker compose start coordinator`, with the compose backend
    back = await stack.cluster.coordinator("start")
    assert back["state"] == "running (healthy)"
    await until_online(stack, 5)

    # `docker compose stop coordinator`: SIGTERM, a clean exit, and it stays down too; then
    # `docker compose restart coordinator`, as the scheduler gives it
    # (a manual start resets docker's restart count)
    stopped = await stack.cluster.coordinator("stop")
    assert (stopped["state"], stopped["restarts"]) == ("exited(0)", back["restarts"])
    command = await hint(stack, "POST", "/api/pool/coordinator/restart")
    assert command == "docker compose restart coordinator"
    await stack.shell(stack.hint(command))
    await stack.cluster.wait_for(
        lambda ms: by_role(ms, "coordinator")[0]["state"] == "running (healthy)",
        "the coordinator to be healthy again", 120)
    await until_online(stack, 5)
    # and all of it completes
    tasks = await all_done(stack, ids, timeout=180)
    assert len(tasks) == 200 + 50 + 60


async def test_down_v_removes_the_stack(stack: Stack) -> None:
    stats = await stack.get("/api/stats")
    assert stats["total"] == stats["completed"] == stack.created == 50 + 300 + 10 + 310, stats
    assert stats["failed"] == 0
    await stack.cluster.stop(volumes=True)  # `docker compose down -v`
    assert await stack.cluster.members() == []
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in ("container", "network", "volume"):
        listed = run(["docker", kind, "ls", *(["-a"] if kind == "container" else []), "-q",
                      "--filter", label], timeout=60).stdout.split()
        assert listed == [], (kind, listed)
    volumes = run(["docker", "volume", "ls", "--format", "{{.Name}}"], timeout=60).stdout.split()
    assert not [v for v in volumes if v.startswith(stack.project)], volumes
