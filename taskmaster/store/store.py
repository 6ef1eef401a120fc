"""The PostgreSQL store: every read and state transition the components need."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg

from taskmaster.model import (
    Delivery,
    Event,
    Report,
    ReportState,
    Task,
    TaskStatus,
    Worker,
    WorkerStatus,
    merge_reports,
    storable_json,
)
from taskmaster.store.db import close_pool, create_pool
from taskmaster.store.listen import Callback, Listener
from taskmaster.store.queries import q


class BadCursor(ValueError):
    """A pagination cursor that this store did not issue."""


# an enum member by its value, for rows read per task (a dict lookup; calling the enum
# class costs a few microseconds)
_STATUS = {s.value: s for s in TaskStatus}
_STATE = {s.value: s for s in ReportState}


@dataclass(frozen=True, slots=True, kw_only=True)
class NewTask:
    command: str
    payload: Any = None
    priority: int = 0
    delay_seconds: float = 0.0
    max_attempts: int = 3
    timeout_seconds: float = 300.0
    idempotency_key: str | None = None


class FeedEvent(NamedTuple):
    """An event as the SSE feed sends it: the model's Event, with data left as JSON text."""

    id: int
    event: str
    timestamp: datetime
    task_id: str | None
    worker_id: str | None
    data_json: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """The outcome of one accepted report."""

    task_id: uuid.UUID
    attempt: int
    status: TaskStatus
    worker_id: str
    # what the report did, for the coordinator's metrics
    command: str = ""
    old_status: TaskStatus | None = None  # assigned or running
    state: ReportState = ReportState.RUNNING  # the report's state
    due_at: datetime | None = None  # when the delivered attempt became due
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetOutcome:
    """What a reset cleared (Store.reset)."""

    tasks: int  # tasks deleted, of which:
    pending: int  # waiting (cancelled before they ran)
    running: int  # assigned or running (their workers are told to stop)
    workers_dropped: int  # offline worker rows removed
    workers_kept: int  # live workers, their counters zeroed
    event_id: int  # the stack_reset event

    def to_json(self) -> dict[str, int]:
        """The JSON of POST /api/reset."""
        return {"tasks": self.tasks, "pending": self.pending, "running": self.running,
                "workers_dropped": self.workers_dropped, "workers_kept": self.workers_kept,
                "event_id": self.event_id}


@dataclass(frozen=True, slots=True, kw_only=True)
class Moved:
    """Held tasks taken back from workers, counted by (command, new status)."""

    workers: int = 0
    tasks: dict[tuple[str, TaskStatus], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Tasks moved."""
        return sum(self.tasks.values())


def encode_cursor(task: Task) -> str:
    """An opaque cursor for the page after this task."""
    raw = f"{task.created_at.isoformat()}|{task.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Undo encode_cursor; BadCursor when it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, tid = raw.split("|")
        return datetime.fromisoformat(ts), uuid.UUID(tid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor(cursor) from None


# Claims and reports of at least this many rows go to the bulk pool, whose connections plan
# each statement for its actual arrays (create_pool(custom_plans=True)); smaller ones keep
# PostgreSQL's cached plan: planning these statements costs ~0.5 ms, more than a generic
# plan loses on a few rows (docs/performance.md).
BULK_ROWS = 32
# the tables every task writes to: the coordinator vacuums them (Store.vacuum_dead)
VACUUMED = ("tasks", "events", "task_counts", "worker_counts", "workers")


class Store:
    """Typed access to PostgreSQL over an asyncpg pool (and a pool for big batches)."""

    def __init__(self, pool: asyncpg.Pool, *, bulk_pool: asyncpg.Pool | None = None,
                 url: str = "") -> None:
        self.pool = pool
        self.bulk_pool = bulk_pool or pool
        self.url = url  # for a listening connection of its own (else one from the pool)

    @classmethod
    async def open(cls, url: str, *, min_size: int = 1, max_size: int = 10,
                   bulk: bool = False, claims: bool = False) -> Store:
        """A Store on its own pool (and, with bulk=True, a second pool of two connections
        for big batches, planned for their actual arrays: see BULK_ROWS); close() it.

        claims=True for the store that claims tasks (the coordinator's): its connections
        plan no bitmap scans. A claim must walk the pending index in order and stop at
        its LIMIT. Right after a bulk insert, before any ANALYZE has seen the new rows,
        PostgreSQL's estimate of the pending rows is a handful, and it plans a bitmap scan
        of every pending task and a sort instead: 27 ms a claim with 20,000 pending, not
        4 ms (docs/performance.md). Nothing this store runs gains from a bitmap scan: its
        statements look rows up by key or walk one index."""
        settings = {"enable_bitmapscan": "off"} if claims else {}
        pool = await create_pool(url, min_size=min_size, max_size=max_size,
                                 server_settings=settings)
        bulk_pool = None
        if bulk:
            try:
                bulk_pool = await create_pool(url, min_size=1, max_size=2, custom_plans=True,
                                              server_settings=settings)
            except BaseException:
                await close_pool(pool)
                raise
        return cls(pool, bulk_pool=bulk_pool, url=url)

    def listen(self, channels: Mapping[str, Callback]) -> Listener:
        """LISTEN on these channels (callbacks take the payload); use as `async with`."""
        return Listener(self.url or self.pool, channels)

    async def close(self) -> None:
        """Close the pools (connections still busy after 5 s are terminated)."""
        for pool in {id(self.pool): self.pool, id(self.bulk_pool): self.bulk_pool}.values():
            await close_pool(pool)

    def _pool_for(self, rows: int) -> asyncpg.Pool:
        return self.bulk_pool if rows >= BULK_ROWS else self.pool

    # ---- creating and reading tasks (scheduler) ----

    async def create_task(self, new: NewTask) -> tuple[Task, bool]:
        """Insert one task; (task, True), or (the earlier task, False) on a reused key."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                q("insert_task"),
                uuid.uuid4(),
                new.command,
                _payload(new.payload),
                new.priority,
                new.delay_seconds,
                new.max_attempts,
                new.timeout_seconds,
                new.idempotency_key,
            )
            if row is not None:
                return Task.from_record(row), True
            existing = await conn.fetchrow(q("get_task_by_key"), new.idempotency_key)
        if existing is None:  # pragma: no cover - the key's task was deleted meanwhile
            raise RuntimeError("idempotency key conflict without a task")
        return Task.from_record(existing), False

    async def create_tasks(self, news: Sequence[NewTask]) -> list[Task]:
        """Insert tasks without idempotency keys in one statement; in the order given."""
        if any(n.idempotency_key is not None for n in news):
            raise ValueError("create_tasks takes no idempotency keys (use create_task)")
        ids = [uuid.uuid4() for _ in news]
        rows = await self.pool.fetch(
            q("insert_tasks"),
            ids,
            [n.command for n in news],
            [json.dumps(_payload(n.payload)) for n in news],
            [n.priority for n in news],
            [n.delay_seconds for n in news],
            [n.max_attempts for n in news],
            [n.timeout_seconds for n in news],
        )
        by_id = {r["id"]: r for r in rows}
        return [Task.from_record(by_id[i]) for i in ids]

    async def create_batch(self, new: NewTask, count: int) -> list[uuid.UUID]:
        """Insert count identical tasks in one statement; their ids in order."""
        rows = await self.pool.fetch(
            q("insert_batch"),
            new.command,
            _payload(new.payload),
            count,
            new.delay_seconds,
            new.priority,
            new.max_attempts,
            new.timeout_seconds,
        )
        return [r["id"] for r in rows]

    async def get_task(self, task_id: uuid.UUID) -> Task | None:
        """One task, or None."""
        row = await self.pool.fetchrow(q("get_task"), task_id)
        return Task.from_record(row) if row else None

    async def list_tasks(
        self, *, status: TaskStatus | None, limit: int, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        """Newest first; (page, cursor of the next page or None)."""
        after_ts, after_id = decode_cursor(cursor) if cursor else (None, None)
        rows = await self.pool.fetch(
            q("list_tasks"), status.value if status else None, after_ts, after_id, limit + 1
        )
        tasks = [Task.from_record(r) for r in rows[:limit]]
        more = len(rows) > limit
        return tasks, (encode_cursor(tasks[-1]) if more and tasks else None)

    async def cancel_task(self, task_id: uuid.UUID) -> Task | None:
        """Cancel (pending) or ask to cancel (held); None if not cancellable or unknown."""
        row = await self.pool.fetchrow(q("cancel_task"), task_id)
        return Task.from_record(row) if row else None

    async def known_commands(self) -> set[str]:
        """Commands some worker has offered (plus the built-ins)."""
        return {r["name"] for r in await self.pool.fetch(q("known_commands"))}

    async def list_workers(self, offline_window: float = 60.0, *,
                           history: bool = True) -> list[Worker]:
        """Live workers, then those gone within offline_window seconds; every incarnation of
        a name (history), or one row per name: its live incarnation, else its latest."""
        query = q("list_workers") if history else q("list_worker_names")
        return [Worker.from_record(r) for r in await self.pool.fetch(query, offline_window)]

    async def worker_name(self, worker_id: str) -> str | None:
        """The name of the worker with this id, or None."""
        name = await self.pool.fetchval(q("worker_name_of"), worker_id)
        return None if name is None else str(name)

    async def stats(self, *, window: float = 10.0, wait_sample: int = 1000) -> dict[str, Any]:
        """Counts by status, throughput and queue wait, without counting the tasks table."""
        row = await self.pool.fetchrow(q("stats"), window, wait_sample)
        assert row is not None
        counts = {s.value: int(row["counts"].get(s.value, 0)) for s in TaskStatus}
        wait_mean, wait_p95 = row["wait_mean"], row["wait_p95"]
        return {
            "total": sum(counts.values()),
            **counts,
            "queue_depth": counts[TaskStatus.PENDING],
            "workers_online": row["workers_online"],
            "workers_draining": row["workers_draining"],
            "throughput": round(row["recent_completed"] / window, 3),
            "throughput_window_seconds": window,
            "queue_wait_mean_ms": None if wait_mean is None else round(float(wait_mean) * 1000, 3),
            "queue_wait_p95_ms": None if wait_p95 is None else round(float(wait_p95) * 1000, 3),
        }

    # ---- events (SSE) ----

    async def events_after(self, last_id: int, limit: int) -> list[Event]:
        """Events with id > last_id, oldest first."""
        return [
            Event.from_record(r) for r in await self.pool.fetch(q("events_after"), last_id, limit)
        ]

    async def feed_after(self, last_id: int, limit: int) -> list[FeedEvent]:
        """Events with id > last_id, oldest first, as the SSE feed sends them."""
        return [FeedEvent(*r) for r in await self.pool.fetch(q("feed_after"), last_id, limit)]

    async def pool_scaled(self, decision: Mapping[str, Any]) -> int:
        """Record a `pool_scaled` event (the autoscaler's from, to and reason); its id."""
        return int(await self.pool.fetchval(q("pool_scaled"), storable_json(dict(decision))))

    async def event_ids_after(self, last_id: int, limit: int) -> list[int]:
        """Only the ids of the events with id > last_id, oldest first."""
        return [r[0] for r in await self.pool.fetch(q("event_ids_after"), last_id, limit)]

    async def event_horizon(self) -> tuple[int, list[str]]:
        """The newest event id, and the transactions (xid8 as text) still running when it
        was read: an id is taken at insert but shows at commit, so those may yet commit
        lower ids."""
        row = await self.pool.fetchrow(q("event_horizon"))
        assert row is not None
        return int(row["id"]), list(row["running"])

    async def still_running(self, xids: Sequence[str]) -> int:
        """How many of these transactions have not ended yet."""
        return int(await self.pool.fetchval(q("still_running"), list(xids)))

    async def reset(self) -> ResetOutcome:
        """Clear every task, event and count, drop offline worker rows, zero the live
        workers' counters and write one stack_reset event, in one transaction that creates,
        claims and reports wait for (so none is half applied); the coordinator is woken to
        stop what the workers still run."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q("reset_lock"))
            gone = await conn.fetchrow(q("reset_tasks"))
            assert gone is not None
            rest = await conn.fetchrow(q("reset_rest"), gone["total"], gone["pending"],
                                       gone["held"])
            assert rest is not None
        return ResetOutcome(tasks=gone["total"], pending=gone["pending"], running=gone["held"],
                            workers_dropped=rest["workers_dropped"],
                            workers_kept=rest["workers_kept"], event_id=rest["event_id"])

    async def existing_tasks(self, task_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these tasks still exist (a reset deletes them all)."""
        ids = list(task_ids)
        if not ids:
            return set()
        return {r["id"] for r in await self.pool.fetch(q("existing_tasks"), ids)}

    async def ping(self, timeout: float = 2.0) -> None:
        """Raise (one of errors.UNAVAILABLE or a DatabaseError) unless PostgreSQL answers."""
        await self.pool.fetchval("SELECT 1", timeout=timeout)

    async def prune_events(self, older_than: float) -> int:
        """Delete events older than the retention; how many went."""
        status = await self.pool.execute(q("prune_events"), older_than)
        return int(status.split()[-1])

    async def prune_tasks(self, older_than: float, batch: int = 10_000) -> int:
        """Delete at most `batch` finished tasks that ended more than older_than seconds ago
        (never a pending or held one); how many went. Call again until it returns < batch."""
        status = await self.pool.execute(q("prune_tasks"), older_than, batch)
        return int(status.split()[-1])

    async def prune_workers(self, older_than: float) -> int:
        """Delete workers offline for more than older_than seconds that hold nothing, and the
        commands only they offered (not the built-ins); how many workers went."""
        return int(await self.pool.fetchval(q("prune_workers"), older_than))

    async def vacuum_dead(self, min_dead: int) -> list[str]:
        """VACUUM (SKIP_LOCKED, ANALYZE) the queue's tables that hold min_dead dead rows and
        a tenth of their live ones; their names. Every task leaves two dead row versions
        (claimed, finished) and retention deletes: without this, on a server whose
        autovacuum is off or slow, the tables grow without end and each claim walks the dead
        entries at the head of the queue's index."""
        done = []
        for r in await self.pool.fetch(q("dead_tables"), list(VACUUMED), min_dead):
            name = r["relname"]
            if name in VACUUMED:  # a name of ours, never text from elsewhere
                await self.pool.execute(f'VACUUM (SKIP_LOCKED, ANALYZE) "{name}"')
                done.append(name)
        return done

    async def compact_counts(self, older_than: float = 60.0) -> None:
        """Fold old task count deltas together, and the workers' deltas into their rows."""
        await self.pool.execute(q("compact_counts"), older_than)
        await self.pool.execute(q("fold_worker_counts"))

    # ---- workers and assignment (coordinator) ----

    async def upsert_worker(
        self,
        *,
        worker_id: str,
        name: str,
        host: str,
        pid: int,
        capacity: int,
        commands: Sequence[str],
    ) -> None:
        """Record a worker as online (new or back)."""
        await self.pool.fetchrow(
            q("upsert_worker"), worker_id, name, host, pid, capacity, list(commands)
        )

    async def join_worker(
        self,
        *,
        worker_id: str,
        secret_hash: bytes,
        new: bool,
        name: str,
        host: str,
        pid: int,
        capacity: int,
        commands: Sequence[str],
        holder: str = "",
        lease: float = 60.0,
    ) -> bool:
        """Record a worker as online, its lease (`lease` seconds) held by the coordinator
        `holder`: a new one under the id and secret hash just issued, or one coming back (to
        any coordinator), only if secret_hash is the one on record. False: refused (an id
        already taken, or unknown, or a wrong secret), and nothing changed."""
        row = await self.pool.fetchrow(
            q("insert_worker" if new else "rejoin_worker"), worker_id, secret_hash, name, host,
            pid, capacity, list(commands), holder, lease)
        return row is not None

    async def held_tasks(self, worker_id: str) -> dict[uuid.UUID, int]:
        """{task id: attempt} of what PostgreSQL says the worker holds."""
        rows = await self.pool.fetch(q("worker_held_tasks"), worker_id)
        return {r["id"]: r["attempt"] for r in rows}

    async def heartbeat(self, beats: Mapping[str, WorkerStatus], *, holder: str | None = None,
                        lease: float = 60.0) -> set[str]:
        """Renew the leases ({worker id: online or draining}) for `lease` seconds, only of
        workers `holder` still holds (None: any); the ids renewed."""
        if not beats:
            return set()
        rows = await self.pool.fetch(q("heartbeat_workers"), list(beats),
                                     [status.value for status in beats.values()], holder, lease)
        return {r["id"] for r in rows}

    async def renew_coordinator(self, coordinator_id: str, *, name: str, address: str,
                                lease: float) -> None:
        """Renew a coordinator's own lease for `lease` seconds (creating its row)."""
        await self.pool.execute(q("renew_coordinator"), coordinator_id, name, address, lease)

    async def drop_coordinator(self, coordinator_id: str, forget_after: float = 3600.0) -> None:
        """Remove a stopping coordinator's row, and rows lapsed for forget_after seconds."""
        await self.pool.execute(q("drop_coordinator"), coordinator_id, forget_after)

    async def coordinators(self) -> list[dict[str, Any]]:
        """The coordinators whose lease is current, with the number of workers each holds."""
        return [dict(r) for r in await self.pool.fetch(q("list_coordinators"))]

    async def workers_offline(self, worker_ids: Iterable[str], reason: str, *,
                              holder: str | None = None) -> Moved:
        """Mark workers offline and put their tasks back (or fail them, out of attempts);
        what became of the tasks, by command. With a holder, only workers that coordinator
        holds or whose lease lapsed (a worker that moved on keeps its tasks)."""
        ids = list(worker_ids)
        if not ids:
            return Moved()
        row = await self.pool.fetchrow(q("worker_offline"), ids, reason, holder)
        assert row is not None
        return Moved(workers=row["workers"], tasks={
            (command, TaskStatus(status)): n for command, status, n in row["moved"]})

    async def requeue(self, deliveries: Iterable[tuple[uuid.UUID, int]], reason: str) -> Moved:
        """Put specific deliveries back in the queue (or fail them when out of attempts);
        what became of them, by command."""
        pairs = list(deliveries)
        if not pairs:
            return Moved()
        tasks: dict[tuple[str, TaskStatus], int] = {}
        for r in await self.pool.fetch(q("requeue_tasks"), [p[0] for p in pairs],
                                       [p[1] for p in pairs], reason):
            key = (r["command"], TaskStatus(r["status"]))
            tasks[key] = tasks.get(key, 0) + 1
        return Moved(tasks=tasks)

    async def stale_workers(self, timeout: float, connected: Iterable[str],
                            holder: str = "") -> list[str]:
        """Workers marked alive whose lease lapsed (silent for timeout seconds, without one),
        not connected here, and not held by another coordinator that is alive."""
        rows = await self.pool.fetch(q("stale_workers"), timeout, list(connected), holder)
        return [r["id"] for r in rows]

    async def orphan_holders(self) -> list[str]:
        """Worker ids that hold tasks but are offline or unknown."""
        return [r["worker_id"] for r in await self.pool.fetch(q("orphaned_tasks"))]

    async def assign(self, slots: Sequence[str], *, holder: str | None = None,
                     queue_from: int | None = None, short: Sequence[str] = ()
                     ) -> list[Delivery]:
        """Claim one due task per slot (slots = worker ids in round-robin order); with a
        holder, only for the workers that coordinator still holds. The slots from index
        queue_from on are prefetch (a delivery queued behind busy slots): they take a task
        only while every task within reach is of a command in short."""
        if not slots:
            return []
        rows = await self._pool_for(len(slots)).fetch(
            q("assign_tasks"), list(slots), holder,
            len(slots) if queue_from is None else queue_from, list(short), len(slots))
        return [
            Delivery(
                task_id=r["id"],
                attempt=r["attempt"],
                command=r["command"],
                payload_json=r["payload"],
                timeout_seconds=r["timeout_seconds"],
                worker_id=r["worker_id"],
            )
            for r in rows
        ]

    async def next_due(self, after: datetime | None = None) -> datetime | None:
        """When the earliest task due after `after` (default: now) becomes due; a time
        already past for one that fell due since `after`."""
        return await self.pool.fetchval(q("next_due"), after or datetime.now(UTC))

    async def apply_reports(
        self, reports: Sequence[tuple[str, Report]], *, retry_base: float, retry_max: float
    ) -> list[Applied]:
        """Apply (worker id, report) pairs in one statement; the accepted ones come back."""
        if not reports:
            return []
        # One row per delivery: UPDATE ... FROM applies an arbitrary one of several rows.
        by_worker: dict[str, list[Report]] = {}
        for worker_id, report in reports:
            by_worker.setdefault(worker_id, []).append(report)
        reports = [(w, r) for w, rs in by_worker.items() for r in merge_reports(rs)]
        now = datetime.now(UTC)
        rows = await self._pool_for(len(reports)).fetch(
            q("apply_updates"),
            [w for w, _ in reports],
            [r.task_id for _, r in reports],
            [r.attempt for _, r in reports],
            [r.state for _, r in reports],
            [r.progress for _, r in reports],
            [r.result_json for _, r in reports],
            [r.error for _, r in reports],
            [r.started_at for _, r in reports],
            [r.finished_at or (now if r.final else None) for _, r in reports],
            retry_base,
            retry_max,
        )
        return [
            Applied(
                task_id=r["id"],
                attempt=r["attempt"],
                status=_STATUS[r["status"]],
                worker_id=r["worker_id"],
                command=r["command"],
                old_status=_STATUS[r["old_status"]],
                state=_STATE[r["state"]],
                due_at=r["due_at"],
                started_at=r["started_at"],
                finished_at=r["finished_at"],
            )
            for r in rows
        ]

    async def timed_out(self) -> list[tuple[uuid.UUID, int, str]]:
        """Deliveries past their timeout: (task id, attempt, worker id)."""
        rows = await self.pool.fetch(q("timed_out_tasks"))
        return [(r["id"], r["attempt"], r["worker_id"]) for r in rows]

    async def cancel_requests(self, worker_ids: Iterable[str]) -> list[tuple[uuid.UUID, int, str]]:
        """Held tasks with a cancellation pending, for these workers."""
        rows = await self.pool.fetch(q("cancel_requested"), list(worker_ids))
        return [(r["id"], r["attempt"], r["worker_id"]) for r in rows]


def _payload(value: Any) -> Any:
    return {} if value is None else value
