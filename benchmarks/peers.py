"""TaskMaster beside a peer queue on the same PostgreSQL, in the same run: the `peers` scenario.

The peer is pgqueuer (`pip install -e '.[bench]'`), the fastest Python queue on PostgreSQL we
know of. Both sides drain the same number of pre-created no-op tasks with the same total
concurrency, process start included, in interleaved rounds (the order flips every round), so
that the speed of the machine, which drifts by 2x within a day here, cancels out of the ratio.

- high concurrency: TaskMaster 4 workers x 64 slots against pgqueuer in one process with its
  defaults (batch_size=10, unbounded concurrency), 20,000 tasks;
- low concurrency: TaskMaster 4 workers x 1 slot against pgqueuer in one process with 4
  concurrent tasks (max_concurrent_tasks=4, batch_size=2), 5,000 tasks.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil

from benchmarks.figures import summary_ms
from benchmarks.stack import MemorySampler, Server, stack
from taskmaster.config import Settings
from taskmaster.store.db import with_database


@dataclass(frozen=True, slots=True)
class Pair:
    """One comparison: the same tasks and total concurrency on both sides."""

    name: str
    tasks: int
    workers: int
    slots: int
    pgq_batch_size: int
    pgq_max_concurrent: int | None
    goal: float  # the ratio TaskMaster / pgqueuer aimed at


PAIRS = (
    Pair("high", tasks=20_000, workers=4, slots=64, pgq_batch_size=10, pgq_max_concurrent=None,
         goal=2.0),
    Pair("low", tasks=5_000, workers=4, slots=1, pgq_batch_size=2, pgq_max_concurrent=4,
         goal=1.5),
)


def require_pgqueuer() -> None:
    """A clear error when the peer is not installed."""
    try:
        import pgqueuer  # noqa: F401
    except ImportError:
        raise RuntimeError("the peer queue is not installed: pip install -e '.[bench]' "
                           "(pgqueuer from PyPI)") from None


async def taskmaster_drain(server: Server, pair: Pair, tasks: int, batch: int,
                           sampler: MemorySampler) -> dict[str, Any]:
    """Create the tasks with no worker running, then start the workers: until all completed."""
    async with stack(server, f"peer_{pair.name}", workers=0, concurrency=pair.slots,
                     sampler=sampler) as st:
        await st.create_batches("noop", tasks, batch)
        st.cpu.start()
        t0 = time.time()
        await st.cluster.scale(pair.workers)
        await st.wait_finished(tasks, poll=0.02)
        cpu = st.cpu.per_task(tasks)
        first, end = (float(x) for x in await st.db.fetchrow(
            "SELECT extract(epoch FROM min(assigned_at)), extract(epoch FROM max(completed_at)) "
            "FROM tasks"))
        done = await st.db.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
        cycle = await _slot_cycle(st) if pair.slots == 1 else None
    if done != tasks:
        raise RuntimeError(f"TaskMaster completed {done} of {tasks} tasks")
    out = {"per_s": round(tasks / (end - t0)), "seconds": round(end - t0, 3),
           "to_first_claim_s": round(first - t0, 3), "cpu_us_per_task": cpu}
    if cycle is not None:
        out["slot_cycle_ms"] = cycle
    return out


async def _slot_cycle(st: Any) -> dict[str, float]:
    """One-slot workers: from a task's completion to the next task's start on the same
    worker (the workers' own clocks, as they reported), p50/p95/p99 in ms."""
    rows = await st.db.fetch(
        "SELECT extract(epoch FROM started_at - lag(completed_at) OVER w) AS gap FROM tasks "
        "WINDOW w AS (PARTITION BY worker_id ORDER BY started_at)")
    return summary_ms([float(r["gap"]) for r in rows if r["gap"] is not None])


class _BackendCpu:
    """CPU seconds of one database's PostgreSQL backends, read until they exit."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.seen: dict[int, float] = {}

    def sample(self) -> None:
        for p in psutil.process_iter(["cmdline"]):
            title = " ".join(p.info["cmdline"] or [])
            if title.startswith("postgres:") and f" {self.database} " in title:
                try:
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                self.seen[p.pid] = t.user + t.system

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.1)


async def _child(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.pgq_peer", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"pgqueuer peer failed ({proc.returncode}): {err.decode()[-800:]}")
    return out.decode()


async def pgqueuer_drain(server: Server, pair: Pair, tasks: int) -> dict[str, Any]:
    """The same drain by pgqueuer in one process, on a database of its own."""
    name = f"tm_bench_pgq_{pair.name}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(server.admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server.admin_url, name)
    try:
        await _child(url, "--install", str(tasks))
        args = [url, "--batch-size", str(pair.pgq_batch_size)]
        if pair.pgq_max_concurrent is not None:
            args += ["--max-concurrent", str(pair.pgq_max_concurrent)]
        backends = _BackendCpu(name)
        watcher = asyncio.create_task(backends.run())
        t0 = time.time()
        try:
            out = json.loads((await _child(*args)).strip().splitlines()[-1])
        finally:
            watcher.cancel()
        if out["n"] != tasks:
            raise RuntimeError(f"pgqueuer ran {out['n']} of {tasks} jobs")
        span = out["last"] - t0
        cpu = {"peer": round(out["cpu_s"] / tasks * 1e6),
               "postgres": round(sum(backends.seen.values()) / tasks * 1e6)}
        return {"per_s": round(tasks / span), "seconds": round(span, 3),
                "to_first_claim_s": round(out["first"] - t0, 3), "cpu_us_per_task": cpu}
    finally:
        await server.drop_database(url)


async def peers(server: Server, rounds: int, scale: float, batch: int,
                sampler: MemorySampler) -> dict[str, Any]:
    """Interleaved rounds of every pair; the medians and the ratio of the medians."""
    require_pgqueuer()
    prefetch = Settings.from_env().prefetch  # TASKMASTER_PREFETCH reaches the workers too
    out: dict[str, Any] = {"peer": "pgqueuer", "rounds": rounds, "prefetch": prefetch}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        p.name: {"taskmaster": [], "pgqueuer": []} for p in PAIRS}
    for r in range(rounds):
        for pair in PAIRS:
            tasks = max(10, int(pair.tasks * scale))
            sides = [("taskmaster", lambda p=pair, n=tasks: taskmaster_drain(
                         server, p, n, batch, sampler)),
                     ("pgqueuer", lambda p=pair, n=tasks: pgqueuer_drain(server, p, n))]
            if r % 2:
                sides.reverse()
            for side, go in sides:
                print(f"  peers {pair.name} round {r + 1}/{rounds}: {side} ...",
                      file=sys.stderr, flush=True)
                runs[pair.name][side].append(await go())
    for pair in PAIRS:
        tm = [x["per_s"] for x in runs[pair.name]["taskmaster"]]
        pq = [x["per_s"] for x in runs[pair.name]["pgqueuer"]]
        ratios = [a / b for a, b in zip(tm, pq, strict=True)]
        out[pair.name] = {
            "tasks": max(10, int(pair.tasks * scale)),
            "taskmaster": f"{pair.workers} workers x {pair.slots} slots"
                          + (f", prefetch {prefetch}" if prefetch else ""),
            "pgqueuer": f"1 process, batch_size={pair.pgq_batch_size}, max_concurrent_tasks="
                        f"{pair.pgq_max_concurrent or 'unbounded'}",
            "taskmaster_per_s": tm, "pgqueuer_per_s": pq,
            "taskmaster_median_per_s": round(statistics.median(tm)),
            "pgqueuer_median_per_s": round(statistics.median(pq)),
            "ratio": round(statistics.median(tm) / statistics.median(pq), 2),
            "ratio_per_round": [round(x, 2) for x in ratios],
            "goal": pair.goal,
            # of the time, how long until the first task ran (the processes starting)
            "to_first_claim_s": {side: round(statistics.median(
                x["to_first_claim_s"] for x in runs[pair.name][side]), 3)
                for side in ("taskmaster", "pgqueuer")},
            "taskmaster_cpu_us_per_task": runs[pair.name]["taskmaster"][-1]["cpu_us_per_task"],
            "pgqueuer_cpu_us_per_task": runs[pair.name]["pgqueuer"][-1]["cpu_us_per_task"],
        }
        cycles = [x["slot_cycle_ms"] for x in runs[pair.name]["taskmaster"] if "slot_cycle_ms" in x]
        if cycles:  # the median of the rounds' percentiles
            out[pair.name]["slot_cycle_ms"] = {
                k: round(statistics.median(c[k] for c in cycles), 2) for k in ("p50", "p95", "p99")}
    return out
