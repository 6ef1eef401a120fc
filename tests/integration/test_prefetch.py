"""Prefetch: a worker whose tasks are short is sent a few deliveries beyond its slots and
starts the next one the moment a slot frees; one whose tasks are long never is; a drain
gives the queued deliveries back, and nothing runs twice or is lost on the way.

Real coordinator over gRPC, real PostgreSQL, workers in the test's event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from taskmaster.config import Settings
from taskmaster.coordinator.session import (
    PREFETCH_AFTER_RUNS,
    PREFETCH_MIN_CYCLE,
    PREFETCH_QUEUE_SECONDS,
    SHORT_COMMANDS_KEPT,
    Session,
    ShortCommands,
)
from taskmaster.model import Delivery, ReportState
from taskmaster.store import NewTask, Store
from tests.helpers import fast_settings, run_workers, serve_coordinator, wait_for
from tests.integration import sample_tasks
from tests.integration.test_coordinator import wait_final


async def _held_by(store: Store, worker_id: str) -> dict[str, int]:
    rows = await store.pool.fetch(
        "SELECT status, count(*) AS n FROM tasks WHERE worker_id = $1 GROUP BY status",
        worker_id)
    return {r["status"]: r["n"] for r in rows}


async def _status_of(store: Store, task_id: uuid.UUID) -> str:
    return str(await store.pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id))


async def test_short_tasks_are_prefetched_and_a_drain_gives_them_back(
    database_url: str, store: Store
) -> None:
    # short below 1 s: queued deliveries are held up to 5 s, longer than this test looks
    settings = fast_settings(prefetch=3, prefetch_below=1.0)
    async with serve_coordinator(settings, database_url) as coordinator:
        async with run_workers(settings, coordinator.port, 1) as pool:
            [worker] = pool.workers
            assert worker.prefetch == 3
            # no-op tasks: once a few have run, its tasks are short
            await wait_final(store, await store.create_batch(NewTask(command="noop"), 5))
            blocker, _ = await store.create_task(NewTask(command="progress-steps"))
            await wait_for(lambda: _is(store, blocker.id, "running"), message="the blocker runs")
            queued = await store.create_batch(NewTask(command="noop"), 6)

            # its one slot is busy: it holds its prefetch beyond it, and no more
            await wait_for(lambda: len(worker.waiting) == 3, message="3 deliveries queued")
            held = await _held_by(store, worker.worker_id)
            assert held == {"running": 1, "assigned": 3, "completed": 5}, held
            pending = await store.pool.fetchval(
                "SELECT count(*) FROM tasks WHERE id = ANY($1) AND status = 'pending'", queued)
            assert pending == 3

            # a drain gives the queued deliveries back at once; the running task finishes
            worker.drain()
            await wait_for(lambda: _count(store, queued, "pending", 6),
                           message="the queued deliveries back in the queue")
            assert not worker.waiting
            sample_tasks.gate(str(blocker.id)).set()
            await wait_for(lambda: pool.runs[0].done(), message="the worker to leave")
        assert await _status_of(store, blocker.id) == "completed"

        # another worker runs them, each once
        async with run_workers(settings, coordinator.port, 1, prefix="v"):
            done = await wait_final(store, queued)
        assert {t.status.value for t in done} == {"completed"}
        moved = await store.pool.fetchval(
            "SELECT count(*) FROM events WHERE task_id = ANY($1) AND event = 'task_reassigned'",
            queued)
        assert moved == 0


async def _is(store: Store, task_id: uuid.UUID, status: str) -> bool:
    return await _status_of(store, task_id) == status


async def _count(store: Store, ids: list[uuid.UUID], status: str, n: int) -> bool:
    got = await store.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE id = ANY($1) AND status = $2", ids, status)
    return int(got) == n


async def test_a_cancelled_queued_delivery_never_runs(database_url: str, store: Store) -> None:
    settings = fast_settings(prefetch=2, prefetch_below=1.0)
    async with serve_coordinator(settings, database_url) as coordinator, \
            run_workers(settings, coordinator.port, 1) as pool:
        [worker] = pool.workers
        # its tasks, and count-calls's, are known to be short: count-calls is prefetched
        warm = await store.create_batch(NewTask(command="count-calls"), 5)
        assert {t.status.value for t in await wait_final(store, warm)} == {"completed"}
        blocker, _ = await store.create_task(NewTask(command="progress-steps"))
        await wait_for(lambda: _is(store, blocker.id, "running"), message="the blocker runs")
        [queued] = await store.create_batch(NewTask(command="count-calls"), 1)
        await wait_for(lambda: len(worker.waiting) == 1, message="the delivery queued")
        assert (await store.cancel_task(queued)) is not None
        await wait_for(lambda: _is(store, queued, "cancelled"), message="the cancel to land")
        sample_tasks.gate(str(blocker.id)).set()
        await wait_final(store, [blocker.id])
        assert sample_tasks.CALLS[str(queued)] == 0


async def test_deliveries_queued_behind_a_long_task_go_to_another_worker(
    database_url: str, store: Store
) -> None:
    settings = fast_settings(prefetch=3, prefetch_below=0.02)  # held at most 0.1 s
    async with serve_coordinator(settings, database_url) as coordinator, \
            run_workers(settings, coordinator.port, 2) as pool:
        assert {w.prefetch_hold for w in pool.workers} == {0.1}
        # both workers learn that their tasks are short
        await wait_final(store, await store.create_batch(NewTask(command="noop"), 40))
        blocker, _ = await store.create_task(NewTask(command="progress-steps"))
        await wait_for(lambda: _is(store, blocker.id, "running"), message="the blocker runs")
        quick = await store.create_batch(NewTask(command="noop"), 30)
        # whatever its worker had queued behind the blocker was given back and ran on the
        # other worker, while the blocker still runs
        done = await wait_final(store, quick, timeout=15)
        assert await _is(store, blocker.id, "running")
        blocked = next(w for w in pool.workers if blocker.id in w.running)
        assert not blocked.waiting
        assert {t.worker_id for t in done} == {w.worker_id for w in pool.workers
                                               if w is not blocked}
        sample_tasks.gate(str(blocker.id)).set()
        await wait_final(store, [blocker.id])


async def test_long_tasks_are_never_prefetched(database_url: str, store: Store) -> None:
    settings = fast_settings(prefetch=4, prefetch_below=0.02)
    async with serve_coordinator(settings, database_url) as coordinator, \
            run_workers(settings, coordinator.port, 1) as pool:
        [worker] = pool.workers
        ids = await store.create_batch(NewTask(command="sleep", payload={"seconds": 0.05}), 12)
        most = 0
        deadline = time.monotonic() + 30
        while not await _count(store, ids, "completed", 12):
            assert time.monotonic() < deadline, "12 sleep tasks did not finish in 30 s"
            held = await _held_by(store, worker.worker_id)
            most = max(most, held.get("assigned", 0) + held.get("running", 0))
            assert not worker.waiting
            await asyncio.sleep(0.005)  # a sample every few ms, as the capacity test takes
        assert most == 1


async def test_long_tasks_after_many_short_ones_are_not_queued_behind_busy_slots(
    database_url: str, store: Store
) -> None:
    """The demo's path: no-op tasks (prefetched), then sleep tasks on the same workers. A
    sleep task is of a command not known to be short: none is queued behind a busy slot, so
    none is given back (no task_rejected event), and each runs at its first attempt."""
    settings = fast_settings(prefetch=16, prefetch_below=0.02)
    async with serve_coordinator(settings, database_url) as coordinator, \
            run_workers(settings, coordinator.port, 2) as pool:
        await wait_final(store, await store.create_batch(NewTask(command="noop"), 200))
        assert coordinator.coordinator.writer.short_commands.names() == ["noop"]
        assert all(s.short_tasks for s in coordinator.coordinator.sessions.values())
        ids = await store.create_batch(NewTask(command="sleep", payload={"seconds": 0.1}), 8)
        most = 0
        deadline = time.monotonic() + 30
        while not await _count(store, ids, "completed", 8):
            assert time.monotonic() < deadline, "8 sleep tasks did not finish in 30 s"
            for w in pool.workers:
                assert not w.waiting, "a sleep task was queued behind a busy slot"
                held = await _held_by(store, w.worker_id)
                most = max(most, held.get("assigned", 0) + held.get("running", 0))
            await asyncio.sleep(0.005)
        assert most == 1
        rows = await store.pool.fetch(
            "SELECT event, count(*) AS n FROM events WHERE task_id = ANY($1) GROUP BY event", ids)
        assert {r["event"]: r["n"] for r in rows} == {
            "task_scheduled": 8, "task_assigned": 8, "task_running": 8, "task_completed": 8}
        attempts = await store.pool.fetchval("SELECT max(attempt) FROM tasks WHERE id = ANY($1)",
                                             ids)
        assert attempts == 1


async def test_no_task_is_queued_while_a_long_one_is_due_before_it(
    database_url: str, store: Store
) -> None:
    """Short tasks behind a task of an unknown (or long) command are not prefetched: the
    queues drain, so that a slot frees for the long one, which is not passed over."""
    settings = fast_settings(prefetch=4, prefetch_below=1.0)
    async with serve_coordinator(settings, database_url) as coordinator, \
            run_workers(settings, coordinator.port, 1):
        await wait_final(store, await store.create_batch(NewTask(command="noop"), 5))
        first, _ = await store.create_task(NewTask(command="progress-steps"))
        await wait_for(lambda: _is(store, first.id, "running"), message="the first blocker runs")
        # due in this order: another blocker, then no-ops
        second, _ = await store.create_task(NewTask(command="progress-steps"))
        quick = await store.create_batch(NewTask(command="noop"), 4)
        sample_tasks.gate(str(first.id)).set()
        await wait_for(lambda: _is(store, second.id, "running"), message="the second blocker")
        sample_tasks.gate(str(second.id)).set()
        done = await wait_final(store, [first.id, second.id, *quick])
        assert {t.status.value for t in done} == {"completed"}
        assert {t.attempt for t in done} == {1}
        # none of the no-ops was claimed (queued) before the blocker due ahead of them
        order = await store.pool.fetch(
            "SELECT id FROM tasks WHERE id = ANY($1) ORDER BY assigned_at", [second.id, *quick])
        assert order[0]["id"] == second.id


def test_short_commands_are_those_that_ran_short_lately() -> None:
    short = ShortCommands(short_below=0.02)
    for _ in range(PREFETCH_AFTER_RUNS - 1):
        short.ran("noop", 0.001)
    assert short.names() == []  # too few runs to tell
    short.ran("noop", 0.001)
    short.ran("sleep", 0.5)
    for _ in range(5):
        short.ran("sleep", 0.5)
    assert short.names() == ["noop"]
    for _ in range(10):
        short.ran("noop", 0.5)  # got long
    assert short.names() == []
    for i in range(SHORT_COMMANDS_KEPT + 10):  # bounded, whatever the commands
        short.ran(f"c{i}", 0.001)
    assert len(short._runs) == SHORT_COMMANDS_KEPT


def test_a_session_counts_prefetch_only_while_its_tasks_are_short() -> None:
    s = Session(worker_id="w", name="w", host="h", pid=1, capacity=2, commands=(),
                outbox=asyncio.Queue(), prefetch=3)
    assert s.free == 2  # nothing known of its tasks yet
    for _ in range(PREFETCH_AFTER_RUNS):
        s.ran(0.001, short_below=0.02)
    assert s.short_tasks and s.free == 5
    for _ in range(10):  # they got long: the average follows within a few runs
        s.ran(0.5, short_below=0.02)
    assert not s.short_tasks and s.free == 2
    s.held = {uuid.uuid4(): 1, uuid.uuid4(): 1}
    assert s.free == 0


def test_a_worker_queues_no_more_than_its_slots_run_through_soon() -> None:
    """The queue is as deep as its slots run through in PREFETCH_QUEUE_SECONDS at their
    pace: one slot of 8 ms tasks queues 12, not its whole prefetch of 64 (the last would
    wait 512 ms)."""
    one = Session(worker_id="w", name="w", host="h", pid=1, capacity=1, commands=(),
                  outbox=asyncio.Queue(), prefetch=64)
    many = Session(worker_id="v", name="v", host="h", pid=1, capacity=64, commands=(),
                   outbox=asyncio.Queue(), prefetch=64)
    for _ in range(100):
        one.ran(0.008, short_below=0.02)
        many.ran(0.008, short_below=0.02)
    assert one.free == 1 + int(PREFETCH_QUEUE_SECONDS / 0.008) == 13
    assert many.free == 64 + 64  # 64 slots run through 64 in 8 ms
    for _ in range(30):  # no-ops: the pace is taken as one task per PREFETCH_MIN_CYCLE
        one.ran(0.00001, short_below=0.02)
    assert one.free == 1 + int(PREFETCH_QUEUE_SECONDS / PREFETCH_MIN_CYCLE)
    one.gave_back()
    assert one.free == 1


def test_a_worker_queues_what_it_finishes_in_a_moment_at_its_pace() -> None:
    """Once its status messages show how fast it finishes tasks while busy, the queue holds
    what the worker finishes in PREFETCH_QUEUE_SECONDS at that pace, whatever the tasks'
    own run time; the idle time between two messages does not count."""
    s = Session(worker_id="w", name="w", host="h", pid=1, capacity=1, commands=(),
                outbox=asyncio.Queue(), prefetch=200)
    t = 1_000_000.0

    def message(times: list[float]) -> None:  # its reports of one status message
        for _ in times:
            s.ran(0.00001, short_below=0.02)  # no-ops
        s.finished(times)

    message([t, t + 0.0001, t + 0.0002])
    # short now, and fast, but a queue grows as the worker proves itself: no deeper than
    # the tasks it has run (so the first worker found short takes no whole burst)
    assert s.short_tasks and s.free == 1 + PREFETCH_AFTER_RUNS
    for _ in range(30):  # messages of 5 tasks, one finished every 2.4 ms, a second apart
        t += 1.0
        message([t + 0.0024 * i for i in range(5)])
    assert s.free == 1 + int(PREFETCH_QUEUE_SECONDS / 0.0024) == 42
    message([t + 2.0])  # one task alone tells nothing of a pace
    assert s.free == 42
    for _ in range(30):  # it slowed down: one every 9 ms
        t += 1.0
        message([t + 0.009 * i for i in range(3)])
    assert s.free == 1 + int(PREFETCH_QUEUE_SECONDS / 0.009) == 12
    for _ in range(60):  # a clock that stands still, or a peer that lies, is still capped
        message([t, t, t])
    assert s.free == 1 + 200
    s.gave_back()
    assert s.free == 1


def test_slots_that_finish_together_do_not_look_faster_than_their_tasks() -> None:
    """Four slots of 15 ms tasks finish together, four reports in one message a few µs
    apart: the queue is what the slots run in PREFETCH_QUEUE_SECONDS (26), not the whole
    prefetch (the last of 128 would wait 480 ms)."""
    s = Session(worker_id="w", name="w", host="h", pid=1, capacity=4, commands=(),
                outbox=asyncio.Queue(), prefetch=128)
    t = 1_000_000.0
    for _ in range(30):
        for _ in range(4):
            s.ran(0.015, short_below=0.02)
        s.finished([t, t + 0.00001, t + 0.00002, t + 0.00003])
        t += 0.015
    assert s.free == 4 + int(PREFETCH_QUEUE_SECONDS * 4 / 0.015) == 30


@pytest.mark.parametrize("name", ["prefetch", "prefetch_below", "max_worker_prefetch"])
def test_a_negative_prefetch_setting_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"TASKMASTER_{name.upper()}"):
        Settings(**{name: -1})


async def test_a_one_slot_worker_with_a_queue_sends_several_reports_a_message(
    database_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While deliveries wait in its queue, a worker gathers the reports of a few tasks
    into one message (REPORT_COALESCE), not one message a task; with its queue empty it
    sends at once (the coordinator must learn that a slot is free)."""
    from taskmaster.worker import runtime

    messages: list[int] = []
    real_status = runtime._status

    def counted(reports: Any) -> Any:
        reports = list(reports)
        messages.append(len(reports))
        return real_status(reports)

    monkeypatch.setattr(runtime, "_status", counted)
    settings = fast_settings()
    async with serve_coordinator(settings, database_url) as coordinator, \
            run_workers(settings, coordinator.port, 1):
        await wait_final(store, await store.create_batch(NewTask(command="noop"), 300))
    assert sum(messages) >= 300
    assert len(messages) <= sum(messages) / 2, messages


def _queued_worker(prefetch: int) -> Any:
    """A one-slot worker (no coordinator: deliveries handed to it directly) whose queued
    deliveries are held 50 ms."""
    from taskmaster.worker.runtime import Worker

    worker = Worker(fast_settings(prefetch=prefetch, prefetch_below=0.01), name="q",
                    concurrency=1, coordinator="127.0.0.1:1")
    assert worker.prefetch_hold == 0.05
    return worker


def _sleep(seconds: float) -> Delivery:
    return Delivery(task_id=uuid.uuid4(), attempt=1, command="sleep",
                    payload_json=f'{{"seconds": {seconds}}}', timeout_seconds=10.0)


async def test_a_queue_that_moves_is_not_given_back_however_long_it_waits() -> None:
    """Eight 20 ms tasks on one slot: the last waits 140 ms in the queue, past the 50 ms
    hold, but a slot frees every 20 ms (on busy cores, a queue is slow, not stuck)."""
    worker = _queued_worker(prefetch=10)
    for _ in range(8):
        worker._accept(_sleep(0.02))
    await wait_for(lambda: not worker.running and not worker.waiting, 10,
                   message="the eight tasks to run")
    states = [r.state for r in worker._pending.values()]
    assert states == [ReportState.COMPLETED] * 8, states


async def test_a_queue_behind_a_long_task_is_given_back() -> None:
    """Its one slot held by a long task, no slot frees: the queued deliveries go back
    after the hold, to run elsewhere."""
    worker = _queued_worker(prefetch=10)
    blocker = _sleep(5.0)
    worker._accept(blocker)
    queued = [_sleep(0.01) for _ in range(3)]
    for d in queued:
        worker._accept(d)
    await wait_for(lambda: not worker.waiting, 5, message="the queue given back")
    given_back = {ref.task_id for ref, r in worker._pending.items()
                  if r.state is ReportState.REJECTED}
    assert given_back == {d.task_id for d in queued}
    assert blocker.task_id in worker.running
    await worker._cancel_all()


async def test_a_burst_of_short_tasks_is_shared_by_the_workers(
    database_url: str, store: Store
) -> None:
    """300 no-ops on three one-slot workers: the first worker found short does not take
    the burst from the others (a queue grows as its worker runs tasks), so each runs a
    fair part of them; before, one ran 226 of the 300."""
    settings = fast_settings()
    async with serve_coordinator(settings, database_url) as coordinator, \
            run_workers(settings, coordinator.port, 3):
        await wait_for(lambda: len(coordinator.coordinator.sessions) == 3,
                       message="three workers")
        await wait_final(store, await store.create_batch(NewTask(command="noop"), 300))
    rows = await store.pool.fetch("SELECT worker_id, count(*) AS n FROM tasks GROUP BY 1")
    counts = sorted(r["n"] for r in rows)
    assert len(counts) == 3 and counts[0] >= 50, counts
