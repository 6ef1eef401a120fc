"""SIGKILL a random worker every second for 20 s while 2,000 short tasks run."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.chaos.harness import Feed, StackFactory, assert_exactly_once
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos

WORKERS = 4
TASKS = 2000
KILL_FOR = 20.0


async def test_sigkill_a_worker_every_second(stack: StackFactory) -> None:
    """Each kill puts the dead worker's tasks back at once; all 2,000 complete exactly once."""
    s = await stack(workers=WORKERS, concurrency=8)
    async with Feed(s.url) as feed:
        await wait_for(lambda: feed.connects, 10, message="the SSE feed")
        # 0.35 s each on 32 slots: the run outlasts the kills (at least 2000 * 0.35 / 32 s)
        ids = await s.batch("sleep", TASKS, {"seconds": 0.35}, max_attempts=10)
        rng = random.Random()
        killed: list[str] = []
        end = time.monotonic() + KILL_FOR
        while time.monotonic() < end:
            tick = time.monotonic()
            live = s.cluster.workers()
            if live:
                victim = rng.choice(live)
                await s.cluster.kill_worker(victim.name)
                killed.append(victim.name)
            await s.cluster.scale(WORKERS)  # a replacement, like a compose restart policy
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))  # pacing only
        assert len(killed) >= 15
        assert await s.unfinished(ids) > 0, "the run ended before the kills did"
        await s.wait_completed(ids, timeout=60)
        attempts = await assert_exactly_once(s, feed, ids)

    # the kills did hit running work, and it was reassigned, not lost
    reassigned = feed.count("task_reassigned")
    assert reassigned, "no kill hit a running task: the test proved nothing"
    assert all(attempts[t] >= 2 for t in reassigned)
    # every later attempt is explained: a kill (task_reassigned) or a delivery claimed for a
    # worker that died before it was sent (task_rejected: it goes back, no attempt used up)
    rejected = feed.count("task_rejected")
    assert {t for t, a in attempts.items() if a > 1} == set(reassigned) | set(rejected)
    print(f"{len(killed)} kills, {len(reassigned)} tasks reassigned, "
          f"{sum(feed.count('task_reassigned').values())} reassignments")
    rows = await s.fetch(  # the workers' counts, and their deltas not folded in yet
        "SELECT (SELECT sum(tasks_completed) FROM workers) "
        "+ (SELECT coalesce(sum(completed), 0) FROM worker_counts) AS n")
    assert rows[0]["n"] == TASKS  # every completion counted once, on one worker
