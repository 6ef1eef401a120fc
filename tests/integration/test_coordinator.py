"""The coordinator and workers in one process over real gRPC sockets, on a real PostgreSQL:
tasks complete, turns are fair, capacity holds, duplicates and stale reports are refused,
delays and retries are honoured, and NOTIFY (not the poll) wakes the assigner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest

from taskmaster.config import Settings
from taskmaster.coordinator.service import Assign
from taskmaster.model import Task, TaskStatus
from taskmaster.rpc import taskmaster_pb2 as pb
from taskmaster.rpc import taskmaster_pb2_grpc as pb_grpc
from taskmaster.store import Delivery, NewTask, Store
from tests.helpers import (
    fast_settings,
    fetch,
    run_workers,
    serve_coordinator,
    serve_scheduler,
    wait_for,
)
from tests.integration import sample_tasks


async def task_of(store: Store, task_id: uuid.UUID) -> Task:
    """A task that must exist."""
    task = await store.get_task(task_id)
    assert task is not None
    return task


async def all_final(store: Store, ids: list[uuid.UUID]) -> bool:
    """True once every one of the tasks is final."""
    rows = await store.pool.fetch("SELECT status FROM tasks WHERE id = ANY($1)", ids)
    return len(rows) == len(ids) and all(TaskStatus(r["status"]).final for r in rows)


async def wait_final(store: Store, ids: list[uuid.UUID], timeout: float = 20.0) -> list[Task]:
    """Until every task is final; the tasks."""
    await wait_for(lambda: all_final(store, ids), timeout, message=f"{len(ids)} tasks to finish")
    return [await task_of(store, i) for i in ids]


async def events_of(store: Store, task_id: uuid.UUID) -> list[str]:
    """The event types of one task, in commit order."""
    rows = await store.pool.fetch("SELECT event FROM events WHERE task_id = $1 ORDER BY id",
                                  task_id)
    return [r["event"] for r in rows]


@pytest.fixture
def settings() -> Settings:
    """Quick retries; a 60 s poll, so only pushes can explain prompt assignment."""
    return fast_settings()


@pytest.fixture
async def coordinator(settings: Settings, database_url: str) -> AsyncIterator[Any]:
    """A CoordinatorServer on a free port."""
    async with serve_coordinator(settings, database_url) as server:
        yield server


# ---- the happy path ----

async def test_tasks_created_in_the_store_complete(
    settings: Settings, coordinator: Any, store: Store
) -> None:
    async with run_workers(settings, coordinator.port, 2) as pool:
        ids = await store.create_batch(NewTask(command="noop"), 10)
        ids += await store.create_batch(NewTask(command="demo-job"), 2)
        tasks = await wait_final(store, ids)
        names = {w.worker_id: w.name for w in pool.workers}
    for t in tasks:
        assert t.status is TaskStatus.COMPLETED, t
        assert (t.attempt, t.progress, t.error) == (1, 100, None)
        assert t.worker_id in names
        assert t.assigned_at and t.started_at and t.completed_at
        assert t.created_at <= t.assigned_at <= t.completed_at
        assert t.started_at <= t.completed_at
    demo = tasks[-1]
    assert 0.5 <= demo.result["seconds"] <= 0.8
    assert await events_of(store, demo.id) == [
        "task_scheduled", "task_assigned", "task_running", "task_progress", "task_progress",
        "task_progress", "task_completed"]
    assert await events_of(store, tasks[0].id) == [
        "task_scheduled", "task_assigned", "task_running", "task_completed"]
    counted = sum(w.tasks_completed for w in await store.list_workers())
    assert counted == 12


async def test_workers_are_registered_online_then_offline_after_draining(
    settings: Settings, coordinator: Any, store: Store
) -> None:
    async with run_workers(settings, coordinator.port, 2, concurrency=3) as pool:
        online = await store.list_workers()
        assert {w.name for w in online} == {"w1", "w2"}
        assert {(w.status.value, w.capacity) for w in online} == {("online", 3)}
        assert {w.id for w in online} == {w.worker_id for w in pool.workers}
    await wait_for(lambda: _statuses(store), message="workers to go offline")
    events = await store.pool.fetch("SELECT event, data FROM events WHERE task_id IS NULL "
                                    "ORDER BY id")
    kinds = [e["event"] for e in events]
    assert kinds.count("worker_online") == 2 and kinds.count("worker_offline") == 2
    offline = [json.loads(e["data"]) if isinstance(e["data"], str) else e["data"]
               for e in events if e["event"] == "worker_offline"]
    assert all("drained" in o["reason"] for o in offline), offline


async def _statuses(store: Store) -> bool:
    return {w.status.value for w in await store.list_workers()} == {"offline"}


# ---- assignment ----

async def test_round_robin_shares_a_burst_fairly(
    settings: Settings, coordinator: Any, store: Store
) -> None:
    async with run_workers(settings, coordinator.port, 3) as pool:
        ids = await store.create_batch(NewTask(command="sleep", payload={"seconds": 0.02}), 30)
        tasks = await wait_final(store, ids)
        names = {w.worker_id: w.name for w in pool.workers}
    per_worker = Counter(names[t.worker_id] for t in tasks if t.worker_id)
    assert sum(per_worker.values()) == 30
    assert all(9 <= n <= 11 for n in per_worker.values()), per_worker
    assert len(per_worker) == 3


async def test_round_robin_takes_turns_when_tasks_trickle_in(
    settings: Settings, coordinator: Any, store: Store
) -> None:
    async with run_workers(settings, coordinator.port, 3) as pool:
        served = []
        for _ in range(9):  # one at a time: every worker is free each time
            task, _ = await store.create_task(NewTask(command="noop"))
            [done] = await wait_final(store, [task.id])
            served.append(done.worker_id)
        names = {w.worker_id: w.name for w in pool.workers}
    order = [names[w] for w in served if w]
    assert Counter(order) == {"w1": 3, "w2": 3, "w3": 3}, order
    assert order[:3] != [order[0]] * 3


async def test_a_worker_never_holds_more_than_its_capacity(
    settings: Settings, coordinator: Any, store: Store
) -> None:
    held_max: Counter[str] = Counter()
    async with run_workers(settings, coordinator.port, 3, concurrency=2):
        ids = await store.create_batch(NewTask(command="sleep", payload={"seconds": 0.05}), 40)
        while not await all_final(store, ids):
            rows = await store.pool.fetch(
                "SELECT worker_id, count(*) AS n FROM tasks "
                "WHERE status IN ('assigned', 'running') GROUP BY worker_id")
            for r in rows:
                held_max[r["worker_id"]] = max(held_max[r["worker_id"]], r["n"])
            await asyncio.sleep(0.005)
    assert held_max, "never saw a task held"
    assert max(held_max.values()) <= 2, held_max
    assert max(held_max.values()) == 2  # the slots were used, not just respected


# ---- at-least-once made safe ----

async def test_a_duplicate_delivery_is_dropped_by_the_worker(
    settings: Settings, coordinator: Any, store: Store
) -> None:
    async with run_workers(settings, coordinator.port, 1, concurrency=2) as pool:
        [worker] = pool.workers
        task, _ = await store.create_task(NewTask(command="count-calls",
                                                  payload={"seconds": 0.5}))
        await wait_for(lambda: _status_is(store, task.id, "running"), message="the task to run")
        delivery = Delivery(task_id=task.id, attempt=1, command="count-calls",
                            payload_json='{"seconds": 0.5}', timeout_seconds=60,
                            worker_id=worker.worker_id)
        session = coordinator.coordinator.sessions[worker.worker_id]
        session.send(Assign([delivery]))  # the same (task, attempt) again, while it runs
        await wait_for(lambda: worker.duplicates == 1, message="the duplicate to be seen")
        [done] = await wait_final(store, [task.id])
        session.send(Assign([delivery]))  # and again after it finished
        await wait_for(lambda: worker.duplicates == 2, message="the second duplicate")
    assert sample_tasks.CALLS[str(task.id)] == 1
    assert (done.status, done.attempt, done.result) == (TaskStatus.COMPLETED, 1, {"calls": 1})
    assert (await events_of(store, task.id)).count("task_running") == 1
    assert (await task_of(store, task.id)).status is TaskStatus.COMPLETED


async def _status_is(store: Store, task_id: uuid.UUID, status: str) -> bool:
    return (await task_of(store, task_id)).status.value == status


class FakeWorker:
    """A worker speaking the raw protocol, to send what a real one would not. It keeps the
    id and secret the coordinator issues it, and shows them when it connects again."""

    def __init__(self, port: int, name: str, capacity: int = 1) -> None:
        self.name = name
        self.capacity = capacity
        self.worker_id = ""
        self.secret = ""
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.out: asyncio.Queue[pb.WorkerMessage | None] = asyncio.Queue()
        self.call: Any = None
        self.seq = 0

    async def connect(self, in_flight: list[tuple[str, int]] = ()) -> pb.Registered:  # type: ignore[assignment]
        """Register; the coordinator's answer."""
        self.out = asyncio.Queue()
        register = pb.WorkerMessage(register=pb.Register(
            worker_id=self.worker_id, secret=self.secret, name=self.name,
            capacity=self.capacity, commands=["noop"],
            in_flight=[pb.TaskRef(task_id=t, attempt=a) for t, a in in_flight]))

        async def requests() -> AsyncIterator[pb.WorkerMessage]:
            yield register
            while (msg := await self.out.get()) is not None:
                yield msg

        self.call = pb_grpc.CoordinatorStub(self.channel).Connect(requests())
        first = (await self.receive("registered")).registered
        if first.secret:
            self.worker_id, self.secret = first.worker_id, first.secret
        return first

    async def receive(self, kind: str, timeout: float = 10.0) -> pb.CoordinatorMessage:
        """The next message of this kind (others are skipped)."""
        async def next_of_kind() -> pb.CoordinatorMessage:
            while True:
                msg = await self.call.read()
                assert msg is not grpc.aio.EOF, "the coordinator closed the stream"
                if msg.WhichOneof("kind") == kind:
                    return msg
        return await asyncio.wait_for(next_of_kind(), timeout)

    async def report(self, task_id: str, attempt: int, state: int, result: Any = None) -> pb.Ack:
        """Send one status update; the coordinator's ack."""
        [one] = await self.send_batch([(task_id, attempt, state,
                                        json.dumps(result) if result is not None else "")])
        return one

    async def send_batch(self, updates: list[tuple[str, int, int, str]]) -> list[pb.Ack]:
        """Send (task id, attempt, state, result JSON text) updates in one status message;
        the coordinator's acks, in order."""
        first = self.seq + 1
        self.out.put_nowait(pb.WorkerMessage(status=pb.StatusBatch(updates=[
            pb.StatusUpdate(task_id=t, attempt=a, state=state, result_json=result,
                            seq=first + i)
            for i, (t, a, state, result) in enumerate(updates)])))
        self.seq += len(updates)
        acks: list[pb.Ack] = []
        while len(acks) < len(updates):
            acks += (await self.receive("ack")).ack.acks
        by_seq = {a.seq: a for a in acks}
        return [by_seq[first + i] for i in range(len(updates))]

    async def leave(self, timeout: float = 10.0) -> None:
        """End the stream; the coordinator must end its side within `timeout`."""
        self.out.put_nowait(None)

        async def until_eof() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                while await self.call.read() is not grpc.aio.EOF:
                    pass
        try:
            await asyncio.wait_for(until_eof(), timeout)
        except TimeoutError:
            self.call.cancel()
            raise AssertionError(f"{self.worker_id}: the coordinator did not end the stream "
                                 f"within {timeout:g}s of the worker leaving") from None

    async def close(self) -> None:
        """Close the channel."""
        await asyncio.wait_for(self.channel.close(), 10)


async def test_fencing_refuses_a_report_for_an_older_attempt(
    coordinator: Any, store: Store
) -> None:
    a, b = FakeWorker(coordinator.port, "fake-a"), FakeWorker(coordinator.port, "fake-b")
    try:
        await a.connect()
        task, _ = await store.create_task(NewTask(command="noop"))
        tid = str(task.id)
        first = (await a.receive("assign")).assign.tasks[0]
        assert (first.task_id, first.attempt) == (tid, 1)
        assert (await a.report(tid, 1, pb.RUNNING)).accepted

        await a.leave()  # lost: the task goes back with attempt 2
        await wait_for(lambda: _status_is(store, task.id, "pending"), message="the requeue")
        await b.connect()
        second = (await b.receive("assign")).assign.tasks[0]
        assert (second.task_id, second.attempt) == (tid, 2)

        # a comes back still believing it runs attempt 1: it is told to drop it ...
        registered = await a.connect(in_flight=[(tid, 1)])
        assert [(r.task_id, r.attempt) for r in registered.revoked] == [(tid, 1)]
        # ... and its late result is refused
        stale = await a.report(tid, 1, pb.COMPLETED, result="from a")
        assert not stale.accepted and "stale" in stale.reason
        now = await task_of(store, task.id)
        assert (now.status, now.attempt, now.worker_id, now.result) == (
            TaskStatus.ASSIGNED, 2, b.worker_id, None)

        assert (await b.report(tid, 2, pb.COMPLETED, result="from b")).accepted
        again = await b.report(tid, 2, pb.COMPLETED, result="twice")
        assert not again.accepted  # completed once, never twice
    finally:
        for w in (a, b):
            with contextlib.suppress(Exception):
                await w.leave()
            await w.close()
    done = await task_of(store, task.id)
    assert (done.status, done.attempt, done.worker_id, done.result) == (
        TaskStatus.COMPLETED, 2, b.worker_id, "from b")
    assert [(h["attempt"], h["worker_id"]) for h in done.history] == [(1, a.worker_id)]
    rows = sorted(await store.list_workers(), key=lambda w: w.name)
    assert [(w.name, w.tasks_completed) for w in rows] == [("fake-a", 0), ("fake-b", 1)]
    assert (await events_of(store, task.id)).count("task_completed") == 1


# ---- timing: delays, retries, pushes ----

async def test_a_delayed_task_starts_after_its_delay(
    settings: Settings, coordinator: Any, store: Store
) -> None:
    async with run_workers(settings, coordinator.port, 1):
        task, _ = await store.create_task(NewTask(command="noop", delay_seconds=1.0))
        assert (await task_of(store, task.id)).status is TaskStatus.PENDING
        [done] = await wait_final(store, [task.id], timeout=15)
    assert done.status is TaskStatus.COMPLETED
    assert done.assigned_at is not None and done.started_at is not None
    # both sides of this comparison are PostgreSQL's clock
    assert done.assigned_at >= done.scheduled_at
    assert (done.scheduled_at - done.created_at).total_seconds() == 1.0


async def test_a_failing_task_is_retried_then_failed_with_its_history(
    settings: Settings, coordinator: Any, store: Store
) -> None:
    async with run_workers(settings, coordinator.port, 2):
        fail, _ = await store.create_task(NewTask(command="fail", max_attempts=3))
        flaky, _ = await store.create_task(NewTask(command="flaky", payload={"p": 1.0},
                                                   max_attempts=2))
        lucky, _ = await store.create_task(NewTask(command="flaky", payload={"p": 0.0}))
        done = await wait_final(store, [fail.id, flaky.id, lucky.id])
    failed, flaked, passed = done
    assert (failed.status, failed.attempt, failed.error) == (
        TaskStatus.FAILED, 3, "TaskFailed: this task always fails")
    assert failed.failed_at is not None and failed.completed_at is None
    assert [h["attempt"] for h in failed.history] == [1, 2, 3]
    assert all(h["error"] == "TaskFailed: this task always fails" for h in failed.history)
    assert all(h["worker_id"] for h in failed.history)
    assert await events_of(store, fail.id) == [
        "task_scheduled",
        "task_assigned", "task_running", "task_retrying",
        "task_assigned", "task_running", "task_retrying",
        "task_assigned", "task_running", "task_failed"]
    detail = failed.to_json_detail()["attempts"]
    assert [a["attempt"] for a in detail][-1] == 3

    assert (flaked.status, flaked.attempt) == (TaskStatus.FAILED, 2)
    assert flaked.error == "TaskFailed: flaky failure on attempt 2"
    assert (passed.status, passed.attempt, passed.result) == (
        TaskStatus.COMPLETED, 1, {"attempt": 1})


async def test_notify_wakes_the_assigner_long_before_its_poll(
    settings: Settings, coordinator: Any, store: Store
) -> None:
    assert settings.poll_interval >= 60
    async with run_workers(settings, coordinator.port, 1):
        # idle now: the assigner sleeps until a notification or the 60 s poll
        assert await store.next_due() is None
        task, _ = await store.create_task(NewTask(command="noop"))
        [done] = await wait_final(store, [task.id], timeout=10)
    assert done.status is TaskStatus.COMPLETED
    assert done.assigned_at is not None
    waited = (done.assigned_at - done.created_at).total_seconds()
    assert waited < settings.poll_interval / 6, waited


async def test_a_task_falling_due_while_a_claim_runs_is_not_left_for_the_poll(
    settings: Settings, coordinator: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim looks before the task is due and returns after: the assigner must look
    again at once, not sleep until its 60 s poll (a retry's backoff can end so)."""
    assert settings.poll_interval >= 60
    claims = coordinator.coordinator.store
    real_assign = claims.assign
    due_at = time.time() + 3600.0

    async def slow_claim(*args: Any, **kw: Any) -> list[Delivery]:
        got = await real_assign(*args, **kw)
        await asyncio.sleep(max(0.0, due_at - time.time()) + 0.05)  # back after it fell due
        return got

    async with run_workers(settings, coordinator.port, 1):
        await wait_for(lambda: coordinator.coordinator.sessions, message="the worker to join")
        monkeypatch.setattr(claims, "assign", slow_claim)
        due_at = time.time() + 0.5
        task, _ = await store.create_task(NewTask(command="noop", delay_seconds=0.5))
        [done] = await wait_final(store, [task.id], timeout=10)
    assert done.status is TaskStatus.COMPLETED


# ---- through the HTTP API ----

async def test_unknown_commands_are_refused_at_creation_not_by_a_worker(
    settings: Settings, database_url: str, coordinator: Any, store: Store
) -> None:
    async with serve_scheduler(settings, database_url) as (url, _), \
            aiohttp.ClientSession() as http:
        async with http.post(url + "/api/schedule", json={"command": "count-calls"}) as resp:
            assert resp.status == 422
            assert (await resp.json())["field"] == "command"
        assert await fetch(database_url, "SELECT id FROM tasks") == []

        # a worker that offers the command makes it known
        async with run_workers(settings, coordinator.port, 1):
            async def accepted() -> str | None:
                async with http.post(url + "/api/schedule",
                                     json={"command": "count-calls"}) as resp:
                    return str((await resp.json())["id"]) if resp.status == 201 else None

            tid = await wait_for(accepted, message="the command to become known")
            [done] = await wait_final(store, [uuid.UUID(tid)])
    assert done.status is TaskStatus.COMPLETED


async def test_a_cancel_wins_over_a_requeue_when_the_worker_is_lost(
    coordinator: Any, store: Store
) -> None:
    a = FakeWorker(coordinator.port, "fake-a")
    try:
        await a.connect()
        task, _ = await store.create_task(NewTask(command="noop"))
        await a.receive("assign")
        assert (await a.report(str(task.id), 1, pb.RUNNING)).accepted
        assert (await store.cancel_task(task.id)) is not None
        cancel = await a.receive("cancel")
        assert [(r.task_id, r.attempt) for r in cancel.cancel.tasks] == [(str(task.id), 1)]
        await a.leave()  # lost before it could report the cancellation
    finally:
        await a.close()
    await wait_for(lambda: _status_is(store, task.id, "cancelled"), message="the cancellation")
    assert (await task_of(store, task.id)).cancelled_at is not None


async def test_stop_ends_every_loop_even_right_after_a_wake(database_url: str,
                                                            store: Store) -> None:
    from taskmaster.coordinator.service import Coordinator

    coordinator = Coordinator(store, fast_settings())
    await coordinator.start()
    try:
        # the assigner idles in its wait (the test settings poll every 60 s) ...
        await wait_for(lambda: bool(coordinator._wake._waiters),  # type: ignore[attr-defined]
                       message="the assigner to idle")
    finally:
        coordinator.wake()  # ... and is woken in the very turn stop() cancels it
        await coordinator.stop()
    assert [t.get_name() for t in coordinator._tasks if not t.done()] == []


async def test_the_coordinator_plans_its_big_batch_statements_for_their_actual_arrays(
        database_url: str) -> None:
    # a generic plan of the report statement cost 5-8 times the PostgreSQL CPU per task in
    # big batches, planning each small one ~0.5 ms (docs/performance.md);
    # `python -m benchmarks --only throughput` and `--only latency` show the effects
    async with serve_coordinator(fast_settings(), database_url) as server:
        store = server.store
        assert store is not None and store.bulk_pool is not store.pool
        assert await store.bulk_pool.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        assert await store.pool.fetchval("SHOW plan_cache_mode") == "auto"
        assert server.coordinator is not None
        assert server.coordinator.store is store
