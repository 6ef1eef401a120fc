"""A task module of the kind users name with --tasks: handlers the tests can observe."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from taskmaster.worker.handlers import TaskContext, task

CALLS: Counter[str] = Counter()  # task id -> times a handler started on it
CANCELLED: set[str] = set()  # task ids whose handler saw its cancellation
GATES: dict[str, asyncio.Event] = {}  # task id -> released by the test


def gate(task_id: str) -> asyncio.Event:
    """The event a gated handler waits on (created in the running loop)."""
    return GATES.setdefault(task_id, asyncio.Event())


@task
async def count_calls(ctx: TaskContext) -> dict[str, Any]:
    """Counts its runs per task, then sleeps payload.seconds."""
    CALLS[str(ctx.task_id)] += 1
    await asyncio.sleep(float((ctx.payload or {}).get("seconds", 0)))
    return {"calls": CALLS[str(ctx.task_id)]}


@task("progress-steps")
async def progress_steps(ctx: TaskContext) -> str:
    """Reports 25 then 50, waits for the test, and finishes."""
    await ctx.progress(25)
    await ctx.progress(50)
    await gate(str(ctx.task_id)).wait()
    return "stepped"


@task("wait-for-cancel")
async def wait_for_cancel(ctx: TaskContext) -> None:
    """Runs until cancelled; remembers that the cancellation reached it."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        CANCELLED.add(str(ctx.task_id))
        raise


@task("sync-until-cancelled")
def sync_until_cancelled(ctx: TaskContext) -> None:
    """A plain function in a thread that checks ctx.cancelled cooperatively."""
    while not ctx.cancelled:
        time.sleep(0.01)
    CANCELLED.add(str(ctx.task_id))
    ctx.check_cancelled()


# results PostgreSQL's JSON cannot hold: ordinary in data work
@task("result-nan")
async def result_nan(ctx: TaskContext) -> dict[str, float]:
    """A ratio of nothing to nothing."""
    return {"ratio": float("nan")}


@task("result-infinity")
async def result_infinity(ctx: TaskContext) -> dict[str, list[float]]:
    """An overflow, nested in a list."""
    return {"values": [1.0, float("inf")]}


@task("result-nul")
def result_nul(ctx: TaskContext) -> dict[str, str]:
    """A string with a NUL character (from a plain function, in its thread)."""
    return {"name": "a\x00b"}


SPINNING: dict[str, int] = {}  # task id -> ident of the thread spinning it


@task("spin")
def spin(ctx: TaskContext) -> None:
    """A plain function that spins for ever and never looks at ctx.cancelled."""
    import threading

    SPINNING[str(ctx.task_id)] = threading.get_ident()
    n = 0
    while True:
        n += 1
