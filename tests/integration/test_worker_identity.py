"""Workers cannot impersonate each other, and what one worker may take is bounded.

The coordinator issues each worker its id and a secret; an id without its secret is refused
(and logged), and the worker that owns it keeps its session and its tasks, also across a
coordinator restart. Capacity, commands, sessions, result sizes and the rate of status
updates are capped by settings. Real gRPC over sockets, real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import Counter
from typing import Any

import grpc
import pytest

from taskmaster.coordinator.server import CoordinatorServer
from taskmaster.model import TaskStatus
from taskmaster.rpc import taskmaster_pb2 as pb
from taskmaster.store import NewTask, Store
from taskmaster.worker.runtime import Worker
from tests.helpers import fast_settings, fetch, run_workers, serve_coordinator, wait_for
from tests.integration import sample_tasks
from tests.integration.test_coordinator import FakeWorker, task_of, wait_final


async def refused_with(worker: FakeWorker, code: grpc.StatusCode) -> str:
    """Connect, expecting the coordinator to end the stream with this code; its details."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await worker.connect()
    assert caught.value.code() == code, caught.value
    return str(caught.value.details())


async def _status_is(store: Store, task_id: uuid.UUID, status: TaskStatus) -> bool:
    return (await task_of(store, task_id)).status is status


# ---- identity ----

async def test_another_workers_id_without_its_secret_is_refused_and_the_owner_keeps_its_task(
    database_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fast_settings()
    async with serve_coordinator(settings, database_url) as server, \
            run_workers(settings, server.port, 1) as pool:
        [owner] = pool.workers
        assert owner.worker_id  # issued by the coordinator
        task, _ = await store.create_task(NewTask(command="progress-steps"))
        await wait_for(lambda: _status_is(store, task.id, TaskStatus.RUNNING),
                       message="the owner to run the task")
        session = server.coordinator.sessions[owner.worker_id]
        ids = json.dumps(await fetch(database_url, "SELECT id FROM workers"), default=str)

        with caplog.at_level(logging.WARNING, "taskmaster.coordinator"):
            for secret in ("", "a-guess", owner._secret + "x"):
                thief = FakeWorker(server.port, "thief")
                thief.worker_id, thief.secret = owner.worker_id, secret
                try:  # claims the owner's id and its task, as the attacker did
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await thief.connect(in_flight=[(str(task.id), 1)])
                    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
                    assert "secret" in str(caught.value.details())
                finally:
                    await thief.close()
        assert server.coordinator.counters["joins_refused"] == 3
        refusals = [r for r in caplog.records if "refused a worker claiming id" in r.getMessage()]
        assert len(refusals) == 3 and all(owner.worker_id in r.getMessage() for r in refusals)

        # nothing changed: the owner's session is the same live one, and it holds the task
        assert server.coordinator.sessions[owner.worker_id] is session and not session.closed
        assert session.held == {task.id: 1}
        now = await task_of(store, task.id)
        assert (now.status, now.worker_id, now.attempt) == (TaskStatus.RUNNING, owner.worker_id, 1)
        assert json.dumps(await fetch(database_url, "SELECT id FROM workers"), default=str) == ids
        sample_tasks.gate(str(task.id)).set()
        [done] = await wait_final(store, [task.id])
    assert (done.status, done.worker_id, done.attempt, done.result) == (
        TaskStatus.COMPLETED, owner.worker_id, 1, "stepped")


async def test_a_report_on_a_task_the_worker_does_not_hold_is_refused(
    database_url: str, store: Store
) -> None:
    settings = fast_settings()
    async with serve_coordinator(settings, database_url) as server, \
            run_workers(settings, server.port, 1) as pool:
        [owner] = pool.workers
        task, _ = await store.create_task(NewTask(command="progress-steps"))
        await wait_for(lambda: _status_is(store, task.id, TaskStatus.RUNNING),
                       message="the owner to run the task")
        rogue = FakeWorker(server.port, "rogue")
        try:
            await rogue.connect(in_flight=[(str(task.id), 1)])  # a claim: revoked, not adopted
            for state in (pb.COMPLETED, pb.FAILED, pb.CANCELLED, pb.REJECTED):
                ack = await rogue.report(str(task.id), 1, state, result="forged")
                assert not ack.accepted and "stale" in ack.reason
        finally:
            await rogue.leave()
            await rogue.close()
        now = await task_of(store, task.id)
        assert (now.status, now.worker_id, now.result) == (
            TaskStatus.RUNNING, owner.worker_id, None)
        sample_tasks.gate(str(task.id)).set()
        [done] = await wait_final(store, [task.id])
    assert (done.status, done.worker_id, done.result) == (
        TaskStatus.COMPLETED, owner.worker_id, "stepped")


async def test_the_identity_survives_a_coordinator_restart(database_url: str,
                                                           store: Store) -> None:
    settings = fast_settings()
    first = CoordinatorServer(settings, database_url)
    port = await first.start(host="127.0.0.1", port=0)
    second: CoordinatorServer | None = None
    try:
        async with run_workers(settings, port, 1) as pool:
            [worker] = pool.workers
            issued = worker.worker_id
            task, _ = await store.create_task(NewTask(command="progress-steps"))
            await wait_for(lambda: _status_is(store, task.id, TaskStatus.RUNNING),
                           message="the worker to run the task")
            await first.stop(grace=0.5)  # the new coordinator knows nothing but PostgreSQL
            second = CoordinatorServer(settings, database_url)
            await second.start(host="127.0.0.1", port=port)
            coordinator = second.coordinator
            assert coordinator is not None
            await wait_for(lambda: issued in coordinator.sessions, 15,
                           message="the worker to come back")
            assert worker.worker_id == issued  # the same identity, its task adopted
            assert coordinator.sessions[issued].held == {task.id: 1}
            sample_tasks.gate(str(task.id)).set()
            [done] = await wait_final(store, [task.id])
    finally:
        if second is not None:
            await second.stop(grace=0.5)
    assert (done.status, done.worker_id, done.attempt) == (TaskStatus.COMPLETED, issued, 1)
    assert await store.pool.fetchval("SELECT count(*) FROM workers") == 1


async def test_a_worker_whose_identity_is_unknown_registers_as_a_new_one(
    database_url: str, store: Store
) -> None:
    settings = fast_settings()
    first = CoordinatorServer(settings, database_url)
    port = await first.start(host="127.0.0.1", port=0)
    second: CoordinatorServer | None = None
    try:
        async with run_workers(settings, port, 1) as pool:
            [worker] = pool.workers
            old = worker.worker_id
            await first.stop(grace=0.5)
            # the database forgot it meanwhile (reset, or pruned while it was away)
            await store.pool.execute("DELETE FROM workers WHERE id = $1", old)
            second = CoordinatorServer(settings, database_url)
            await second.start(host="127.0.0.1", port=port)
            await wait_for(lambda: worker.connected.is_set() and worker.worker_id not in ("", old),
                           15, message="the worker to register anew")
            task, _ = await store.create_task(NewTask(command="noop"))
            [done] = await wait_final(store, [task.id])
    finally:
        if second is not None:
            await second.stop(grace=0.5)
    assert (done.status, done.worker_id) == (TaskStatus.COMPLETED, worker.worker_id)


# ---- what one worker may take ----

async def test_capacity_is_cut_to_the_setting(database_url: str, store: Store) -> None:
    settings = fast_settings(max_worker_capacity=4)
    async with serve_coordinator(settings, database_url) as server:
        greedy = FakeWorker(server.port, "greedy", capacity=1_000_000)
        try:
            await greedy.connect()
            assert server.coordinator.sessions[greedy.worker_id].capacity == 4
            await store.create_batch(NewTask(command="noop"), 20)
            got: list[str] = []
            while len(got) < 4:
                got += [a.task_id for a in (await greedy.receive("assign")).assign.tasks]
            held = await store.pool.fetchval(
                "SELECT count(*) FROM tasks WHERE worker_id = $1", greedy.worker_id)
            assert (len(got), held) == (4, 4)  # the rest of the queue stays for others
        finally:
            await greedy.leave()
            await greedy.close()
    assert await store.pool.fetchval("SELECT capacity FROM workers") == 4


@pytest.mark.parametrize(("commands", "says"), [
    ([f"c{i}" for i in range(11)], "TASKMASTER_MAX_WORKER_COMMANDS"),
    (["x" * 201], "longer than 200"),
    (["bad\x00name"], "NUL"),
    ([""], "empty"),
])
async def test_a_registration_over_its_bounds_is_refused_and_changes_nothing(
    database_url: str, store: Store, commands: list[str], says: str
) -> None:
    async with serve_coordinator(fast_settings(max_worker_commands=10), database_url) as server:
        before = await store.known_commands()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            from taskmaster.rpc import taskmaster_pb2_grpc as pb_grpc

            async def register() -> Any:
                yield pb.WorkerMessage(register=pb.Register(name="w", capacity=1,
                                                            commands=commands))

            call = pb_grpc.CoordinatorStub(channel).Connect(register())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert says in str(caught.value.details())
        assert await store.pool.fetchval("SELECT count(*) FROM workers") == 0
        assert await store.known_commands() == before


async def test_a_worker_refused_for_its_registration_exits_2_saying_why(
    database_url: str
) -> None:
    settings = fast_settings()
    async with serve_coordinator(settings, database_url) as server:
        worker = Worker(settings, name="n" * 300, coordinator=f"127.0.0.1:{server.port}")
        code = await asyncio.wait_for(worker.run(), 15)
    assert code == 2


async def test_sessions_are_capped_even_for_a_burst(database_url: str, store: Store) -> None:
    settings = fast_settings(max_worker_sessions=2)
    async with serve_coordinator(settings, database_url) as server:
        workers = [FakeWorker(server.port, f"w{i}") for i in range(6)]
        try:
            outcomes = await asyncio.gather(*(w.connect() for w in workers),
                                            return_exceptions=True)
            codes = Counter("ok" if isinstance(o, pb.Registered) else o.code()  # type: ignore[union-attr]
                            for o in outcomes)
            assert codes == {"ok": 2, grpc.StatusCode.RESOURCE_EXHAUSTED: 4}, outcomes
            assert len(server.coordinator.sessions) == 2
            assert await store.pool.fetchval("SELECT count(*) FROM workers") == 2
            assert all("TASKMASTER_MAX_WORKER_SESSIONS" in o.details()  # type: ignore[union-attr]
                       for o in outcomes if not isinstance(o, pb.Registered))
            # one leaves: its place is free again
            admitted = [w for w, o in zip(workers, outcomes, strict=True)
                        if isinstance(o, pb.Registered)]
            await admitted[0].leave()
            await wait_for(lambda: len(server.coordinator.sessions) == 1,
                           message="the place to be given back")
            late = FakeWorker(server.port, "late")
            workers.append(late)
            assert (await late.connect()).worker_id
        finally:
            for w in workers:
                with contextlib.suppress(Exception):
                    await w.leave(timeout=2)
                await w.close()


async def test_a_result_over_the_size_limit_fails_its_attempt_saying_so(
    database_url: str, store: Store
) -> None:
    settings = fast_settings(max_result_bytes=1024)
    async with serve_coordinator(settings, database_url) as server:
        fake = FakeWorker(server.port, "big")
        try:
            await fake.connect()
            task, _ = await store.create_task(NewTask(command="noop", max_attempts=1))
            await fake.receive("assign")
            ack = await fake.report(str(task.id), 1, pb.COMPLETED, result="x" * 2000)
            assert not ack.accepted
            assert "TASKMASTER_MAX_RESULT_BYTES" in ack.reason
        finally:
            await fake.leave()
            await fake.close()
    done = await task_of(store, task.id)
    assert (done.status, done.result) == (TaskStatus.FAILED, None)
    assert done.error is not None and "2002 bytes, more than 1024" in done.error


async def test_a_worker_over_its_report_rate_is_read_more_slowly_and_loses_nothing(
    database_url: str, store: Store
) -> None:
    settings = fast_settings(worker_report_rate=100.0)
    async with serve_coordinator(settings, database_url) as server:
        fake = FakeWorker(server.port, "chatty")
        try:
            await fake.connect()
            # 150 updates in one message: 50 over the budget, paid for by waiting
            updates = [(str(uuid.uuid4()), 1, pb.RUNNING, "") for _ in range(150)]
            acks = await fake.send_batch(updates)
            assert len(acks) == 150  # every update answered (stale: no such tasks)
            assert server.coordinator.counters["throttled"] == 1
            task, _ = await store.create_task(NewTask(command="noop"))
            tid = (await fake.receive("assign")).assign.tasks[0].task_id
            assert tid == str(task.id)
            assert (await fake.report(tid, 1, pb.COMPLETED)).accepted
        finally:
            await fake.leave()
            await fake.close()


async def test_a_malformed_draining_heartbeat_is_ignored_not_fatal(database_url: str) -> None:
    async with serve_coordinator(fast_settings(), database_url) as server:
        fake = FakeWorker(server.port, "odd")
        try:
            await fake.connect()
            fake.out.put_nowait(pb.WorkerMessage(heartbeat=pb.Heartbeat(
                draining=True, in_flight=[pb.TaskRef(task_id="not-a-uuid", attempt=1)])))
            session = server.coordinator.sessions[fake.worker_id]
            await wait_for(lambda: session.draining, message="the heartbeat to count")
            assert not session.closed and session.draining_holds is None
            ack = await fake.report(str(uuid.uuid4()), 1, pb.RUNNING)  # still served
            assert not ack.accepted and "stale" in ack.reason
        finally:
            await fake.leave()
            await fake.close()
