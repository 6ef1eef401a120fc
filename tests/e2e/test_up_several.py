"""`taskmaster up --coordinators 2 --schedulers 2`: consecutive ports, nothing clashes,
`ps` lists them, a coordinator is crashed by name and its workers move to the other."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.up import run_cli, stack_env
from tests.helpers import interrupt, wait_for


def free_run(n: int) -> int:
    """The first of n consecutive TCP ports that are free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        if first + n > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + n):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise AssertionError(f"no {n} consecutive free ports")


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json() if resp.content_type == "application/json" else await resp.text()


async def test_up_with_two_coordinators_and_two_schedulers(database_url: str,
                                                           tmp_path: Path) -> None:
    sched, coord, metrics = free_run(2), free_run(2), free_run(2)
    env = stack_env(tmp_path / "home", database_url)
    env["TASKMASTER_METRICS_PORT"] = str(metrics)
    log = (tmp_path / "up.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "up", "--workers", "2", "--coordinators", "2",
        "--schedulers", "2", "--scheduler-port", str(sched), "--coordinator-port", str(coord),
        env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
    urls = [f"http://127.0.0.1:{sched}", f"http://127.0.0.1:{sched + 1}"]
    try:
        async def online(url: str) -> list[dict[str, Any]] | None:
            assert proc.returncode is None, (tmp_path / "up.log").read_text()
            with contextlib.suppress(aiohttp.ClientError, OSError, AssertionError):
                rows = [w for w in await get(url + "/api/workers") if w["status"] == "online"]
                return rows if len(rows) == 2 and all(w["coordinator"] for w in rows) else None
            return None

        # both schedulers serve the same API on consecutive ports
        first = await wait_for(lambda: online(urls[0]), 60, message="2 workers online")
        second = await wait_for(lambda: online(urls[1]), 10, message="the second scheduler")
        assert {w["id"] for w in first} == {w["id"] for w in second}

        _, out = await run_cli(env, "ps")
        for name in ("coordinator-1", "coordinator-2", "scheduler-1", "scheduler-2",
                     "worker-1", "worker-2"):
            assert name in out, out
        assert f"127.0.0.1:{coord},127.0.0.1:{coord + 1}" in out  # what the workers dial
        # each coordinator has its own metrics port, consecutive from TASKMASTER_METRICS_PORT
        for port in (metrics, metrics + 1):
            assert "taskmaster_workers_online" in await get(f"http://127.0.0.1:{port}/metrics")

        # crash the coordinator holding a worker, by name: its workers move to the other
        victim = first[0]["coordinator"]
        other = next(n for n in ("coordinator-1", "coordinator-2") if n != victim)
        _, out = await run_cli(env, "coordinator-crash", victim, "--no-restart", "--no-wait")
        assert f"crashing {victim} (SIGKILL)" in out, out

        async def all_on_other() -> bool:
            rows = await online(urls[1])
            return rows is not None and all(w["coordinator"] == other for w in rows)

        await wait_for(all_on_other, 15, message=f"the workers to move to {other}")
        _, out = await run_cli(env, "coordinator-start", victim, "--no-wait")
        assert f"starting {victim}" in out, out
        _, out = await run_cli(env, "coordinator-crash", "coordinator-9", check=False)
        assert "no coordinator named 'coordinator-9'" in out, out
    finally:
        await interrupt(proc)
        log.close()
