"""Helpers shared by the integration and end-to-end tests: waiting on conditions with a
deadline, an in-process stack on real sockets, and an SSE reader."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from taskmaster.config import Settings

Predicate = Callable[[], Any | Awaitable[Any]]


async def wait_for(predicate: Predicate, timeout: float = 10.0, *, interval: float = 0.02,
                   message: str = "") -> Any:
    """Poll predicate (sync or async) until it is truthy; its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for "
                                 f"{message or getattr(predicate, '__name__', 'a condition')}")
        await asyncio.sleep(interval)


async def interrupt(proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    """Ctrl-C a process we started (a `taskmaster up` or `demo`); SIGKILL it if it has not
    ended within timeout."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def fast_settings(**changes: Any) -> Settings:
    """Settings for in-process stacks: quick retries, a long poll (pushes must do the work)."""
    base = Settings(
        heartbeat_interval=0.5,
        heartbeat_misses=10,
        poll_interval=60.0,
        drain_grace=2.0,
        retry_base=0.05,
        retry_max=0.2,
        metrics_port=0,
    )
    return base.with_(**changes)


# ---- the database ----

async def count_rows(database_url: str, table: str = "tasks") -> int:
    """Rows in a table of the test database."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on the test database."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


# ---- components on real sockets ----

@contextlib.asynccontextmanager
async def serve_scheduler(settings: Settings, database_url: str,
                          routes: Callable[[web.Application], None] | None = None
                          ) -> AsyncIterator[tuple[str, web.Application]]:
    """The scheduler app on 127.0.0.1:<free port>; (base URL, app). `routes` may add some."""
    from taskmaster.scheduler.app import make_app

    app = make_app(settings, database_url)
    if routes is not None:
        routes(app)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}", app
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_coordinator(settings: Settings, database_url: str) -> AsyncIterator[Any]:
    """A CoordinatorServer on 127.0.0.1:<free port> (its .port is set)."""
    from taskmaster.coordinator.server import CoordinatorServer

    server = CoordinatorServer(settings, database_url)
    await server.start(host="127.0.0.1", port=0)
    try:
        yield server
    finally:
        await server.stop(grace=0.5)


@dataclass
class WorkerPool:
    """Workers running as tasks of the test's event loop."""

    settings: Settings
    target: str
    workers: list[Any] = field(default_factory=list)
    runs: list[asyncio.Task[int]] = field(default_factory=list)

    def add(self, name: str, concurrency: int = 1) -> Any:
        """Start one more worker."""
        from taskmaster.worker.runtime import Worker

        worker = Worker(self.settings, name=name, concurrency=concurrency, coordinator=self.target)
        self.workers.append(worker)
        self.runs.append(asyncio.create_task(worker.run(), name=f"worker {name}"))
        return worker

    async def connected(self, timeout: float = 15.0) -> None:
        """Until every worker has registered."""
        await wait_for(lambda: all(w.connected.is_set() for w in self.workers), timeout,
                       message="workers to register")

    async def stop(self) -> None:
        """Drain every worker; cancel one that does not leave in time."""
        for w, run in zip(self.workers, self.runs, strict=True):
            if not run.done():
                w.drain()
        for run in self.runs:
            try:
                await asyncio.wait_for(asyncio.shield(run), 10)
            except TimeoutError:
                run.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run


@contextlib.asynccontextmanager
async def run_workers(settings: Settings, port: int, n: int, *, concurrency: int = 1,
                      prefix: str = "w") -> AsyncIterator[WorkerPool]:
    """n workers dialing 127.0.0.1:port, registered before this yields."""
    pool = WorkerPool(settings, f"127.0.0.1:{port}")
    try:
        for i in range(n):
            pool.add(f"{prefix}{i + 1}", concurrency)
        await pool.connected()
        yield pool
    finally:
        await pool.stop()


# ---- SSE ----

@dataclass
class SseMessage:
    """One SSE message: an event (id + data) or a comment."""

    id: int | None = None
    data: dict[str, Any] | None = None
    comment: str | None = None
    raw: list[str] = field(default_factory=list)


class SseReader:
    """Reads messages off an open text/event-stream response."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, timeout: float = 10.0) -> SseMessage | None:
        """The next message (event or comment); None at the end of the stream."""
        msg = SseMessage()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no SSE message within {timeout:g}s")
            line = await asyncio.wait_for(self.resp.content.readline(), left)
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if text == "":
                if msg.raw:
                    return msg
                continue
            msg.raw.append(text)
            if text.startswith(":"):
                msg.comment = text[1:].strip()
            elif text.startswith("id: "):
                msg.id = int(text[4:])
            elif text.startswith("data: "):
                msg.data = json.loads(text[6:])

    async def events(self, until: Callable[[list[SseMessage]], bool],
                     timeout: float = 15.0) -> list[SseMessage]:
        """Read events (comments skipped) until until(events so far) holds."""
        out: list[SseMessage] = []
        deadline = time.monotonic() + timeout
        while not until(out):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"SSE condition not met within {timeout:g}s; "
                                     f"got {len(out)} events")
            msg = await self.next(left)
            if msg is None:
                raise AssertionError(f"SSE stream ended after {len(out)} events")
            if msg.data is not None:
                out.append(msg)
        return out
