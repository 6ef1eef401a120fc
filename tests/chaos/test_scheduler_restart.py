"""The scheduler killed mid-run: SSE clients reconnect with Last-Event-ID and miss nothing."""

from __future__ import annotations

import signal

import pytest

from tests.chaos.harness import Feed, Stack, StackFactory, assert_exactly_once
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos


async def _max_event_id(s: Stack) -> int:
    return int((await s.fetch("SELECT coalesce(max(id), 0) AS id FROM events"))[0]["id"])


async def test_sse_resumes_across_scheduler_restarts(stack: StackFactory) -> None:
    """Events committed while no scheduler ran are replayed to the reconnecting client."""
    s = await stack(workers=2, concurrency=4)
    async with Feed(s.url) as feed:
        await wait_for(lambda: feed.connects, 10, message="the SSE feed")
        ids = await s.batch("sleep", 400, {"seconds": 0.05})
        for restart in (1, 2):
            await wait_for(lambda n=100 * restart: len(feed.of("task_completed")) >= n, 20,
                           message="the run to be under way")
            proc = s.cluster.members["scheduler"].proc
            assert proc is not None
            seen = feed.last_id
            proc.send_signal(signal.SIGKILL)  # the supervisor starts a new one
            await proc.wait()
            await s.cluster.wait_ready(30)
            # the coordinator kept writing events meanwhile: the feed must replay them
            assert await _max_event_id(s) > seen
            await wait_for(lambda restart=restart: feed.connects > restart, 20,
                           message="the feed to reconnect")
        await s.wait_completed(ids, timeout=60)
        await assert_exactly_once(s, feed, ids)  # includes: no committed event missed
    assert feed.connects == 3
