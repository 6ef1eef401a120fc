"""Task handlers for the chaos tests (loaded by the workers with --tasks tests.chaos.tasks)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from taskmaster.worker.handlers import TaskContext, task


@task("chaos-sleep")
async def chaos_sleep(ctx: TaskContext) -> dict[str, Any]:
    """Sleep payload.seconds, then leave a mark file naming the delivery and the process.

    The marks let a test see what a worker did even while nobody could hear its reports.
    """
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    await asyncio.sleep(float(payload.get("seconds", 1.0)))
    marks = payload.get("marks")
    if marks:
        Path(marks, f"{ctx.task_id}.{ctx.attempt}.{os.getpid()}").touch()
    return {"pid": os.getpid(), "attempt": ctx.attempt}


def marks(folder: Path) -> list[tuple[str, int, int]]:
    """(task id, attempt, pid) of every delivery that ran to its end."""
    out = []
    for p in folder.iterdir():
        task_id, attempt, pid = p.name.split(".")
        out.append((task_id, int(attempt), int(pid)))
    return out
