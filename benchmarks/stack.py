"""The stack a benchmark runs on: a PostgreSQL server, a fresh database per scenario,
a LocalCluster of real processes, and a sampler of each process's memory."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from taskmaster.cluster.local import LocalCluster
from taskmaster.config import Settings
from taskmaster.store import prepare
from taskmaster.store.db import database_name, with_database

log = logging.getLogger(__name__)


class Server:
    """Where the scenario databases live: a given server, or an embedded one."""

    def __init__(self, database_url: str = "", home: Path | None = None) -> None:
        self.given_url = database_url
        self.home = home or Path(tempfile.mkdtemp(prefix="taskmaster-bench-"))
        self.admin_url = ""
        self._embedded: Any = None
        self.version = ""

    async def start(self) -> None:
        """Start the embedded server (unless one was given) and read its version."""
        if self.given_url:
            self.admin_url = self.given_url
        else:
            from taskmaster.store.embedded import start_embedded

            url, self._embedded = await asyncio.to_thread(start_embedded, self.home)
            self.admin_url = with_database(url, "postgres")
        conn = await self._admin()
        try:
            self.version = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    async def stop(self) -> None:
        """Stop the embedded server, if we started one."""
        if self._embedded is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._embedded.cleanup)
            self._embedded = None

    async def _admin(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self.admin_url, timeout=10)
        except asyncpg.InvalidCatalogNameError:  # the given URL names a database not made yet
            self.admin_url = with_database(self.admin_url, "postgres")
            return await asyncpg.connect(self.admin_url, timeout=10)

    async def create_database(self, scenario: str) -> str:
        """A new, migrated database for one scenario; its URL."""
        name = f"tm_bench_{scenario}_{secrets.token_hex(3)}"
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = with_database(self.admin_url, name)
        await prepare(url)
        return url

    async def drop_database(self, url: str) -> None:
        """Drop a scenario's database (closing what is still connected)."""
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')
        finally:
            await conn.close()


@dataclass
class MemorySampler:
    """Peak RSS of every stack process, sampled in the background."""

    interval: float = 0.1
    peaks: dict[str, int] = field(default_factory=dict)  # member name -> bytes
    roles: dict[str, str] = field(default_factory=dict)  # member name -> role
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def sample(self, cluster: LocalCluster) -> None:
        """Read the RSS of every running member once."""
        for m in list(cluster.members.values()):
            pid = m.pid
            if pid is None or m.state != "running":
                continue
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            self.roles[m.name] = m.role
            self.peaks[m.name] = max(self.peaks.get(m.name, 0), rss)

    async def run(self, cluster: LocalCluster) -> None:
        """Sample until cancelled."""
        while True:
            self.sample(cluster)
            await asyncio.sleep(self.interval)

    def by_role(self) -> dict[str, float]:
        """Peak RSS in MB per role (the largest worker for workers)."""
        out: dict[str, float] = {}
        for name, rss in self.peaks.items():
            role = self.roles[name]
            out[role] = max(out.get(role, 0.0), round(rss / 2**20, 1))
        return out


class CpuMeter:
    """CPU seconds each role (and the scenario database's PostgreSQL backends) used."""

    def __init__(self, cluster: LocalCluster, database: str) -> None:
        self.cluster = cluster
        self.database = database
        self._start: dict[int, tuple[str, float]] = {}

    def _now(self) -> dict[int, tuple[str, float]]:
        out: dict[int, tuple[str, float]] = {}
        procs = [(m.role, m.pid) for m in self.cluster.members.values() if m.pid]
        for p in psutil.process_iter(["cmdline"]):
            # a backend's title: "postgres: [<cluster>: ]<user> <database> <client> <state>"
            title = " ".join(p.info["cmdline"] or [])
            if title.startswith("postgres:") and f" {self.database} " in title:
                procs.append(("postgres", p.pid))
        for role, pid in procs:
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            out[pid] = (role, t.user + t.system)
        return out

    def start(self) -> None:
        """Take the starting figures."""
        self._start = self._now()

    def per_task(self, tasks: int) -> dict[str, float]:
        """Microseconds of CPU per task by role since start()."""
        used: dict[str, float] = {}
        for pid, (role, cpu) in self._now().items():
            used[role] = used.get(role, 0.0) + cpu - self._start.get(pid, (role, 0.0))[1]
        return {role: round(s / tasks * 1e6) for role, s in sorted(used.items())}


class Stack:
    """A running LocalCluster on its own database, with helpers the scenarios share."""

    def __init__(self, cluster: LocalCluster, url: str, sampler: MemorySampler,
                 http: aiohttp.ClientSession, db: asyncpg.Pool) -> None:
        self.cluster = cluster
        self.url = url
        self.sampler = sampler
        self.http = http
        self.db = db
        self.cpu = CpuMeter(cluster, database_name(url))

    @property
    def api(self) -> str:
        """The scheduler's base URL."""
        return self.cluster.url

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON; the decoded answer (raises on an error status)."""
        async with self.http.post(self.api + path, json=body) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"POST {path} -> {resp.status}: {await resp.text()}")
            return dict(await resp.json())

    async def create_batches(self, command: str, total: int, batch: int,
                             payload: Any = None, delay: float = 0.0) -> float:
        """Create total tasks with POST /api/schedule/batch, batch at a time; seconds taken."""
        t0 = time.perf_counter()
        left = total
        while left > 0:
            n = min(batch, left)
            body: dict[str, Any] = {"command": command, "count": n, "delay_seconds": delay}
            if payload is not None:
                body["payload"] = payload
            await self.post("/api/schedule/batch", body)
            left -= n
        return time.perf_counter() - t0

    async def wait_workers(self, n: int, timeout: float = 60.0) -> None:
        """Until n workers are online."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            online = await self.db.fetchval("SELECT count(*) FROM workers WHERE status = 'online'")
            if online >= n:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{n} workers not online after {timeout:g}s")

    async def finished(self) -> int:
        """Tasks in a final state (from the count deltas /api/stats reads)."""
        n = await self.db.fetchval(
            "SELECT coalesce(sum(delta), 0) FROM task_counts "
            "WHERE status IN ('completed', 'failed', 'cancelled')")
        return int(n)

    async def wait_finished(self, n: int, timeout: float = 300.0, poll: float = 0.05) -> None:
        """Until at least n tasks are final."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.finished() >= n:
                return
            await asyncio.sleep(poll)
        raise TimeoutError(f"only {await self.finished()} of {n} tasks finished in {timeout:g}s")


@contextlib.asynccontextmanager
async def stack(server: Server, scenario: str, *, workers: int, concurrency: int,
                sampler: MemorySampler, **settings: Any) -> AsyncIterator[Stack]:
    """A LocalCluster with workers on a fresh database, stopped and dropped after."""
    url = await server.create_database(scenario)
    home = server.home / scenario
    if "metrics_port" in Settings.__dataclass_fields__:
        settings.setdefault("metrics_port", 0)  # 9090 may be taken by another stack
    base = Settings.from_env(database_url=url, home=home, **settings)
    # no control server, no stack file (when this version of LocalCluster has them)
    extra: dict[str, Any] = {k: False for k in ("control", "stack_file")
             if k in inspect.signature(LocalCluster).parameters}
    cluster = LocalCluster(base, workers=0, concurrency=concurrency, scheduler_port=0,
                           coordinator_port=0, supervise=False, **extra)
    watcher: asyncio.Task[None] | None = None
    db = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        await cluster.start()
        watcher = asyncio.create_task(sampler.run(cluster))
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:
            st = Stack(cluster, url, sampler, http, db)
            if workers:
                await cluster.scale(workers)
                await st.wait_workers(workers)
            yield st
    except BaseException:
        for name in list(cluster.members):
            log.error("log of %s:\n%s", name, cluster.log_tail(name, 15))
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await cluster.stop(grace=5.0)
        await db.close()
        await server.drop_database(url)
