"""Task retention: finished tasks older than TASKMASTER_TASK_RETENTION are deleted in
batches (never a pending or held one), workers long offline with them; stats show it."""

from __future__ import annotations

import aiohttp
import pytest

from taskmaster.config import Settings
from taskmaster.coordinator.service import Coordinator
from taskmaster.store import NewTask, Store
from tests.helpers import fast_settings, serve_scheduler, wait_for

DAY = 86_400.0


async def aged(store: Store, status: str, days: float, n: int = 1) -> list[str]:
    """n tasks in this status, created and (if finished) ended `days` ago."""
    ids = await store.create_batch(NewTask(command="noop"), n)
    ended = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at"}
    column = ended.get(status)
    await store.pool.execute(
        f"""UPDATE tasks SET status = $2, created_at = now() - make_interval(days => $3),
                   worker_id = CASE WHEN $2 IN ('assigned', 'running') THEN 'w' END
                   {f", {column} = now() - make_interval(days => $3)" if column else ""}
            WHERE id = ANY($1)""", ids, status, days)
    return [str(i) for i in ids]


async def remaining(store: Store) -> set[str]:
    return {str(r["id"]) for r in await store.pool.fetch("SELECT id FROM tasks")}


async def test_old_finished_tasks_are_pruned_in_batches_and_nothing_else(store: Store) -> None:
    old_done = [*await aged(store, "completed", 9, 5), *await aged(store, "failed", 9),
                *await aged(store, "cancelled", 9)]
    keep = [*await aged(store, "completed", 1),  # finished within the retention
            *await aged(store, "pending", 30), *await aged(store, "assigned", 30),
            *await aged(store, "running", 30)]
    # created long ago, finished lately: kept until it has been finished that long
    [late] = await aged(store, "completed", 30)
    await store.pool.execute("UPDATE tasks SET completed_at = now() - interval '1 day' "
                             "WHERE id = $1::uuid", late)
    keep.append(late)
    before = await store.stats()

    assert await store.prune_tasks(7 * DAY, batch=3) == 3  # at most a batch at a time
    assert await store.prune_tasks(7 * DAY, batch=3) == 3
    assert await store.prune_tasks(7 * DAY, batch=3) == 1
    assert await store.prune_tasks(7 * DAY, batch=3) == 0
    assert await remaining(store) == set(keep)
    after = await store.stats()
    assert after["total"] == before["total"] - len(old_done)  # the counts follow
    assert (after["completed"], after["failed"], after["cancelled"]) == (
        before["completed"] - 5, before["failed"] - 1, before["cancelled"] - 1)
    assert (after["pending"], after["assigned"], after["running"]) == (1, 1, 1)


async def test_the_coordinator_prunes_tasks_and_long_gone_workers(store: Store) -> None:
    await aged(store, "completed", 9, 25)
    kept = await aged(store, "running", 9)  # held by worker 'w'
    for worker_id in ("w", "gone", "recent"):
        await store.upsert_worker(worker_id=worker_id, name=worker_id, host="h", pid=1,
                                  capacity=1, commands=["noop", f"only-{worker_id}"])
    await store.pool.execute(
        "UPDATE workers SET status = 'offline', offline_at = now() - "
        "CASE WHEN id = 'recent' THEN interval '1 day' ELSE interval '9 days' END")
    await store.pool.execute("UPDATE commands SET first_seen = now() - interval '9 days'")
    coordinator = Coordinator(store, fast_settings(task_retention=7 * DAY))
    assert await coordinator.prune() == 25
    assert coordinator.counters["tasks_pruned"] == 25
    assert await remaining(store) == set(kept)
    workers = {r["id"] for r in await store.pool.fetch("SELECT id FROM workers")}
    assert workers == {"w", "recent"}  # 'w' still holds a task (its lease is the reaper's)
    # the commands only the pruned worker offered go too; the built-ins stay
    assert await store.known_commands() == {
        "demo-job", "noop", "sleep", "fail", "flaky", "cpu", "only-w", "only-recent"}


async def test_zero_keeps_every_task(store: Store) -> None:
    ids = await aged(store, "completed", 3000)
    coordinator = Coordinator(store, fast_settings(task_retention=0))
    assert await coordinator.prune() == 0
    assert await remaining(store) == set(ids)


async def test_stats_show_the_retention(database_url: str) -> None:
    for retention, shown in ((None, 604_800.0), (3600.0, 3600.0), (0.0, 0.0)):
        settings = fast_settings() if retention is None else fast_settings(
            task_retention=retention)
        async with serve_scheduler(settings, database_url) as (url, _), \
                aiohttp.ClientSession() as http, http.get(url + "/api/stats") as resp:
            assert resp.status == 200
            assert (await resp.json())["task_retention_seconds"] == shown


async def _vacuums(store: Store) -> int:
    return int(await store.pool.fetchval(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'tasks'"))


async def test_the_queue_tables_are_vacuumed_once_they_hold_enough_dead_rows(
    store: Store,
) -> None:
    """Whether or not the server's autovacuum runs (it is off on some servers): the
    coordinator's housekeeping vacuums a table once its dead rows pass the setting and a
    tenth of its live ones, and leaves it alone below that."""
    await store.create_batch(NewTask(command="noop"), 300)
    async with store.pool.acquire() as conn:
        await conn.execute("DELETE FROM tasks WHERE id IN (SELECT id FROM tasks LIMIT 250)")
        await conn.execute("SELECT pg_stat_force_next_flush()")
    await wait_for(lambda: _dead(store, 250), message="PostgreSQL to count the dead rows")
    before = await _vacuums(store)
    assert "tasks" not in await store.vacuum_dead(1000)  # fewer dead rows than asked for
    assert "tasks" in await store.vacuum_dead(100)
    await wait_for(lambda: _more_vacuums(store, before), message="the vacuum to be counted")
    assert await store.pool.fetchval("SELECT count(*) FROM tasks") == 50


async def _dead(store: Store, n: int) -> bool:
    return int(await store.pool.fetchval(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'tasks'")) >= n


async def _more_vacuums(store: Store, before: int) -> bool:
    async with store.pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(await conn.fetchval(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'tasks'")) > before


def test_a_negative_vacuum_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="TASKMASTER_VACUUM_DEAD_ROWS"):
        Settings(vacuum_dead_rows=-1)
