"""SIGTERM to a worker: it drains (takes nothing new, finishes what it runs), reports, exits 0."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.chaos.harness import Feed, Stack, StackFactory, assert_exactly_once
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos


async def _busy_worker(s: Stack, ids: list[str], n: int) -> tuple[str, str]:
    """(worker id, name) of a worker running n of these tasks."""

    async def find() -> tuple[str, str] | None:
        rows = await s.fetch(
            "SELECT w.id, w.name FROM tasks t JOIN workers w ON w.id = t.worker_id "
            "WHERE t.id = ANY($1::uuid[]) AND t.status = 'running' "
            "GROUP BY w.id, w.name HAVING count(*) >= $2", ids, n)
        return (rows[0]["id"], rows[0]["name"]) if rows else None

    found: tuple[str, str] = await wait_for(find, 10, message=f"a worker running {n} tasks")
    return found


async def _status(s: Stack, worker_id: str) -> str | None:
    return next((w["status"] for w in await s.workers() if w["id"] == worker_id), None)


async def test_sigterm_drains_the_worker(stack: StackFactory) -> None:
    """Status shows draining; it finishes its tasks itself, gets no new ones and exits 0."""
    s = await stack(workers=2, concurrency=2)
    async with Feed(s.url) as feed:
        await wait_for(lambda: feed.connects, 10, message="the SSE feed")
        ids = await s.batch("chaos-sleep", 4, {"seconds": 2.5})
        worker_id, name = await _busy_worker(s, ids, 2)
        mine = [r["id"] for r in await s.fetch(
            "SELECT id::text FROM tasks WHERE worker_id = $1 AND status = 'running'", worker_id)]
        proc = s.cluster.members[name].proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return await _status(s, worker_id) == "draining"

        await wait_for(draining, 5, message="GET /api/workers to show it draining")
        assert await s.unfinished(mine) == 2  # still finishing its work
        # new work goes to the other worker only
        ids += await s.batch("chaos-sleep", 4, {"seconds": 0.2})
        code = await asyncio.wait_for(proc.wait(), s.cluster.settings.drain_grace + 5)
        assert code == 0
        await s.wait_completed(ids, timeout=30)
        attempts = await assert_exactly_once(s, feed, ids)

    # it finished its own tasks: same worker, first attempt, nothing handed back
    rows = await s.fetch("SELECT id::text, worker_id FROM tasks WHERE id = ANY($1::uuid[])", mine)
    assert {r["worker_id"] for r in rows} == {worker_id}
    assert all(attempts[t] == 1 for t in mine)
    drained_at = next(e["_id"] for e in feed.of("worker_draining") if e["worker_id"] == worker_id)
    assert not [e for e in feed.of("task_assigned")
                if e["worker_id"] == worker_id and e["_id"] > drained_at]
    left = [e for e in feed.of("worker_offline") if e["worker_id"] == worker_id]
    assert len(left) == 1 and "drained and left" in left[0]["reason"]
    assert not feed.of("task_reassigned")


async def test_drain_grace_over_hands_the_task_back(stack: StackFactory) -> None:
    """A task longer than the grace is handed back (no attempt used) and completes elsewhere."""
    s = await stack(workers=2, concurrency=1, drain_grace=0.5)
    async with Feed(s.url) as feed:
        await wait_for(lambda: feed.connects, 10, message="the SSE feed")
        ids = await s.batch("chaos-sleep", 1, {"seconds": 3.0}, max_attempts=1)
        worker_id, name = await _busy_worker(s, ids, 1)
        proc = s.cluster.members[name].proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await s.wait_completed(ids, timeout=20)
        await assert_exactly_once(s, feed, ids)

    row = (await s.fetch("SELECT worker_id, attempt, max_attempts, history::text FROM tasks "
                         "WHERE id = $1::uuid", ids[0]))[0]
    assert row["worker_id"] != worker_id and row["attempt"] == 2
    assert row["max_attempts"] == 2  # the hand-back did not use up its only attempt
    assert worker_id in row["history"]
    assert [e["task_id"] for e in feed.of("task_rejected")] == ids
