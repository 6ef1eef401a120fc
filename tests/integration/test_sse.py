"""The SSE log stream on a real socket: the demo guide's line format with ids, replay after a
reconnect, keepalives, a bounded buffer per subscriber and a bounded number of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from taskmaster.scheduler.app import HUB
from taskmaster.store import NewTask, Store
from tests.helpers import SseMessage, SseReader, fast_settings, fetch, serve_scheduler, wait_for

STREAM = "/api/logs/stream"
NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)


@contextlib.asynccontextmanager
async def scheduler(database_url: str, **settings: Any
                    ) -> AsyncIterator[tuple[str, web.Application, aiohttp.ClientSession]]:
    """A scheduler with these settings and an HTTP session."""
    async with serve_scheduler(fast_settings(**settings), database_url) as (url, app), \
            aiohttp.ClientSession(timeout=NO_TIMEOUT) as http:
        yield url, app, http


@contextlib.asynccontextmanager
async def stream(http: aiohttp.ClientSession, url: str,
                 headers: dict[str, str] | None = None) -> AsyncIterator[SseReader]:
    """An open SSE connection."""
    async with http.get(url + STREAM, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        yield SseReader(resp)


async def schedule(http: aiohttp.ClientSession, url: str, count: int) -> list[str]:
    """Create count noop tasks; their ids."""
    async with http.post(url + "/api/schedule/batch", json={"command": "noop", "count": count}
                         ) as resp:
        assert resp.status == 201
        return list((await resp.json())["ids"])


def scheduled(events: list[SseMessage]) -> list[str]:
    """The task ids of the task_scheduled events."""
    return [e.data["task_id"] for e in events if e.data and e.data["event"] == "task_scheduled"]


def count_scheduled(n: int) -> Any:
    """An until= condition: n task_scheduled events read."""
    return lambda events: len(scheduled(events)) >= n


async def test_events_have_an_id_and_the_demo_guides_data_line(database_url: str) -> None:
    async with scheduler(database_url) as (url, _, http), stream(http, url) as sse:
        ids = await schedule(http, url, 3)
        events = await sse.events(count_scheduled(3))
    assert scheduled(events) == ids
    event_ids = [e.id for e in events]
    assert all(isinstance(i, int) for i in event_ids)
    assert event_ids == sorted(event_ids) and len(set(event_ids)) == 3
    for e, tid in zip(events, ids, strict=True):
        assert e.raw[0] == f"id: {e.id}"
        assert e.raw[1].startswith('data: {"event":"task_scheduled","task_id":"' + tid + '",'
                                   '"timestamp":"')
        assert e.data is not None
        assert datetime.fromisoformat(e.data["timestamp"]).tzinfo is not None
        assert e.data["command"] == "noop"


async def test_events_committed_by_another_process_reach_the_stream(
    database_url: str, store: Store
) -> None:
    async with scheduler(database_url) as (url, _, http), stream(http, url) as sse:
        task, _ = await store.create_task(NewTask(command="sleep"))
        events = await sse.events(count_scheduled(1))
    assert scheduled(events) == [str(task.id)]


async def test_reconnect_with_last_event_id_replays_exactly_what_was_missed(
    database_url: str
) -> None:
    async with scheduler(database_url) as (url, _, http):
        async with stream(http, url) as sse:
            first = await schedule(http, url, 3)
            seen = await sse.events(count_scheduled(3))
        assert scheduled(seen) == first
        last = seen[-1].id
        missed = await schedule(http, url, 4)  # nobody listening
        missed_ids = [r["id"] for r in await fetch(
            database_url, "SELECT id FROM events WHERE id > $1 ORDER BY id", last)]
        assert len(missed_ids) == 4

        async with stream(http, url, {"Last-Event-ID": str(last)}) as sse:
            replayed = await sse.events(count_scheduled(4))
            assert [e.id for e in replayed] == missed_ids
            assert scheduled(replayed) == missed
            live = await schedule(http, url, 1)
            after = await sse.events(count_scheduled(1))
        assert scheduled(after) == live
        assert after[0].id > missed_ids[-1]

        # the query parameter works too (EventSource cannot set headers on the first try)
        async with http.get(f"{url}{STREAM}?last_event_id={missed_ids[1]}") as resp:
            again = await SseReader(resp).events(count_scheduled(2))
        assert scheduled(again) == missed[2:]


async def test_replay_is_bounded_and_says_what_it_skipped(database_url: str) -> None:
    async with scheduler(database_url, sse_replay=5) as (url, _, http):
        ids = await schedule(http, url, 12)
        newest = (await fetch(database_url, "SELECT max(id) AS m FROM events"))[0]["m"]
        async with stream(http, url, {"Last-Event-ID": str(newest - 12)}) as sse:
            notice = None
            while notice is None:
                msg = await sse.next(10)
                assert msg is not None
                if msg.data and msg.data["event"] == "replay_truncated":
                    notice = msg.data
            replayed = await sse.events(count_scheduled(5))
    assert notice == {"event": "replay_truncated", "missed_after": newest - 12,
                      "resumed_after": newest - 5}
    assert scheduled(replayed) == ids[-5:]


async def test_a_bad_last_event_id_is_a_400_naming_it(database_url: str) -> None:
    async with scheduler(database_url) as (url, _, http), \
            http.get(url + STREAM, headers={"Last-Event-ID": "yesterday"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["field"] == "Last-Event-ID"


async def test_idle_streams_get_keepalive_comments(database_url: str) -> None:
    async with scheduler(database_url, sse_keepalive=0.1) as (url, _, http), \
            stream(http, url) as sse:
        comments = []
        for _ in range(20):
            msg = await sse.next(5)
            assert msg is not None and msg.data is None
            if msg.comment:
                comments.append(msg.comment)
            if len(comments) == 2:
                break
    assert comments == ["keepalive", "keepalive"]


async def test_a_subscriber_that_overflows_is_cut_off_and_the_server_stays_healthy(
    database_url: str
) -> None:
    async with scheduler(database_url, sse_queue=10) as (url, app, http):
        hub = app[HUB]
        async with stream(http, url) as sse:
            await wait_for(lambda: len(hub.subscribers) == 1, message="the subscription")
            ids = await schedule(http, url, 50)  # one burst of 50 events > a buffer of 10
            tail = []
            while (msg := await sse.next(10)) is not None:
                tail.append(msg)
        assert any(m.comment and "too slow" in m.comment for m in tail)
        assert len(scheduled([m for m in tail if m.data])) < 50
        await wait_for(lambda: not hub.subscribers, message="the subscriber to be dropped")

        async with http.get(url + "/readyz") as resp:
            assert resp.status == 200
        # the client catches up from PostgreSQL, not from the server's memory
        async with stream(http, url, {"Last-Event-ID": "0"}) as sse:
            replayed = await sse.events(count_scheduled(50))
            assert scheduled(replayed) == ids
            more = await schedule(http, url, 3)
            live = await sse.events(count_scheduled(3))
        assert scheduled(live) == more


async def test_the_number_of_subscribers_is_bounded(database_url: str) -> None:
    async with scheduler(database_url, max_sse_clients=2) as (url, app, http):
        async with stream(http, url), stream(http, url):
            async with http.get(url + STREAM) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"]
                body = await resp.json()
            assert "TASKMASTER_MAX_SSE_CLIENTS" in body["error"]
            async with http.get(url + "/healthz") as resp:
                assert resp.status == 200
        await wait_for(lambda: not app[HUB].subscribers, message="subscribers to leave")
        async with stream(http, url) as sse:
            ids = await schedule(http, url, 1)
            assert scheduled(await sse.events(count_scheduled(1))) == ids


@pytest.mark.parametrize("path", ["/api/logs/stream?last_event_id=-5"])
async def test_a_negative_last_event_id_replays_from_the_start(database_url: str,
                                                               path: str) -> None:
    async with scheduler(database_url) as (url, _, http):
        ids = await schedule(http, url, 2)
        async with http.get(url + path) as resp:
            events = await SseReader(resp).events(count_scheduled(2))
    assert scheduled(events) == ids
    assert json.loads(events[0].raw[1][6:])["event"] == "task_scheduled"


async def test_shutdown_ends_open_streams_instead_of_waiting_for_them(database_url: str) -> None:
    from taskmaster.scheduler.app import make_app

    app = make_app(fast_settings(), database_url)
    runner = web.AppRunner(app, shutdown_timeout=60)  # far longer than the wait below
    await runner.setup()
    stopped = False
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession(timeout=NO_TIMEOUT) as http, \
                stream(http, f"http://{host}:{port}") as sse:
            await wait_for(lambda: len(app[HUB].subscribers) == 1, message="the subscription")
            stopping = asyncio.create_task(runner.cleanup())
            while (msg := await sse.next(10)) is not None:
                assert msg.data is None
            await asyncio.wait_for(stopping, 10)
            stopped = True
    finally:
        if not stopped:
            await runner.cleanup()


async def test_an_idle_hub_reads_rarely_and_a_new_subscriber_starts_at_the_newest_event(
        database_url: str) -> None:
    from taskmaster.scheduler.sse import IDLE_READ_INTERVAL

    async with scheduler(database_url) as (url, app, http):
        hub = app[HUB]
        reads, t0 = hub.reads, asyncio.get_running_loop().time()
        for _ in range(20):  # one commit (and one NOTIFY) each, nobody subscribed
            await schedule(http, url, 1)
        elapsed = asyncio.get_running_loop().time() - t0
        assert IDLE_READ_INTERVAL >= 0.1
        assert hub.reads - reads <= 2 + elapsed / IDLE_READ_INTERVAL  # not one per commit
        async with stream(http, url) as sse:
            fresh = await schedule(http, url, 1)
            events = await sse.events(count_scheduled(1))
        assert scheduled(events) == fresh  # live from now: none of the 20 before it
