"""Failover times: from a worker's SIGKILL, and from a network partition, to its tasks
running again on another worker; from a coordinator's SIGKILL to work running again on the
workers it served (two coordinators on one database); and the drain of pre-created tasks
with one coordinator against two.

    python -m benchmarks.failover [--rounds 5] [--partition-rounds 3]
                                  [--coordinator-rounds 5] [--drain-tasks 20000]
                                  [--database-url URL]

A coordinator round keeps two workers busy with a backlog of short tasks, SIGKILLs the
coordinator one of them is connected to, and times, on PostgreSQL's record, the first task
that worker started after the kill (it can only have come through the other coordinator).

Each round puts `slots` long tasks on one worker, starts a spare, breaks the holder and
times, on PostgreSQL's record, when the tasks were put back (`task_reassigned`) and when
they started again on the spare. A SIGKILL is seen the moment the worker's stream breaks;
a partition only after the heartbeat timeout (interval x misses), so the second figure is
expected to sit just above that timeout. The partition rounds need `ip netns` (root); the
worker is cut off by taking its veth down, as in tests/chaos/test_partition.py, whose
namespace helper this reuses. Not a timed test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from benchmarks.stack import Server
from taskmaster.cluster.local import LocalCluster
from taskmaster.config import Settings

LONG = 3600.0  # the tasks outlive every round; rounds cancel them when done


class Bench:
    """A stack of real processes on a fresh database, with the few helpers the rounds need."""

    def __init__(self, cluster: LocalCluster, db: asyncpg.Pool, http: aiohttp.ClientSession,
                 slots: int) -> None:
        self.cluster = cluster
        self.db = db
        self.http = http
        self.slots = slots

    async def schedule(self) -> list[str]:
        """`slots` long tasks; their ids."""
        async with self.http.post(self.cluster.url + "/api/schedule/batch", json={
                "command": "sleep", "count": self.slots, "payload": {"seconds": LONG},
                "max_attempts": 100}) as resp:
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"cannot schedule: {resp.status} {body}")
            return list(body["ids"])

    async def cancel(self, ids: list[str]) -> None:
        """Cancel the round's tasks and wait until they are."""
        for t in ids:
            async with self.http.post(f"{self.cluster.url}/api/tasks/{t}/cancel"):
                pass
        await self.until("the round's tasks to be cancelled", lambda: self._count(
            "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'cancelled'",
            ids, want=len(ids)))

    async def _count(self, sql: str, *args: Any, want: int) -> bool:
        return bool(await self.db.fetchval(sql, *args) >= want)

    async def until(self, what: str, check: Any, timeout: float = 60.0) -> None:
        """Poll an async check until it holds (TimeoutError naming `what`)."""
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            await asyncio.sleep(0.01)

    async def online(self, n: int) -> None:
        """Until n workers are online."""
        await self.until(f"{n} workers online", lambda: self._count(
            "SELECT count(*) FROM workers WHERE status = 'online'", want=n))

    async def running(self, ids: list[str], attempt: int, worker: str | None = None) -> None:
        """Until all these tasks run at this attempt (on this worker id, if given)."""
        await self.until(f"the tasks to run at attempt {attempt}", lambda: self._count(
            "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'running' "
            "AND attempt = $2 AND ($3::text IS NULL OR worker_id = $3)",
            ids, attempt, worker, want=len(ids)))

    async def holder(self, ids: list[str]) -> str:
        """The worker id holding these tasks."""
        return str(await self.db.fetchval("SELECT worker_id FROM tasks WHERE id = $1::uuid",
                                          ids[0]))

    async def measure(self, ids: list[str], t0: float) -> dict[str, float]:
        """Seconds from t0 until the last task was put back, and until the last ran again."""
        await self.running(ids, attempt=2)
        row = await self.db.fetchrow(
            "SELECT extract(epoch FROM (SELECT max(ts) FROM events WHERE event = 'task_reassigned'"
            "   AND task_id = ANY($1::uuid[]))) AS back,"
            " extract(epoch FROM (SELECT max(started_at) FROM tasks"
            "   WHERE id = ANY($1::uuid[]))) AS running", ids)
        return {"reassigned_s": round(float(row["back"]) - t0, 3),
                "running_s": round(float(row["running"]) - t0, 3)}


@contextlib.asynccontextmanager
async def bench(database_url: str, settings: Settings, slots: int,
                coordinator_host: str | None = None, coordinators: int = 1
                ) -> AsyncIterator[Bench]:
    """A stack with no workers yet on database_url."""
    cluster = LocalCluster(settings.with_(database_url=database_url), workers=0,
                           concurrency=slots, scheduler_port=0, coordinator_port=0,
                           coordinator_host=coordinator_host, control=False, stack_file=False,
                           coordinators=coordinators)
    await cluster.start()
    try:
        async with aiohttp.ClientSession() as http:
            db = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
            try:
                yield Bench(cluster, db, http, slots)
            finally:
                await db.close()
    finally:
        for w in cluster.workers():  # nothing left worth draining
            await cluster.kill_worker(w.name)
        await cluster.stop(grace=2.0)


async def sigkill_round(b: Bench) -> dict[str, float]:
    """One worker holds the tasks, a spare waits; SIGKILL the holder."""
    await b.cluster.scale(1)
    await b.online(1)
    ids = await b.schedule()
    await b.running(ids, attempt=1)
    holder = b.cluster.workers()[0]
    await b.cluster.scale(2)
    await b.online(2)
    t0 = time.time()
    await b.cluster.kill_worker(holder.name)
    out = await b.measure(ids, t0)
    await b.cancel(ids)
    await b.cluster.scale(0)
    return out


async def partition_round(b: Bench, ns: Any, settings: Settings, n: int) -> dict[str, float]:
    """The holder runs in a network namespace; take its link down."""
    env = {**os.environ, **settings.env(), "TASKMASTER_DATABASE_URL": "",
           "PYTHONUNBUFFERED": "1"}
    log = b.cluster.logs / f"partitioned-{n}.log"
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            *ns.prefix(), sys.executable, "-m", "taskmaster", "worker",
            "--name", f"partitioned-{n}", "--coordinator", b.cluster.coordinator_address,
            "--concurrency", str(b.slots), env=env, stdout=sink,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        await b.online(1)
        ids = await b.schedule()
        await b.running(ids, attempt=1)
        await b.cluster.scale(1)
        await b.online(2)
        t0 = time.time()
        ns.cut()
        out = await b.measure(ids, t0)
        ns.heal()
        await b.cancel(ids)
        await b.cluster.scale(0)
        return out
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def coordinator_round(b: Bench) -> dict[str, float]:
    """Two workers on two coordinators run a backlog of short tasks; SIGKILL the coordinator
    of one of them: seconds until that worker starts a task again (through the other)."""
    async with b.http.post(b.cluster.url + "/api/schedule/batch", json={
            "command": "sleep", "count": 400, "payload": {"seconds": 0.02}}) as resp:
        assert resp.status == 201, await resp.text()
    await b.until("both workers busy", lambda: b._count(
        "SELECT count(DISTINCT worker_id) FROM tasks WHERE status IN ('assigned', 'running')",
        want=2))
    row = await b.db.fetchrow(
        "SELECT w.id, c.name FROM workers w JOIN coordinators c ON c.id = w.coordinator_id "
        "WHERE w.status = 'online' ORDER BY w.name LIMIT 1")
    worker, victim = row["id"], row["name"]
    t0 = time.time()
    await b.cluster.coordinator("kill", name=victim)  # its supervisor restarts it
    await b.until("the worker to start a task again", lambda: b._count(
        "SELECT count(*) FROM tasks WHERE worker_id = $1 AND started_at IS NOT NULL "
        "AND assigned_at > to_timestamp($2)", worker, t0, want=1))
    started = await b.db.fetchval(
        "SELECT extract(epoch FROM min(started_at)) FROM tasks "
        "WHERE worker_id = $1 AND assigned_at > to_timestamp($2)", worker, t0)
    await b.until("the backlog to drain", lambda: _none_left(b))
    await b.online(2)
    return {"running_s": round(float(started) - t0, 3)}


async def _none_left(b: Bench) -> bool:
    return not await b.db.fetchval(
        "SELECT count(*) FROM tasks WHERE status IN ('pending', 'assigned', 'running')")


async def drain(url: str, settings: Settings, coordinators: int, tasks: int,
                workers: int = 4, slots: int = 64) -> dict[str, Any]:
    """Pre-created no-op tasks drained by `workers` workers spread over `coordinators`."""
    async with bench(url, settings, slots, coordinators=coordinators) as b:
        async with b.http.post(b.cluster.url + "/api/schedule/batch", json={
                "command": "noop", "count": tasks}) as resp:
            assert resp.status == 201, await resp.text()
        t0 = time.monotonic()
        await b.cluster.scale(workers)
        await b.until(f"{tasks} tasks to drain", lambda: _none_left(b), timeout=600)
        seconds = time.monotonic() - t0
        spread = await b.db.fetch(
            "SELECT c.name, count(*) AS n FROM workers w JOIN coordinators c "
            "ON c.id = w.coordinator_id WHERE w.status = 'online' GROUP BY c.name")
        await b.db.execute("DELETE FROM tasks")
        return {"coordinators": coordinators, "tasks": tasks, "seconds": round(seconds, 3),
                "tasks_per_s": round(tasks / seconds), "workers_per_coordinator":
                {r["name"]: r["n"] for r in spread}}


def _summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    if not rounds:
        return {"skipped": "no rounds asked for"}
    out: dict[str, Any] = {"rounds": rounds}
    for key in ("reassigned_s", "running_s"):
        if key not in rounds[0]:
            continue
        values = [r[key] for r in rounds]
        out[key.replace("_s", "_median_s")] = round(statistics.median(values), 3)
        out[key.replace("_s", "_max_s")] = round(max(values), 3)
    return out


async def run(database_url: str = "", rounds: int = 5, partition_rounds: int = 3,
              slots: int = 4, heartbeat_interval: float | None = None,
              heartbeat_misses: int | None = None, coordinator_rounds: int = 5,
              drain_tasks: int = 0) -> dict[str, Any]:
    """Measure both failovers on a fresh database (of database_url's server, else embedded)."""
    home = Path(tempfile.mkdtemp(prefix="taskmaster-failover-"))
    settings = Settings.from_env(home=home, metrics_port=0, heartbeat_interval=heartbeat_interval,
                                 heartbeat_misses=heartbeat_misses)
    server = Server(database_url, home / "db")
    await server.start()
    url = await server.create_database("failover")
    result: dict[str, Any] = {"tasks_per_round": slots,
                              "heartbeat_timeout_s": settings.heartbeat_timeout,
                              "heartbeat": f"{settings.heartbeat_interval:g} s x "
                                           f"{settings.heartbeat_misses}"}
    try:
        async with bench(url, settings, slots) as b:
            result["sigkill"] = _summary([await sigkill_round(b) for _ in range(rounds)])
        result["partition"] = await _partitions(url, settings, slots, partition_rounds)
        if coordinator_rounds > 0:
            async with bench(url, settings, 1, coordinators=2) as b:
                await b.cluster.scale(2)
                await b.online(2)
                result["coordinator"] = _summary(
                    [await coordinator_round(b) for _ in range(coordinator_rounds)])
        if drain_tasks > 0:
            result["drain"] = [await drain(url, settings, n, drain_tasks) for n in (1, 2)]
    finally:
        await server.drop_database(url)
        await server.stop()
        shutil.rmtree(home, ignore_errors=True)
    return result


async def _partitions(url: str, settings: Settings, slots: int, rounds: int) -> dict[str, Any]:
    if rounds <= 0:
        return {"skipped": "--partition-rounds 0"}
    try:
        from tests.chaos.netns import Namespace

        ns = Namespace.create()
    except (ImportError, AssertionError) as exc:
        return {"skipped": f"no network namespace: {exc}"}
    try:
        async with bench(url, settings, slots, coordinator_host=ns.host_ip) as b:
            return _summary([await partition_round(b, ns, settings, n) for n in range(rounds)])
    finally:
        ns.delete()


def report(result: dict[str, Any]) -> str:
    """The figures as a few lines of text."""
    lines = [f"{result['tasks_per_round']} running tasks per round; "
             f"heartbeat {result['heartbeat']} = {result['heartbeat_timeout_s']:g} s timeout"]
    for key, what in (("sigkill", "worker SIGKILL"), ("partition", "network partition")):
        r = result.get(key, {})
        if not r:
            continue
        if "skipped" in r:
            lines.append(f"{what:<18} skipped: {r['skipped']}")
            continue
        lines.append(
            f"{what:<18} put back after {r['reassigned_median_s']:.3f} s median "
            f"({r['reassigned_max_s']:.3f} max), running again after "
            f"{r['running_median_s']:.3f} s median ({r['running_max_s']:.3f} max), "
            f"{len(r['rounds'])} rounds")
    c = result.get("coordinator")
    if c:
        lines.append(f"{'coordinator SIGKILL':<18} its workers run tasks again after "
                     f"{c['running_median_s']:.3f} s median ({c['running_max_s']:.3f} max), "
                     f"{len(c['rounds'])} rounds (2 coordinators)")
    for d in result.get("drain", []):
        lines.append(f"drain of {d['tasks']} no-op tasks, 4 workers, {d['coordinators']} "
                     f"coordinator(s): {d['tasks_per_s']} tasks/s ({d['seconds']:.2f} s; "
                     f"workers per coordinator {d['workers_per_coordinator']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.failover`."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.failover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default="", help="a PostgreSQL server to create the "
                   "benchmark database on [default: an embedded PostgreSQL]")
    p.add_argument("--rounds", type=int, default=5, help="SIGKILL rounds [default 5]")
    p.add_argument("--partition-rounds", type=int, default=3,
                   help="partition rounds (need root for ip netns) [default 3]")
    p.add_argument("--slots", type=int, default=4, help="tasks the broken worker holds [default 4]")
    p.add_argument("--heartbeat-interval", type=float, default=None,
                   help="seconds [default TASKMASTER_HEARTBEAT_INTERVAL or 2]")
    p.add_argument("--heartbeat-misses", type=int, default=None,
                   help="[default TASKMASTER_HEARTBEAT_MISSES or 3]")
    p.add_argument("--coordinator-rounds", type=int, default=5,
                   help="coordinator SIGKILL rounds, two coordinators [default 5]")
    p.add_argument("--drain-tasks", type=int, default=0,
                   help="no-op tasks drained with 1, then 2 coordinators [default 0: skip]")
    p.add_argument("--json", action="store_true", help="print the JSON result too")
    args = p.parse_args(argv)
    result = asyncio.run(run(args.database_url, args.rounds, args.partition_rounds, args.slots,
                             args.heartbeat_interval, args.heartbeat_misses,
                             args.coordinator_rounds, args.drain_tasks))
    print(report(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
