"""What the chaos tests share: stacks of real processes, an SSE recorder, the final checks.

Every chaos test starts real processes (coordinator, scheduler, workers) with
LocalCluster, breaks something, and then proves from two independent witnesses, the
PostgreSQL rows and the SSE event feed, that every task completed exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from taskmaster.cluster.local import LocalCluster
from taskmaster.config import Settings
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
# the workers import the chaos handlers from this checkout
CHILD_ENV = {
    "TASKMASTER_TASKS": "tests.chaos.tasks",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}

# Short failure-detection settings: a silent worker is dead after 3 x 0.5 s.
FAST = {
    "heartbeat_interval": 0.5,
    "heartbeat_misses": 3,
    "retry_base": 0.05,
    "retry_max": 0.5,
    "poll_interval": 1.0,
    "drain_grace": 10.0,
    "metrics_port": 0,  # several stacks may run on one machine
}


class Feed:
    """An SSE client of /api/logs/stream that records every event and always resumes.

    It starts from event 0 (a replay of everything) and, whenever the stream breaks
    (scheduler restart, database outage), reconnects with Last-Event-ID, as a browser's
    EventSource does. It also notes anything a correct feed never does: an id seen twice,
    ids going backwards, a truncated replay.
    """

    def __init__(self, base_url: str, *others: str) -> None:
        self.base_url = base_url
        # scheduler replicas: each reconnect goes to the next one (with Last-Event-ID)
        self.urls = [base_url, *others]
        self.used: list[str] = []  # the URL of each connect, in order
        self.events: list[dict[str, Any]] = []
        self.ids: list[int] = []
        self.last_id = 0
        self.connects = 0
        self.problems: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Feed:
        self._task = asyncio.create_task(self._run(), name="sse-feed")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=20)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            turn = 0
            while True:
                url = self.urls[turn % len(self.urls)]
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with http.get(
                        url + "/api/logs/stream",
                        headers={"Last-Event-ID": str(self.last_id)},
                    ) as resp:
                        if resp.status == 200:
                            self.connects += 1
                            self.used.append(url)
                            await self._read(resp)
                turn += 1
                await asyncio.sleep(0.1)

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        event_id: int | None = None
        data: list[str] = []
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":") or line.startswith("retry:"):
                continue
            if line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                self._record(event_id, json.loads("\n".join(data)))
                event_id, data = None, []

    def _record(self, event_id: int | None, event: dict[str, Any]) -> None:
        if event_id is None:
            self.problems.append(f"message without an id: {event}")
            return
        if event_id <= self.last_id:
            self.problems.append(f"event {event_id} after {self.last_id} (repeated or backwards)")
            return
        self.last_id = event_id
        self.ids.append(event_id)
        event["_id"] = event_id
        self.events.append(event)
        self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Recorded events of one type."""
        return [e for e in self.events if e["event"] == kind]

    def count(self, kind: str) -> Counter[str]:
        """How many events of this type each task had."""
        return Counter(e["task_id"] for e in self.events if e["event"] == kind)


class Stack:
    """A LocalCluster plus what the tests need around it: HTTP, SQL, the feed."""

    def __init__(self, cluster: LocalCluster, database_url: str) -> None:
        self.cluster = cluster
        self.database_url = database_url
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    @property
    def url(self) -> str:
        """The scheduler's base URL."""
        return self.cluster.url

    async def close(self) -> None:
        """Stop the stack and the HTTP session."""
        await self.http.close()
        await self.cluster.stop(grace=5.0)

    async def request(self, method: str, path: str, body: Any = None,
                      **kw: Any) -> tuple[int, Any, Any]:
        """(status, JSON body, headers) of one request."""
        async with self.http.request(method, self.url + path, json=body, **kw) as resp:
            payload = await resp.json(content_type=None) if resp.content_length != 0 else None
            return resp.status, payload, resp.headers

    async def batch(self, command: str, count: int, payload: Any = None,
                    **fields: Any) -> list[str]:
        """Schedule count identical tasks; their ids."""
        ids: list[str] = []
        while count > 0:  # the API takes at most max_batch_count at once
            n = min(count, 1000)
            status, body, _ = await self.request("POST", "/api/schedule/batch", {
                "command": command, "count": n, "payload": payload, **fields})
            assert status == 201, body
            ids += body["ids"]
            count -= n
        return ids

    async def workers(self) -> list[dict[str, Any]]:
        """GET /api/workers."""
        status, body, _ = await self.request("GET", "/api/workers")
        assert status == 200, body
        return list(body)

    async def online(self) -> int:
        """Workers the API shows online."""
        return sum(1 for w in await self.workers() if w["status"] == "online")

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of a query on the stack's database."""
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def unfinished(self, ids: Iterable[str]) -> int:
        """How many of these tasks are not completed yet."""
        rows = await self.fetch(
            "SELECT count(*) AS n FROM tasks WHERE id = ANY($1::uuid[]) AND status <> 'completed'",
            list(ids))
        return int(rows[0]["n"])

    async def wait_completed(self, ids: list[str], timeout: float) -> None:
        """Until every task is completed (fails with a status breakdown at the deadline)."""
        try:
            await wait_for(lambda: self._none_left(ids), timeout,
                           message=f"{len(ids)} tasks to complete", interval=0.2)
        except AssertionError:
            rows = await self.fetch(
                "SELECT status, count(*) AS n FROM tasks WHERE id = ANY($1::uuid[]) GROUP BY 1",
                ids)
            raise AssertionError(f"not all tasks completed: {[tuple(r) for r in rows]}") from None

    async def _none_left(self, ids: list[str]) -> bool:
        return await self.unfinished(ids) == 0

    def logs(self, lines: int = 40) -> str:
        """The tail of every member's log."""
        return "\n".join(f"---- {name} ----\n{self.cluster.log_tail(name, lines)}"
                         for name in self.cluster.members)


StackFactory = Callable[..., Awaitable[Stack]]


def fast_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings for a test stack: its own home and database, quick failure detection."""
    return Settings(home=tmp_path / "tm", database_url=database_url,
                    **{**FAST, **overrides})


async def start_stack(tmp_path: Path, database_url: str, *, workers: int = 3,
                      concurrency: int = 4, coordinator_host: str | None = None,
                      coordinators: int = 1, schedulers: int = 1,
                      **overrides: Any) -> Stack:
    """A running stack with its workers registered (stop it with Stack.close)."""
    extra = {"coordinator_host": coordinator_host} if coordinator_host else {}
    cluster = LocalCluster(fast_settings(tmp_path, database_url, **overrides), workers=workers,
                           concurrency=concurrency, scheduler_port=0, coordinator_port=0,
                           extra_env=CHILD_ENV, coordinators=coordinators,
                           schedulers=schedulers, **extra)
    s = Stack(cluster, database_url)
    try:
        await cluster.start()
        await wait_for(lambda: _online_at_least(s, workers), 30,
                       message=f"{workers} workers online")
    except BaseException:
        print(s.logs())
        await s.close()
        raise
    return s


async def _online_at_least(s: Stack, n: int) -> bool:
    return await s.online() >= n


async def assert_exactly_once(s: Stack, feed: Feed, ids: list[str], *,
                              feed_timeout: float = 20.0) -> dict[str, int]:
    """Every task completed exactly once, with its attempts on record, in SQL and in the feed.

    Returns {task id: attempt} for further checks.
    """
    rows = await s.fetch(
        "SELECT id::text, status, attempt, completed_at, worker_id, history::text AS history "
        "FROM tasks WHERE id = ANY($1::uuid[])", ids)
    assert len(rows) == len(ids), "tasks are missing from PostgreSQL"
    attempts: dict[str, int] = {}
    for r in rows:
        assert r["status"] == "completed", dict(r)
        assert r["completed_at"] is not None, dict(r)
        assert r["worker_id"] is not None, dict(r)
        history = json.loads(r["history"])
        # one entry per attempt that did not complete, in order
        assert [h["attempt"] for h in history] == list(range(1, r["attempt"])), dict(r)
        attempts[r["id"]] = r["attempt"]
    # the events table: one task_completed per task
    done = await s.fetch(
        "SELECT task_id::text AS id, count(*) AS n FROM events "
        "WHERE event = 'task_completed' AND task_id = ANY($1::uuid[]) GROUP BY task_id", ids)
    twice = {r["id"]: r["n"] for r in done if r["n"] != 1}
    assert not twice, f"tasks completed more than once in PostgreSQL: {twice}"
    assert len(done) == len(ids)
    # the feed: every task_completed arrives, once each
    wanted = set(ids)

    def feed_has_all() -> bool:
        return wanted <= set(feed.count("task_completed"))

    await wait_for(feed_has_all, feed_timeout, message="every task_completed on the SSE feed", interval=0.1)
    counts = feed.count("task_completed")
    twice = {t: n for t, n in counts.items() if t in wanted and n != 1}
    assert not twice, f"tasks completed more than once on the feed: {twice}"
    assert not feed.problems, feed.problems[:10]
    # the feed missed nothing PostgreSQL committed up to where it is
    committed = {r["id"] for r in await s.fetch("SELECT id FROM events WHERE id <= $1",
                                                feed.last_id)}
    missing = committed - set(feed.ids)
    assert not missing, f"the feed missed {len(missing)} events, e.g. {sorted(missing)[:10]}"
    return attempts


def postgres_bin() -> Path:
    """The bin folder of the newest PostgreSQL installed in the Debian layout (or pg_config's)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
        if (Path(out.stdout.strip()) / "pg_ctl").exists():
            return Path(out.stdout.strip())
    raise AssertionError("no PostgreSQL server binaries (initdb, pg_ctl) found for the "
                         "throwaway cluster; install postgresql")


class Postgres:
    """A throwaway PostgreSQL cluster of the test's own, stopped and started at will."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self.bin = postgres_bin()
        self.url = f"postgresql://postgres@127.0.0.1:{port}/taskmaster"
        self.listen = "127.0.0.1"  # more addresses, comma-separated: see allow()

    def _as_postgres(self, *args: str) -> None:
        # the server refuses to run as root: run its tools as the postgres user
        cmd = [*args] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")

    def init(self) -> None:
        """initdb (trust auth, user postgres)."""
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync")

    def allow(self, address: str, client: str) -> None:
        """Listen on this address too, and trust clients from `client` (before start)."""
        self.listen += f",{address}"
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {client}/32 trust\n")

    def start(self) -> None:
        """pg_ctl start, listening on 127.0.0.1:port only, unless allow() added more
        (socket in its own folder)."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30",
                          "-l", str(self.folder / "server.log"),
                          "-o", f"-h {self.listen} -p {self.port} -k {self.folder} -c fsync=off",
                          "start")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (fast: disconnects everyone at once)."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode,
                          "stop")

    def running(self) -> bool:
        """True while the server's pid file exists."""
        return (self.data / "postmaster.pid").exists()


