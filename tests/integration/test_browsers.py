"""Web pages cannot drive the stack, and programs still can, with no token and no Origin.

A page the operator opens may POST to 127.0.0.1 (a cross-site form sends text/plain), and a
page on a name that now points at 127.0.0.1 (DNS rebinding) may even read the answers:
both are refused before any handler runs, and PostgreSQL shows that nothing was created.
The demo guide's curl command, run with the real curl, still creates its tasks.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

import aiohttp
import pytest

from taskmaster.web import BrowserPolicy, host_name, is_json
from tests.helpers import count_rows, fast_settings, serve_scheduler
from tests.integration.live import table_counts

BATCH = json.dumps({"command": "demo-job", "count": 5, "delay_seconds": 0})


async def post(url: str, data: str | bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, data=data,
                                                         headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_cross_site_page_creates_nothing(database_url: str) -> None:
    async with serve_scheduler(fast_settings(enable_pool_api=True), database_url) as (url, _):
        before = await table_counts(database_url)
        refused = [
            # the attack: a text/plain "simple request" from another site
            ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403, "Origin"),
            ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403,
             "Origin"),
            ({"Content-Type": "application/json", "Origin": "null"}, 403, "Origin"),
            # a page on localhost:8888 (another port) is same-site, not same-origin
            ({"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, 403,
             "Sec-Fetch-Site"),
            ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403,
             "Sec-Fetch-Site"),
            # a form, or a body of no type: not JSON, whoever sends it
            ({"Content-Type": "text/plain"}, 415, "Content-Type"),
            ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
            ({"Content-Type": "multipart/form-data; boundary=x"}, 415, "Content-Type"),
            ({}, 415, "Content-Type"),
        ]
        for path in ("/api/schedule/batch", "/api/pool/scale", "/api/reset"):
            for headers, status, field in refused:
                got, body = await post(url + path, BATCH, headers)
                assert (got, body["field"]) == (status, field), (path, headers, got, body)
                assert body["error"]
        _, body = await post(url + "/api/schedule/batch", BATCH, {"Content-Type": "text/plain"})
        assert "Content-Type: application/json" in body["error"]
        # an empty body has nothing to mistake, but a page still cannot send it
        status, _ = await post(url + "/api/reset", b"", {"Content-Type": "text/plain"})
        assert status == 200
        before = await table_counts(database_url)
        status, body = await post(url + "/api/reset", b"", {"Content-Type": "text/plain",
                                                             "Origin": "http://evil.example"})
        assert (status, body["field"]) == (403, "Origin")
        assert await table_counts(database_url) == before, "a refused request changed something"


async def test_a_rebound_host_name_is_refused_for_reads_writes_and_the_feed(
        database_url: str) -> None:
    async with serve_scheduler(fast_settings(), database_url) as (url, _), \
            aiohttp.ClientSession() as http:
        evil = {"Host": "evil.example:8081"}
        async with http.post(url + "/api/schedule/batch", data=BATCH,
                             headers={**evil, "Content-Type": "application/json"}) as resp:
            assert resp.status == 421
            body = await resp.json()
            assert body["field"] == "Host" and "TASKMASTER_ALLOWED_HOSTS" in body["error"]
        for path in ("/api/tasks", "/api/stats", "/api/workers", "/api/logs/stream",
                     "/metrics"):
            async with http.get(url + path, headers=evil) as resp:
                assert resp.status == 421, path
        async with http.get(url + "/healthz", headers=evil) as resp:
            assert resp.status == 200  # probes answer by any name: they tell nothing
        assert await count_rows(database_url) == 0
        # the names the stack serves by default
        port = url.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", "app.localhost"):
            async with http.get(url + "/api/stats", headers={"Host": host}) as resp:
                assert resp.status == 200, host


async def test_the_allow_lists_are_settings(database_url: str) -> None:
    settings = fast_settings(allowed_hosts="tasks.example.org",
                             allowed_origins="http://tasks.example.org:8888")
    async with serve_scheduler(settings, database_url) as (url, _):
        status, _ = await post(url + "/api/schedule/batch", BATCH, {
            "Content-Type": "application/json", "Host": "tasks.example.org",
            "Origin": "http://tasks.example.org:8888", "Sec-Fetch-Site": "same-site"})
        assert status == 201
        # the page's own origin (same origin) passes without any setting
        port = url.rsplit(":", 1)[1]
        status, _ = await post(url + "/api/schedule/batch", BATCH, {
            "Content-Type": "application/json; charset=utf-8",
            "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"})
        assert status == 201
        status, _ = await post(url + "/api/schedule/batch", BATCH, {
            "Content-Type": "application/json", "Host": "other.example.org"})
        assert status == 421
        assert await count_rows(database_url) == 10


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_the_guides_curl_tour_works_verbatim(database_url: str) -> None:
    async with serve_scheduler(fast_settings(), database_url) as (url, _):
        base = url.replace("127.0.0.1", "localhost")
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-X", "POST", base + "/api/schedule/batch",
            "-H", "Content-Type: application/json",
            "-d", '{\n    "command": "demo-job",\n    "count": 50,\n    "delay_seconds": 0\n  }',
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert json.loads(out)["created"] == 50
        for path in ("/api/stats", "/api/tasks", "/api/workers"):
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sS", "-w", "\n%{http_code}", base + path, stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            assert out.decode().rsplit("\n", 1)[1] == "200", path
        # a bodiless POST, as curl -X POST sends it, is not refused for its missing type
        task = (await _first_task(url))["id"]
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-w", "\n%{http_code}", "-X", "POST",
            f"{base}/api/tasks/{task}/cancel", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out.decode().rsplit("\n", 1)[1] == "200"
        assert await count_rows(database_url) == 50


async def _first_task(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "/api/tasks?limit=1") as resp:
        return dict((await resp.json())[0])


def test_host_names_and_types() -> None:
    assert [host_name(h) for h in ("LocalHost:8081", "[::1]:80", "::1", "a.b.", "x")] == [
        "localhost", "::1", "::1", "a.b", "x"]
    policy = BrowserPolicy()
    assert policy.host_ok("10.1.2.3:8081") and policy.host_ok("[fe80::1]")
    assert not policy.host_ok("127.0.0.1.nip.io") and not policy.host_ok("")
    # names no outside party can own: compose and Kubernetes service names
    for name in ("scheduler:8081", "scheduler.tasks.svc.cluster.local", "nas.home.arpa",
                 "api.internal", "LOCALHOST"):
        assert policy.host_ok(name), name
    assert not policy.host_ok("scheduler.tasks.svc") and not policy.host_ok("localhost.evil.io")
    assert BrowserPolicy.parse("*").host_ok("anything.example")
    assert is_json("application/json; charset=utf-8") and is_json("application/problem+json")
    assert not is_json("text/plain") and not is_json("") and not is_json("text/json+x")
