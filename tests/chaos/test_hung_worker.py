"""A worker that hangs (SIGSTOP) is declared dead after missed heartbeats, then wakes up late."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.chaos.harness import Feed, Stack, StackFactory, assert_exactly_once
from tests.chaos.tasks import marks
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos


async def test_hung_worker_loses_its_tasks_and_its_late_results(
    stack: StackFactory, tmp_path: Path
) -> None:
    """Its stream stays open but silent: 3 missed heartbeats, then its tasks move on."""
    s = await stack(workers=1, concurrency=2)
    done = tmp_path / "marks"
    done.mkdir()
    async with Feed(s.url) as feed:
        await wait_for(lambda: feed.connects, 10, message="the SSE feed")
        ids = await s.batch("chaos-sleep", 2, {"seconds": 2.0, "marks": str(done)})
        await wait_for(lambda: _running(s, ids), 10, message="both tasks running")
        [hung] = s.cluster.workers()
        hung_id = (await s.fetch("SELECT id FROM workers"))[0]["id"]
        await s.cluster.scale(2)  # somewhere for its tasks to go
        await wait_for(lambda: _online(s, 2), 20, message="the second worker")
        assert hung.proc is not None
        hung.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            def reassigned() -> bool:
                return {e["task_id"] for e in feed.of("task_reassigned")} == set(ids)

            await wait_for(reassigned, 10, message="the hung worker's tasks to be reassigned")
            detected = time.monotonic() - stopped
            assert 1.0 <= detected < 5.0, f"the hang was noticed after {detected:.2f}s"
            assert all("missed heartbeats" in e["reason"] and e["worker_id"] == hung_id
                       for e in feed.of("task_reassigned"))
            await s.wait_completed(ids, timeout=20)
        finally:
            hung.proc.send_signal(signal.SIGCONT)
        # it wakes up and finishes its stale deliveries; their results go nowhere: refused by
        # the coordinator (fencing), or dropped by the worker itself when its registration
        # tells it the deliveries were revoked, whichever it learns first
        await wait_for(lambda: {t for t, a, p in marks(done) if p == hung.pid} == set(ids), 10,
                       message="the woken worker to finish its stale deliveries")
        coordinator_log = s.cluster.logs / "coordinator.log"
        worker_log = s.cluster.logs / f"{hung.name}.log"

        def refused_or_revoked(task_id: str) -> bool:
            return (f"refused a stale report on task {task_id} attempt 1"
                    in coordinator_log.read_text(errors="replace")
                    or f"task {task_id} attempt 1 was reassigned while we were away"
                    in worker_log.read_text(errors="replace"))

        await wait_for(lambda: all(refused_or_revoked(t) for t in ids), 15,
                       message="its late results to be refused")
        attempts = await assert_exactly_once(s, feed, ids)
    assert attempts == {t: 2 for t in ids}


async def _running(s: Stack, ids: list[str]) -> bool:
    rows = await s.fetch("SELECT count(*) AS n FROM tasks WHERE id = ANY($1::uuid[]) "
                         "AND status = 'running'", ids)
    return bool(rows[0]["n"] == len(ids))


async def _online(s: Stack, n: int) -> bool:
    return await s.online() >= n
