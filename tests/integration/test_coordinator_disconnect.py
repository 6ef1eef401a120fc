"""A worker that vanishes gets its tasks put back at once, even though the vanishing
cancels the RPC that reports it (as grpc.aio does when the peer's socket closes)."""

from __future__ import annotations

import asyncio

from taskmaster.config import Settings
from taskmaster.coordinator.service import Coordinator
from taskmaster.store import NewTask, Store
from tests.helpers import wait_for


async def test_a_cancelled_rpc_still_puts_the_workers_tasks_back(store: Store) -> None:
    coordinator = Coordinator(store, Settings())
    joined = await coordinator.register(
        worker_id="", name="w-1", host="h", pid=1, capacity=2, commands=["noop"], in_flight={})
    session = joined.session
    await store.create_batch(NewTask(command="noop"), 2)
    assert await coordinator.assign_once() == 2

    rpc = asyncio.create_task(coordinator.disconnected(session, "worker w-1 lost"))
    await asyncio.sleep(0)  # the offline write is under way ...
    rpc.cancel()  # ... when the RPC goes away

    async def all_pending() -> bool:
        return not await store.pool.fetchval("SELECT count(*) FROM tasks WHERE status <> 'pending'")

    await wait_for(all_pending, 10, message="the tasks back in the queue")
    rows = await store.pool.fetch("SELECT status, attempt, worker_id FROM tasks")
    assert [(r["status"], r["attempt"], r["worker_id"]) for r in rows] == [("pending", 2, None)] * 2
    status = await store.pool.fetchval("SELECT status FROM workers WHERE id = $1",
                                       session.worker_id)
    assert status == "offline"
    await coordinator.stop()
