"""Every limit answers its 4xx (or 429, or 503) with a JSON error, and changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskmaster.config import help_for
from taskmaster.scheduler.app import HUB
from taskmaster.scheduler.ops import RateLimiter
from tests.helpers import fast_settings, serve_scheduler, wait_for
from tests.integration.live import table_counts

LIMITS = fast_settings(max_body_bytes=2000, max_batch_count=10, max_payload_bytes=100,
                       max_batch_bytes=950, max_page_size=5)


async def refused(http: aiohttp.ClientSession, method: str, url: str, status: int,
                  field: str | None, **kw: Any) -> dict[str, Any]:
    """Make the request, check the answer is `status` naming `field`; the body."""
    async with http.request(method, url, **kw) as resp:
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert isinstance(body["error"], str) and body["error"]
    assert body["field"] == field, body
    return dict(body)


@pytest.mark.parametrize(("path", "body", "status", "field", "variable"), [
    ("/api/schedule", {"command": "noop", "payload": "x" * 3000}, 413, "body",
     "TASKMASTER_MAX_BODY_BYTES"),
    ("/api/schedule/batch", {"command": "noop", "count": 10, "payload": "x" * 3000}, 413,
     "body", "TASKMASTER_MAX_BODY_BYTES"),
    ("/api/schedule/batch", {"command": "noop", "count": 11}, 422, "count", None),
    ("/api/schedule", {"command": "noop", "payload": "x" * 101}, 413, "payload",
     "TASKMASTER_MAX_PAYLOAD_BYTES"),
    ("/api/schedule/batch", {"command": "noop", "count": 2, "payload": ["y"] * 30}, 413,
     "payload", "TASKMASTER_MAX_PAYLOAD_BYTES"),
    # each task stores its own copy: 10 x 96 bytes is over the budget of 950
    ("/api/schedule/batch", {"command": "noop", "count": 10, "payload": "x" * 94}, 413,
     "count", "TASKMASTER_MAX_BATCH_BYTES"),
])
async def test_body_limits(database_url: str, path: str, body: dict[str, Any], status: int,
                           field: str, variable: str | None) -> None:
    async with serve_scheduler(LIMITS, database_url) as (url, _app), \
            aiohttp.ClientSession() as http:
        before = await table_counts(database_url)
        answer = await refused(http, "POST", url + path, status, field, json=body)
        if variable:
            assert variable in answer["error"]
        assert await table_counts(database_url) == before
        # just under each limit passes
        ok = {"command": "noop", "payload": "x" * 90} | (
            {"count": 10} if path.endswith("batch") else {})
        async with http.post(url + path, json=ok) as resp:
            assert resp.status == 201


async def test_page_size_limit(database_url: str) -> None:
    async with serve_scheduler(LIMITS, database_url) as (url, _app), \
            aiohttp.ClientSession() as http:
        async with http.post(url + "/api/schedule/batch",
                             json={"command": "noop", "count": 10}) as resp:
            assert resp.status == 201
        before = await table_counts(database_url)
        for limit in ("6", "0", "-1", "1000000"):
            answer = await refused(http, "GET", url + f"/api/tasks?limit={limit}", 422, "limit")
            assert "between 1 and 5" in answer["error"]
        async with http.get(url + "/api/tasks?limit=5") as resp:
            assert resp.status == 200 and len(await resp.json()) == 5
        assert await table_counts(database_url) == before


async def test_sse_client_limit(database_url: str) -> None:
    settings = LIMITS.with_(max_sse_clients=2, sse_keepalive=0.1)
    async with serve_scheduler(settings, database_url) as (url, app), \
            aiohttp.ClientSession() as http:
        streams = [await http.get(url + "/api/logs/stream") for _ in range(2)]
        try:
            assert [s.status for s in streams] == [200, 200]
            async with http.get(url + "/api/logs/stream") as resp:
                assert resp.status == 503
                assert int(resp.headers["Retry-After"]) >= 1
                assert "TASKMASTER_MAX_SSE_CLIENTS" in (await resp.json())["error"]
            streams.pop().close()
            # the server notices the hang-up at its next keepalive and frees the place
            await wait_for(lambda: len(app[HUB].subscribers) < 2, 10,
                           message="the closed stream to be let go")
            async with http.get(url + "/api/logs/stream") as resp:
                assert resp.status == 200
        finally:
            for s in streams:
                s.close()


async def test_the_sse_client_limit_holds_for_a_burst(database_url: str) -> None:
    settings = LIMITS.with_(max_sse_clients=3, sse_keepalive=0.1)
    async with serve_scheduler(settings, database_url) as (url, app), \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        answers = await asyncio.gather(*(http.get(url + "/api/logs/stream") for _ in range(24)))
        try:
            statuses = sorted(r.status for r in answers)
            assert statuses == [200] * 3 + [503] * 21, statuses
            assert len(app[HUB].subscribers) == 3
        finally:
            for r in answers:
                r.close()
        await wait_for(lambda: app[HUB].clients == 0, 10, message="every place to be given back")


# ---- the per-client rate limit ----

async def test_rate_limit_answers_429_and_changes_nothing(database_url: str) -> None:
    # 3 at once, then one every 100 s: the 4th request is over, however slow the machine
    settings = LIMITS.with_(rate_limit=0.01, rate_limit_burst=3)
    async with serve_scheduler(settings, database_url) as (url, _app), \
            aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.post(url + "/api/schedule", json={"command": "noop"}) as resp:
                assert resp.status == 201
        before = await table_counts(database_url)
        async with http.post(url + "/api/schedule", json={"command": "noop"}) as resp:
            assert resp.status == 429
            assert 1 <= int(resp.headers["Retry-After"]) <= 100
            body = await resp.json()
        assert "TASKMASTER_RATE_LIMIT" in body["error"] and body["field"] is None
        async with http.get(url + "/api/stats") as resp:  # reads count too
            assert resp.status == 429
        assert await table_counts(database_url) == before
        # probes and scrapes are never limited
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(url + path) as resp:
                assert resp.status == 200, path
        # another client has its own bucket
        local = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=local) as other, \
                other.post(url + "/api/schedule", json={"command": "noop"}) as resp:
            assert resp.status == 201
        # refused requests are counted
        async with http.get(url + "/metrics") as resp:
            assert "taskmaster_http_rate_limited_total 2.0" in await resp.text()


async def test_no_rate_limit_by_default(database_url: str) -> None:
    async with serve_scheduler(fast_settings(), database_url) as (url, _app), \
            aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(http.get(url + "/api/stats") for _ in range(50)))
        assert {r.status for r in answers} == {200}
        for r in answers:
            r.release()


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 4, clock=clock)
    assert [limiter.take("a") for _ in range(4)] == [0.0] * 4
    assert limiter.take("a") == pytest.approx(0.5)  # one token comes every half second
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    clock.now += 3600  # a long pause saves up no more than the burst
    assert [limiter.take("a") for _ in range(5)][-2:] == [0.0, pytest.approx(0.5)]
    assert limiter.take("b") == 0.0  # per client


def test_default_burst_is_twice_the_rate() -> None:
    assert RateLimiter(10.0).burst == 20
    assert RateLimiter(0.1).burst == 1


def test_the_limiter_remembers_a_bounded_number_of_clients() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 1, max_clients=3, clock=clock)
    for client in "abcde":
        limiter.take(client)
    assert list(limiter.buckets) == ["c", "d", "e"]
    assert limiter.take("e") > 0  # remembered: still empty
    assert limiter.take("a") == 0.0  # forgotten: a full bucket again


def test_every_limit_is_a_setting_and_documented() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    doc = readme.split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    for name in ("max_body_bytes", "max_batch_count", "max_payload_bytes", "max_batch_bytes",
                 "max_page_size", "max_sse_clients", "sse_queue", "rate_limit", "rate_limit_burst",
                 "max_result_bytes", "max_worker_capacity", "max_worker_commands",
                 "max_worker_sessions", "worker_report_rate", "task_retention"):
        variable = f"TASKMASTER_{name.upper()}"
        assert variable in help_for(name)
        assert f"`{variable}`" in doc, f"the README's Limits section does not name {variable}"
