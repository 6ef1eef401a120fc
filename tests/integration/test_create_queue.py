"""Concurrent single creates share one statement and one commit (the create queue), on a
real PostgreSQL: every request still gets its own task, committed before it is answered;
the queue is bounded; one bad row fails only itself; nothing hangs when the database goes.

To hold statements in flight on purpose, a second connection locks the tasks table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from taskmaster.scheduler.app import CREATES
from taskmaster.scheduler.creates import CreateQueue, CreateQueueFull
from taskmaster.store import NewTask, Store
from tests.helpers import count_rows, fast_settings, fetch, serve_scheduler, wait_for


def _new(i: int, **kw: object) -> NewTask:
    return NewTask(command="noop", payload={"i": i}, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def table_lock(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection that can hold the tasks table locked (inserts wait behind it)."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _lock(conn: asyncpg.Connection) -> asyncpg.transaction.Transaction:
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
    return tx


async def test_creates_issued_together_share_a_statement_each_getting_its_own_task(
    store: Store, database_url: str
) -> None:
    queue = CreateQueue(store, max_rows=500, statements=1)
    tasks = await asyncio.gather(*(queue.create(_new(i, priority=i)) for i in range(50)))

    # the first runs alone at once; the 49 queued behind it go in one statement
    assert queue.statements_run == 2 and queue.rows_written == 50
    assert [t.payload for t in tasks] == [{"i": i} for i in range(50)]
    assert [t.priority for t in tasks] == list(range(50))
    assert len({t.id for t in tasks}) == 50
    rows = await fetch(database_url, "SELECT id, priority FROM tasks")
    assert {(r["id"], r["priority"]) for r in rows} == {(t.id, t.priority) for t in tasks}
    events = await fetch(database_url, "SELECT task_id FROM events WHERE event = 'task_scheduled'")
    assert sorted(e["task_id"] for e in events) == sorted(t.id for t in tasks)


async def test_a_statement_holds_at_most_max_rows(store: Store) -> None:
    queue = CreateQueue(store, max_rows=20, statements=1)
    tasks = await asyncio.gather(*(queue.create(_new(i)) for i in range(50)))
    assert queue.statements_run == 4  # 1 alone, then 20 + 20 + 9
    assert sorted(t.payload["i"] for t in tasks) == list(range(50))


async def test_a_lone_create_runs_at_once_and_latecomers_share_the_next_statement(
    store: Store, database_url: str, table_lock: asyncpg.Connection
) -> None:
    queue = CreateQueue(store, statements=1)
    tx = await _lock(table_lock)
    first = asyncio.create_task(queue.create(_new(0)))
    await wait_for(lambda: queue.statements_run == 1 and queue.waiting == 0)
    later = [asyncio.create_task(queue.create(_new(i))) for i in range(1, 31)]
    await wait_for(lambda: queue.waiting == 30)
    assert not first.done()  # not answered before its row is committed
    await tx.rollback()

    await asyncio.gather(first, *later)
    assert queue.statements_run == 2
    assert await count_rows(database_url) == 31


async def test_the_queue_is_bounded_and_a_request_cancelled_while_waiting_is_not_inserted(
    store: Store, database_url: str, table_lock: asyncpg.Connection
) -> None:
    queue = CreateQueue(store, statements=1, max_waiting=3)
    tx = await _lock(table_lock)
    running = asyncio.create_task(queue.create(_new(0)))
    await wait_for(lambda: queue.statements_run == 1)
    waiting = [asyncio.create_task(queue.create(_new(i))) for i in (1, 2, 3)]
    await wait_for(lambda: queue.waiting == 3)

    with pytest.raises(CreateQueueFull, match="3 creates are already waiting"):
        await queue.create(_new(4))
    waiting[0].cancel()
    await tx.rollback()

    done = await asyncio.gather(running, *waiting, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    payloads = {r["p"] for r in await fetch(database_url, "SELECT payload->>'i' AS p FROM tasks")}
    assert payloads == {"0", "2", "3"}


async def test_a_row_postgres_refuses_fails_alone(store: Store, database_url: str) -> None:
    queue = CreateQueue(store)
    news = [_new(i) for i in range(9)] + [NewTask(command="noop", timeout_seconds=-1.0)]
    results = await asyncio.gather(*(queue.create(n) for n in news), return_exceptions=True)

    assert isinstance(results[-1], asyncpg.CheckViolationError)
    assert sorted(r.payload["i"] for r in results[:-1]) == list(range(9))  # type: ignore[union-attr]
    assert await count_rows(database_url) == 9


async def test_when_the_database_is_gone_every_waiting_create_fails_and_none_hangs(
    database_url: str
) -> None:
    from taskmaster.store import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=2)
    queue = CreateQueue(Store(pool))
    await pool.close()
    results = await asyncio.wait_for(
        asyncio.gather(*(queue.create(_new(i)) for i in range(5)), return_exceptions=True), 10)
    assert all(isinstance(r, asyncpg.InterfaceError) for r in results), results
    assert queue.waiting == 0


async def test_keyed_creates_are_refused_by_the_queue(store: Store) -> None:
    with pytest.raises(ValueError, match="keyed"):
        await CreateQueue(store).create(NewTask(command="noop", idempotency_key="k"))
    with pytest.raises(ValueError, match="idempotency"):
        await store.create_tasks([NewTask(command="noop", idempotency_key="k")])


# ---- over HTTP ----

async def test_concurrent_posts_each_get_their_own_task_and_share_commits(
    database_url: str
) -> None:
    async with serve_scheduler(fast_settings(), database_url) as (url, app), \
            aiohttp.ClientSession() as http:

        async def post(i: int) -> dict[str, object]:
            async with http.post(url + "/api/schedule",
                                 json={"command": "noop", "payload": {"i": i}}) as resp:
                assert resp.status == 201
                return dict(await resp.json())

        answers = await asyncio.gather(*(post(i) for i in range(80)))
        queue = app[CREATES]

    assert [a["task"]["payload"] for a in answers] == [{"i": i} for i in range(80)]  # type: ignore[index]
    rows = await fetch(database_url, "SELECT id, payload->>'i' AS i FROM tasks")
    assert {(str(r["id"]), int(r["i"])) for r in rows} == {
        (a["id"], a["task"]["payload"]["i"]) for a in answers}  # type: ignore[index]
    assert queue.rows_written == 80 and queue.statements_run < 80


async def test_a_full_queue_answers_503_naming_the_setting_and_creates_nothing(
    database_url: str, table_lock: asyncpg.Connection
) -> None:
    settings = fast_settings(create_queue=1)
    async with serve_scheduler(settings, database_url) as (url, app), \
            aiohttp.ClientSession() as http:
        queue = app[CREATES]
        tx = await _lock(table_lock)
        held = [asyncio.create_task(http.post(url + "/api/schedule", json={"command": "noop"}))
                for _ in range(2)]
        await wait_for(lambda: queue.statements_run == 2)  # both statement slots wait
        third = asyncio.create_task(http.post(url + "/api/schedule", json={"command": "noop"}))
        await wait_for(lambda: queue.waiting == 1)

        async with http.post(url + "/api/schedule", json={"command": "noop"}) as resp:
            body = await resp.json()
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
            assert "TASKMASTER_CREATE_QUEUE" in body["error"]
        await tx.rollback()
        for r in await asyncio.gather(*held, third):
            assert r.status == 201
            r.release()
    assert await count_rows(database_url) == 3
