"""The one interface over a running stack, and its docker compose equivalents.

Two implementations: `LocalCluster` (local processes, what `taskmaster up` runs) and
`ComposeCluster` (shells out to `docker compose`). Notebook panels, the CLI and the
scheduler's /api/pool endpoints only need what is here.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable

COORDINATOR_ACTIONS = ("kill", "stop", "start", "restart")
ROLES = ("postgres", "coordinator", "scheduler", "worker")

# A crash the compose restart policy sees: `docker kill` counts as a manual stop, which no
# restart policy undoes, so kill the coordinator process from inside its container instead
# (the service runs with `init: true`, so kill(-1) spares only the init process).
CRASH_SNIPPET = "import os, signal; os.kill(-1, signal.SIGKILL)"


class MemberInfo(TypedDict):
    """One row of the members table (JSON-ready)."""

    name: str
    role: str
    pid: int | None
    host: str
    state: str
    restarts: int


class InvalidRequest(ValueError):
    """Bad input to a pool operation: an HTTP status and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field

    def to_json(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": str(self), "field": self.field}


class UnknownWorker(KeyError):
    """No worker of that name in the pool."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown worker"


@runtime_checkable
class Cluster(Protocol):
    """A stack that can be started, scaled, hurt and inspected."""

    async def start(self) -> Any:
        """Start everything; returns when the API is ready."""

    async def stop(self, grace: float = 10.0) -> None:
        """Stop everything (workers drain first)."""

    async def scale(self, n: int) -> list[MemberInfo]:
        """Run exactly n workers; the members afterwards."""

    async def kill_worker(self, name: str, graceful: bool = False) -> MemberInfo:
        """SIGKILL one worker, or SIGTERM it (it drains and leaves) when graceful."""

    async def coordinator(self, action: str, restart: bool = True) -> MemberInfo:
        """kill (a crash: brought back unless restart=False), stop, start or restart."""

    def status(self) -> list[MemberInfo]:
        """Every member: name, role, pid, host, state, restarts."""

    def compose_command(self, action: str, arg: str | int | None = None, *,
                        graceful: bool = False, restart: bool = True) -> str:
        """The docker compose command line doing the same as `action` on a compose stack."""


def validate_workers(value: Any, max_workers: int) -> int:
    """A worker count: an int in 0..max_workers (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(422, "workers must be an integer", "workers")
    if not 0 <= value <= max_workers:
        raise InvalidRequest(
            422, f"workers must be between 0 and {max_workers} (TASKMASTER_MAX_WORKERS)",
            "workers")
    return value


def validate_action(action: str) -> str:
    """A coordinator action: kill, stop, start or restart."""
    if action not in COORDINATOR_ACTIONS:
        raise InvalidRequest(
            422, f"action must be one of {', '.join(COORDINATOR_ACTIONS)} (got {action!r})",
            "action")
    return action


def validate_flag(body: dict[str, Any], name: str, default: bool) -> bool:
    """An optional boolean field of a JSON body."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InvalidRequest(422, f"{name} must be true or false", name)
    return value


def compose_command(action: str, arg: str | int | None = None, *, graceful: bool = False,
                    restart: bool = True, compose: Sequence[str] = ("docker", "compose"),
                    workers: int = 3) -> str:
    """The shell command for a pool action on a compose stack.

    Actions: start, stop, reset, status, scale (arg: workers), kill_worker (arg: container),
    coordinator (arg: kill|stop|start|restart; kill with restart=True is a real crash).
    """
    return shlex.join(compose_argv(action, arg, graceful=graceful, restart=restart,
                                   compose=compose, workers=workers))


def compose_argv(action: str, arg: str | int | None = None, *, graceful: bool = False,
                 restart: bool = True, compose: Sequence[str] = ("docker", "compose"),
                 workers: int = 3) -> list[str]:
    """compose_command as an argv list."""
    base = list(compose)
    if action == "start":
        return [*base, "up", "--scale", f"worker={workers}", "-d", "--wait"]
    if action == "stop":
        return [*base, "down"]
    if action == "reset":
        return [*base, "down", "-v"]
    if action == "status":
        return [*base, "ps", "--all"]
    if action == "scale":
        return [*base, "up", "--scale", f"worker={arg}", "-d"]
    if action == "kill_worker":
        # `docker stop` sends SIGTERM (the worker drains) and SIGKILL after the grace period
        return ["docker", "stop" if graceful else "kill", str(arg)]
    if action == "coordinator":
        verb = validate_action(str(arg))
        if verb == "kill" and restart:
            return [*base, "exec", "-T", "coordinator", "python", "-c", CRASH_SNIPPET]
        return [*base, verb, "coordinator"]
    raise ValueError(f"unknown action {action!r}")


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (ours or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
