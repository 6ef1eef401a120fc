"""The one interface over a running stack.

Two implementations: `LocalCluster` (local processes, what `taskmaster up` runs) and
`ComposeCluster` (shells out to `docker compose`). Notebook panels, the CLI and the
scheduler's /api/pool endpoints only need what is here.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, TypedDict, runtime_checkable

from taskmaster.config import Settings

ROLES = ("postgres", "coordinator", "scheduler", "worker")


class MemberInfo(TypedDict):
    """One row of the members table (JSON-ready)."""

    name: str
    role: str
    pid: int | None
    host: str
    state: str
    restarts: int


class UnknownWorker(KeyError):
    """No worker of that name in the pool."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown worker"


class UnknownMember(UnknownWorker):
    """No coordinator (or other member) of that name in the stack."""


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

    async def coordinator(self, action: str, restart: bool = True,
                          name: str | None = None) -> MemberInfo:
        """kill (a crash: brought back unless restart=False), stop, start or restart one
        coordinator (by name; the first when None)."""

    def status(self) -> list[MemberInfo]:
        """Every member: name, role, pid, host, state, restarts."""

    def compose_command(self, action: str, arg: str | int | None = None, *,
                        graceful: bool = False, restart: bool = True) -> str:
        """The docker compose command line doing the same as `action` on a compose stack."""


class Supervisor(Cluster, Protocol):
    """A cluster that supervises its own processes and serves the control API
    (taskmaster.cluster.control): LocalCluster."""

    settings: Settings

    def describe(self) -> dict[str, Any]:
        """What GET /api/pool answers: manager, addresses, running workers, members."""

    def autoscale_status(self) -> dict[str, Any]:
        """What GET /api/pool/autoscale answers: the autoscaler's settings and decisions."""

    async def configure_autoscale(self, changes: dict[str, Any]) -> dict[str, Any]:
        """PUT /api/pool/autoscale: change the autoscaler's settings; its status after."""


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (ours or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
