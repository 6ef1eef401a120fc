"""Auto-scaling on the local stack, with real processes: `taskmaster up --workers 1
--autoscale 1:6` under `taskmaster load --rate 16 --seconds 25` grows the pool to at least
4 online workers while the load runs and drains it back to 1 after it stops; every task is
completed once and nothing is reassigned by scaling down (checked in PostgreSQL). Then the
pool API's /api/pool/autoscale: guarded, checked, changed live.

The down cool-down is shortened (TASKMASTER_AUTOSCALE_COOLDOWN_DOWN=5) to keep the test
short; the README quotes the same run with the defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from taskmaster.tokens import POOL_TOKEN_HEADER, find_pool_token
from tests.e2e.up import run_cli, stack_env
from tests.helpers import interrupt, wait_for

pytestmark = pytest.mark.slow
TOKEN = "autoscale-secret"
LOAD = ["load", "--rate", "16", "--seconds", "25", "--command", "sleep",
        "--payload", '{"seconds": 0.25}']


async def call(method: str, url: str, body: Any = None, token: str | None = TOKEN
               ) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if pool_token := find_pool_token(url):  # a program of the stack's user finds it
        headers[POOL_TOKEN_HEADER] = pool_token
    async with aiohttp.ClientSession() as http, http.request(
            method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_the_pool_follows_the_load_and_drains_back(database_url: str,
                                                         tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = stack_env(home, database_url)
    env.update({"TASKMASTER_AUTOSCALE_COOLDOWN_DOWN": "5", "TASKMASTER_API_TOKEN": TOKEN})
    log = (tmp_path / "up.log").open("wb")
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "up", "--workers", "1", "--autoscale", "1:6",
        "--scheduler-port", "0", "--coordinator-port", "0", env=env, stdout=log,
        stderr=asyncio.subprocess.STDOUT)
    try:
        def ready() -> dict[str, Any] | None:
            assert up.returncode is None, (tmp_path / "up.log").read_text()
            with contextlib.suppress(OSError, ValueError):
                return dict(json.loads((home / "stack.json").read_text()))
            return None

        info = await wait_for(ready, 30, message="`taskmaster up` to write its stack file")
        url = info["url"]

        async def stats() -> dict[str, Any]:
            status, body = await call("GET", url + "/api/stats")
            assert status == 200, body
            return dict(body)

        await wait_for(lambda: _online_is(stats(), 1), 20, message="1 worker online")

        # the load, as another terminal runs it; the pool is watched meanwhile
        load = asyncio.create_task(run_cli(env, *LOAD))
        most = 0
        while not load.done():
            most = max(most, int((await stats())["workers_online"]))
            await asyncio.sleep(0.2)
        _, out = load.result()
        assert "done: created 400 sleep tasks" in out, out
        assert most >= 4, f"at most {most} workers online while the load ran"

        stopped = time.monotonic()

        async def back_to_one() -> dict[str, Any] | None:
            pool = json.loads((home / "stack.json").read_text())
            running = [m for m in pool["members"]
                       if m["role"] == "worker" and m["state"] == "running"]
            return pool if len(running) == 1 and await _online_is(stats(), 1) else None

        pool = await wait_for(back_to_one, 90, interval=0.2,
                              message="the pool back to 1 worker after the load")
        back_after = time.monotonic() - stopped
        # the workers that left drained and exited by themselves (SIGTERM, exit 0)
        gone = [m for m in pool["members"] if m["role"] == "worker" and m["state"] != "running"]
        assert gone and {m["state"] for m in gone} == {"exited(0)"}, gone
        print(f"\npeak {most} workers online; back to 1 {back_after:.1f}s after the load")

        conn = await asyncpg.connect(database_url)
        try:
            tasks = await conn.fetch("SELECT status, attempt FROM tasks")
            assert len(tasks) == 400
            assert {(r["status"], r["attempt"]) for r in tasks} == {("completed", 1)}
            assert await conn.fetchval(
                "SELECT count(*) FROM (SELECT task_id FROM events WHERE event = 'task_completed'"
                " GROUP BY task_id HAVING count(*) = 1) x") == 400
            assert await conn.fetchval(
                "SELECT count(*) FROM events WHERE event = 'task_reassigned'") == 0
            scaled = [json.loads(r["data"]) if isinstance(r["data"], str) else r["data"]
                      for r in await conn.fetch(
                          "SELECT data::text AS data FROM events WHERE event = 'pool_scaled' "
                          "ORDER BY id")]
        finally:
            await conn.close()
        ups = [d for d in scaled if d["to"] > d["from"]]
        downs = [d for d in scaled if d["to"] < d["from"]]
        assert ups and downs and downs[-1]["to"] == 1, scaled
        assert all(d["reason"] for d in scaled), scaled

        await _the_api_is_guarded_and_checked(url, env)
    finally:
        await interrupt(up)
        log.close()


async def _the_api_is_guarded_and_checked(url: str, env: dict[str, str]) -> None:
    status, body = await call("GET", url + "/api/pool/autoscale")
    assert status == 200 and body["enabled"] and (body["min"], body["max"]) == (1, 6)
    assert body["last_change"]["to"] == 1
    status, body = await call("PUT", url + "/api/pool/autoscale", {"enabled": False}, token=None)
    assert status == 401 and body["field"] == "Authorization"
    for bad, field in (({"max": 0}, "max"), ({"target": "soon"}, "target"),
                       ({"min": 5, "max": 2}, "min"), ({"cooldown": 1}, "cooldown")):
        status, body = await call("PUT", url + "/api/pool/autoscale", bad)
        assert status == 422 and body["field"] == field, body
    status, body = await call("GET", url + "/api/pool/autoscale")
    assert body["enabled"] and (body["min"], body["max"], body["target_text"]) == (1, 6, "wait=2")
    # changed live from another terminal
    _, out = await run_cli(env, "autoscale", "2:3", "--target", "backlog=1")
    assert "autoscale on: 2..3 workers, target backlog=1" in out, out
    await wait_for(lambda: _online_is(_stats(url), 2), 20, message="the new minimum of 2")
    _, out = await run_cli(env, "autoscale", "off")
    assert "autoscale off" in out


async def _stats(url: str) -> dict[str, Any]:
    return dict((await call("GET", url + "/api/stats"))[1])


async def _online_is(stats: Any, n: int) -> bool:
    return int((await stats)["workers_online"]) == n
