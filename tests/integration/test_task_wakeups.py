"""The tasks triggers wake the assigner (NOTIFY taskmaster_tasks) exactly when a task is
pending that was not: on insert and on a requeue, not on a claim or a reschedule."""

from __future__ import annotations

import asyncio

import asyncpg

from taskmaster.store import NewTask, Store


async def wakeups_of(conn: asyncpg.Connection, got: asyncio.Queue[str], sql: str) -> int:
    """Run sql; how many wake-ups it sent (a marker sent after it bounds the wait)."""
    await conn.execute(sql)
    await conn.execute("NOTIFY taskmaster_tasks, 'marker'")
    n = 0
    while await asyncio.wait_for(got.get(), 10) != "marker":
        n += 1
    return n


async def test_wakeups_follow_tasks_into_pending(store: Store, database_url: str) -> None:
    got: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await listener.add_listener("taskmaster_tasks", lambda *a: got.put_nowait(a[3]))
        await store.create_batch(NewTask(command="noop"), 3)
        assert await got.get() == ""  # the insert
        assert await wakeups_of(conn, got, "UPDATE tasks SET scheduled_at = now()") == 0
        claim = "UPDATE tasks SET status = 'assigned', worker_id = 'w' WHERE status = 'pending'"
        assert await wakeups_of(conn, got, claim) == 0
        back = "UPDATE tasks SET status = 'pending', worker_id = NULL, attempt = attempt + 1"
        assert await wakeups_of(conn, got, back) == 1  # one per statement, not per row
        assert await wakeups_of(conn, got, "UPDATE tasks SET priority = 5") == 0
    finally:
        await listener.close()
        await conn.close()
