"""Structured logs: one JSON object per line, with the request id and task/worker ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from taskmaster.cluster.local import free_port
from taskmaster.logs import JsonFormatter
from taskmaster.scheduler.app import STORE
from tests.helpers import fast_settings, run_workers, serve_coordinator, serve_scheduler


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above, as the CLI's --log-format json writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root, access = logging.getLogger(), logging.getLogger("taskmaster.access")
    levels = root.level, access.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    access.setLevel(logging.NOTSET)  # as configure_logging(fmt="json") leaves it
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        access.setLevel(levels[1])


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    """Every line as a JSON object (failing on any line that is not one)."""
    parsed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


async def test_each_request_has_an_id_in_and_out_and_in_its_log_lines(
        database_url: str, json_log: io.StringIO) -> None:
    async with serve_scheduler(fast_settings(), database_url) as (url, app), \
            aiohttp.ClientSession() as http:
        async with http.get(url + "/api/stats", headers={"X-Request-ID": "req-42"}) as resp:
            assert resp.headers["X-Request-ID"] == "req-42"
        async with http.get(url + "/api/stats") as resp:
            made = resp.headers["X-Request-ID"]
            assert re.fullmatch(r"[0-9a-f]{32}", made)
        async with http.get(url + "/api/stats", headers={"X-Request-ID": "no spaces, <b>"}) as r:
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"])
        async with http.post(url + "/api/schedule", json={"command": "nope"},
                             headers={"X-Request-ID": "bad-1"}) as resp:
            assert resp.status == 422 and resp.headers["X-Request-ID"] == "bad-1"
        # a line logged deep inside a request carries the request's id too
        await app[STORE].pool.close()
        async with http.get(url + "/api/tasks", headers={"X-Request-ID": "outage-7"}) as resp:
            assert resp.status == 503 and resp.headers["X-Request-ID"] == "outage-7"

    records = lines(json_log)
    access = {r["request_id"]: r for r in records if r["logger"] == "taskmaster.access"}
    hit = access["req-42"]
    assert (hit["method"], hit["path"], hit["route"], hit["status"]) == (
        "GET", "/api/stats", "/api/stats", 200)
    assert hit["remote"] == "127.0.0.1" and hit["duration_ms"] >= 0 and hit["level"] == "info"
    assert made in access
    assert access["bad-1"]["status"] == 422
    outage = [r for r in records if r.get("request_id") == "outage-7"]
    assert any(r["logger"] == "taskmaster.scheduler.app" and r["level"] == "warning"
               and "database unavailable" in r["message"] for r in outage), outage
    assert access["outage-7"]["status"] == 503


async def test_worker_and_task_ids_are_fields(database_url: str, json_log: io.StringIO) -> None:
    settings = fast_settings()
    async with serve_coordinator(settings, database_url) as server, \
            run_workers(settings, server.port, 1, prefix="logged") as pool:
        worker_id = pool.workers[0].worker_id
    records = lines(json_log)
    online = [r for r in records if r["logger"] == "taskmaster.coordinator.service"
              and "online" in r["message"]]
    assert online and online[0]["worker_id"] == worker_id

    record = logging.LogRecord("taskmaster.worker.runtime", logging.WARNING, __file__, 1,
                               "refused %s", ("x",), None)
    record.task_id, record.attempt, record.worker_id = "t-1", 2, "w-1"
    line = json.loads(JsonFormatter().format(record))
    assert {k: line[k] for k in ("task_id", "attempt", "worker_id", "level", "message")} == {
        "task_id": "t-1", "attempt": 2, "worker_id": "w-1", "level": "warning",
        "message": "refused x"}


async def test_the_scheduler_command_logs_json_lines(database_url: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "scheduler", "--port", str(port),
        "--database-url", database_url, "--log-format", "json",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the scheduler did not get ready"
                assert proc.returncode is None, "the scheduler exited"
                await asyncio.sleep(0.05)
            async with http.get(f"http://127.0.0.1:{port}/api/stats",
                                headers={"X-Request-ID": "from-the-cli"}) as resp:
                assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        err = await asyncio.wait_for(proc.stderr.read(), 30)
        await asyncio.wait_for(proc.wait(), 30)
    text = err.decode()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records and all(isinstance(r, dict) and {"ts", "level", "logger", "message"} <= set(r)
                           for r in records), text
    assert any("listening" in r["message"] for r in records)
    [stats] = [r for r in records if r.get("request_id") == "from-the-cli"]
    assert (stats["logger"], stats["route"], stats["status"]) == ("taskmaster.access",
                                                                  "/api/stats", 200)


async def test_an_unexpected_error_is_a_json_500_logged_with_its_request_id(
        database_url: str, json_log: io.StringIO) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async with serve_scheduler(fast_settings(), database_url,
                               lambda app: app.router.add_get("/boom", boom)) as (url, _), \
            aiohttp.ClientSession() as http, \
            http.get(url + "/boom", headers={"X-Request-ID": "b-1"}) as resp:
        assert resp.status == 500
        assert resp.headers["X-Request-ID"] == "b-1"
        body = await resp.json()
    assert "b-1" in body["error"] and body["field"] is None
    [logged] = [r for r in lines(json_log) if r["logger"] == "taskmaster.scheduler.ops"]
    assert logged["request_id"] == "b-1" and "RuntimeError: a bug" in logged["exception"]

