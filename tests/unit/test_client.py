"""The client against a real aiohttp server on 127.0.0.1, and the SSE parser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from taskmaster.client import ApiError, Client, SSEDecoder, SSEMessage, SyncClient

TOKEN = "s3cret"


def make_events(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "event": "task_completed", "task_id": f"t{i}",
         "timestamp": "2026-01-01T00:00:00+00:00"}
        for i in range(1, n + 1)
    ]


def encode(event: dict[str, Any]) -> bytes:
    body = {k: v for k, v in event.items() if k != "id"}
    text = json.dumps(body, indent=1) if event["id"] % 3 == 0 else json.dumps(body)
    # every third event spreads its JSON over several data: lines
    data = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"id: {event['id']}\n{data}\n".encode()


class FakeScheduler:
    """A few endpoints of the scheduler's API, and an SSE stream that can break."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.stream_last_ids: list[str | None] = []
        self.drop_after: dict[int, int] = {}  # connection number -> events sent before a cut
        self.overlap = 0  # replay this many events the client already has
        self.refuse_streams = 0  # answer 503 to the first N stream connections
        self.stats_answers: list[dict[str, Any]] = []
        self.streams: set[asyncio.BaseTransport] = set()
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/api/logs/stream", self.stream)
        app.router.add_route("*", "/{tail:.*}", self.api)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self.url

    async def crash(self) -> None:
        """Cut every stream connection and stop listening, as a killed process would."""
        for transport in list(self.streams):
            transport.abort()  # type: ignore[attr-defined]
        assert self.runner is not None
        await self.runner.cleanup()

    async def api(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.raw_path, dict(request.headers), body))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "missing or bad token", "field": None}, status=401)
        path = request.path
        if path == "/api/schedule/batch":
            if not isinstance(body["count"], int) or body["count"] < 1:
                return web.json_response(
                    {"error": "count must be an integer >= 1", "field": "count"}, status=400
                )
            ids = [f"id{i}" for i in range(body["count"])]
            return web.json_response(
                {"created": body["count"], "command": body["command"], "ids": ids}, status=201
            )
        if path == "/api/schedule":
            return web.json_response({"id": "id0", "task": {"id": "id0", **body}}, status=201)
        if path == "/api/stats":
            answer = self.stats_answers.pop(0) if self.stats_answers else {"completed": 0}
            return web.json_response(answer)
        if path == "/api/tasks":
            return self.tasks_page(request)
        if path == "/api/tasks/a%20b/cancel" or request.raw_path == "/api/tasks/a%20b/cancel":
            return web.json_response({"error": "task a b is already completed", "field": "id"},
                                     status=409)
        if path.startswith("/api/pool"):
            return web.json_response(
                {"error": "no pool manager", "command": "docker compose up --scale worker=5 -d"},
                status=501,
            )
        if path == "/readyz":
            return web.json_response({"status": "starting"}, status=503)
        if path == "/healthz":
            return web.json_response({"status": "ok"})
        return web.Response(status=404, text="not found")

    def tasks_page(self, request: web.Request) -> web.Response:
        tasks = [{"id": f"task{i}", "status": "pending"} for i in range(5, 0, -1)]
        start = int(request.query.get("cursor", "0"))
        limit = int(request.query.get("limit", "2"))
        page = tasks[start:start + limit]
        headers = {}
        if start + limit < len(tasks):
            headers["X-Next-Cursor"] = str(start + limit)
        return web.json_response(page, headers=headers)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        number = len(self.stream_last_ids)
        last = request.headers.get("Last-Event-ID")
        self.stream_last_ids.append(last)
        if number < self.refuse_streams:
            return web.json_response({"error": "too many SSE clients"}, status=503)
        transport = request.transport
        assert transport is not None
        self.streams.add(transport)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"retry: 10\r\n: connected\r\n\r\n")
            after = int(last) - self.overlap if last else 0
            pending = [e for e in self.events if e["id"] > after]
            cut = self.drop_after.get(number)
            for i, event in enumerate(pending):
                if i == cut:
                    await resp.write(encode(event)[:12])  # half a message, then the cut
                    transport.abort()  # type: ignore[attr-defined]
                    return resp
                await resp.write(encode(event))
            while True:  # idle: keepalive comments until the client goes away
                await resp.write(b": keepalive\n\n")
                await asyncio.sleep(0.02)
        except (ConnectionResetError, ConnectionError):
            return web.Response()
        finally:
            self.streams.discard(transport)


@pytest.fixture
async def server() -> AsyncIterator[FakeScheduler]:
    fake = FakeScheduler(make_events(30))
    await fake.start()
    yield fake
    if fake.runner is not None:
        await fake.runner.cleanup()


async def take(client: Client, n: int, **kwargs: Any) -> list[dict[str, Any]]:
    out = []
    async with asyncio.timeout(10):
        async for event in client.events(**kwargs):
            out.append(event)
            if len(out) == n:
                break
    return out


# ---- SSE parsing ----

def feed_all(decoder: SSEDecoder, data: bytes, step: int) -> list[SSEMessage]:
    out = []
    for i in range(0, len(data), step):
        out.extend(decoder.feed(data[i:i + step]))
    return out


STREAM = (
    "\ufeff: a comment\r\n"
    "retry: 2500\r\n"
    "id: 7\r\n"
    "event: custom\r\n"
    "data: first line\r\n"
    "data:second line\r\n"
    "\r\n"
    "data: no id here\n\n"
    "id: 8\rdata: é ünïcode\r\r"
    "data\n"
    "data: \n\n"
    "id: 9\n\n"
    "retry: soon\n"
    "unknown: field\n"
    "data: tail without blank line"
).encode()


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(STREAM)])
def test_sse_decoder_handles_any_chunking(step: int) -> None:
    decoder = SSEDecoder()
    messages = feed_all(decoder, STREAM, step)
    assert messages == [
        SSEMessage("first line\nsecond line", "custom", "7"),
        SSEMessage("no id here", "message", None),
        SSEMessage("é ünïcode", "message", "8"),
        SSEMessage("\n", "message", None),
    ]
    assert decoder.retry == 2500  # "retry: soon" is not digits: ignored
    assert decoder.last_id == "9"  # an id without data is remembered, not dispatched


def test_sse_decoder_ignores_comments_only() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": keepalive\n\n: keepalive\n\n") == []


# ---- requests ----

async def test_requests_carry_token_and_json(server: FakeScheduler) -> None:
    async with Client(server.url, token=TOKEN) as client:
        created = await client.schedule_batch("demo-job", 3, delay_seconds=1.5, priority=2)
        one = await client.schedule("noop", {"x": 1}, idempotency_key="k1")
    assert created == {"created": 3, "command": "demo-job", "ids": ["id0", "id1", "id2"]}
    assert one["task"]["payload"] == {"x": 1}
    method, path, headers, body = server.requests[0]
    assert (method, path) == ("POST", "/api/schedule/batch")
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert body == {"command": "demo-job", "count": 3, "delay_seconds": 1.5, "priority": 2}
    assert server.requests[1][3] == {
        "command": "noop", "delay_seconds": 0, "idempotency_key": "k1", "payload": {"x": 1}
    }


async def test_errors_raise_api_error_with_the_json(server: FakeScheduler) -> None:
    async with Client(server.url, token=TOKEN) as client:
        with pytest.raises(ApiError) as bad:
            await client.schedule_batch("demo-job", 0)
        with pytest.raises(ApiError) as conflict:
            await client.cancel("a b")
        with pytest.raises(ApiError) as no_pool:
            await client.scale(5)
        with pytest.raises(ValueError, match="action must be one of"):
            await client.coordinator("explode")
    assert (bad.value.status, bad.value.error, bad.value.field) == (
        400, "count must be an integer >= 1", "count")
    assert conflict.value.status == 409 and conflict.value.field == "id"
    assert server.requests[-2][1] == "/api/tasks/a%20b/cancel"
    assert no_pool.value.status == 501
    assert no_pool.value.command == "docker compose up --scale worker=5 -d"
    assert str(bad.value) == "400: count must be an integer >= 1 (field count)"


async def test_missing_token_is_an_api_error(server: FakeScheduler) -> None:
    async with Client(server.url) as client:
        with pytest.raises(ApiError) as refused:
            await client.stats()
    assert refused.value.status == 401
    assert "Authorization" not in server.requests[0][2]


async def test_tasks_pages_and_iteration(server: FakeScheduler) -> None:
    async with Client(server.url, token=TOKEN) as client:
        page, cursor = await client.tasks(status="pending", limit=2)
        ids = [t["id"] async for t in client.iter_tasks(page_size=2)]
        first_three = [t["id"] async for t in client.iter_tasks(page_size=2, limit=3)]
    assert [t["id"] for t in page] == ["task5", "task4"] and cursor == "2"
    assert server.requests[0][1] == "/api/tasks?status=pending&limit=2"
    assert ids == ["task5", "task4", "task3", "task2", "task1"]
    assert first_three == ["task5", "task4", "task3"]


async def test_health_probes_and_wait_until(server: FakeScheduler) -> None:
    server.stats_answers = [{"completed": 1}, {"completed": 2}, {"completed": 5}]
    async with Client(server.url, token=TOKEN) as client:
        assert await client.healthz() is True
        assert await client.readyz() is False
        stats = await client.wait_until(lambda s: s["completed"] >= 5, timeout=10, interval=0)
        assert stats == {"completed": 5}
        with pytest.raises(TimeoutError, match="last stats"):
            await client.wait_until(lambda s: False, timeout=0.05, interval=0.01)
    async with Client("http://127.0.0.1:1", timeout=2) as closed:
        assert await closed.healthz() is False


async def test_sync_client_for_scripts(server: FakeScheduler) -> None:
    def script() -> dict[str, Any]:
        with SyncClient(server.url, token=TOKEN) as client:
            return client.schedule_batch("demo-job", 2)

    result = await asyncio.to_thread(script)
    assert result["created"] == 2


# ---- events ----

async def test_events_reconnect_after_a_cut_with_last_event_id(server: FakeScheduler) -> None:
    server.drop_after = {0: 10, 1: 5}  # cut mid-message twice
    server.overlap = 2  # and replay two events the client already has
    async with Client(server.url, backoff_min=0.01) as client:
        events = await take(client, 30)
    assert [e["id"] for e in events] == list(range(1, 31))  # each once, in order
    assert events[2]["task_id"] == "t3" and events[2]["event"] == "task_completed"
    # the second connection replays 9 and 10 again, then 11..13 before its cut
    assert server.stream_last_ids == [None, "10", "13"]


async def test_events_survive_a_scheduler_restart(server: FakeScheduler) -> None:
    statuses: list[str] = []
    async with Client(server.url, backoff_min=0.01, backoff_max=0.05) as client:
        stream = client.events(last_event_id=20, on_status=statuses.append)
        try:
            async with asyncio.timeout(10):
                seen = [await anext(stream) for _ in range(10)]
                await server.crash()
                server.events = make_events(35)
                await server.start()  # same port, more events meanwhile
                seen += [await anext(stream) for _ in range(5)]
        finally:
            await stream.aclose()
    assert [e["id"] for e in seen] == list(range(21, 36))
    assert server.stream_last_ids[0] == "20" and server.stream_last_ids[-1] == "30"
    assert statuses[0] == "connected" and statuses[-1] == "connected"
    assert any(s.startswith("disconnected") for s in statuses)


async def test_events_retry_unavailable_and_stop_on_refusal(server: FakeScheduler) -> None:
    server.refuse_streams = 2
    async with Client(server.url, backoff_min=0.01) as client:
        events = await take(client, 3)
        assert [e["id"] for e in events] == [1, 2, 3]
        assert len(server.stream_last_ids) == 3  # two 503s, then the stream
        server.refuse_streams = 10
        with pytest.raises(ApiError) as refused:
            await take(client, 1, reconnect=False, last_event_id=0)
    assert refused.value.status == 503 and refused.value.error == "too many SSE clients"


async def test_events_without_reconnect_end_with_the_stream(server: FakeScheduler) -> None:
    server.drop_after = {0: 4}
    async with Client(server.url) as client:
        with pytest.raises(aiohttp.ClientPayloadError):
            await take(client, 10, reconnect=False)
    assert server.stream_last_ids == [None]
