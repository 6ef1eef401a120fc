"""`taskmaster up` as another terminal runs it: the Stack the e2e tests drive (its process,
environment, home and stack file) and the `taskmaster` commands run beside it. The
`stack` fixture (conftest.py) starts one."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from taskmaster.tokens import POOL_TOKEN_HEADER, find_pool_token

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """A `taskmaster up` process and what its stack file says."""

    proc: asyncio.subprocess.Process
    env: dict[str, str]
    home: Path
    info: dict[str, Any]
    database_url: str

    @property
    def url(self) -> str:
        return str(self.info["url"])

    async def cli(self, *args: str, check: bool = True) -> tuple[int, str]:
        """Run `taskmaster ARGS` as another process; (exit code, stdout + stderr)."""
        return await run_cli(self.env, *args, check=check)

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def post(self, path: str, body: Any) -> Any:
        # a program of the stack's user: it finds the pool token `taskmaster up` left for it
        token = find_pool_token(self.url)
        headers = {POOL_TOKEN_HEADER: token} if token else {}
        async with aiohttp.ClientSession() as http, \
                http.post(self.url + path, json=body, headers=headers) as resp:
            assert resp.status in (200, 201), await resp.text()
            return await resp.json()

    async def completed(self) -> int:
        return int((await self.get("/api/stats"))["completed"])

    async def online(self) -> set[str]:
        return {w["name"] for w in await self.get("/api/workers") if w["status"] == "online"}

    async def members(self) -> dict[str, dict[str, Any]]:
        _, out = await self.cli("ps")
        rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
        return {r[0]: {"role": r[1], "pid": r[2], "state": r[4]} for r in rows}


async def run_cli(env: dict[str, str], *args: str, check: bool = True) -> tuple[int, str]:
    """Run `taskmaster ARGS` as another process; (exit code, stdout + stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    if check:
        assert proc.returncode == 0, f"taskmaster {' '.join(args)} failed:\n{text}"
    return proc.returncode or 0, text


def stack_env(home: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    env.update({
        "TASKMASTER_HOME": str(home), "TASKMASTER_DATABASE_URL": database_url,
        "TASKMASTER_METRICS_PORT": "0", "TASKMASTER_DRAIN_GRACE": "10",
        "TASKMASTER_HEARTBEAT_INTERVAL": "0.5", "TASKMASTER_RETRY_BASE": "0.05",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    })
    return env


async def _len_is(names: Any, n: int) -> bool:
    return len(await names) == n
