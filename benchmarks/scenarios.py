"""The scenarios: throughput, latency, scaling, failover, the read path, steady load, a big
backlog, a long load with retention, and the peer comparison.

Each takes the Server and the options and returns a JSON-able dict. Times that matter
are read back from PostgreSQL (created_at, assigned_at, started_at, completed_at), so the
benchmark's own polling does not blur them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from benchmarks.figures import summary_ms
from benchmarks.stack import MemorySampler, Server, Stack, stack
from taskmaster.store.queries import q


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What the command line chose."""

    tasks: int = 20_000
    batch: int = 1000
    concurrency: int = 64
    throughput_workers: tuple[int, ...] = (1, 2, 4)
    latency_tasks: int = 1000
    creates: int = 3000
    in_flight: int = 16
    scaling_workers: tuple[int, ...] = (1, 2, 4, 8)
    scaling_tasks_per_slot: int = 30
    scaling_seconds: float = 0.1
    failover_rounds: int = 5
    partition_rounds: int = 1
    read_rows: int = 1_000_000
    read_requests: int = 300
    sse_clients: int = 10
    sse_events: int = 50_000
    load_rates: tuple[int, ...] = (50, 200, 500)
    load_seconds: float = 20.0
    # the steady load at about half of what 4 workers of 64 slots drain end to end on this
    # VM (4,000-7,500 tasks/s, by the hour): create-to-start under load
    half_rate: int = 2000
    backlog_tasks: int = 1_000_000
    soak_seconds: float = 300.0
    soak_rate: int = 500
    soak_retention: float = 60.0
    peer_rounds: int = 3
    peer_scale: float = 1.0  # of the peer comparison's task counts (20,000 and 5,000)


async def _last_completion(st: Stack) -> float:
    """When the last task completed (unix seconds)."""
    return float(await st.db.fetchval("SELECT extract(epoch FROM max(completed_at)) FROM tasks"))


async def _span(st: Stack, start_col: str, end_col: str = "completed_at") -> float:
    """Seconds from the earliest start_col to the latest end_col over all tasks."""
    value = await st.db.fetchval(
        f"SELECT extract(epoch FROM max({end_col}) - min({start_col})) FROM tasks")
    return float(value)


# ---- throughput ----

async def throughput(server: Server, opts: Options, sampler: MemorySampler) -> dict[str, Any]:
    """No-op tasks through the batch API: create, drain and end-to-end rates per worker count."""
    rows = []
    for workers in opts.throughput_workers:
        async with stack(server, f"throughput{workers}", workers=workers,
                         concurrency=opts.concurrency, sampler=sampler) as st:
            rows.append({"workers": workers, "concurrency": opts.concurrency,
                         **await _drain(st, opts), **await _end_to_end(st, opts)})
    return {"tasks": opts.tasks, "batch": opts.batch, "runs": rows}


async def _drain(st: Stack, opts: Options) -> dict[str, Any]:
    # Created through the API behind a far-off due time while the workers idle, then
    # released at once: the drain starts with the whole queue in place and every worker
    # connected, so neither creation nor process start-up is in the figure.
    created = await st.create_batches("noop", opts.tasks, opts.batch, delay=3600)
    await st.db.execute("UPDATE tasks SET scheduled_at = now() WHERE status = 'pending'")
    # the release left a dead version of every row: clear them, as a queue filled by
    # inserts alone would be
    await st.db.execute("VACUUM ANALYZE tasks")
    st.cpu.start()
    await st.db.execute("NOTIFY taskmaster_tasks")
    await st.wait_finished(opts.tasks)
    cpu = st.cpu.per_task(opts.tasks)
    span = await _span(st, "assigned_at")
    return {"create_per_s": round(opts.tasks / created), "drain_per_s": round(opts.tasks / span),
            "drain_s": round(span, 3), "drain_cpu_us_per_task": cpu}


async def _end_to_end(st: Stack, opts: Options) -> dict[str, Any]:
    await st.db.execute("TRUNCATE tasks")
    await st.db.execute("TRUNCATE task_counts")
    st.cpu.start()
    t0 = time.time()
    created = await st.create_batches("noop", opts.tasks, opts.batch)
    await st.wait_finished(opts.tasks)
    cpu = st.cpu.per_task(opts.tasks)
    end = await _last_completion(st)
    return {"e2e_per_s": round(opts.tasks / (end - t0)), "e2e_s": round(end - t0, 3),
            "create_under_load_per_s": round(opts.tasks / created), "e2e_cpu_us_per_task": cpu}


# ---- latency ----

async def latency(server: Server, opts: Options, sampler: MemorySampler) -> dict[str, Any]:
    """Idle workers, tasks created one request at a time: create-to-start/complete, creates/s."""
    async with stack(server, "latency", workers=2, concurrency=4, sampler=sampler) as st:
        requests: list[float] = []
        for _ in range(opts.latency_tasks):
            t0 = time.perf_counter()
            await st.post("/api/schedule", {"command": "noop"})
            requests.append(time.perf_counter() - t0)
            # let it finish so the next one meets idle workers
            await asyncio.sleep(0.005)
        await st.wait_finished(opts.latency_tasks)
        rows = await st.db.fetch(
            "SELECT extract(epoch FROM started_at - created_at) AS start,"
            "       extract(epoch FROM completed_at - created_at) AS done FROM tasks")
        to_start = [float(r["start"]) for r in rows]
        to_done = [float(r["done"]) for r in rows]

        # one client, keep-alive, back to back: while the workers run what it creates ...
        st.cpu.start()
        running = await _creates(st, opts.creates, {"command": "noop"})
        await st.wait_finished(opts.latency_tasks + opts.creates)
        running_cpu = st.cpu.per_task(opts.creates)
        # ... with several requests in flight, until the workers have completed them all
        t0 = time.time()
        overlapped_running = await _creates(st, opts.creates, {"command": "noop"},
                                            opts.in_flight)
        await st.wait_finished(opts.latency_tasks + 2 * opts.creates)
        overlapped_e2e = round(opts.creates / (await _last_completion(st) - t0))
        # ... and the create path alone, no worker to hand the tasks to
        await st.cluster.scale(0)
        alone = await _creates(st, opts.creates, {"command": "noop"})
        # ... and the same client keeping several requests in flight (they share commits)
        overlapped = await _creates(st, opts.creates, {"command": "noop"}, opts.in_flight)
        floor = await _database_floor(st, opts.creates)
    return {"tasks": opts.latency_tasks, "create_to_start_ms": summary_ms(to_start),
            "create_to_complete_ms": summary_ms(to_done), "request_ms": summary_ms(requests),
            "creates": opts.creates, "creates_per_s": alone,
            "creates_while_running_per_s": running, "creates_while_running_cpu_us": running_cpu,
            "in_flight": opts.in_flight, "creates_in_flight_per_s": overlapped,
            "creates_in_flight_while_running_per_s": overlapped_running,
            "in_flight_e2e_per_s": overlapped_e2e, **floor}


async def _database_floor(st: Stack, n: int) -> dict[str, int]:
    """What one connection gets from this PostgreSQL with no HTTP and no scheduler, one
    statement after another: `SELECT 1` round trips, and the create statement alone (its
    triggers and durable commit included): the ceiling of one client's creates."""
    async with st.db.acquire() as conn:
        t0 = time.perf_counter()
        for _ in range(n):
            await conn.fetchval("SELECT 1")
        trips = n / (time.perf_counter() - t0)
        insert = q("insert_task")  # due in an hour: no worker would take them anyway
        t0 = time.perf_counter()
        for _ in range(n):
            await conn.fetchrow(insert, uuid.uuid4(), "noop", "{}", 0, 3600.0, 3, 300.0, None)
        creates = n / (time.perf_counter() - t0)
        await conn.execute("DELETE FROM tasks WHERE scheduled_at > now() + interval '10 minutes'")
    return {"db_roundtrips_per_s": round(trips), "db_creates_per_s": round(creates)}


async def _creates(st: Stack, n: int, body: dict[str, Any], in_flight: int = 1) -> int:
    """n POST /api/schedule over keep-alive, `in_flight` requests at a time; creates/s."""
    async def one_after_another(count: int) -> None:
        for _ in range(count):
            await st.post("/api/schedule", body)

    t0 = time.perf_counter()
    await asyncio.gather(*(one_after_another(n // in_flight + (i < n % in_flight))
                           for i in range(in_flight)))
    return round(n / (time.perf_counter() - t0))


# ---- scaling ----

async def scaling(server: Server, opts: Options, sampler: MemorySampler) -> dict[str, Any]:
    """Sleep tasks on 1..8 single-slot workers: measured / ideal throughput."""
    rows = []
    async with stack(server, "scaling", workers=0, concurrency=1, sampler=sampler) as st:
        for workers in opts.scaling_workers:
            await st.cluster.scale(workers)
            await st.wait_workers(workers)
            await st.db.execute("TRUNCATE tasks")
            await st.db.execute("TRUNCATE task_counts")
            n = workers * opts.scaling_tasks_per_slot
            await st.create_batches("sleep", n, opts.batch,
                                    payload={"seconds": opts.scaling_seconds})
            await st.wait_finished(n)
            span = await _span(st, "created_at")
            measured = n / span
            ideal = workers / opts.scaling_seconds
            rows.append({"workers": workers, "tasks": n, "seconds": round(span, 3),
                         "per_s": round(measured, 2), "ideal_per_s": round(ideal, 2),
                         "efficiency": round(measured / ideal, 3)})
    return {"task_seconds": opts.scaling_seconds, "runs": rows}


# ---- failover ----

async def failover(server: Server, opts: Options, sampler: MemorySampler) -> dict[str, Any]:
    """SIGKILL (and partition) the worker holding tasks: until they run again elsewhere."""
    from benchmarks.failover import run

    # its own stack and database, on the same server (a second embedded one when none given)
    return await run(server.given_url, rounds=opts.failover_rounds,
                     partition_rounds=opts.partition_rounds)


# ---- read path ----

FILL = """
INSERT INTO tasks (id, command, payload, status, created_at, scheduled_at, assigned_at,
                   started_at, completed_at, worker_id, progress, result)
SELECT gen_random_uuid(), 'noop', '{}'::jsonb, 'completed', t, t, t, t + interval '2 ms',
       t + interval '3 ms', 'bench-worker', 100, 'null'::jsonb
FROM (SELECT now() - make_interval(secs => i * 0.01) AS t FROM generate_series(1, $1) i) s
"""

EVENTS = """
INSERT INTO events (event, task_id, worker_id, data)
SELECT 'task_completed', gen_random_uuid(), 'bench-worker',
       jsonb_build_object('attempt', 1, 'command', 'noop', 'duration_ms', 1.0)
FROM generate_series(1, $1)
"""


async def read_path(server: Server, opts: Options, sampler: MemorySampler) -> dict[str, Any]:
    """/api/stats and /api/tasks with many rows stored; SSE fan-out to several clients."""
    async with stack(server, "readpath", workers=0, concurrency=1, sampler=sampler) as st:
        t0 = time.perf_counter()
        await st.db.execute(FILL, opts.read_rows)
        await st.db.execute("VACUUM ANALYZE tasks")
        fill_s = time.perf_counter() - t0
        clients = [SseCounter(st) for _ in range(opts.sse_clients)]
        readers = [asyncio.create_task(c.run()) for c in clients]
        try:
            await asyncio.gather(*(c.connected.wait() for c in clients))
            out: dict[str, Any] = {"rows": opts.read_rows, "fill_s": round(fill_s, 1),
                                   "sse_clients": len(clients)}
            for name, path in (("stats", "/api/stats"), ("tasks", "/api/tasks?limit=100"),
                               ("tasks_completed",
                                "/api/tasks?status=completed&limit=100")):
                out[name + "_ms"] = summary_ms(await _timed_gets(st, path, opts.read_requests))
            out.update(await _fan_out(st, clients, opts.sse_events))
        finally:
            for r in readers:
                r.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    return out


async def _timed_gets(st: Stack, path: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with st.http.get(st.api + path) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {path} -> {resp.status}")
        times.append(time.perf_counter() - t0)
    return times


async def _fan_out(st: Stack, clients: list[SseCounter], n: int) -> dict[str, Any]:
    for c in clients:
        c.count = 0
    t0 = time.perf_counter()
    await st.db.execute(EVENTS, n)
    deadline = time.monotonic() + 120
    while any(c.count < n for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    elapsed = max(c.last_at for c in clients) - t0
    delivered = sum(min(c.count, n) for c in clients)
    return {"sse_events": n, "sse_delivered": delivered,
            "sse_complete": all(c.count >= n for c in clients),
            "sse_events_per_s": round(delivered / elapsed),
            "sse_per_client_per_s": round(n / elapsed)}


class SseCounter:
    """An SSE client that only counts the events it receives."""

    def __init__(self, st: Stack) -> None:
        self.st = st
        self.count = 0
        self.last_at = 0.0
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Read the stream until cancelled."""
        async with self.st.http.get(self.st.api + "/api/logs/stream") as resp:
            self.connected.set()
            tail = b""
            async for chunk in resp.content.iter_any():
                buf = tail + chunk
                found = buf.count(b"\nid: ")
                if found:
                    self.count += found
                    self.last_at = time.perf_counter()
                tail = buf[-4:]


# ---- steady load ----

async def steady_load(server: Server, opts: Options, sampler: MemorySampler) -> dict[str, Any]:
    """`taskmaster load`'s generator at each rate for load_seconds: the rate it held, from
    the tasks' created_at in PostgreSQL (whole seconds, first and last left out)."""
    from taskmaster.client import Client
    from taskmaster.config import Settings
    from taskmaster.load import SteadyLoad

    rates: dict[str, Any] = {}
    every = [*opts.load_rates, *([opts.half_rate] if opts.half_rate else [])]
    async with stack(server, "load", workers=4, concurrency=64, sampler=sampler) as st:
        for rate in every:
            await st.db.execute("TRUNCATE tasks")
            await st.db.execute("TRUNCATE task_counts")
            async with Client(st.api) as client:
                load = SteadyLoad(client, rate=rate, command="noop", seconds=opts.load_seconds,
                                  settings=Settings(load_max_rate=max(every)))
                progress = await load.run()
            await st.wait_finished(progress.created, timeout=60)
            per_second = [r["n"] for r in await st.db.fetch(
                "SELECT date_trunc('second', created_at) AS s, count(*) AS n FROM tasks "
                "GROUP BY 1 ORDER BY 1")][1:-1]
            span = await st.db.fetchval(
                "SELECT extract(epoch FROM max(created_at) - min(created_at)) FROM tasks")
            created = await st.db.fetchval("SELECT count(*) FROM tasks")
            # created tasks over the span they were created in, one interval per task
            held = (created - 1) / float(span) if span else 0.0
            rates[str(rate)] = {
                "rate": rate, "seconds": opts.load_seconds, "created": created,
                "expected": int(rate * opts.load_seconds), "held_per_s": round(held, 2),
                "deviation_pct": round(abs(held - rate) / rate * 100, 2),
                "per_second_min": min(per_second, default=0),
                "per_second_max": max(per_second, default=0),
                "errors": progress.errors, "skipped": progress.skipped,
                "create_to_start_ms": await _create_to_start(st),
            }
    out: dict[str, Any] = {"rates": rates}
    if opts.half_rate:
        out["half"] = rates[str(opts.half_rate)]
    return out


async def _create_to_start(st: Stack) -> dict[str, float]:
    """p50/p95/p99 of created_at to started_at over the finished tasks, in ms."""
    row = await st.db.fetchrow(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY "
        "extract(epoch FROM started_at - created_at)) AS p FROM tasks "
        "WHERE started_at IS NOT NULL")
    p = row["p"] or [0.0, 0.0, 0.0]
    return {k: round(float(v) * 1000, 2) for k, v in zip(("p50", "p95", "p99"), p, strict=True)}


# ---- a big backlog ----

async def backlog(server: Server, opts: Options, sampler: MemorySampler) -> dict[str, Any]:
    """A drain of opts.tasks, then of backlog_tasks (inserted at once, as a queue that grew
    while no worker ran) on the same 4 workers of 64 slots: does the rate hold as the queue
    grows 50-fold (indexes, dead tuples, vacuum under load)?"""
    async with stack(server, "backlog", workers=4, concurrency=opts.concurrency,
                     sampler=sampler) as st:
        small = await _drain(st, opts)
        await st.db.execute("TRUNCATE tasks")
        await st.db.execute("TRUNCATE task_counts")
        await st.db.execute("TRUNCATE events")
        t0 = time.perf_counter()
        left = opts.backlog_tasks
        while left > 0:  # one statement per 100,000 rows (and their task_scheduled events)
            n = min(left, 100_000)
            await st.db.execute(q("insert_batch"), "noop", "{}", n, 3600.0, 0, 3, 300.0)
            left -= n
        inserted = time.perf_counter() - t0
        await st.db.execute("UPDATE tasks SET scheduled_at = now() WHERE status = 'pending'")
        await st.db.execute("VACUUM ANALYZE tasks")
        st.cpu.start()
        await st.db.execute("NOTIFY taskmaster_tasks")
        await st.wait_finished(opts.backlog_tasks, timeout=max(600.0, opts.backlog_tasks / 500))
        cpu = st.cpu.per_task(opts.backlog_tasks)
        span = await _span(st, "assigned_at")
        # the rate over the first and the last tenth of the completions
        tenth = max(1, opts.backlog_tasks // 10)
        ends = await st.db.fetchrow(
            "SELECT extract(epoch FROM (array_agg(completed_at ORDER BY completed_at))[$1] "
            "  - min(completed_at)) AS head, "
            "extract(epoch FROM max(completed_at) - (array_agg(completed_at ORDER BY "
            "  completed_at DESC))[$1]) AS tail FROM tasks", tenth)
        sizes = await _table_mb(st, "tasks", "events")
    rate = opts.backlog_tasks / span
    return {"tasks": opts.backlog_tasks, "small_tasks": opts.tasks,
            "small_drain_per_s": small["drain_per_s"], "drain_per_s": round(rate),
            "ratio_to_small": round(rate / small["drain_per_s"], 3),
            "first_tenth_per_s": round(tenth / float(ends["head"] or 1e-9)),
            "last_tenth_per_s": round(tenth / float(ends["tail"] or 1e-9)),
            "insert_s": round(inserted, 1), "drain_s": round(span, 1),
            "cpu_us_per_task": cpu,
            "table_mb": sizes}


async def _table_mb(st: Stack, *tables: str) -> dict[str, float]:
    """The tables' size on disk (with their indexes and TOAST), MB."""
    row = await st.db.fetchrow("SELECT " + ", ".join(
        f"pg_total_relation_size('{t}') AS {t}" for t in tables))
    return {t: round(float(row[t]) / 2**20, 2) for t in tables}


# ---- a long load with retention ----

SOAK_TABLES = ("tasks", "events", "task_counts")


async def soak(server: Server, opts: Options, sampler: MemorySampler) -> dict[str, Any]:
    """soak_rate no-op tasks/s for soak_seconds with finished tasks and events kept for
    soak_retention seconds: the sizes of the tables on disk every 10 s. Bounded means they
    stop growing once the retention window is full (the second half adds little)."""
    from taskmaster.client import Client
    from taskmaster.config import Settings
    from taskmaster.load import SteadyLoad

    samples: list[dict[str, Any]] = []
    async with stack(server, "soak", workers=4, concurrency=64, sampler=sampler,
                     task_retention=opts.soak_retention,
                     event_retention=opts.soak_retention) as st:

        async def sizes() -> None:
            t0 = time.perf_counter()
            while True:
                rows = await st.db.fetchval("SELECT count(*) FROM tasks")
                samples.append({"at_s": round(time.perf_counter() - t0, 1), "task_rows": rows,
                                **await _table_mb(st, *SOAK_TABLES)})
                await asyncio.sleep(10)

        watcher = asyncio.create_task(sizes())
        try:
            async with Client(st.api) as client:
                load = SteadyLoad(client, rate=opts.soak_rate, command="noop",
                                  seconds=opts.soak_seconds,
                                  settings=Settings(load_max_rate=opts.soak_rate))
                progress = await load.run()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    half = [x for x in samples if x["at_s"] >= opts.soak_seconds / 2]
    out: dict[str, Any] = {"rate": opts.soak_rate, "seconds": opts.soak_seconds,
                           "retention_s": opts.soak_retention, "created": progress.created,
                           "samples": samples}
    for table in SOAK_TABLES:
        values = [x[table] for x in samples]
        out[f"{table}_mb"] = {"max": max(values, default=0.0), "end": values[-1] if values else 0.0,
                              "second_half_growth": round(half[-1][table] - half[0][table], 2)
                              if len(half) > 1 else 0.0}
    out["task_rows_max"] = max((x["task_rows"] for x in samples), default=0)
    return out


async def peers_scenario(server: Server, opts: Options, sampler: MemorySampler) -> dict[str, Any]:
    """TaskMaster against pgqueuer on the same PostgreSQL (benchmarks/peers.py)."""
    from benchmarks.peers import peers

    return await peers(server, opts.peer_rounds, opts.peer_scale, opts.batch, sampler)


SCENARIOS = {
    "throughput": throughput,
    "latency": latency,
    "scaling": scaling,
    "failover": failover,
    "read": read_path,
    "load": steady_load,
    "backlog": backlog,
    "soak": soak,
    "peers": peers_scenario,
}
