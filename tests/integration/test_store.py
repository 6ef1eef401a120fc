"""Every Store method and every task status transition, on a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from taskmaster.model import Event, Report, Task, TaskStatus, WorkerStatus
from taskmaster.store import BadCursor, Delivery, Moved, NewTask, Store
from taskmaster.store.queries import q, queries

RETRY = {"retry_base": 0.5, "retry_max": 60.0}


# ---- helpers ----

async def new_tasks(store: Store, n: int, **kw: Any) -> list[uuid.UUID]:
    """n tasks created one by one (so their created_at differ), oldest first."""
    out = []
    for i in range(n):
        task, created = await store.create_task(NewTask(command="noop", payload={"i": i}, **kw))
        assert created
        out.append(task.id)
    return out


async def register(store: Store, *worker_ids: str, capacity: int = 4) -> None:
    """Record workers as online."""
    for w in worker_ids:
        await store.upsert_worker(
            worker_id=w, name=f"name-{w}", host="h", pid=1, capacity=capacity, commands=["noop"]
        )


async def get(store: Store, task_id: uuid.UUID) -> Task:
    """A task that must exist."""
    task = await store.get_task(task_id)
    assert task is not None
    return task


async def row(store: Store, task_id: uuid.UUID) -> dict[str, Any]:
    """A task's raw row, every column."""
    record = await store.pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
    assert record is not None
    return dict(record)


async def all_events(store: Store, task_id: uuid.UUID | None = None) -> list[Event]:
    """Every event (of one task), oldest first."""
    events = await store.events_after(0, 1_000_000)
    return [e for e in events if task_id is None or e.task_id == task_id]


def _counts(moved: Moved) -> tuple[int, int]:
    """(workers, tasks) a workers_offline changed."""
    return moved.workers, moved.total


async def kinds(store: Store, task_id: uuid.UUID) -> list[str]:
    """The event types of one task, in order."""
    return [e.event for e in await all_events(store, task_id)]


async def assign_one(store: Store, worker_id: str) -> Delivery:
    """Assign exactly one task to a worker."""
    [d] = await store.assign([worker_id])
    return d


def rep(d: Delivery | tuple[uuid.UUID, int], state: str, **kw: Any) -> Report:
    """A report on a delivery."""
    task_id, attempt = (d.task_id, d.attempt) if isinstance(d, Delivery) else d
    if state in ("completed", "failed", "cancelled", "rejected"):
        kw.setdefault("finished_at", datetime.now(UTC))
    if "result" in kw:  # a result as a value, sent as JSON text
        kw["result_json"] = json.dumps(kw.pop("result"))
    return Report(task_id=task_id, attempt=attempt, state=state, **kw)


async def apply(store: Store, worker_id: str, *reports: Report, **retry: float) -> list:
    """Apply one worker's reports."""
    return await store.apply_reports(
        [(worker_id, r) for r in reports], **(retry or RETRY)
    )


async def make_due(store: Store, task_id: uuid.UUID) -> None:
    """Move a delayed (or backed-off) task's time to now."""
    await store.pool.execute("UPDATE tasks SET scheduled_at = now() WHERE id = $1", task_id)


async def real_counts(store: Store) -> dict[str, int]:
    """Counts by status from the tasks table itself."""
    rows = await store.pool.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status")
    counts = {s.value: 0 for s in TaskStatus}
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


async def assert_stats_match(store: Store) -> None:
    """stats() counts equal a real count(*) GROUP BY status."""
    stats = await store.stats()
    counts = await real_counts(store)
    assert {s: stats[s] for s in counts} == counts
    assert stats["total"] == sum(counts.values())
    assert stats["queue_depth"] == counts["pending"]


# ---- the queries themselves ----

async def test_every_named_query_prepares(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for name, sql in queries().items():
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:  # pragma: no cover - the failure message
                pytest.fail(f"query {name} does not prepare: {exc}")


# ---- creating tasks ----

async def test_create_task(store: Store) -> None:
    before = datetime.now(UTC)
    task, created = await store.create_task(NewTask(
        command="noop", payload={"a": [1, 2]}, priority=5, max_attempts=4, timeout_seconds=9.5,
    ))
    assert created
    assert task.status is TaskStatus.PENDING
    assert (task.command, task.payload, task.priority) == ("noop", {"a": [1, 2]}, 5)
    assert (task.attempt, task.max_attempts, task.timeout_seconds) == (1, 4, 9.5)
    assert task.progress == 0 and task.worker_id is None and task.idempotency_key is None
    assert task.created_at >= before - timedelta(seconds=1)
    assert task.scheduled_at == task.created_at
    assert await get(store, task.id) == task
    [ev] = await all_events(store, task.id)
    assert ev.event == "task_scheduled"
    assert ev.data["command"] == "noop"


async def test_json_strings_round_trip(store: Store) -> None:
    await register(store, "w")
    task, _ = await store.create_task(NewTask(command="noop", payload="hello"))
    assert task.payload == "hello"
    d = await assign_one(store, "w")
    assert json.loads(d.payload_json) == "hello"
    await apply(store, "w", rep(d, "completed", result="done"))
    t = await get(store, task.id)
    assert (t.payload, t.result) == ("hello", "done")
    page, _ = await store.list_tasks(status=None, limit=1)
    assert page == [t]


async def test_create_task_defaults_and_delay(store: Store) -> None:
    task, _ = await store.create_task(NewTask(command="noop", delay_seconds=30))
    assert task.payload == {}
    assert timedelta(seconds=29) < task.scheduled_at - task.created_at < timedelta(seconds=31)


async def test_create_batch_is_one_statement(store: Store) -> None:
    ids = await store.create_batch(NewTask(command="noop", payload={"x": 1}, priority=2), 500)
    assert len(ids) == 500
    assert len(set(ids)) == 500
    rows = await store.pool.fetch("SELECT * FROM tasks")
    assert {r["id"] for r in rows} == set(ids)
    # one statement, so one transaction: every row has the same created_at
    assert len({r["created_at"] for r in rows}) == 1
    assert {(r["status"], r["priority"], json.dumps(r["payload"])) for r in rows} == {
        ("pending", 2, '{"x": 1}')
    }
    events = await all_events(store)
    assert sorted(e.task_id for e in events if e.event == "task_scheduled") == sorted(ids)
    assert len(events) == 500


async def test_idempotency_key_returns_the_same_task(store: Store) -> None:
    first, created = await store.create_task(NewTask(command="noop", idempotency_key="k1"))
    assert created and first.idempotency_key == "k1"
    again, created = await store.create_task(
        NewTask(command="other", payload={"ignored": True}, idempotency_key="k1")
    )
    assert not created
    assert again == first
    other, created = await store.create_task(NewTask(command="noop", idempotency_key="k2"))
    assert created and other.id != first.id
    assert await store.pool.fetchval("SELECT count(*) FROM tasks") == 2
    assert len(await all_events(store)) == 2


async def test_concurrent_creates_with_one_key_make_one_row(store: Store) -> None:
    results = await asyncio.gather(*(
        store.create_task(NewTask(command="noop", payload={"n": i}, idempotency_key="same"))
        for i in range(10)
    ))
    assert len({t.id for t, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await store.pool.fetchval("SELECT count(*) FROM tasks") == 1
    assert len(await all_events(store)) == 1


async def test_new_pending_tasks_notify(store: Store, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    got = asyncio.Event()
    try:
        await conn.add_listener("taskmaster_tasks", lambda *_: got.set())
        await store.create_task(NewTask(command="noop"))
        await asyncio.wait_for(got.wait(), 5)
    finally:
        await conn.close()


# ---- listing ----

async def test_list_pagination_newest_first(store: Store) -> None:
    ids = await new_tasks(store, 7)
    ids += await store.create_batch(NewTask(command="noop"), 6)  # equal created_at: id breaks ties
    seen: list[Task] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = await store.list_tasks(status=None, limit=3, cursor=cursor)
        pages += 1
        assert len(page) <= 3
        seen += page
        if cursor is None:
            break
        assert pages < 10
    assert pages == 5
    assert len(seen) == 13
    assert {t.id for t in seen} == set(ids)
    keys = [(t.created_at, t.id) for t in seen]
    assert keys == sorted(keys, reverse=True)


async def test_list_exact_pages_have_no_dangling_cursor(store: Store) -> None:
    await new_tasks(store, 4)
    _, cursor = await store.list_tasks(status=None, limit=2)
    assert cursor is not None
    page2, cursor2 = await store.list_tasks(status=None, limit=2, cursor=cursor)
    assert len(page2) == 2 and cursor2 is None
    everything, cursor = await store.list_tasks(status=None, limit=5)
    assert len(everything) == 4 and cursor is None


async def test_list_filters_by_status(store: Store) -> None:
    await register(store, "w1")
    ids = await new_tasks(store, 5)
    await store.cancel_task(ids[1])
    await store.cancel_task(ids[3])
    cancelled, cursor = await store.list_tasks(status=TaskStatus.CANCELLED, limit=10)
    assert [t.id for t in cancelled] == [ids[3], ids[1]] and cursor is None
    first, cursor = await store.list_tasks(status=TaskStatus.PENDING, limit=2)
    rest, end = await store.list_tasks(status=TaskStatus.PENDING, limit=2, cursor=cursor)
    assert [t.id for t in first + rest] == [ids[4], ids[2], ids[0]] and end is None
    assert await store.list_tasks(status=TaskStatus.RUNNING, limit=10) == ([], None)


@pytest.mark.parametrize("cursor", ["nonsense", "!!!", "Zm9v", "MjAyMC0wMS0wMXxub3QtYS11dWlk", ""])
async def test_bad_cursor(store: Store, cursor: str) -> None:
    await new_tasks(store, 1)
    if cursor == "":
        # an empty cursor means the first page
        assert len((await store.list_tasks(status=None, limit=5, cursor=cursor))[0]) == 1
        return
    with pytest.raises(BadCursor):
        await store.list_tasks(status=None, limit=5, cursor=cursor)


# ---- assignment ----

async def test_assign_follows_slot_order(store: Store) -> None:
    await register(store, "a", "b", "c")
    ids = await new_tasks(store, 6)
    slots = ["a", "b", "a", "c", "b"]
    deliveries = await store.assign(slots)
    assert [d.worker_id for d in deliveries] == slots
    assert [d.task_id for d in deliveries] == ids[:5]  # equal priority: oldest first
    for d in deliveries:
        t = await get(store, d.task_id)
        assert (t.status, t.worker_id, t.attempt) == (TaskStatus.ASSIGNED, d.worker_id, 1)
        assert t.assigned_at is not None
        assert (d.command, json.loads(d.payload_json), d.attempt) == ("noop", t.payload, 1)
        assert d.timeout_seconds == 300.0
        assert await kinds(store, d.task_id) == ["task_scheduled", "task_assigned"]
    assert (await get(store, ids[5])).status is TaskStatus.PENDING
    assert await store.held_tasks("a") == {ids[0]: 1, ids[2]: 1}


async def test_assign_never_more_than_slots_or_tasks(store: Store) -> None:
    await register(store, "a", "b")
    await new_tasks(store, 2)
    assert await store.assign([]) == []
    got = await store.assign(["a", "b", "a", "b"])
    assert [d.worker_id for d in got] == ["a", "b"]  # earlier slots are filled first
    assert await store.assign(["a"]) == []


async def test_assign_honours_priority(store: Store) -> None:
    await register(store, "w")
    low = await new_tasks(store, 2, priority=0)
    high = await new_tasks(store, 2, priority=10)
    mid = await new_tasks(store, 1, priority=5)
    got = await store.assign(["w"] * 5)
    assert [d.task_id for d in got] == high + mid + low


async def test_delayed_tasks_wait_until_due(store: Store) -> None:
    await register(store, "w")
    [later] = await new_tasks(store, 1, delay_seconds=3600)
    [now] = await new_tasks(store, 1)
    due = await store.next_due()
    assert due is not None and due > datetime.now(UTC) + timedelta(seconds=3500)
    assert [d.task_id for d in await store.assign(["w", "w"])] == [now]
    assert await store.assign(["w"]) == []
    await make_due(store, later)
    assert await store.next_due() is None
    assert [d.task_id for d in await store.assign(["w"])] == [later]


async def test_short_delay_is_honoured(store: Store) -> None:
    await register(store, "w")
    task, _ = await store.create_task(NewTask(command="noop", delay_seconds=0.3))
    assert await store.assign(["w"]) == []
    deadline = asyncio.get_running_loop().time() + 5
    while not (got := await store.assign(["w"])):
        assert asyncio.get_running_loop().time() < deadline, "delayed task never became due"
        await asyncio.sleep(0.02)
    assert got[0].task_id == task.id
    assert (await get(store, task.id)).assigned_at >= task.scheduled_at  # type: ignore[operator]


async def test_concurrent_assign_never_hands_out_a_task_twice(store: Store) -> None:
    await register(store, "a", "b")
    ids = await store.create_batch(NewTask(command="noop"), 200)
    rounds = await asyncio.gather(*(store.assign([w] * 30) for w in ["a", "b"] * 4))
    handed = [d.task_id for r in rounds for d in r]
    assert len(handed) == len(set(handed)) == 200
    assert set(handed) == set(ids)
    counts = await real_counts(store)
    assert counts["assigned"] == 200


async def test_assign_skips_locked_tasks(store: Store, database_url: str) -> None:
    await register(store, "w")
    ids = await new_tasks(store, 4)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM tasks WHERE id = ANY($1) FOR UPDATE", ids[:2])
            got = await asyncio.wait_for(store.assign(["w"] * 4), 5)
            assert [d.task_id for d in got] == ids[2:]
    finally:
        await conn.close()
    assert [d.task_id for d in await store.assign(["w"] * 4)] == ids[:2]


# ---- reports ----

async def test_running_then_completed(store: Store) -> None:
    await register(store, "w")
    [tid] = await new_tasks(store, 1)
    d = await assign_one(store, "w")
    started = datetime.now(UTC)
    [a] = await apply(store, "w", rep(d, "running", started_at=started))
    assert (a.task_id, a.attempt, a.status, a.worker_id) == (tid, 1, TaskStatus.RUNNING, "w")
    t = await get(store, tid)
    assert (t.status, t.started_at, t.progress) == (TaskStatus.RUNNING, started, 0)
    await apply(store, "w", rep(d, "progress", progress=40, started_at=started))
    await apply(store, "w", rep(d, "progress", progress=20, started_at=started))
    assert (await get(store, tid)).progress == 40  # progress never goes back
    finished = started + timedelta(milliseconds=250)
    [a] = await apply(store, "w", rep(d, "completed", result={"ok": 1}, finished_at=finished,
                                      started_at=started))
    assert a.status is TaskStatus.COMPLETED
    t = await get(store, tid)
    assert t.status is TaskStatus.COMPLETED
    assert (t.started_at, t.completed_at) == (started, finished)
    assert (t.progress, t.result) == (100, {"ok": 1})
    assert t.failed_at is None and t.cancelled_at is None and t.error is None
    assert t.worker_id == "w" and t.history == ()
    events = await all_events(store, tid)
    assert [e.event for e in events] == [
        "task_scheduled", "task_assigned", "task_running", "task_progress", "task_progress",
        "task_completed",
    ]
    assert events[-1].data["duration_ms"] == pytest.approx(250.0)
    assert events[-1].worker_id == "w"
    [worker] = await store.list_workers()
    assert (worker.tasks_completed, worker.tasks_failed) == (1, 0)
    assert worker.current_task_ids == ()
    # a completed task takes no more reports
    assert await apply(store, "w", rep(d, "failed", error="late")) == []
    assert (await get(store, tid)).status is TaskStatus.COMPLETED


async def test_reports_are_written_while_a_claim_holds_the_worker_rows(
    store: Store, database_url: str
) -> None:
    """The claim statement locks its workers' rows (FOR SHARE) until it commits; a report
    statement must not wait for it (nor a claim for a report): the counts go to deltas,
    folded into the rows by the housekeeping, and read the same before and after."""
    await register(store, "w")
    await new_tasks(store, 1)
    d = await assign_one(store, "w")
    claim = await asyncpg.connect(database_url)
    try:
        async with claim.transaction():
            await claim.execute("SELECT 1 FROM workers WHERE id = 'w' FOR SHARE")
            [a] = await asyncio.wait_for(apply(store, "w", rep(d, "completed")), 5)
            assert a.status is TaskStatus.COMPLETED
    finally:
        await claim.close()
    [worker] = await store.list_workers()
    assert (worker.tasks_completed, worker.tasks_failed) == (1, 0)
    assert type(worker.tasks_completed) is int  # the API's JSON takes it
    assert await store.pool.fetchval("SELECT count(*) FROM worker_counts") == 1
    await store.compact_counts()
    assert await store.pool.fetchval("SELECT count(*) FROM worker_counts") == 0
    assert await store.pool.fetchval("SELECT tasks_completed FROM workers WHERE id = 'w'") == 1
    [worker] = await store.list_workers()
    assert (worker.tasks_completed, worker.tasks_failed) == (1, 0)
    [named] = await store.list_workers(history=False)
    assert named.tasks_completed == 1


async def test_completed_straight_from_assigned(store: Store) -> None:
    await register(store, "w")
    [tid] = await new_tasks(store, 1)
    d = await assign_one(store, "w")
    started = datetime.now(UTC)
    await apply(store, "w", rep(d, "completed", started_at=started, result=[1]))
    t = await get(store, tid)
    assert (t.status, t.started_at, t.result) == (TaskStatus.COMPLETED, started, [1])
    # it still shows that it ran
    assert await kinds(store, tid) == [
        "task_scheduled", "task_assigned", "task_running", "task_completed"
    ]


async def test_duration_uses_the_start_of_an_earlier_report(store: Store) -> None:
    await register(store, "w")
    [tid] = await new_tasks(store, 1)
    d = await assign_one(store, "w")
    started = datetime.now(UTC) - timedelta(seconds=2)
    await apply(store, "w", rep(d, "running", started_at=started))
    await apply(store, "w", rep(d, "completed", finished_at=started + timedelta(seconds=1.5)))
    done = (await all_events(store, tid))[-1]
    assert done.event == "task_completed"
    assert done.data["duration_ms"] == pytest.approx(1500.0)
    assert (await get(store, tid)).started_at == started


async def test_progress_without_a_start_time_is_accepted(store: Store) -> None:
    await register(store, "w")
    [tid] = await new_tasks(store, 1)
    d = await assign_one(store, "w")
    [a] = await apply(store, "w", rep(d, "progress", progress=10))
    assert a.status is TaskStatus.RUNNING
    assert (await get(store, tid)).progress == 10


async def test_several_reports_on_one_delivery_in_one_call(store: Store) -> None:
    await register(store, "w")
    tids = await new_tasks(store, 20)
    deliveries = await store.assign(["w"] * 20)
    started = datetime.now(UTC)
    reports = []
    for d in deliveries:
        reports += [rep(d, "running", started_at=started), rep(d, "progress", progress=50),
                    rep(d, "completed", result="done")]
    await apply(store, "w", *reports)
    for tid in tids:
        t = await get(store, tid)
        assert (t.status, t.result, t.progress) == (TaskStatus.COMPLETED, "done", 100)
        assert t.started_at == started


async def refused(store: Store, tid: uuid.UUID, worker: str, report: Report) -> None:
    """The report is refused and nothing changes."""
    before = await row(store, tid)
    last_event = (await store.event_horizon())[0]
    workers = await store.pool.fetch("SELECT * FROM workers ORDER BY id")
    assert await apply(store, worker, report) == []
    assert await row(store, tid) == before
    assert (await store.event_horizon())[0] == last_event
    assert await store.pool.fetch("SELECT * FROM workers ORDER BY id") == workers


async def test_fencing_refuses_old_attempts_and_other_workers(store: Store) -> None:
    await register(store, "w1", "w2")
    [tid] = await new_tasks(store, 1)
    first = await assign_one(store, "w1")
    await apply(store, "w1", rep(first, "running", started_at=datetime.now(UTC)))
    assert (await store.requeue([(tid, 1)], "lost")).total == 1
    assert ((await get(store, tid)).status, (await get(store, tid)).attempt) == (
        TaskStatus.PENDING, 2)
    second = await assign_one(store, "w2")
    assert (second.task_id, second.attempt) == (tid, 2)
    for state in ("running", "progress", "completed", "failed", "cancelled", "rejected"):
        await refused(store, tid, "w1", rep(first, state, progress=90))  # old attempt
        await refused(store, tid, "w1", rep(second, state, progress=90))  # not its holder
        await refused(store, tid, "w2", rep(first, state, progress=90))  # holder, old attempt
    await refused(store, tid, "w2", rep((tid, 3), "completed"))  # an attempt not yet made
    await refused(store, tid, "w2", rep((uuid.uuid4(), 1), "completed"))  # unknown task
    [a] = await apply(store, "w2", rep(second, "completed"))
    assert a.status is TaskStatus.COMPLETED


async def test_a_stale_report_in_the_same_batch_does_not_win(store: Store) -> None:
    await register(store, "old", "new")
    tids = await new_tasks(store, 10)
    firsts = await store.assign(["old"] * 10)
    await store.workers_offline(["old"], "missed heartbeats")
    await register(store, "old")  # it comes back and sends what it had
    seconds = await store.assign(["new"] * 10)
    assert {(d.task_id, d.attempt) for d in seconds} == {(t, 2) for t in tids}
    now = datetime.now(UTC)
    stale = [("old", rep(d, "completed", result="stale")) for d in firsts]
    fresh = [("new", rep(d, "running", started_at=now)) for d in seconds]
    for batch in (stale + fresh, fresh + stale):
        applied = await store.apply_reports(batch, **RETRY)
        assert {(a.worker_id, a.attempt) for a in applied} == {("new", 2)}
        for tid in tids:
            t = await get(store, tid)
            assert (t.status, t.worker_id, t.attempt, t.result) == (
                TaskStatus.RUNNING, "new", 2, None
            )


async def test_failed_retries_with_backoff_then_fails_for_good(store: Store) -> None:
    await register(store, "w")
    [tid] = await new_tasks(store, 1, max_attempts=3)
    retry = {"retry_base": 30.0, "retry_max": 45.0}
    for attempt in (1, 2):
        d = await assign_one(store, "w")
        assert d.attempt == attempt
        started = datetime.now(UTC)
        await apply(store, "w", rep(d, "running", started_at=started))
        [a] = await apply(store, "w", rep(d, "failed", error=f"boom {attempt}"), **retry)
        assert (a.status, a.attempt) == (TaskStatus.PENDING, attempt)
        t = await get(store, tid)
        assert (t.status, t.attempt) == (TaskStatus.PENDING, attempt + 1)
        assert t.error == f"boom {attempt}"
        assert t.worker_id is None and t.assigned_at is None and t.started_at is None
        assert t.progress == 0 and t.failed_at is None
        wait = t.scheduled_at - datetime.now(UTC)
        low = min(45.0, 30.0 * 2 ** (attempt - 1) * 0.5)
        assert timedelta(seconds=low - 1) < wait <= timedelta(seconds=45), wait
        assert await store.assign(["w"]) == []  # backing off
        assert len(t.history) == attempt
        assert t.history[-1]["attempt"] == attempt
        assert t.history[-1]["worker_id"] == "w"
        assert t.history[-1]["error"] == f"boom {attempt}"
        assert t.history[-1]["started_at"] is not None
        retrying = (await all_events(store, tid))[-1]
        assert retrying.event == "task_retrying"
        assert retrying.data["next_attempt"] == attempt + 1
        assert retrying.data["error"] == f"boom {attempt}"
        assert datetime.fromisoformat(retrying.data["retry_at"]) == t.scheduled_at
        await make_due(store, tid)
    d = await assign_one(store, "w")
    assert d.attempt == 3
    [a] = await apply(store, "w", rep(d, "failed", error="boom 3", started_at=datetime.now(UTC)))
    assert a.status is TaskStatus.FAILED
    t = await get(store, tid)
    assert (t.status, t.attempt, t.error) == (TaskStatus.FAILED, 3, "boom 3")
    assert t.failed_at is not None and t.completed_at is None
    assert [h["attempt"] for h in t.history] == [1, 2, 3]
    detail = t.to_json_detail()["attempts"]
    assert [a["attempt"] for a in detail] == [1, 2, 3]
    assert (detail[-1]["status"], detail[-1]["error"]) == ("failed", "boom 3")
    assert [e.event for e in await all_events(store, tid)].count("task_retrying") == 2
    assert (await all_events(store, tid))[-1].event == "task_failed"
    [worker] = await store.list_workers()
    assert (worker.tasks_completed, worker.tasks_failed) == (0, 3)
    assert await store.assign(["w"]) == []


async def test_backoff_is_capped(store: Store) -> None:
    await register(store, "w")
    [tid] = await new_tasks(store, 1, max_attempts=5)
    d = await assign_one(store, "w")
    await apply(store, "w", rep(d, "failed", error="x"), retry_base=100.0, retry_max=2.0)
    wait = (await get(store, tid)).scheduled_at - datetime.now(UTC)
    assert timedelta(0) < wait <= timedelta(seconds=2)


async def test_rejected_does_not_use_up_an_attempt(store: Store) -> None:
    await register(store, "w")
    [tid] = await new_tasks(store, 1, max_attempts=2)
    d = await assign_one(store, "w")
    [a] = await apply(store, "w", rep(d, "rejected", error="draining"))
    assert a.status is TaskStatus.PENDING
    t = await get(store, tid)
    assert (t.status, t.attempt, t.max_attempts) == (TaskStatus.PENDING, 2, 3)
    assert t.max_attempts - t.attempt == 1  # as many tries left as before
    assert t.scheduled_at <= datetime.now(UTC)  # no backoff: straight back to the queue
    assert (await all_events(store, tid))[-1].event == "task_rejected"
    [worker] = await store.list_workers()
    assert worker.tasks_failed == 0
    # it can still fail twice before failing for good
    for expected in (TaskStatus.PENDING, TaskStatus.FAILED):
        d = await assign_one(store, "w")
        await make_due(store, tid)
        [a] = await apply(store, "w", rep(d, "failed", error="boom"))
        assert a.status is expected
        await make_due(store, tid)


# ---- cancellation ----

async def test_cancel_pending_at_once(store: Store, database_url: str) -> None:
    [tid] = await new_tasks(store, 1)
    t = await store.cancel_task(tid)
    assert t is not None
    assert (t.status, t.cancel_requested) == (TaskStatus.CANCELLED, True)
    assert t.cancelled_at is not None
    assert await kinds(store, tid) == ["task_scheduled", "task_cancelled"]
    assert await store.cancel_task(tid) is None  # already final
    assert await store.cancel_task(uuid.uuid4()) is None
    await register(store, "w")
    assert await store.assign(["w"]) == []


async def test_cancel_running_asks_the_worker(store: Store, database_url: str) -> None:
    await register(store, "w")
    [tid] = await new_tasks(store, 1)
    d = await assign_one(store, "w")
    await apply(store, "w", rep(d, "running", started_at=datetime.now(UTC)))
    conn = await asyncpg.connect(database_url)
    notes: list[str] = []
    got = asyncio.Event()

    def on_note(*args: Any) -> None:
        notes.append(args[-1])
        got.set()

    try:
        await conn.add_listener("taskmaster_cancel", on_note)
        t = await store.cancel_task(tid)
        await asyncio.wait_for(got.wait(), 5)
    finally:
        await conn.close()
    assert notes == [f"{tid}:1:w"]
    assert t is not None
    assert (t.status, t.cancel_requested, t.cancelled_at) == (TaskStatus.RUNNING, True, None)
    assert await store.cancel_requests(["w", "other"]) == [(tid, 1, "w")]
    assert await store.cancel_requests(["other"]) == []
    [a] = await apply(store, "w", rep(d, "cancelled", error="cancelled by user"))
    assert a.status is TaskStatus.CANCELLED
    t = await get(store, tid)
    assert t.status is TaskStatus.CANCELLED and t.cancelled_at is not None
    assert (await all_events(store, tid))[-1].event == "task_cancelled"
    assert await store.cancel_requests(["w"]) == []


async def test_a_failure_after_cancel_is_a_cancellation(store: Store) -> None:
    await register(store, "w")
    [tid] = await new_tasks(store, 1)
    d = await assign_one(store, "w")
    await store.cancel_task(tid)
    [a] = await apply(store, "w", rep(d, "failed", error="interrupted"))
    assert a.status is TaskStatus.CANCELLED
    assert (await get(store, tid)).attempt == 1


async def test_a_cancelled_task_is_not_run_again(store: Store) -> None:
    """A cancel requested on a held task ends it when its delivery is lost or refused."""
    await register(store, "w1", "w2")
    crashed, lost, refused_ = await new_tasks(store, 3)
    await store.assign(["w1", "w2", "w2"])
    for tid in (crashed, lost, refused_):
        await store.cancel_task(tid)
    assert await store.workers_offline(["w1"], "crash") == Moved(
        workers=1, tasks={("noop", TaskStatus.CANCELLED): 1})
    assert await store.requeue([(lost, 1)], "lost") == Moved(
        tasks={("noop", TaskStatus.CANCELLED): 1})
    [a] = await apply(store, "w2", rep((refused_, 1), "rejected", error="draining"))
    assert a.status is TaskStatus.CANCELLED
    for tid in (crashed, lost, refused_):
        t = await get(store, tid)
        assert (t.status, t.attempt) == (TaskStatus.CANCELLED, 1)
        assert t.cancelled_at is not None and t.failed_at is None
        assert (await all_events(store, tid))[-1].event == "task_cancelled"
    assert await store.assign(["w2"] * 3) == []
    await assert_stats_match(store)


# ---- workers ----

async def test_upsert_and_list_workers(store: Store) -> None:
    await register(store, "w1", capacity=2)
    await store.upsert_worker(worker_id="w2", name="two", host="h2", pid=7, capacity=3,
                              commands=["noop", "resize-image"])
    assert "resize-image" in await store.known_commands()
    assert {"noop", "demo-job"} <= await store.known_commands()
    ids = await new_tasks(store, 3)
    await store.assign(["w2", "w1", "w2"])
    w1, w2 = await store.list_workers()
    assert (w1.id, w1.capacity, w1.status) == ("w1", 2, WorkerStatus.ONLINE)
    assert (w2.name, w2.host, w2.pid, w2.capacity) == ("two", "h2", 7, 3)
    assert set(w2.current_task_ids) == {str(ids[0]), str(ids[2])}
    assert w1.current_task_ids == (str(ids[1]),)
    online = [e for e in await all_events(store) if e.event == "worker_online"]
    assert [e.worker_id for e in online] == ["w1", "w2"]
    # registering again updates and keeps the worker online
    await store.workers_offline(["w1"], "restart")
    await store.upsert_worker(worker_id="w1", name="one", host="h", pid=2, capacity=5,
                              commands=[])
    again = (await store.list_workers())[0]
    assert (again.id, again.name, again.capacity, again.pid) == ("w1", "one", 5, 2)
    assert again.status is WorkerStatus.ONLINE
    assert again.registered_at == w1.registered_at
    online = [e for e in await all_events(store) if e.event == "worker_online"]
    assert [e.worker_id for e in online] == ["w1", "w2", "w1"]


async def test_heartbeat_and_draining(store: Store) -> None:
    await register(store, "w1", "w2")
    await store.pool.execute("UPDATE workers SET last_heartbeat = now() - interval '1 hour'")
    await store.heartbeat({})
    await store.heartbeat({"w1": WorkerStatus.DRAINING, "w2": WorkerStatus.ONLINE})
    for _ in range(2):
        await store.heartbeat({"w1": WorkerStatus.DRAINING})
    draining = [e for e in await all_events(store) if e.event == "worker_draining"]
    assert [(e.worker_id, e.data.get("name")) for e in draining] == [("w1", "name-w1")]
    workers = {w.id: w for w in await store.list_workers()}
    assert workers["w1"].status is WorkerStatus.DRAINING
    assert workers["w2"].status is WorkerStatus.ONLINE
    for w in workers.values():
        assert w.last_heartbeat > datetime.now(UTC) - timedelta(minutes=1)
    stats = await store.stats()
    assert (stats["workers_online"], stats["workers_draining"]) == (1, 1)
    await store.heartbeat({"w1": WorkerStatus.ONLINE})
    assert (await store.list_workers())[0].status is WorkerStatus.ONLINE
    # an offline worker's late heartbeat does not bring it back
    await store.workers_offline(["w2"], "gone")
    await store.heartbeat({"w2": WorkerStatus.ONLINE})
    assert {w.id: w.status for w in await store.list_workers()}["w2"] is WorkerStatus.OFFLINE


async def test_stale_workers(store: Store) -> None:
    await register(store, "fresh", "silent", "connected", "gone")
    await store.pool.execute(
        "UPDATE workers SET last_heartbeat = now() - interval '30 seconds' WHERE id <> 'fresh'"
    )
    await store.workers_offline(["gone"], "bye")
    assert await store.stale_workers(10, ["connected"]) == ["silent"]
    assert sorted(await store.stale_workers(10, [])) == ["connected", "silent"]
    assert await store.stale_workers(60, []) == []


async def test_workers_offline_requeues_or_fails_held_tasks(store: Store) -> None:
    await register(store, "w1", "w2")
    [young, old, other, done] = await new_tasks(store, 4)
    await store.pool.execute("UPDATE tasks SET attempt = 3, max_attempts = 3 WHERE id = $1", old)
    got = await store.assign(["w1", "w1", "w2", "w1"])
    by_task = {d.task_id: d for d in got}
    await apply(store, "w1", rep(by_task[young], "running", started_at=datetime.now(UTC)))
    await apply(store, "w1", rep(by_task[done], "completed"))
    assert _counts(await store.workers_offline(["w1"], "missed heartbeats for 6s")) == (1, 2)
    t = await get(store, young)
    assert (t.status, t.attempt, t.worker_id, t.started_at) == (TaskStatus.PENDING, 2, None, None)
    assert t.error == "missed heartbeats for 6s"
    assert t.history[-1]["worker_id"] == "w1" and t.history[-1]["attempt"] == 1
    t = await get(store, old)
    assert (t.status, t.attempt, t.error) == (TaskStatus.FAILED, 3, "missed heartbeats for 6s")
    assert t.failed_at is not None
    assert (await get(store, other)).status is TaskStatus.ASSIGNED  # w2 keeps its task
    assert (await get(store, done)).status is TaskStatus.COMPLETED
    [reassigned] = [e for e in await all_events(store, young) if e.event == "task_reassigned"]
    assert reassigned.worker_id == "w1"
    assert reassigned.data == {"attempt": 2, "reason": "missed heartbeats for 6s"}
    [failed] = [e for e in await all_events(store, old) if e.event == "task_failed"]
    assert failed.worker_id == "w1"
    [offline] = [e for e in await all_events(store) if e.event == "worker_offline"]
    assert offline.worker_id == "w1"
    workers = {w.id: w for w in await store.list_workers()}
    assert workers["w1"].status is WorkerStatus.OFFLINE
    assert await store.list_workers(offline_window=0) == [workers["w2"]]
    assert _counts(await store.workers_offline(["w1"], "again")) == (0, 0)
    assert _counts(await store.workers_offline([], "nobody")) == (0, 0)
    d = await assign_one(store, "w2")
    assert (d.task_id, d.attempt) == (young, 2)


async def wait_until_blocked(
    pool: asyncpg.Pool, query: str, done: asyncio.Future | None = None
) -> None:
    """Wait until a session running query waits on a lock (or done finishes)."""
    part = query[:200]  # pg_stat_activity keeps only the first kilobyte of a query
    deadline = asyncio.get_running_loop().time() + 10
    while not (done is not None and done.done()):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND strpos(query, $1) > 0", part
        )
        if waiting:
            return
        assert asyncio.get_running_loop().time() < deadline, f"nobody blocked on {part!r}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("blocked", ["lower id", "higher id"])
async def test_reports_and_worker_offline_do_not_deadlock(
    store: Store, database_url: str, blocked: str
) -> None:
    """A worker's last reports and its going offline, at the same moment, both go through."""
    await register(store, "w1")
    await new_tasks(store, 2)
    deliveries = sorted(await store.assign(["w1", "w1"]), key=lambda d: d.task_id)
    held, reported = deliveries if blocked == "lower id" else deliveries[::-1]
    blocker = await asyncpg.connect(database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        # someone holds one of the worker's tasks: going offline has to wait for it
        await blocker.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", held.task_id)
        offline = asyncio.ensure_future(store.workers_offline(["w1"], "gone"))
        await wait_until_blocked(store.pool, q("worker_offline"))
        report = asyncio.ensure_future(apply(store, "w1", rep(reported, "completed")))
        await wait_until_blocked(store.pool, q("apply_updates"), report)
        await tx.commit()
        results = await asyncio.wait_for(
            asyncio.gather(offline, report, return_exceptions=True), 10
        )
    finally:
        await blocker.close()
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert (await get(store, held.task_id)).status is TaskStatus.PENDING
    # tasks are locked in id order: the report on the lower id waits and then is stale
    expected = TaskStatus.COMPLETED if blocked == "lower id" else TaskStatus.PENDING
    assert (await get(store, reported.task_id)).status is expected
    assert _counts(results[0]) == (1, 2 if expected is TaskStatus.PENDING else 1)
    await assert_stats_match(store)


async def test_orphans_and_held_tasks(store: Store) -> None:
    await register(store, "w")
    ids = await new_tasks(store, 3)
    await store.assign(["w", "ghost"])
    assert await store.held_tasks("w") == {ids[0]: 1}
    assert await store.orphan_holders() == ["ghost"]
    assert _counts(await store.workers_offline(["ghost"], "unknown worker")) == (0, 1)
    assert await store.orphan_holders() == []
    await store.workers_offline(["w"], "x")
    assert await store.held_tasks("w") == {}


async def test_requeue(store: Store) -> None:
    await register(store, "w")
    [a, b, c] = await new_tasks(store, 3, max_attempts=2)
    await store.pool.execute("UPDATE tasks SET attempt = 2 WHERE id = $1", c)
    await store.assign(["w"] * 3)
    moved = await store.requeue([(a, 1), (b, 7), (c, 2)], "worker lost it")
    assert moved.tasks == {("noop", TaskStatus.PENDING): 1, ("noop", TaskStatus.FAILED): 1}
    assert ((await get(store, a)).status, (await get(store, a)).attempt) == (
        TaskStatus.PENDING, 2)
    assert ((await get(store, c)).status, (await get(store, c)).attempt) == (
        TaskStatus.FAILED, 2)
    assert (await get(store, b)).status is TaskStatus.ASSIGNED  # wrong attempt: untouched
    assert (await get(store, a)).error == "worker lost it"
    assert (await all_events(store, a))[-1].event == "task_reassigned"
    assert (await all_events(store, c))[-1].event == "task_failed"
    assert await store.requeue([], "nothing") == Moved()
    assert await store.requeue([(a, 2)], "not held") == Moved()


async def test_timed_out(store: Store) -> None:
    await register(store, "w")
    [slow, _] = await new_tasks(store, 2, timeout_seconds=5)
    await store.assign(["w", "w"])
    assert await store.timed_out() == []
    await store.pool.execute(
        "UPDATE tasks SET assigned_at = now() - interval '6 seconds' WHERE id = $1", slow
    )
    assert await store.timed_out() == [(slow, 1, "w")]


# ---- stats and events ----

async def test_stats_match_reality_after_a_mix(store: Store) -> None:
    await register(store, "w1", "w2")
    await assert_stats_match(store)
    await store.create_batch(NewTask(command="noop", max_attempts=2), 40)
    await new_tasks(store, 5, delay_seconds=3600)
    got = await store.assign(["w1", "w2"] * 15)
    now = datetime.now(UTC)
    pairs = []
    for i, d in enumerate(got):
        state = ["running", "completed", "failed", "rejected", "progress", "cancelled"][i % 6]
        pairs.append((d.worker_id, rep(d, state, started_at=now, progress=30)))
    await store.apply_reports(pairs, **RETRY)
    await assert_stats_match(store)
    pending = (await store.list_tasks(status=TaskStatus.PENDING, limit=3))[0]
    for t in pending:
        await store.cancel_task(t.id)
    await store.workers_offline(["w1"], "crash")
    await assert_stats_match(store)
    await store.compact_counts(0)
    rows = await store.pool.fetch("SELECT status, at FROM task_counts")
    assert len(rows) == len({r["status"] for r in rows})
    await assert_stats_match(store)
    await store.pool.execute("DELETE FROM tasks WHERE status = 'cancelled'")
    await assert_stats_match(store)
    await store.assign(["w2"] * 10)
    await assert_stats_match(store)
    await store.compact_counts(0)
    await assert_stats_match(store)
    stats = await store.stats()
    assert stats["completed"] == 5


async def test_stats_throughput_and_queue_wait(store: Store) -> None:
    await register(store, "w")
    empty = await store.stats(window=10)
    assert empty["throughput"] == 0 and empty["total"] == 0
    assert empty["queue_wait_mean_ms"] is None and empty["queue_wait_p95_ms"] is None
    ids = await new_tasks(store, 4)
    got = await store.assign(["w"] * 4)
    scheduled = {t: (await get(store, t)).scheduled_at for t in ids}
    for i, d in enumerate(got):
        await apply(store, "w", rep(d, "completed",
                                    started_at=scheduled[d.task_id] + timedelta(seconds=i + 1)))
    stats = await store.stats(window=10)
    assert stats["throughput"] == pytest.approx(0.4)
    assert stats["throughput_window_seconds"] == 10
    assert stats["queue_wait_mean_ms"] == pytest.approx(2500, abs=1)
    assert stats["queue_wait_p95_ms"] == pytest.approx(3850, abs=1)
    await store.compact_counts(0)
    # compacted counts are old: they no longer add to the throughput window
    assert (await store.stats(window=10))["throughput"] == 0
    assert (await store.stats())["completed"] == 4


async def test_events_after_order_and_limit(store: Store) -> None:
    assert (await store.event_horizon())[0] == 0
    assert await store.events_after(0, 10) == []
    await register(store, "w")
    await new_tasks(store, 5)
    await store.assign(["w"] * 2)
    events = await store.events_after(0, 100)
    assert [e.event for e in events] == ["worker_online"] + ["task_scheduled"] * 5 + [
        "task_assigned"] * 2
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 8
    assert (await store.event_horizon())[0] == ids[-1]
    page = await store.events_after(ids[2], 3)
    assert [e.id for e in page] == ids[3:6]
    assert await store.events_after(ids[-1], 10) == []
    for e in events:
        out = e.to_json()
        assert out["event"] == e.event and "timestamp" in out


async def test_prune_events(store: Store) -> None:
    await new_tasks(store, 6)
    events = await store.events_after(0, 100)
    old = [e.id for e in events[:4]]
    await store.pool.execute(
        "UPDATE events SET ts = now() - interval '2 hours' WHERE id = ANY($1)", old
    )
    assert await store.prune_events(3600) == 4
    assert [e.id for e in await store.events_after(0, 100)] == [e.id for e in events[4:]]
    assert await store.prune_events(3600) == 0
    # ids keep growing after a prune, so SSE clients never see an id reused
    await new_tasks(store, 1)
    assert (await store.event_horizon())[0] > events[-1].id


async def test_sequence_of_statuses_is_recorded_in_events(store: Store) -> None:
    """A task's events tell its story, with the worker named where one acted."""
    await register(store, "w1", "w2")
    [tid] = await new_tasks(store, 1, max_attempts=3)
    d = await assign_one(store, "w1")
    await apply(store, "w1", rep(d, "rejected", error="busy"))
    d = await assign_one(store, "w2")
    await apply(store, "w2", rep(d, "running", started_at=datetime.now(UTC)))
    await apply(store, "w2", rep(d, "failed", error="boom"))
    await make_due(store, tid)
    d = await assign_one(store, "w1")
    await apply(store, "w1", rep(d, "completed", started_at=datetime.now(UTC)))
    events = await all_events(store, tid)
    assert [(e.event, e.worker_id, e.data.get("attempt")) for e in events] == [
        ("task_scheduled", None, None),
        ("task_assigned", "w1", 1),
        ("task_rejected", "w1", 1),
        ("task_assigned", "w2", 2),
        ("task_running", "w2", 2),
        ("task_retrying", "w2", 2),
        ("task_assigned", "w1", 3),
        ("task_running", "w1", 3),
        ("task_completed", "w1", 3),
    ]
    t = await get(store, tid)
    assert (t.status, t.attempt, t.max_attempts) == (TaskStatus.COMPLETED, 3, 4)
    assert [h["worker_id"] for h in t.history] == ["w1", "w2"]


async def test_claims_and_reports_of_many_rows_go_to_the_bulk_pool(database_url: str) -> None:
    from taskmaster.store import create_pool
    from taskmaster.store.store import BULK_ROWS

    used = {"cached": 0, "bulk": 0}

    def count(name: str) -> Any:
        async def setup(conn: asyncpg.Connection) -> None:
            used[name] += 1
        return setup

    cached = await create_pool(database_url, max_size=2, setup=count("cached"))
    bulk = await create_pool(database_url, max_size=2, custom_plans=True, setup=count("bulk"))
    try:
        store = Store(cached, bulk_pool=bulk)
        await store.create_batch(NewTask(command="noop"), BULK_ROWS + 5)
        used.update(cached=0, bulk=0)

        few = await store.assign(["w1"] * 5)
        many = await store.assign(["w1"] * BULK_ROWS)
        assert (len(few), len(many), used) == (5, BULK_ROWS, {"cached": 1, "bulk": 1})

        assert len(await apply(store, "w1", *(rep(d, "completed") for d in few))) == 5
        assert len(await apply(store, "w1", *(rep(d, "completed") for d in many))) == BULK_ROWS
        assert used == {"cached": 2, "bulk": 2}
    finally:
        await cached.close()
        await bulk.close()


@pytest.mark.parametrize("claims", [True, False])
async def test_a_claim_walks_the_pending_index_before_any_analyze(
    database_url: str, store: Store, claims: bool
) -> None:
    """Right after a bulk insert no ANALYZE has seen the pending rows: PostgreSQL takes them
    for a handful and, unless told otherwise, plans a bitmap scan of every pending task
    and a sort. The coordinator's store (claims=True) walks the index to its LIMIT."""
    await register(store, "w")
    await store.create_batch(NewTask(command="noop"), 20_000)
    claimer = await Store.open(database_url, min_size=1, max_size=1, claims=claims)
    try:
        plan = "\n".join(r[0] for r in await claimer.pool.fetch(
            "EXPLAIN " + q("assign_tasks"), ["w"] * 100, None, 100, [], 100))
    finally:
        await claimer.close()
    walks = "Index Scan using tasks_pending_idx" in plan and "Bitmap" not in plan
    assert walks is claims, plan
