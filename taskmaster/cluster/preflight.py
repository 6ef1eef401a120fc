"""One stack per address: a LocalCluster claims its home and checks its ports before it
starts anything.

A second `taskmaster up` (or `demo`) beside a running one must neither share its ports (a
scheduler restarting forever on EADDRINUSE, a second coordinator taking half of the
workers) nor its home (its embedded database, its stack file). It is refused at once,
told which stack is there, how to reach it, and how to start a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import IO, Any

import aiohttp

from taskmaster.cluster.base import pid_alive
from taskmaster.tokens import POOL_TOKEN_HEADER, find_pool_token

try:  # POSIX; elsewhere the stack file's pid is the only guard
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "stack.lock"
PROBE_TIMEOUT = 1.5  # seconds to ask whoever listens on a taken port who it is


class StackConflict(RuntimeError):
    """Another stack (or another program) holds what this stack needs; the message says
    which, how to reach it, and how to start a second stack beside it."""


class HomeLock:
    """An exclusive lock on a stack's home, held while the stack runs (the operating system
    drops it when the process dies, however it dies)."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        """Let the next stack have the home."""
        if self._file is not None:
            handle, self._file = self._file, None
            handle.close()  # closing drops the lock


def port_taken(host: str, port: int) -> bool:
    """True when something listens on host:port (a bind as the components do fails)."""
    with socket.socket() as s:
        # as the components bind: a port held only by closing connections is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port_near(host: str, port: int, avoid: set[int]) -> int:
    """The first free port from port + 10 on (a port to suggest for a second stack)."""
    for candidate in range(port + 10, min(port + 500, 65535)):
        if candidate not in avoid and not port_taken(host, candidate):
            return candidate
    return 0


def read_stack_file(path: Path) -> dict[str, Any] | None:
    """The stack file's contents, or None when missing or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else None
    return None


async def who_listens(port: int, token: str = "") -> dict[str, Any] | None:
    """What answers HTTP on 127.0.0.1:port, if it is a TaskMaster scheduler: its pool
    description (home, pid, addresses) when it lets us read it, else {"url": ...}."""
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
            async with http.get(url + "/readyz") as resp:
                body = await resp.json(content_type=None)
                if not isinstance(body, dict) or "status" not in body:
                    return None
            pool_token = find_pool_token(url)  # the other stack's, when it is this user's
            async with http.get(url + "/api/pool", headers={POOL_TOKEN_HEADER: pool_token}
                                if pool_token else None) as resp:
                pool = await resp.json(content_type=None) if resp.status == 200 else {}
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None
    info = dict(pool) if isinstance(pool, dict) else {}
    info.setdefault("scheduler", url)
    return info


def _reach(info: dict[str, Any]) -> str:
    url = info.get("scheduler") or info.get("url") or ""
    where = f" from {info['home']}" if info.get("home") else ""
    pid = f" (process {info['pid']})" if info.get("pid") else ""
    return (f"a TaskMaster stack runs{where}{pid}: API {url}"
            + (f", coordinator {info['coordinator']}" if info.get("coordinator") else "")
            + f". Use it: `taskmaster ps`, `taskmaster scale N`, `taskmaster status` "
            f"(from any folder: they find it at TASKMASTER_URL, default {url or 'its URL'}), "
            "and the notebooks with TASKMASTER_URL set to it")


def second_stack_hint(host: str, scheduler_port: int, coordinator_port: int,
                      home: Path | None) -> str:
    """The command line of a second stack beside the first: other ports, and another home
    when `home` (the one in use) is given."""
    sched = free_port_near(host, scheduler_port or 8081, {coordinator_port})
    coord = free_port_near(host, coordinator_port or 8080, {sched})
    other = f"--home {home.with_name(home.name + '-2')} " if home is not None else ""
    return (f"To run a second stack beside it: `taskmaster up {other}--scheduler-port {sched} "
            f"--coordinator-port {coord}` (`taskmaster demo` takes the same options); or stop "
            "the first one (Ctrl-C in its terminal)")


async def check_home(home: Path, lock: HomeLock, stack_file: Path) -> None:
    """Take the home's lock, or raise StackConflict naming the stack that has it."""
    if lock.acquire():
        return
    info = read_stack_file(stack_file) or {}
    alive = isinstance(info.get("pid"), int) and pid_alive(info["pid"])
    described = _reach(info) if alive else f"process {_lock_owner(lock.path)} holds it"
    raise StackConflict(f"{home} is the home of a running stack: {described}.")


def _lock_owner(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text().strip() or "?"
    return "?"


async def check_ports(ports: dict[str, tuple[str, int]], token: str = "") -> None:
    """Raise StackConflict when a port is taken, saying who has it when it is a stack."""
    taken = {what: hp for what, hp in ports.items() if hp[1] and port_taken(*hp)}
    if not taken:
        return
    what = ", ".join(f"{host}:{port} (the {name}'s)" for name, (host, port) in taken.items())
    scheduler = ports.get("scheduler")
    info = await who_listens(scheduler[1], token) if scheduler and "scheduler" in taken else None
    if info is not None:
        raise StackConflict(f"{what} taken: {_reach(info)}.")
    raise StackConflict(f"{what} taken by another program (`ss -ltnp` shows which); "
                        "choose other ports.")


async def claim(home: Path, lock: HomeLock, stack_file: Path,
                ports: dict[str, tuple[str, int]], token: str = "") -> None:
    """Everything a new stack needs, checked before anything starts: its home, its ports.
    StackConflict says what is in the way, how to reach it and how to start beside it."""
    home_taken = False
    try:
        try:
            await check_home(home, lock, stack_file)
        except StackConflict:
            home_taken = True
            raise
        try:
            await check_ports(ports, token)
        except StackConflict:
            lock.release()
            raise
    except StackConflict as exc:
        sched = ports.get("scheduler", ("127.0.0.1", 0))
        coord = ports.get("coordinator", ("127.0.0.1", 0))
        hint = await asyncio.to_thread(second_stack_hint, sched[0], sched[1], coord[1],
                                       home if home_taken else None)
        raise StackConflict(f"{exc}\n{hint}.") from None
