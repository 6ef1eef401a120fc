"""The compose stack behind the same interface: shells out to docker compose.

It runs the demo guide's commands (`up --scale worker=N -d`, `docker stop <container>`,
`kill coordinator`, `start coordinator`, `down -v`; taskmaster.pool writes them) with compose
v2 (`docker compose`) or Debian's docker-compose v1, whichever is here (`detect_compose`),
and reads the members with `ps --all -q` and `docker inspect`, which both understand.
tests/compose runs it on a real Docker engine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from taskmaster.autoscale import Policy
from taskmaster.cluster.autoscaler import AutoscaleLoop, Record, Stats
from taskmaster.cluster.base import ROLES, MemberInfo, UnknownWorker
from taskmaster.pool import compose_argv, validate_action

log = logging.getLogger(__name__)

V2 = ("docker", "compose")
V1 = ("docker-compose",)
# `docker compose exec` of the crash ends when the container dies under it: a kill of the
# exec'd process too (128 + SIGKILL) is part of a successful crash
CRASH_EXIT_CODES = (0, 137)


class ComposeError(RuntimeError):
    """A docker command failed."""

    def __init__(self, argv: Sequence[str], code: int, stderr: str) -> None:
        self.argv = list(argv)
        self.code = code
        self.stderr = stderr
        super().__init__(f"`{shlex.join(argv)}` exited with {code}: {stderr.strip()[-2000:]}")


def detect_compose(env: dict[str, str] | None = None) -> tuple[str, ...]:
    """The compose command here: the v2 plugin (`docker compose`), else Debian's
    docker-compose (v1), else `docker compose` (whose absence the first command reports)."""
    try:
        done = subprocess.run([*V2, "version", "--short"], capture_output=True, text=True,
                              env=env, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    # a `docker compose` plugin that reports 1.x runs docker-compose v1 underneath
    if done is not None and done.returncode == 0 and _major(done.stdout) >= 2:
        return V2
    if shutil.which(V1[0], path=(env if env is not None else os.environ).get("PATH")):
        return V1
    return V2


def _major(version: str) -> int:
    head = version.strip().lstrip("v").split(".", 1)[0]
    return int(head) if head.isdigit() else 0


class ComposeCluster:
    """A compose project: start, scale, kill and stop through the docker CLI.

    compose: the compose command (`("docker", "compose")` or `("docker-compose",)`);
    detected on first use when not given. env replaces the environment of every docker
    command (COMPOSE_PROJECT_NAME and the variables compose.yaml reads go there).
    """

    def __init__(self, file: str | Path | None = None, *, project: str | None = None,
                 workers: int = 3, compose: Sequence[str] | None = None,
                 env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 timeout: float = 600.0) -> None:
        self.file = str(file) if file is not None else None
        self.project = project
        self.initial_workers = workers
        self.workers_wanted = workers  # the N of the last `up --scale worker=N`
        self.env = env
        self.cwd = str(cwd) if cwd is not None else None
        self.timeout = timeout
        self._compose = list(compose) if compose is not None else None

    @property
    def compose(self) -> list[str]:
        """The compose command with this project's -f and -p."""
        if self._compose is None:
            self._compose = list(detect_compose(self.env))
            log.info("compose command: %s", " ".join(self._compose))
        base = list(self._compose)
        if self.file:
            base += ["-f", self.file]
        if self.project:
            base += ["-p", self.project]
        return base

    # ---- running docker ----

    def argv(self, action: str, arg: str | int | None = None, *, graceful: bool = False,
             restart: bool = True) -> list[str]:
        """The argv of an action on this project."""
        return compose_argv(action, arg, graceful=graceful, restart=restart,
                            compose=self.compose, workers=self.initial_workers)

    def compose_command(self, action: str, arg: str | int | None = None, *,
                        graceful: bool = False, restart: bool = True) -> str:
        """The shell command of an action on this project."""
        return shlex.join(self.argv(action, arg, graceful=graceful, restart=restart))

    async def run(self, argv: Sequence[str], ok: Sequence[int] = (0,)) -> str:
        """Run a docker command; its stdout, or ComposeError if its exit code is not in ok."""
        code, out, err = await self._exec(argv)
        if code not in ok:
            raise ComposeError(argv, code, err)
        return out

    async def _exec(self, argv: Sequence[str]) -> tuple[int, str, str]:
        log.info("running %s", shlex.join(argv))
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
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    # ---- the interface ----

    async def start(self) -> ComposeCluster:
        """`up --scale worker=N -d`, then until every service is running and healthy."""
        await self.run(self.argv("start"))
        await self.wait_for(lambda ms: _ready(ms, self.initial_workers),
                            f"the stack with {self.initial_workers} workers to be healthy")
        return self

    async def stop(self, grace: float = 10.0, *, volumes: bool = False) -> None:
        """`down` (`down -v` with volumes=True forgets the database). Workers get their
        stop_grace_period from compose.yaml, not grace."""
        await self.run(self.argv("reset" if volumes else "stop"))

    async def scale(self, n: int) -> list[MemberInfo]:
        """`up --scale worker=N -d`: workers past N drain and are removed."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("workers must be an integer >= 0")
        await self.run(self.argv("scale", n))
        self.workers_wanted = n
        return await self.members()

    def autoscaler(self, policy: Policy, stats: Stats, *, concurrency: int = 1,
                   max_workers: int = 32, record: Record | None = None,
                   clock: Callable[[], float] = time.monotonic) -> AutoscaleLoop:
        """The local stack's autoscaler driving this project: the same policy, on the
        figures `stats` reads (e.g. a Client's stats on the scheduler at :8081); each
        resize is an `up --scale worker=N -d` (workers past N get SIGTERM and drain within
        compose.yaml's stop_grace_period). Start it with .start(), stop it with .stop()."""
        return AutoscaleLoop(policy, stats=stats, current=lambda: self.workers_wanted,
                             scale=self.scale, record=record, concurrency=concurrency,
                             max_workers=max_workers, clock=clock)

    async def kill_worker(self, name: str, graceful: bool = False) -> MemberInfo:
        """`docker kill <container>` (SIGKILL), or `docker stop` (SIGTERM, drain) if graceful.

        name: the container's name, or the worker's name in the API (its hostname, the
        short container id)."""
        members = await self.members()
        found = [m for m in members if m["role"] == "worker" and name in (m["name"], m["host"])]
        if not found:
            names = ", ".join(m["name"] for m in members if m["role"] == "worker")
            raise UnknownWorker(f"no worker container {name!r}; workers: {names or 'none'}")
        await self.run(self.argv("kill_worker", found[0]["name"], graceful=graceful))
        return next((m for m in await self.members() if m["name"] == found[0]["name"]),
                    found[0])

    async def coordinator(self, action: str, restart: bool = True,
                          name: str | None = None) -> MemberInfo:
        """kill (a crash the restart policy undoes; `kill coordinator`, a manual stop, if
        restart=False), stop, start or restart the coordinator service; returns when docker
        shows the outcome (restarted and healthy, or exited)."""
        validate_action(action)
        service = name or "coordinator"  # compose.yaml: coordinator, coordinator-2
        before = _coordinator(await self.members(), service)
        crash = action == "kill" and restart
        argv = [service if a == "coordinator" else a
                for a in self.argv("coordinator", action, restart=restart)]
        await self.run(argv, ok=CRASH_EXIT_CODES if crash else (0,))

        def outcome(members: list[MemberInfo]) -> MemberInfo | None:
            m = _coordinator(members, service)
            if m is None:
                return None
            if action == "stop" or (action == "kill" and not restart):
                return m if m["state"].startswith("exited") else None
            if crash and before is not None and m["restarts"] <= before["restarts"]:
                return None
            return m if m["state"] == "running (healthy)" else None

        done: MemberInfo = await self.wait_for(outcome, f"the coordinator after {action}")
        return done

    async def members(self) -> list[MemberInfo]:
        """Every container of the project (`ps --all -q`, then `docker inspect`)."""
        ids = (await self.run([*self.compose, "ps", "--all", "-q"])).split()
        if not ids:
            return []
        # a container removed meanwhile makes inspect fail for it alone: keep the others
        _code, out, _err = await self._exec(["docker", "inspect", *ids])
        return parse_inspect(out)

    def status(self) -> list[MemberInfo]:
        """Like members(), blocking."""
        argv = [*self.compose, "ps", "--all", "-q"]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=self.cwd,
                              timeout=self.timeout, check=False)
        if done.returncode != 0:
            raise ComposeError(argv, done.returncode, done.stderr)
        ids = done.stdout.split()
        if not ids:
            return []
        inspect = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                 env=self.env, timeout=self.timeout, check=False)
        return parse_inspect(inspect.stdout)

    async def wait_for(self, condition: Callable[[list[MemberInfo]], Any], what: str,
                       timeout: float | None = None) -> Any:
        """Poll the members until condition(members) is truthy; its value, or ComposeError
        naming what was awaited and the last members seen."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            members = await self.members()
            value = condition(members)
            if value:
                return value
            if time.monotonic() > deadline:
                seen = ", ".join(f"{m['name']}: {m['state']}" for m in members)
                raise ComposeError([*self.compose, "ps"], -1,
                                   f"timed out waiting for {what}; containers: {seen or 'none'}")
            await asyncio.sleep(0.5)


def _coordinator(members: list[MemberInfo], service: str = "coordinator") -> MemberInfo | None:
    """The container of this coordinator service (project_service_1 or project-service-1)."""
    named = re.compile(rf"[_-]{re.escape(service)}[_-]\d+$")
    return next((m for m in members if m["role"] == "coordinator" and named.search(m["name"])),
                None)


def _ready(members: list[MemberInfo], workers: int) -> bool:
    """Every service running (and healthy where it has a healthcheck), `workers` workers."""
    running = [m for m in members if m["state"] in ("running", "running (healthy)")]
    roles = {m["role"] for m in running if m["role"] != "worker"}
    return (roles >= {"postgres", "coordinator", "scheduler"}
            and sum(m["role"] == "worker" for m in running) == workers)


# one-shot services of compose.yaml that prepare the stack (its database passwords)
SETUP_SERVICES = frozenset({"secrets"})


def parse_inspect(text: str) -> list[MemberInfo]:
    """Members from `docker inspect` of a project's containers, in role order."""
    try:
        rows: list[dict[str, Any]] = json.loads(text) if text.strip() else []
    except ValueError:
        return []
    members: list[tuple[tuple[int, int, int], MemberInfo]] = []
    for c in rows:
        labels = (c.get("Config") or {}).get("Labels") or {}
        service = str(labels.get("com.docker.compose.service", ""))
        if service in SETUP_SERVICES:
            continue  # it ran once, before the stack; not a member
        # coordinator-2, scheduler-2: more of the same role
        base = re.sub(r"-\d+$", "", service)
        role = base if base in ROLES else service
        state = c.get("State") or {}
        status = str(state.get("Status", ""))
        if status == "exited":
            status = f"exited({state.get('ExitCode')})"
        # the health of a container that is not running is its last probe's: not news
        health = (state.get("Health") or {}).get("Status") if status == "running" else None
        number = str(labels.get("com.docker.compose.container-number", "0"))
        order = (ROLES.index(role) if role in ROLES else len(ROLES), len(service),
                 int(number) if number.isdigit() else 0)
        members.append((order, {
            "name": str(c.get("Name", "")).lstrip("/"), "role": role,
            "pid": int(state.get("Pid") or 0) or None,
            # the container's hostname, its short id: what a worker reports as its name
            "host": str((c.get("Config") or {}).get("Hostname", "")),
            "state": f"{status} ({health})" if health else status,
            "restarts": int(c.get("RestartCount") or 0),
        }))
    return [m for _, m in sorted(members, key=lambda pair: pair[0])]
