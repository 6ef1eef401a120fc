"""Retries, timeouts, cancellation, idempotent creation and leaving workers, through the API.

Scheduler, coordinator and workers run in this process on real sockets and a real
PostgreSQL (the chaos tier does the same with separate processes and breaks them).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import grpc

from taskmaster.config import Settings
from taskmaster.rpc import taskmaster_pb2 as pb
from taskmaster.rpc import taskmaster_pb2_grpc as pb_grpc
from taskmaster.store import NewTask, Store
from tests.helpers import fast_settings, run_workers, serve_coordinator, serve_scheduler, wait_for
from tests.integration import sample_tasks


@dataclass
class Api:
    """The scheduler's HTTP API of an in-process stack."""

    url: str
    http: aiohttp.ClientSession
    coordinator: Any

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, JSON body)."""
        async with self.http.request(method, self.url + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def create(self, **body: Any) -> str:
        """POST /api/schedule; the new id."""
        status, out = await self.call("POST", "/api/schedule", body)
        assert status == 201, out
        return str(out["id"])

    async def task(self, task_id: str) -> dict[str, Any]:
        """GET /api/tasks/{id}."""
        status, out = await self.call("GET", f"/api/tasks/{task_id}")
        assert status == 200, out
        return dict(out)

    async def status_is(self, task_id: str, *statuses: str) -> bool:
        """True when the task is in one of these statuses."""
        return (await self.task(task_id))["status"] in statuses


@contextlib.asynccontextmanager
async def api_stack(database_url: str, settings: Settings, workers: int = 2,
                    concurrency: int = 2) -> AsyncIterator[Api]:
    """Coordinator, scheduler and workers on real sockets."""
    async with serve_coordinator(settings, database_url) as coordinator, \
            serve_scheduler(settings, database_url) as (url, _), \
            run_workers(settings, coordinator.port, workers, concurrency=concurrency), \
            aiohttp.ClientSession() as http:
        yield Api(url, http, coordinator)


async def events_of(store: Store, task_id: str) -> list[tuple[str, datetime, dict[str, Any]]]:
    """(event, ts, data) of one task, in commit order."""
    rows = await store.pool.fetch(
        "SELECT event, ts, data FROM events WHERE task_id = $1 ORDER BY id", uuid.UUID(task_id))
    return [(r["event"], r["ts"], r["data"]) for r in rows]


# ---- retries ----

async def test_failures_retry_with_exponential_backoff_and_jitter(
    database_url: str, store: Store
) -> None:
    """Retry k waits base * 2^(k-1) * [0.5, 1.5), jittered; after max_attempts it stays failed."""
    base = 0.2
    settings = fast_settings(retry_base=base, retry_max=30.0)
    async with api_stack(database_url, settings) as api:
        ids = [await api.create(command="fail", max_attempts=4) for _ in range(6)]
        await wait_for(lambda: _all_failed(store, ids), 30, interval=0.1,
                       message="every retry to run out")
        details = [await api.task(t) for t in ids]

    delays: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for t, task in zip(ids, details, strict=True):
        assert (task["status"], task["attempt"]) == ("failed", 4)
        assert task["error"] == "TaskFailed: this task always fails"
        # every attempt's history, through the API
        by_attempt = {a["attempt"]: a for a in task["attempts"]}
        assert sorted(by_attempt) == [1, 2, 3, 4]
        assert all(a["error"] and a["worker_id"] for a in by_attempt.values())
        events = await events_of(store, t)
        kinds = [e for e, _, _ in events]
        assert kinds.count("task_retrying") == 3 and kinds[-1] == "task_failed"
        assigned = {d["attempt"]: ts for e, ts, d in events if e == "task_assigned"}
        for event, ts, data in events:
            if event != "task_retrying":
                continue
            attempt = data["attempt"]
            retry_at = datetime.fromisoformat(data["retry_at"])
            # ts is when the handler failed; its report reaches PostgreSQL a moment later
            # (usually milliseconds; more when this one loop is busy): only the lower bound
            # is exact
            delay = (retry_at - ts).total_seconds()
            window = base * 2 ** (attempt - 1)
            assert 0.5 * window <= delay < 1.5 * window + 1.0, (attempt, delay)
            assert data["next_attempt"] == attempt + 1
            assert assigned[attempt + 1] >= retry_at  # not run again before its time
            delays[attempt].append(delay)
    median = {k: statistics.median(v) for k, v in delays.items()}
    assert median[1] < median[2] < median[3], median  # exponential: ~0.2, 0.4, 0.8
    assert max(delays[3]) - min(delays[3]) > 0.02, "no jitter: the delays are all alike"


async def _all_failed(store: Store, ids: list[str]) -> bool:
    rows = await store.pool.fetch("SELECT count(*) AS n FROM tasks WHERE id = ANY($1::uuid[]) "
                                  "AND status = 'failed'", ids)
    return bool(rows[0]["n"] == len(ids))


async def test_a_task_past_its_timeout_fails_and_is_retried(
    database_url: str, store: Store
) -> None:
    """timeout_seconds bounds every attempt; each timed-out attempt counts as a failure."""
    async with api_stack(database_url, fast_settings()) as api:
        t = await api.create(command="sleep", payload={"seconds": 30}, timeout_seconds=0.3,
                             max_attempts=2)
        await wait_for(lambda: api.status_is(t, "failed"), 15, message="both attempts to time out")
        task = await api.task(t)
    assert task["attempt"] == 2 and "timed out" in task["error"]
    by_attempt = {a["attempt"]: a for a in task["attempts"]}
    assert sorted(by_attempt) == [1, 2]
    assert all("timed out" in a["error"] for a in by_attempt.values())
    kinds = [e for e, _, _ in await events_of(store, t)]
    assert kinds.count("task_retrying") == 1 and kinds[-1] == "task_failed"


# ---- cancellation ----

async def test_cancel_a_pending_task_at_once(database_url: str, store: Store) -> None:
    """A pending task is cancelled by the request itself; it never runs."""
    async with api_stack(database_url, fast_settings()) as api:
        t = await api.create(command="noop", delay_seconds=60)
        status, body = await api.call("POST", f"/api/tasks/{t}/cancel")
        assert status == 200, body
        assert body["status"] == "cancelled" and body["cancelled_at"] is not None
        status, body = await api.call("POST", f"/api/tasks/{t}/cancel")
        assert status == 409 and body["error"]
        status, body = await api.call("POST", f"/api/tasks/{uuid.uuid4()}/cancel")
        assert status == 404
    kinds = [e for e, _, _ in await events_of(store, t)]
    assert kinds == ["task_scheduled", "task_cancelled"]


async def test_cancel_a_running_task_cooperatively(database_url: str, store: Store) -> None:
    """The handler sees the cancellation; the task ends cancelled and its slot is free again."""
    async with api_stack(database_url, fast_settings(), workers=1, concurrency=1) as api:
        t = await api.create(command="sync-until-cancelled")
        await wait_for(lambda: api.status_is(t, "running"), 10, message="the task to run")
        status, body = await api.call("POST", f"/api/tasks/{t}/cancel")
        assert status == 200, body
        assert body["cancel_requested"] is True
        await wait_for(lambda: api.status_is(t, "cancelled"), 10, message="the cancellation")
        # the handler itself sees it (in its thread, on its next check)
        await wait_for(lambda: t in sample_tasks.CANCELLED, 5, message="the handler to see it")
        nxt = await api.create(command="noop")  # the only slot is free again
        await wait_for(lambda: api.status_is(nxt, "completed"), 10, message="the next task")
    events = await events_of(store, t)
    assert [e for e, _, _ in events].count("task_cancelled") == 1
    assert events[-1][0] == "task_cancelled"


# ---- idempotent creation ----

async def test_twenty_concurrent_repeats_create_one_task(database_url: str, store: Store) -> None:
    """Same key, header or body, 20 at once: one 201, nineteen 200, all the same task."""
    async with api_stack(database_url, fast_settings(), workers=0) as api:
        for how in ("header", "body"):
            key = f"order-{how}-{uuid.uuid4()}"
            body: dict[str, Any] = {"command": "noop", "delay_seconds": 60}
            headers = {"Idempotency-Key": key} if how == "header" else None
            if how == "body":
                body["idempotency_key"] = key
            answers = await asyncio.gather(*(
                api.call("POST", "/api/schedule", body, headers) for _ in range(20)))
            assert Counter(s for s, _ in answers) == {201: 1, 200: 19}, answers
            assert len({b["id"] for _, b in answers}) == 1
            rows = await store.pool.fetch(
                "SELECT id FROM tasks WHERE idempotency_key = $1", key)
            assert len(rows) == 1
            kinds = [e for e, _, _ in await events_of(store, str(rows[0]["id"]))]
            assert kinds == ["task_scheduled"]


# ---- a worker that leaves while a delivery is on its way ----

@contextlib.asynccontextmanager
async def raw_worker(port: int, name: str) -> AsyncIterator[tuple[Any, asyncio.Queue[Any]]]:
    """A new worker speaking the raw protocol: (call, outgoing queue; None ends the stream)."""
    out: asyncio.Queue[pb.WorkerMessage | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[pb.WorkerMessage]:
        yield pb.WorkerMessage(register=pb.Register(name=name, capacity=1, commands=["noop"]))
        while (msg := await out.get()) is not None:
            yield msg

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.CoordinatorStub(channel).Connect(requests()), out


async def next_of(call: Any, kind: str) -> pb.CoordinatorMessage:
    """The next coordinator message of this kind."""
    while True:
        msg = await asyncio.wait_for(call.read(), 10)
        assert msg is not grpc.aio.EOF, "the coordinator closed the stream"
        if msg.WhichOneof("kind") == kind:
            return msg


async def test_a_delivery_crossing_a_workers_goodbye_costs_no_attempt(
    database_url: str, store: Store
) -> None:
    """The worker drained and left before the assignment reached it: back to pending as it was."""
    async with serve_coordinator(fast_settings(), database_url) as coordinator:
        async with raw_worker(coordinator.port, "leaving") as (call, out):
            await next_of(call, "registered")
            task, _ = await store.create_task(NewTask(command="noop", max_attempts=1))
            assign = await next_of(call, "assign")
            assert [a.task_id for a in assign.assign.tasks] == [str(task.id)]
            # it had begun draining before the assignment reached it: it runs nothing
            out.put_nowait(pb.WorkerMessage(heartbeat=pb.Heartbeat(draining=True)))
            out.put_nowait(None)  # goodbye
            while await call.read() is not grpc.aio.EOF:
                pass
        await wait_for(lambda: _status(store, task.id, "pending"), 10,
                       message="the task to go back")
    back = await store.get_task(task.id)
    assert back is not None
    assert (back.attempt, back.max_attempts) == (2, 2)  # a new token, no attempt used
    kinds = [e for e, _, _ in await events_of(store, str(task.id))]
    assert "task_rejected" in kinds and "task_reassigned" not in kinds and "task_failed" not in kinds


async def test_a_worker_that_vanishes_gives_its_tasks_back_at_once(
    database_url: str, store: Store
) -> None:
    """A broken stream (not a goodbye) requeues at once, attempt + 1, naming the worker."""
    settings = fast_settings(heartbeat_misses=100)  # so only the broken stream can explain it
    async with serve_coordinator(settings, database_url) as coordinator:
        async with raw_worker(coordinator.port, "vanishing") as (call, _):
            await next_of(call, "registered")
            task, _ = await store.create_task(NewTask(command="noop", max_attempts=3))
            await next_of(call, "assign")
        # the channel closed mid-stream, as when the process dies
        await wait_for(lambda: _status(store, task.id, "pending"), 5,
                       message="the task to be requeued")
    back = await store.get_task(task.id)
    assert back is not None
    assert (back.attempt, back.max_attempts) == (2, 3)
    reassigned = [d for e, _, d in await events_of(store, str(task.id)) if e == "task_reassigned"]
    assert len(reassigned) == 1 and reassigned[0]["attempt"] == 2


async def test_a_worker_that_dies_draining_gives_back_what_it_was_running(
    database_url: str, store: Store
) -> None:
    """A delivery its draining heartbeat listed as running may have run: attempt + 1."""
    settings = fast_settings(heartbeat_misses=100)
    async with serve_coordinator(settings, database_url) as coordinator:
        async with raw_worker(coordinator.port, "dying") as (call, out):
            worker_id = (await next_of(call, "registered")).registered.worker_id
            task, _ = await store.create_task(NewTask(command="noop", max_attempts=3))
            await next_of(call, "assign")
            out.put_nowait(pb.WorkerMessage(heartbeat=pb.Heartbeat(
                draining=True, in_flight=[pb.TaskRef(task_id=str(task.id), attempt=1)])))
            await wait_for(lambda: coordinator.coordinator.sessions[worker_id].draining, 5,
                           message="the coordinator to see it draining")
        await wait_for(lambda: _status(store, task.id, "pending"), 5,
                       message="the task to be requeued")
    back = await store.get_task(task.id)
    assert back is not None
    assert (back.attempt, back.max_attempts) == (2, 3)
    kinds = [e for e, _, _ in await events_of(store, str(task.id))]
    assert "task_reassigned" in kinds and "task_rejected" not in kinds


async def _status(store: Store, task_id: uuid.UUID, status: str) -> bool:
    t = await store.get_task(task_id)
    return t is not None and t.status.value == status
