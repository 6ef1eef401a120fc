"""PostgreSQL stopped for ~10 s mid-run (a throwaway cluster of the test's own), then started."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.chaos.harness import (
    Feed,
    Postgres,
    Stack,
    StackFactory,
    assert_exactly_once,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos

OUTAGE = 10.0


async def test_postgres_stopped_and_started(throwaway_postgres: Postgres,
                                            stack: StackFactory) -> None:
    """503 + Retry-After meanwhile, no process dies, and the work resumes by itself."""
    pg = throwaway_postgres
    s = await stack(workers=3, concurrency=4, database=pg.url)
    async with Feed(s.url) as feed:
        await wait_for(lambda: feed.connects, 10, message="the SSE feed")
        ids = await s.batch("sleep", 300, {"seconds": 0.2})
        await wait_for(lambda: _completed_some(s, ids), 20, message="the run to be under way")
        pids = {m.name: m.pid for m in s.cluster.members.values()}

        await asyncio.to_thread(pg.stop)
        down_until = time.monotonic() + OUTAGE
        # requests that need the database say so, with a hint when to come back
        for method, path, body in [
            ("POST", "/api/schedule", {"command": "sleep", "payload": {"seconds": 0.1}}),
            ("POST", "/api/schedule/batch", {"command": "sleep", "count": 5}),
            ("GET", "/api/stats", None),
            ("GET", "/api/tasks", None),
            ("GET", f"/api/tasks/{ids[0]}", None),
            ("GET", "/api/workers", None),
        ]:
            status, payload, headers = await s.request(method, path, body)
            assert status == 503, (method, path, status, payload)
            assert "error" in payload
            assert int(headers["Retry-After"]) > 0
        status, _, _ = await s.request("GET", "/readyz")
        assert status == 503
        status, _, _ = await s.request("GET", "/healthz")
        assert status == 200
        # nothing crashes while the database is away
        while time.monotonic() < down_until:
            assert _alive(s) == pids, "a process died during the outage"
            await asyncio.sleep(0.2)

        await asyncio.to_thread(pg.start)
        # work resumes by itself: nobody restarts anything
        status, body, _ = await _retry_post(s)
        assert status == 201, body
        ids.append(body["id"])
        await s.wait_completed(ids, timeout=60)
        await assert_exactly_once(s, feed, ids)
    assert _alive(s) == pids
    assert all(m.restarts == 0 for m in s.cluster.members.values())


async def _completed_some(s: Stack, ids: list[str]) -> bool:
    return await s.unfinished(ids) < len(ids) - 30


def _alive(s: Stack) -> dict[str, int | None]:
    return {m.name: m.pid for m in s.cluster.members.values() if m.state == "running"}


async def _retry_post(s: Stack) -> tuple[int, Any, Any]:
    """POST until the scheduler's pool has reconnected (a client honouring Retry-After)."""

    async def post() -> tuple[int, Any, Any] | None:
        status, body, headers = await s.request(
            "POST", "/api/schedule", {"command": "sleep", "payload": {"seconds": 0.1}})
        return (status, body, headers) if status != 503 else None

    return await wait_for(post, 20, message="the scheduler to accept tasks again", interval=0.2)
