"""Several coordinators on one database, all active: leases in PostgreSQL decide who holds
which worker. Two real coordinator servers in one test, real gRPC sockets, real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from taskmaster.config import Settings
from taskmaster.coordinator.server import CoordinatorServer
from taskmaster.model import TaskStatus
from taskmaster.store import NewTask, Store
from tests.helpers import WorkerPool, fast_settings, fetch, wait_for
from tests.integration import sample_tasks
from tests.integration.test_coordinator import task_of, wait_final


def lease_settings(**changes: Any) -> Settings:
    """Short leases (2 s), so lapses happen within a test."""
    return fast_settings(heartbeat_interval=0.2, heartbeat_misses=10, **changes)


async def start(settings: Settings, database_url: str) -> CoordinatorServer:
    """A coordinator server on 127.0.0.1:<free port>."""
    server = CoordinatorServer(settings, database_url)
    await server.start(host="127.0.0.1", port=0)
    return server


async def kill(server: CoordinatorServer) -> None:
    """What SIGKILL does to a coordinator: its streams break, its loops stop mid-way, nothing
    is written on the way out (its lease row and its workers' leases stay, and lapse)."""
    coordinator = server.coordinator
    assert coordinator is not None and server.server is not None and server.store is not None
    coordinator.stopping = True
    for t in coordinator._tasks:
        t.cancel()
    await server.server.stop(None)
    await server.store.pool.close()
    await server.store.bulk_pool.close()


@contextlib.asynccontextmanager
async def coordinators(settings: Settings, database_url: str, n: int = 2
                       ) -> AsyncIterator[list[CoordinatorServer]]:
    """n coordinator servers on one database, stopped after (those not killed)."""
    servers = [await start(settings, database_url) for _ in range(n)]
    try:
        yield servers
    finally:
        for s in servers:
            if s.coordinator is not None and not s.coordinator.stopping:
                await s.stop(grace=0.2)


@contextlib.asynccontextmanager
async def workers(settings: Settings, targets: str, names: list[str],
                  concurrency: int = 1) -> AsyncIterator[WorkerPool]:
    """Real workers dialling `targets` (one address or several), registered before this
    yields; drained after."""
    pool = WorkerPool(settings, targets)
    try:
        for name in names:
            pool.add(name, concurrency)
        await pool.connected()
        yield pool
    finally:
        await pool.stop()


def holder_of(servers: list[CoordinatorServer], worker_id: str) -> CoordinatorServer:
    """The server whose coordinator has this worker's session."""
    [server] = [s for s in servers if s.coordinator is not None
                and worker_id in s.coordinator.sessions]
    return server


async def leases(database_url: str) -> dict[str, str | None]:
    """{worker name: the id of the coordinator holding it} for workers not offline."""
    rows = await fetch(database_url, "SELECT name, coordinator_id FROM workers "
                                     "WHERE status <> 'offline'")
    return {r["name"]: r["coordinator_id"] for r in rows}


async def test_two_coordinators_share_one_queue_and_each_task_completes_once(
    database_url: str, store: Store
) -> None:
    settings = lease_settings()
    async with coordinators(settings, database_url) as (a, b), \
            workers(settings, f"127.0.0.1:{a.port}", ["a1", "a2"]) as on_a, \
            workers(settings, f"127.0.0.1:{b.port}", ["b1", "b2"]) as on_b:
        assert a.coordinator is not None and b.coordinator is not None
        assert set(a.coordinator.sessions) == {w.worker_id for w in on_a.workers}
        assert set(b.coordinator.sessions) == {w.worker_id for w in on_b.workers}
        # each worker's lease is held, in PostgreSQL, by the coordinator it dialled
        assert await leases(database_url) == {
            "a1": a.coordinator.coordinator_id, "a2": a.coordinator.coordinator_id,
            "b1": b.coordinator.coordinator_id, "b2": b.coordinator.coordinator_id}
        assert {c["id"] for c in await store.coordinators()} == {
            a.coordinator.coordinator_id, b.coordinator.coordinator_id}

        ids = await store.create_batch(NewTask(command="noop"), 400)
        tasks = await wait_final(store, ids, timeout=30)
        again = [(t.attempt, t.history) for t in tasks
                 if t.status is not TaskStatus.COMPLETED or t.attempt != 1]
        assert not again, again[:3]
        by_worker = Counter(t.worker_id for t in tasks)
        # every worker of both coordinators took part; none was completed twice
        assert set(by_worker) == {w.worker_id for w in [*on_a.workers, *on_b.workers]}
        done = await fetch(database_url, "SELECT count(*) AS n, count(DISTINCT task_id) AS d "
                                         "FROM events WHERE event = 'task_completed'")
        assert (done[0]["n"], done[0]["d"]) == (400, 400)


async def test_a_worker_moves_to_the_other_coordinator_keeps_its_task_and_reports_it_there(
    database_url: str, store: Store
) -> None:
    settings = lease_settings()
    async with coordinators(settings, database_url) as servers:
        a, b = servers
        targets = f"127.0.0.1:{a.port},127.0.0.1:{b.port}"
        async with workers(settings, targets, ["mover"]) as pool:
            [worker] = pool.workers
            first = holder_of(servers, worker.worker_id)
            other = b if first is a else a
            assert first.coordinator is not None and other.coordinator is not None
            task, _ = await store.create_task(NewTask(command="progress-steps"))
            await wait_for(lambda: _status(store, task.id, TaskStatus.RUNNING),
                           message="the task to run")

            await kill(first)
            # it dials the other coordinator at once, with its id, secret and task
            await wait_for(lambda: worker.worker_id in other.coordinator.sessions,
                           message="the worker to join the other coordinator")
            session = other.coordinator.sessions[worker.worker_id]
            assert session.held == {task.id: 1}
            assert (await leases(database_url))["mover"] == other.coordinator.coordinator_id

            sample_tasks.gate(str(task.id)).set()
            [done] = await wait_final(store, [task.id])
            assert (done.status, done.attempt, done.worker_id) == (
                TaskStatus.COMPLETED, 1, worker.worker_id)
            assert not done.history  # no attempt was lost on the way
            # the lapsed lease of the dead coordinator changes nothing: the worker is held
            await asyncio.sleep(settings.heartbeat_timeout * 1.5)
            assert (await task_of(store, task.id)).status is TaskStatus.COMPLETED
            rows = await fetch(database_url, "SELECT status FROM workers WHERE id = $1",
                               worker.worker_id)
            assert rows[0]["status"] == "online"


async def test_a_starting_coordinator_leaves_the_workers_of_a_live_one_alone(
    database_url: str, store: Store
) -> None:
    settings = lease_settings()
    async with coordinators(settings, database_url, 1) as [a], \
            workers(settings, f"127.0.0.1:{a.port}", ["held"]) as pool:
        [worker] = pool.workers
        task, _ = await store.create_task(NewTask(command="progress-steps"))
        await wait_for(lambda: _status(store, task.id, TaskStatus.RUNNING),
                       message="the task to run")
        b = await start(settings, database_url)
        try:
            assert b.coordinator is not None
            # past the new coordinator's grace after its start: it reaps what lapsed, and
            # the worker held by the live coordinator has not
            await asyncio.sleep(settings.heartbeat_timeout + 2.0 + 1.0)
            now = await task_of(store, task.id)
            assert (now.status, now.attempt, now.worker_id) == (
                TaskStatus.RUNNING, 1, worker.worker_id)
            assert not await fetch(database_url, "SELECT 1 FROM events "
                                                 "WHERE event = 'task_reassigned'")
        finally:
            sample_tasks.gate(str(task.id)).set()
            await b.stop(grace=0.2)


async def test_the_tasks_of_a_dead_coordinators_lost_worker_go_back_through_a_live_one(
    database_url: str, store: Store
) -> None:
    settings = lease_settings()
    async with coordinators(settings, database_url) as (a, b):
        assert b.coordinator is not None
        lost = WorkerPool(settings, f"127.0.0.1:{a.port}")
        gone = lost.add("lost")
        await lost.connected()
        task, _ = await store.create_task(NewTask(command="progress-steps"))
        await wait_for(lambda: _status(store, task.id, TaskStatus.RUNNING),
                       message="the task to run")
        # the coordinator and its worker die together (as in one host going down)
        lost.runs[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lost.runs[0]
        await kill(a)
        async with workers(settings, f"127.0.0.1:{b.port}", ["survivor"]) as pool:
            sample_tasks.gate(str(task.id)).set()
            [done] = await wait_final(store, [task.id], timeout=20)
            assert (done.status, done.attempt, done.worker_id) == (
                TaskStatus.COMPLETED, 2, pool.workers[0].worker_id)
            assert done.history[0]["worker_id"] == gone.worker_id
        rows = await fetch(database_url, "SELECT status FROM workers WHERE id = $1",
                           gone.worker_id)
        assert rows[0]["status"] == "offline"


async def test_a_coordinator_whose_lease_on_a_worker_was_taken_closes_its_stream(
    database_url: str, store: Store
) -> None:
    settings = lease_settings()
    async with coordinators(settings, database_url) as (a, b):
        assert a.coordinator is not None and b.coordinator is not None
        async with workers(settings, f"127.0.0.1:{a.port}", ["w"]) as pool:
            [worker] = pool.workers
            session = a.coordinator.sessions[worker.worker_id]
            # another coordinator took the worker over (as when it rejoined there while
            # this one was cut off): this one must let go, and not put its tasks back
            await fetch(database_url, "UPDATE workers SET coordinator_id = $1 WHERE id = $2",
                        b.coordinator.coordinator_id, worker.worker_id)
            await wait_for(lambda: session.closed, message="the old session to close")
            assert worker.worker_id not in a.coordinator.sessions or \
                a.coordinator.sessions[worker.worker_id] is not session


async def _status(store: Store, task_id: uuid.UUID, status: TaskStatus) -> bool:
    return (await task_of(store, task_id)).status is status


async def test_a_worker_dials_a_dns_name_with_grpc_round_robin(database_url: str,
                                                                store: Store) -> None:
    settings = lease_settings()
    async with coordinators(settings, database_url, 1) as [a], \
            workers(settings, f"dns:///localhost:{a.port}", ["by-name"]) as pool:
        assert pool.workers[0].target == f"dns:///localhost:{a.port}"
        ids = await store.create_batch(NewTask(command="noop"), 20)
        tasks = await wait_final(store, ids)
        assert {t.worker_id for t in tasks} == {pool.workers[0].worker_id}
