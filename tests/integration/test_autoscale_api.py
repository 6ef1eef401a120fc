"""/api/pool/autoscale on a scheduler without a supervisor: refused unless the pool API is
on, then 501 pointing at `taskmaster up --autoscale`; a body that is not a JSON object is a
400 naming it, before anything else."""

from __future__ import annotations

import aiohttp

from taskmaster.config import Settings
from tests.helpers import serve_scheduler


async def call(method: str, url: str, raw: bytes | None = None) -> tuple[int, dict[str, str]]:
    headers = {"Content-Type": "application/json"} if raw is not None else {}
    async with aiohttp.ClientSession() as http, http.request(method, url, data=raw,
                                                             headers=headers) as resp:
        return resp.status, await resp.json()


async def test_refused_unless_enabled_then_no_manager(database_url: str) -> None:
    async with serve_scheduler(Settings(metrics_port=0), database_url) as (url, _app):
        for method in ("GET", "PUT"):
            status, body = await call(method, url + "/api/pool/autoscale", b'{"enabled": true}')
            assert status == 403 and "TASKMASTER_ENABLE_POOL_API" in body["error"]
    settings = Settings(enable_pool_api=True, metrics_port=0)
    async with serve_scheduler(settings, database_url) as (url, _app):
        status, body = await call("GET", url + "/api/pool/autoscale")
        assert status == 501 and body["command"] == "taskmaster up --autoscale 1:6"
        assert "deploy/kubernetes/autoscaling" in body["error"]
        status, body = await call("PUT", url + "/api/pool/autoscale", b"[1, 2]")
        assert status == 400 and body["field"] == "body"
        status, body = await call("PUT", url + "/api/pool/autoscale", b'{"max": 4}')
        assert status == 501
