"""Task handlers: the built-in commands and the decorator users register theirs with."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[["TaskContext"], Any]

registry: dict[str, Handler] = {}


class TaskCancelled(Exception):
    """Raised inside a handler that checks for cancellation."""


class TaskFailed(Exception):
    """Raise from a handler to fail the task with a message."""


@dataclass(eq=False)
class TaskContext:
    """What a handler sees of its task."""

    task_id: uuid.UUID
    attempt: int
    command: str
    payload: Any
    report_progress: Callable[[int], Awaitable[None]] = field(repr=False)
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def progress(self, percent: float) -> None:
        """Report progress (0-100); raises TaskCancelled if the task was cancelled."""
        self.check_cancelled()
        await self.report_progress(max(0, min(100, int(percent))))

    @property
    def cancelled(self) -> bool:
        """True once the scheduler asked to cancel this task."""
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        """Raise TaskCancelled when the task was cancelled."""
        if self.cancel_event.is_set():
            raise TaskCancelled(f"task {self.task_id} cancelled")


def task(name: str | Callable[..., Any] | None = None) -> Any:
    """Register a handler: `@task` (named after the function) or `@task("name")`."""

    def register(fn: Handler, command: str) -> Handler:
        registry[command] = fn
        return fn

    if callable(name):
        return register(name, name.__name__.replace("_", "-"))
    return lambda fn: register(fn, name or fn.__name__.replace("_", "-"))


def load_modules(spec: str) -> list[str]:
    """Import the comma-separated modules of --tasks; return the commands now known."""
    for module in filter(None, (m.strip() for m in spec.split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SystemExit(f"cannot import task module {module!r} (--tasks): {exc}") from exc
    return sorted(registry)


async def run_handler(handler: Handler, ctx: TaskContext) -> Any:
    """Call a handler: coroutines in the loop, plain functions in a thread."""
    if inspect.iscoroutinefunction(handler):
        return await handler(ctx)
    return await asyncio.to_thread(handler, ctx)


def _number(payload: Any, key: str, default: float) -> float:
    if isinstance(payload, dict) and isinstance(payload.get(key), int | float):
        return float(payload[key])
    return default


@task("demo-job")
async def demo_job(ctx: TaskContext) -> dict[str, Any]:
    """Like the demo guide's tasks: 0.5-0.8 s of work, reporting progress along the way."""
    seconds = random.uniform(0.5, 0.8)
    steps = 4
    for i in range(1, steps):
        await asyncio.sleep(seconds / steps)
        await ctx.progress(100 * i / steps)
    await asyncio.sleep(seconds / steps)
    return {"seconds": round(seconds, 3)}


@task("noop")
async def noop(ctx: TaskContext) -> None:
    """Does nothing (measures the scheduler, not the work)."""
    return None


@task("sleep")
async def sleep(ctx: TaskContext) -> dict[str, float]:
    """Sleeps payload.seconds (default 1)."""
    seconds = _number(ctx.payload, "seconds", 1.0)
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@task("fail")
async def fail(ctx: TaskContext) -> None:
    """Always fails (shows retries and the failed state)."""
    raise TaskFailed(str((ctx.payload or {}).get("message", "this task always fails"))
                     if isinstance(ctx.payload, dict) else "this task always fails")


@task("flaky")
async def flaky(ctx: TaskContext) -> dict[str, int]:
    """Fails with probability payload.p (default 0.5)."""
    if random.random() < _number(ctx.payload, "p", 0.5):
        raise TaskFailed(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@task("cpu")
def cpu(ctx: TaskContext) -> dict[str, int]:
    """Busy for payload.ms milliseconds (default 100) in a worker thread."""
    deadline = time.perf_counter() + _number(ctx.payload, "ms", 100.0) / 1000
    n = 0
    while time.perf_counter() < deadline:
        n += 1
        if n % 10_000 == 0 and ctx.cancelled:
            raise TaskCancelled("cancelled")
    return {"iterations": n}


BUILTINS = tuple(sorted(registry))
