"""One bad result cannot wedge other tasks, nor the coordinator's write loop.

A handler's result that PostgreSQL's JSON cannot hold (NaN, Infinity, a NUL character)
fails its task at the worker with a clear error; whatever a raw peer sends anyway is
refused row by row by the coordinator, whose other reports are written and acknowledged.
Plain-function handlers stop when their task times out or their worker stops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

import pytest

from taskmaster.coordinator.service import Coordinator
from taskmaster.model import Report, ReportState, TaskStatus
from taskmaster.rpc import taskmaster_pb2 as pb
from taskmaster.store import NewTask, Store
from taskmaster.worker import handlers
from tests.helpers import fast_settings, run_workers, serve_coordinator, wait_for
from tests.integration import sample_tasks
from tests.integration.test_coordinator import FakeWorker, task_of, wait_final


def no_crash(caplog: pytest.LogCaptureFixture) -> None:
    """No loop of the coordinator died (none logged an error)."""
    errors = [r.getMessage() for r in caplog.records
              if r.name.startswith("taskmaster.coordinator") and r.levelno >= logging.ERROR]
    assert errors == []


async def test_unstorable_results_fail_their_tasks_clearly_and_the_rest_complete(
    database_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fast_settings()
    caplog.set_level(logging.INFO, "taskmaster")
    async with serve_coordinator(settings, database_url) as server, \
            run_workers(settings, server.port, 1, concurrency=8):
        bad = {command: (await store.create_task(NewTask(command=command, max_attempts=2)))[0].id
               for command in ("result-nan", "result-infinity", "result-nul")}
        good = await store.create_batch(NewTask(command="noop"), 30)
        tasks = {t.id: t for t in await wait_final(store, [*bad.values(), *good], timeout=15)}
        coordinator = server.coordinator
        assert coordinator is not None
        assert coordinator.counters["unstorable"] == 0  # the worker caught them all
    assert all(tasks[i].status is TaskStatus.COMPLETED for i in good)
    said = {command: tasks[i] for command, i in bad.items()}
    for command, where in [("result-nan", "NaN at $.ratio"),
                           ("result-infinity", "Infinity at $.values[1]"),
                           ("result-nul", "a NUL character (\\u0000) at $.name")]:
        task = said[command]
        assert (task.status, task.attempt, task.result) == (TaskStatus.FAILED, 2, None), task
        assert task.error is not None
        assert task.error.startswith(f"result cannot be stored: {where}"), task.error
    no_crash(caplog)


async def test_a_raw_batch_with_bad_rows_has_them_refused_and_the_rest_acknowledged(
    database_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_coordinator(fast_settings(), database_url) as server:
        coordinator = server.coordinator
        assert coordinator is not None
        loop_task = next(t for t in coordinator._tasks if t.get_name() == "_write_loop")
        fake = FakeWorker(server.port, "rogue", capacity=4)
        try:
            await fake.connect()
            ids = await store.create_batch(NewTask(command="noop", max_attempts=1), 4)
            got: list[str] = []
            while len(got) < 4:
                got += [a.task_id for a in (await fake.receive("assign")).assign.tasks]
            nan, good, nul, good2 = got
            acks = await fake.send_batch([
                (nan, 1, pb.COMPLETED, '{"ratio": NaN}'),
                (good, 1, pb.COMPLETED, '"fine"'),
                ("not-a-task-id", 1, pb.COMPLETED, '"?"'),
                (nul, 1, pb.COMPLETED, '{"name": "a\\u0000b"}'),
                (good2, 1, pb.COMPLETED, '{"n": 2}'),
            ])
            assert [a.accepted for a in acks] == [False, True, False, False, True], acks
            assert "not stored" in acks[0].reason and "json" in acks[0].reason.lower()
            assert "malformed" in acks[2].reason and "not a UUID" in acks[2].reason
            assert "not stored" in acks[3].reason
            # the coordinator keeps serving: the next task goes out and is written
            later, _ = await store.create_task(NewTask(command="noop"))
            tid = (await fake.receive("assign")).assign.tasks[0].task_id
            assert tid == str(later.id)
            assert (await fake.report(tid, 1, pb.COMPLETED, result="later")).accepted
        finally:
            await fake.leave()
            await fake.close()
        assert coordinator.counters["unstorable"] == 3
        assert not loop_task.done()  # the same write loop, never restarted
    by_id = {str(t.id): t for t in [await task_of(store, i) for i in ids]}
    assert (by_id[good].status, by_id[good].result) == (TaskStatus.COMPLETED, "fine")
    assert (by_id[good2].status, by_id[good2].result) == (TaskStatus.COMPLETED, {"n": 2})
    for bad in (nan, nul):
        task = by_id[bad]
        assert (task.status, task.result) == (TaskStatus.FAILED, None)
        assert task.error is not None
        assert task.error.startswith("the worker's report could not be stored:"), task.error
    assert (await task_of(store, later.id)).result == "later"
    no_crash(caplog)


async def test_one_workers_bad_row_does_not_cost_another_workers_acks(store: Store) -> None:
    """Two workers' messages written in one statement: the bad row fails alone."""
    coordinator = Coordinator(store, fast_settings())
    await coordinator.start()
    try:
        a = (await coordinator.register(worker_id="", name="a", host="h", pid=1, capacity=8,
                                        commands=["noop"], in_flight={})).session
        b = (await coordinator.register(worker_id="", name="b", host="h", pid=2, capacity=8,
                                        commands=["noop"], in_flight={})).session
        await store.create_batch(NewTask(command="noop", max_attempts=1), 16)
        await wait_for(lambda: len(a.held) == 8 and len(b.held) == 8,
                       message="every task to go out")

        def reports(session: object, held: dict[uuid.UUID, int], poison: int | None
                    ) -> list[Report]:
            return [Report(task_id=t, attempt=n, state=ReportState.COMPLETED, seq=i,
                           result_json='{"x": NaN}' if i == poison else '"ok"')
                    for i, (t, n) in enumerate(sorted(held.items()))]

        a_reports, b_reports = reports(a, a.held, 5), reports(b, b.held, None)
        for s, n in ((a, 1), (b, 1)):  # the places admit() would have taken
            await coordinator.admit(s, n)
        a_acks, b_acks = await asyncio.gather(coordinator.report(a, a_reports),
                                              coordinator.report(b, b_reports))
    finally:
        await coordinator.stop()
    assert [ack.accepted for ack in b_acks] == [True] * 8
    assert [ack.accepted for ack in a_acks] == [i != 5 for i in range(8)]
    statuses = await store.pool.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status")
    assert {r["status"]: r["n"] for r in statuses} == {"completed": 15, "failed": 1}


# ---- plain-function handlers stop ----

def _alive(task_id: uuid.UUID) -> bool:
    return any(t.name == f"task-{task_id}" for t in threading.enumerate())


@pytest.mark.parametrize("command", ["cpu", "spin"])
async def test_a_timed_out_thread_handler_frees_its_thread(
    database_url: str, store: Store, command: str
) -> None:
    """`cpu` looks at ctx.cancelled; `spin` never does and is stopped all the same."""
    settings = fast_settings()
    async with serve_coordinator(settings, database_url) as server, \
            run_workers(settings, server.port, 1, concurrency=2):
        task, _ = await store.create_task(NewTask(
            command=command, payload={"ms": 3_600_000}, timeout_seconds=0.3, max_attempts=1))
        await wait_for(lambda: _alive(task.id), message="the handler's thread to start")
        [done] = await wait_final(store, [task.id], timeout=10)
        assert (done.status, done.error) == (TaskStatus.FAILED, "timed out after 0.3s")
        await wait_for(lambda: not _alive(task.id), 5, message="the thread to end")
        # the slot is free and the worker works on
        after, _ = await store.create_task(NewTask(command="cpu", payload={"ms": 1}))
        [ok] = await wait_final(store, [after.id])
    assert ok.status is TaskStatus.COMPLETED


async def test_a_stopping_worker_stops_its_thread_handlers(database_url: str,
                                                           store: Store) -> None:
    settings = fast_settings(drain_grace=0.2)
    async with serve_coordinator(settings, database_url) as server:
        async with run_workers(settings, server.port, 1) as pool:
            task, _ = await store.create_task(NewTask(command="spin"))
            await wait_for(lambda: str(task.id) in sample_tasks.SPINNING,
                           message="the handler to spin")
            assert _alive(task.id)
        # pool.stop() drained the worker: past its grace the task was handed back
        assert pool.runs[0].result() == 0
        await wait_for(lambda: not _alive(task.id), 5, message="the thread to end")
    back = await task_of(store, task.id)
    assert back.status is TaskStatus.PENDING and back.attempt == 2


async def test_cpu_ms_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "MAX_CPU_MS", 20.0)
    ctx = handlers.TaskContext(task_id=uuid.uuid4(), attempt=1, command="cpu",
                               payload={"ms": 10**12}, report_progress=_no_progress)
    result = await asyncio.wait_for(handlers.run_handler(handlers.cpu, ctx), 30)
    assert result["iterations"] > 0


async def _no_progress(percent: int) -> None:
    """A progress reporter that reports nowhere."""

