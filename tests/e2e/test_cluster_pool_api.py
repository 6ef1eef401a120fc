"""The scheduler's /api/pool: forwarded to the stack's supervisor, refused unless enabled,
answered with the docker compose command where no supervisor exists."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from taskmaster.client import ApiError, Client
from taskmaster.cluster.local import LocalCluster
from taskmaster.config import Settings
from taskmaster.pool import CRASH_SNIPPET
from taskmaster.store import Store
from taskmaster.tokens import POOL_TOKEN_HEADER, find_pool_token, token_path
from tests.helpers import serve_scheduler, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "pool-secret"


async def call(method: str, url: str, body: Any = None, token: str | None = TOKEN,
               raw: bytes | None = None, pool_token: str | None = None) -> tuple[int, Any]:
    """One HTTP request; (status, decoded JSON). The pool token is the one the stack left
    for this user, unless given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    pool_token = find_pool_token(url) if pool_token is None else pool_token
    if pool_token:
        headers[POOL_TOKEN_HEADER] = pool_token
    if raw is not None:
        headers["Content-Type"] = "application/json"
    async with aiohttp.ClientSession() as http, http.request(
            method, url, json=body if raw is None else None, data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def cluster(database_url: str, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalCluster]:
    """A local stack with an API token; its scheduler's pool API is on (the default), with
    a pool token it generated (left under the test's own XDG_CONFIG_HOME)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    settings = Settings(database_url=database_url, home=tmp_path / "home", metrics_port=0,
                        api_token=TOKEN, drain_grace=10.0, heartbeat_interval=0.5)
    stack = LocalCluster(settings, workers=2, scheduler_port=0, coordinator_port=0, extra_env={
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop(grace=5.0)


async def online(url: str) -> set[str]:
    _, workers = await call("GET", url + "/api/workers")
    return {w["name"] for w in workers if w["status"] == "online"}


async def test_pool_endpoints_drive_the_local_stack(cluster: LocalCluster) -> None:
    url = cluster.url
    status, body = await call("POST", url + "/api/pool/scale", {"workers": 3}, token=None)
    assert status == 401 and body["field"] == "Authorization"
    # the supervisor's own control API needs the pool token too
    status, _ = await call("GET", cluster.control_url + "/api/pool", token=None, pool_token="")
    assert status == 401
    # and a web page cannot reach it through a browser, token or not
    async with aiohttp.ClientSession() as http, http.post(
            cluster.control_url + "/api/pool/scale", data='{"workers": 0}',
            headers={"Origin": "http://evil.example", "Content-Type": "text/plain",
                     "Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 403 and (await resp.json())["field"] == "Origin"

    status, pool = await call("GET", url + "/api/pool")
    assert status == 200 and pool["manager"] == "local" and pool["workers"] == 2

    status, body = await call("POST", url + "/api/pool/scale", {"workers": 3})
    assert status == 200 and body["workers"] == 3
    await wait_for(lambda: _equals(online(url), {"worker-1", "worker-2", "worker-3"}), 20,
                   message="three workers online")

    # the client the notebook panels use fits the endpoints
    async with Client(url, token=TOKEN) as client:
        killed = (await client.kill_worker("worker-3"))["member"]
        assert killed["state"] == "exited(-9)"
        drained = (await client.kill_worker("worker-2", graceful=True))["member"]
        assert drained["state"] == "exited(0)"
        await wait_for(lambda: _equals(online(url), {"worker-1"}), 20,
                       message="only worker-1 online")

        old_pid = (await client.pool())["members"][0]["pid"]
        crashed = (await client.coordinator("kill"))["member"]
        assert crashed["state"] == "exited(-9)"

        async def restarted() -> bool:
            coordinator = (await client.pool())["members"][0]
            return coordinator["state"] == "running" and coordinator["pid"] != old_pid

        await wait_for(restarted, 20, message="the supervisor to restart the coordinator")

        with pytest.raises(ApiError) as info:
            await client.kill_worker("worker-99")
        assert info.value.status == 404 and info.value.field == "name"

    for body, raw in (({"workers": 33}, None), ({"workers": "3"}, None), ({"workers": True}, None),
                      ({}, None), (None, b"{not json")):
        status, error = await call("POST", url + "/api/pool/scale", body, raw=raw)
        assert status in (400, 422), (body, raw, status)
        assert error["field"] in ("workers", "body")
    status, error = await call("POST", url + "/api/pool/scale", {"workers": 33})
    assert "TASKMASTER_MAX_WORKERS" in error["error"]
    status, error = await call("POST", url + "/api/pool/coordinator/explode")
    assert status == 422 and error["field"] == "action"
    status, error = await call("POST", url + "/api/pool/workers/worker-1/kill",
                               {"graceful": "yes"})
    assert status == 422 and error["field"] == "graceful"
    assert await online(url) == {"worker-1"}, "a refused request changed something"

    # the Python object is a pool the panels can drive too
    await cluster.scale(2)
    await wait_for(lambda: _equals(online(url), {"worker-1", "worker-2"}), 20,
                   message="a killed worker to come back under its name")


async def _equals(names: Any, expected: set[str]) -> bool:
    return await names == expected


async def test_pool_api_is_refused_unless_enabled(database_url: str) -> None:
    async with serve_scheduler(Settings(metrics_port=0), database_url) as (url, _app):
        for method, path in (("GET", "/api/pool"), ("POST", "/api/pool/scale"),
                             ("POST", "/api/pool/workers/w1/kill"),
                             ("POST", "/api/pool/coordinator/kill")):
            status, body = await call(method, url + path, {"workers": 1}, token=None)
            assert status == 403, (method, path)
            assert "TASKMASTER_ENABLE_POOL_API" in body["error"]


async def test_local_stack_can_refuse_its_pool_api(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, home=tmp_path, metrics_port=0)
    async with LocalCluster(settings, workers=0, scheduler_port=0, coordinator_port=0,
                            pool_api=False) as stack:
        status, body = await call("POST", stack.url + "/api/pool/scale", {"workers": 1})
        assert status == 403 and "TASKMASTER_ENABLE_POOL_API" in body["error"]
        assert stack.workers() == []


async def test_without_a_pool_manager_the_answer_is_the_compose_command(
    database_url: str, store: Store
) -> None:
    await store.upsert_worker(worker_id="6f1c", name="3f2a1b9c0d12", host="3f2a1b9c0d12",
                              pid=7, capacity=1, commands=["sleep"])
    settings = Settings(enable_pool_api=True, metrics_port=0)
    async with serve_scheduler(settings, database_url) as (url, _app):
        expected = [
            ("GET", "/api/pool", None, "docker compose ps --all"),
            ("POST", "/api/pool/scale", {"workers": 5}, "docker compose up --scale worker=5 -d"),
            ("POST", "/api/pool/workers/3f2a1b9c0d12/kill", {"graceful": True},
             "docker stop 3f2a1b9c0d12"),
            ("POST", "/api/pool/workers/3f2a1b9c0d12/kill", None, "docker kill 3f2a1b9c0d12"),
            ("POST", "/api/pool/coordinator/start", None, "docker compose start coordinator"),
            ("POST", "/api/pool/coordinator/kill", {"restart": False},
             "docker compose kill coordinator"),
            ("POST", "/api/pool/coordinator/kill", None,
             f"docker compose exec -T coordinator python -c '{CRASH_SNIPPET}'"),
        ]
        for method, path, body, command in expected:
            status, answer = await call(method, url + path, body, token=None)
            assert status == 501, (path, answer)
            assert answer["command"] == command
            assert "TASKMASTER_POOL_URL" in answer["error"]
        # bad input is still a 4xx, not a command
        status, answer = await call("POST", url + "/api/pool/scale", {"workers": -1}, token=None)
        assert status == 422 and answer["field"] == "workers"
        status, answer = await call("POST", url + "/api/pool/workers/nobody/kill", token=None)
        assert status == 404 and answer["field"] == "name"


async def test_an_unreachable_pool_manager_is_a_502(database_url: str) -> None:
    settings = Settings(enable_pool_api=True, pool_url="http://127.0.0.1:9", metrics_port=0)
    async with serve_scheduler(settings, database_url) as (url, _app):
        status, answer = await call("POST", url + "/api/pool/scale", {"workers": 1}, token=None)
        assert status == 502
        assert "127.0.0.1:9" in answer["error"]


async def test_the_pool_api_needs_the_token_the_stack_left_for_its_user(
        cluster: LocalCluster, tmp_path: Path) -> None:
    url, control = cluster.url, cluster.control_url
    token = cluster.settings.pool_token
    assert len(token) >= 40
    # an owner-only file, found by every name of this machine the stack answers on
    for address in (url, url.replace("127.0.0.1", "localhost"), control):
        path = token_path(address)
        assert path.is_relative_to(tmp_path / "config")
        assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        assert find_pool_token(address) == token
    # the API token alone (what a page could hold, or guess: none by default) is not enough
    for path, body in (("/api/pool/scale", {"workers": 0}), ("/api/reset", {}),
                       ("/api/pool/workers/worker-1/kill", {}),
                       ("/api/pool/coordinator/kill", {})):
        for wrong in ("", "x" * len(token), token[:-1]):
            status, answer = await call("POST", url + path, body, pool_token=wrong)
            assert (status, answer["field"]) == (401, POOL_TOKEN_HEADER), (path, wrong, status)
        status, answer = await call("POST", control + path.replace("/api/reset", "/api/pool"),
                                    body, pool_token="")
        assert status in (401, 405), (path, status)
    status, answer = await call("GET", url + "/api/pool", pool_token="")
    assert status == 401 and "pool-tokens" in answer["error"]
    # a page holding every token is still refused: it cannot hide its Origin
    async with aiohttp.ClientSession() as http, http.post(
            url + "/api/pool/scale", json={"workers": 0},
            headers={"Origin": "http://evil.example", "Authorization": f"Bearer {TOKEN}",
                     POOL_TOKEN_HEADER: token}) as resp:
        assert resp.status == 403
    assert len(cluster.workers()) == 2, "a refused request changed the pool"
    # the scheduler forwards with the supervisor's secret, not the caller's headers
    assert cluster.settings.control_token not in (token, TOKEN)
    status, pool = await call("GET", url + "/api/pool")
    assert status == 200 and pool["workers"] == 2
    # the CLI, from another folder, finds the stack and its token by the scheduler's address
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TASKMASTER_URL": url,
           "TASKMASTER_API_TOKEN": TOKEN, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "ps", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and b"worker-2" in out, out.decode()
    # the processes got only the secrets their role needs
    for role, wanted, unwanted in (
            ("worker", set(), {"TASKMASTER_DATABASE_URL", "TASKMASTER_API_TOKEN",
                               "TASKMASTER_POOL_TOKEN", "TASKMASTER_CONTROL_TOKEN"}),
            ("coordinator", {"TASKMASTER_DATABASE_URL"}, {"TASKMASTER_API_TOKEN",
                                                          "TASKMASTER_POOL_TOKEN"}),
            ("scheduler", {"TASKMASTER_DATABASE_URL", "TASKMASTER_API_TOKEN",
                           "TASKMASTER_POOL_TOKEN", "TASKMASTER_CONTROL_TOKEN"}, set())):
        member = next(m for m in cluster.members.values() if m.role == role)
        assert member.pid is not None
        names = {line.split(b"=", 1)[0].decode()
                 for line in Path(f"/proc/{member.pid}/environ").read_bytes().split(b"\0") if line}
        assert wanted <= names and not names & unwanted, (role, names & unwanted)
        cmdline = Path(f"/proc/{member.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline and TOKEN.encode() not in cmdline
    await cluster.stop(grace=2.0)
    assert not token_path(url).exists(), "the stack left its token behind"


async def test_a_stack_may_opt_out_of_the_pool_token(database_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    settings = Settings(database_url=database_url, home=tmp_path, metrics_port=0,
                        no_pool_token=True)
    async with LocalCluster(settings, workers=0, scheduler_port=0, coordinator_port=0) as stack:
        assert not token_path(stack.url).exists()
        status, pool = await call("GET", stack.url + "/api/pool", token=None)
        assert status == 200 and pool["workers"] == 0
        # the control API is still reached by the scheduler with the supervisor's secret only
        assert stack.settings.control_token


async def test_every_pool_path_needs_the_pool_token_even_one_added_later(
        database_url: str) -> None:
    settings = Settings(enable_pool_api=True, metrics_port=0, pool_token="p" * 43)

    def later(app: web.Application) -> None:  # a pool route added by another module
        async def handler(_request: web.Request) -> web.Response:
            return web.json_response({"done": True})
        app.router.add_post("/api/pool/something-new", handler)

    async with serve_scheduler(settings, database_url, routes=later) as (url, _app):
        for path in ("/api/pool/something-new", "/api/pool/scale", "/api/reset", "/api/pool"):
            status, answer = await call("POST" if path != "/api/pool" else "GET", url + path,
                                        {"workers": 1} if path.endswith("scale") else {},
                                        token=None, pool_token="")
            assert (status, answer["field"]) == (401, POOL_TOKEN_HEADER), path
        status, answer = await call("POST", url + "/api/pool/something-new", {}, token=None,
                                    pool_token="p" * 43)
        assert status == 200 and answer == {"done": True}
        # and the client sends it for such a path by itself
        async with Client(url, pool_token="p" * 43) as client:
            assert await client._json("POST", "/api/pool/something-new", {}) == {"done": True}
