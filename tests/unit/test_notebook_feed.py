"""The background feed end to end: a real Client against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from taskmaster.client import Client
from taskmaster.notebook import Dashboard, DashboardState, Feed, TaskMonitor, WorkersPanel, live

N_TASKS = 400


def lifecycle_events(n: int) -> list[dict[str, Any]]:
    stamp = datetime.now(UTC).isoformat()
    out: list[dict[str, Any]] = []
    for i in range(n):
        task = f"task-{i:05d}"
        worker = f"w{i % 3}"
        out += [
            {"event": "task_scheduled", "task_id": task, "command": "demo-job"},
            {"event": "task_assigned", "task_id": task, "worker_id": worker, "attempt": 1},
            {"event": "task_running", "task_id": task, "worker_id": worker, "attempt": 1},
            {"event": "task_progress", "task_id": task, "worker_id": worker, "progress": 50},
            {"event": "task_completed", "task_id": task, "worker_id": worker, "duration_ms": 3},
        ]
    for i, event in enumerate(out, start=1):
        event["id"] = i
        event["timestamp"] = stamp
    return out


class Scheduler:
    """Stats, workers, tasks and an SSE stream that is cut once halfway."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.released = asyncio.Event()  # the stream sends the events once this is set
        self.stream_last_ids: list[str | None] = []
        self.polls = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/stats", self.stats)
        app.router.add_get("/api/workers", self.workers)
        app.router.add_get("/api/tasks", self.tasks)
        app.router.add_get("/api/logs/stream", self.stream)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stats(self, request: web.Request) -> web.Response:
        self.polls += 1
        done = N_TASKS if self.released.is_set() else 0
        return web.json_response({"total": N_TASKS, "pending": N_TASKS - done, "running": 0,
                                  "completed": done, "failed": 0, "queue_depth": N_TASKS - done,
                                  "throughput": 0.0})

    async def workers(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"id": f"w{i}", "name": f"worker-{i}", "status": "online", "tasks_completed": 0,
             "current_task_id": None, "current_task_ids": []} for i in range(3)
        ])

    async def tasks(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def stream(self, request: web.Request) -> web.StreamResponse:
        last = request.headers.get("Last-Event-ID")
        first = not self.stream_last_ids
        self.stream_last_ids.append(last)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            await resp.write(b"retry: 10\n\n")
            await self.released.wait()
            pending = [e for e in self.events if e["id"] > int(last or 0)]
            if first:
                pending = pending[: len(pending) // 2]
            body = b"".join(
                f"id: {e['id']}\ndata: {json.dumps(e)}\n\n".encode() for e in pending
            )
            await resp.write(body)
            if first:  # a crash halfway
                assert request.transport is not None
                request.transport.abort()
                return resp
            while True:
                await resp.write(b": keepalive\n\n")
                await asyncio.sleep(0.05)
        except ConnectionError:
            return resp


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    fake = Scheduler(lifecycle_events(N_TASKS))
    await fake.start()
    yield fake
    assert fake.runner is not None
    await fake.runner.cleanup()


class CountingView:
    """Counts how often the feed asks for a redraw and how often state had changed."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[int] = []

    def render(self, state: DashboardState | None = None, force: bool = False) -> bool:
        assert state is not None
        self.calls += 1
        self.seen.append(state.events_seen)
        return True


async def test_dashboard_follows_the_feed_across_a_cut(scheduler: Scheduler) -> None:
    async with Client(scheduler.url, backoff_min=0.01) as client:
        dash = Dashboard(client, recent=20, render_hz=5, poll_interval=0.05)
        counter = CountingView()
        dash.feed.add(counter)
        task = dash.start()
        assert dash.start() is task  # idempotent
        await dash.wait_for(lambda s: len(s.workers) == 3 and s.stats.get("total") == N_TASKS)
        started = time.monotonic()
        scheduler.released.set()
        state = await dash.wait_for(lambda s: s.count("task_completed") == N_TASKS, timeout=20)
        elapsed = time.monotonic() - started
        await dash.wait_for(lambda s: s.stats.get("completed") == N_TASKS)
        await dash.stop()
    assert not dash.feed.running and task.done()
    assert state.events_seen == 5 * N_TASKS  # every event exactly once
    assert len(scheduler.stream_last_ids) == 2 and scheduler.stream_last_ids[0] is None
    assert 0 < int(scheduler.stream_last_ids[1] or 0) <= 5 * N_TASKS // 2  # resumed, not redone
    assert state.last_event_id == 5 * N_TASKS
    # redraws come from the tick, not from the 2000 events: at most 5 per second
    assert counter.calls <= 5 * (elapsed + 2) + 3
    assert len(state.tasks) == 20
    assert all(r.status == "completed" and r.progress == 100 for r in state.tasks.values())
    assert dash.monitor.body.value.count("tm-completed") == 20  # the final render after stop
    assert "400 completed" in dash.summary()


async def test_panels_used_alone_share_one_live_feed(scheduler: Scheduler) -> None:
    monitor, workers_panel = TaskMonitor(), WorkersPanel()
    async with Client(scheduler.url, backoff_min=0.01) as client:
        feed = live(client, monitor, workers_panel, poll_interval=0.05)
        scheduler.released.set()
        await feed.wait_for(lambda s: s.count("task_completed") == N_TASKS and s.workers)
        await feed.stop()
    assert monitor.state is workers_panel.state is feed.state
    assert monitor.body.value.count("tm-completed") == 50
    assert workers_panel.body.value.count("tm-online") == 3


async def test_wait_for_times_out_with_a_summary() -> None:
    feed = Feed(client=None)
    with pytest.raises(TimeoutError, match=r"condition not met within 0\.05s; tasks: 0 total"):
        await feed.wait_for(lambda s: s.count("task_completed") > 0, timeout=0.05)


async def test_stop_cancels_a_feed_that_cannot_connect() -> None:
    async with Client("http://127.0.0.1:1", backoff_min=0.01, timeout=1) as client:
        feed = Feed(client, poll_interval=0.01)
        feed.start()
        await feed.wait_for(lambda s: s.connection.startswith("disconnected"), timeout=10)
        await feed.stop()
    assert not feed.running


async def test_dashboard_records_every_event_for_measuring(scheduler: Scheduler) -> None:
    ids = [f"task-{i:05d}" for i in range(N_TASKS)]
    async with Client(scheduler.url, backoff_min=0.01) as client:
        dash = Dashboard(client, poll_interval=0.05)
        await dash.ready()
        assert dash.state.connection == "connected" and dash.state.stats
        mark = dash.events.mark()
        scheduler.released.set()
        first = await dash.next_event(lambda e: e["event"] == "task_completed", after=mark)
        outcome = await dash.wait_done(ids, timeout=20)
        with pytest.raises(TimeoutError, match="1 of 1 tasks not finished"):
            await dash.wait_done(["no-such-task"], timeout=0.05)
        await dash.stop()
    assert first["task_id"] == "task-00000"
    assert outcome.ok and outcome.completed_once == N_TASKS
    assert [e["id"] for e in dash.events.since(mark)] == list(range(1, 5 * N_TASKS + 1))
    assert dash.worker_name("w1") == "worker-1"
