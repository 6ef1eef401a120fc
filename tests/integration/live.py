"""A real scheduler (AppRunner on 127.0.0.1:0) and a real coordinator for security tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from taskmaster.config import Settings
from taskmaster.scheduler.app import make_app

# the settings a test stack starts from: fast heartbeats, no coordinator metrics port
TEST_SETTINGS = Settings(heartbeat_interval=0.2, poll_interval=0.5, metrics_port=0)


@dataclass
class LiveScheduler:
    """A running scheduler: its base URL and its application."""

    url: str
    app: web.Application


@contextlib.asynccontextmanager
async def live_scheduler(database_url: str, settings: Settings | None = None
                         ) -> AsyncIterator[LiveScheduler]:
    """Serve make_app on a free port of 127.0.0.1 until the block ends."""
    app = make_app(settings or TEST_SETTINGS, database_url)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield LiveScheduler(f"http://{host}:{port}", app)
    finally:
        await runner.cleanup()


async def table_counts(database_url: str) -> dict[str, int]:
    """Rows in every table that an API call could change."""
    conn = await asyncpg.connect(database_url)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}"))
                for t in ("tasks", "events", "workers", "task_counts", "commands")}
    finally:
        await conn.close()


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 20.0,
                   what: str = "condition") -> None:
    """Poll an async check until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)
