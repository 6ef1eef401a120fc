"""The worker pool's shared words: worker counts, coordinator actions, their checks, and
the docker compose command doing each action on the compose stack.

Used by every door to a pool: the scheduler's /api/pool (its 501 hints), the local stack's
control API, the compose backend, the CLI and the notebook panels' copyable commands.

Every command means the same to compose v2 (`docker compose`) and to Debian's
docker-compose v1 (`compose=("docker-compose",)`, or run as the `docker compose` plugin that
deploy/engine.sh installs where v2 is missing); tests/compose runs them on a real engine.
Hence no v2-only flags (`up --wait`, `ps --format`), and workers are named by container id
(the hostname a worker reports), which v1 (`taskmaster_worker_1`) and v2
(`taskmaster-worker-1`) share, rather than by container name.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from taskmaster.errors import InvalidInput

COORDINATOR_ACTIONS = ("kill", "stop", "start", "restart")

# A crash the compose restart policy sees: `docker kill` counts as a manual stop, which no
# restart policy undoes, so kill the coordinator process from inside its container instead
# (the service runs with `init: true`, so kill(-1) spares only the init process).
CRASH_SNIPPET = "import os, signal; os.kill(-1, signal.SIGKILL)"


def validate_workers(value: Any, max_workers: int) -> int:
    """A worker count: an int in 0..max_workers (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(422, "workers must be an integer", "workers")
    if not 0 <= value <= max_workers:
        raise InvalidInput(
            422, f"workers must be between 0 and {max_workers} (TASKMASTER_MAX_WORKERS)",
            "workers")
    return value


def validate_action(action: str) -> str:
    """A coordinator action: kill, stop, start or restart."""
    if action not in COORDINATOR_ACTIONS:
        raise InvalidInput(
            422, f"action must be one of {', '.join(COORDINATOR_ACTIONS)} (got {action!r})",
            "action")
    return action


def validate_flag(body: dict[str, Any], name: str, default: bool) -> bool:
    """An optional boolean field of a JSON body."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(422, f"{name} must be true or false", name)
    return value


def member_name(body: dict[str, Any]) -> str | None:
    """The optional `name` of a JSON body (which coordinator): None, or a non-empty string."""
    value = body.get("name")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidInput(422, "name must be a member's name, e.g. coordinator-2 "
                           "(`taskmaster ps` lists them)", "name")
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
        # the demo guide's command; v1 has no --wait: ComposeCluster.start waits for health
        return [*base, "up", "--scale", f"worker={workers}", "-d"]
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
