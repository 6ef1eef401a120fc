"""The compose stack behind the same interface: shells out to `docker compose`.

It runs the seed's commands (`docker compose up --scale worker=N -d`, `docker stop <container>`,
`docker compose kill coordinator`, `docker compose start coordinator`, `down -v`) and reads
`docker compose ps` for the members table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskmaster.cluster.base import MemberInfo, UnknownWorker
from taskmaster.pool import compose_argv, validate_action

log = logging.getLogger(__name__)


class ComposeError(RuntimeError):
    """A docker command failed."""

    def __init__(self, argv: Sequence[str], code: int, stderr: str) -> None:
        self.argv = list(argv)
        self.code = code
        self.stderr = stderr
        super().__init__(f"`{' '.join(argv)}` exited with {code}: {stderr.strip()[-2000:]}")


class ComposeCluster:
    """A compose project: start, scale, kill and stop through the docker CLI."""

    def __init__(self, file: str | Path | None = None, *, project: str | None = None,
                 workers: int = 3, compose: Sequence[str] = ("docker", "compose"),
                 env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 timeout: float = 600.0) -> None:
        self.file = str(file) if file is not None else None
        self.project = project
        self.initial_workers = workers
        self.env = env
        self.cwd = str(cwd) if cwd is not None else None
        self.timeout = timeout
        self.compose = [*compose]
        if self.file:
            self.compose += ["-f", self.file]
        if self.project:
            self.compose += ["-p", self.project]

    # ---- running docker ----

    def argv(self, action: str, arg: str | int | None = None, *, graceful: bool = False,
             restart: bool = True) -> list[str]:
        """The argv of an action on this project."""
        return compose_argv(action, arg, graceful=graceful, restart=restart,
                            compose=self.compose, workers=self.initial_workers)

    def compose_command(self, action: str, arg: str | int | None = None, *,
                        graceful: bool = False, restart: bool = True) -> str:
        """The shell command of an action on this project."""
        import shlex

        return shlex.join(self.argv(action, arg, graceful=graceful, restart=restart))

    async def run(self, argv: Sequence[str]) -> str:
        """Run a docker command; its stdout, or ComposeError."""
        log.info("running %s", " ".join(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=self.env, cwd=self.cwd)
        except FileNotFoundError:
            raise ComposeError(argv, 127, f"{argv[0]} not found on PATH") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ComposeError(argv, -9, f"timed out after {self.timeout:g}s") from None
        if proc.returncode != 0:
            raise ComposeError(argv, proc.returncode or 0, err.decode(errors="replace"))
        return out.decode(errors="replace")

    # ---- the interface ----

    async def start(self) -> ComposeCluster:
        """`docker compose up --scale worker=N -d --wait`: returns when healthy."""
        await self.run(self.argv("start"))
        return self

    async def stop(self, grace: float = 10.0, *, volumes: bool = False) -> None:
        """`docker compose down` (`down -v` with volumes=True forgets the database)."""
        await self.run(self.argv("reset" if volumes else "stop"))

    async def scale(self, n: int) -> list[MemberInfo]:
        """`docker compose up --scale worker=N -d`."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("workers must be an integer >= 0")
        await self.run(self.argv("scale", n))
        return await self.members()

    async def kill_worker(self, name: str, graceful: bool = False) -> MemberInfo:
        """`docker kill <container>` (SIGKILL), or `docker stop` (SIGTERM, drain) if graceful."""
        members = await self.members()
        found = [m for m in members if m["role"] == "worker" and name in (m["name"], m["host"])]
        if not found:
            names = ", ".join(m["name"] for m in members if m["role"] == "worker")
            raise UnknownWorker(f"no worker container {name!r}; workers: {names or 'none'}")
        await self.run(self.argv("kill_worker", found[0]["name"], graceful=graceful))
        return next((m for m in await self.members() if m["name"] == found[0]["name"]),
                    found[0])

    async def coordinator(self, action: str, restart: bool = True) -> MemberInfo:
        """kill (a crash the restart policy undoes; `docker compose kill` if restart=False),
        stop, start or restart the coordinator service."""
        validate_action(action)
        await self.run(self.argv("coordinator", action, restart=restart))
        members = [m for m in await self.members() if m["role"] == "coordinator"]
        if members:
            return members[0]
        return {"name": "coordinator", "role": "coordinator", "pid": None, "host": "",
                "state": "absent", "restarts": 0}

    async def members(self) -> list[MemberInfo]:
        """Every container of the project, from `docker compose ps --all --format json`."""
        return parse_ps(await self.run([*self.argv("status"), "--format", "json"]))

    def status(self) -> list[MemberInfo]:
        """Like members(), blocking (runs `docker compose ps` synchronously)."""
        argv = [*self.argv("status"), "--format", "json"]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=self.cwd,
                              timeout=self.timeout, check=False)
        if done.returncode != 0:
            raise ComposeError(argv, done.returncode, done.stderr)
        return parse_ps(done.stdout)


def parse_ps(text: str) -> list[MemberInfo]:
    """Members from `docker compose ps --format json`: a JSON array or one object per line."""
    text = text.strip()
    if not text:
        return []
    rows: list[Any]
    if text.startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    members: list[MemberInfo] = []
    for r in rows:
        state = str(r.get("State", ""))
        if r.get("Health"):
            state = f"{state} ({r['Health']})"
        members.append({
            "name": str(r.get("Name", "")), "role": str(r.get("Service", "")), "pid": None,
            # a container's hostname is its short id: what a worker reports as its host
            "host": str(r.get("ID", ""))[:12], "state": state, "restarts": 0,
        })
    return members
