"""The lab bench's experiments, on made-up results: tables beside the demo guide, shares,
the worker sampler and the per-worker table (no stack involved)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from taskmaster.lab import (
    Distribution,
    Phase,
    WorkerSampler,
    new_key,
    scaling_table,
    strategy_table,
    worker_table,
)
from taskmaster.model import EventType

T0 = 1_800_000_000.0


def ev(kind: str, task: str, at: float, **extra: Any) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(T0 + at, UTC).isoformat()
    return {"event": kind, "task_id": task, "timestamp": stamp, **extra}


def test_scaling_table_compares_speedups_with_the_demo_guide() -> None:
    phases = [Phase(3, 30, 2.0), Phase(1, 10, 2.0), Phase(5, 40, 1.6)]
    assert phases[0].rate == 15.0 and Phase(1, 1, 0.0).rate == 0.0
    table = scaling_table(phases)
    assert list(table.index) == [3, 1, 5]
    assert table.loc[3, "measured vs 1 worker"] == 3.0
    assert table.loc[5, "measured vs 1 worker"] == 5.0
    assert table.loc[5, "demo guide tasks/s"] == 2.5
    assert table.loc[5, "demo guide vs 1 worker"] == 5.0


def test_strategy_table_and_long_task_share() -> None:
    rr = Distribution("round-robin")
    rr.tasks.update({"w1": 2, "w2": 2})
    rr.long.update({"w1": 2, "w2": 0})
    rr.busy.update({"w1": 1.5, "w2": 0.1})
    ll = Distribution("least-loaded")
    ll.tasks.update({"w1": 3, "w2": 1})
    ll.long.update({"w1": 1, "w2": 1})
    assert rr.share_of_long() == 1.0 and ll.share_of_long() == 0.5
    assert Distribution("random").share_of_long() == 0.0
    table = strategy_table([rr, ll])
    assert table.loc["round-robin", ("long tasks", "w1")] == 2
    assert table.loc["least-loaded", ("busy s", "w2")] == 0.0


class Workers:
    """GET /api/workers: worker-1 always holds two tasks, worker-2 none, worker-3 is offline."""

    async def workers(self) -> list[dict[str, Any]]:
        return [
            {"name": "worker-1", "status": "online", "current_task_ids": ["a", "b"]},
            {"name": "worker-2", "status": "online", "current_task_ids": []},
            {"name": "worker-3", "status": "offline", "current_task_ids": ["c"]},
        ]


async def test_worker_sampler_and_worker_table() -> None:
    sampler = WorkerSampler(Workers(), interval=0.01).start()
    while len(sampler.samples) < 3:
        await asyncio.sleep(0.01)
    assert await sampler.stop() is sampler
    assert sampler.utilisation() == {"worker-1": 1.0, "worker-2": 0.0}
    assert sampler.peak["worker-1"] == 2 and "worker-3" not in sampler.peak
    events = [
        ev(EventType.TASK_RUNNING, "a", 0, worker_id="w1"),
        ev(EventType.TASK_COMPLETED, "a", 1, worker_id="w1", duration_ms=1000),
        ev("task_running", "b", 1, worker_id="w2"),  # plain strings, as the JSON has them
        ev("task_completed", "b", 2, worker_id="w2", duration_ms=500),
    ]
    names = {"w1": "worker-1", "w2": "worker-2"}.get
    table = worker_table(events, names, sampler)
    assert list(table.index) == ["worker-1", "worker-2"]
    assert table.loc["worker-1", "tasks completed"] == 1
    assert table.loc["worker-1", "busy % (events)"] == 50.0
    assert table.loc["worker-2", "busy s"] == 0.5
    assert table.loc["worker-2", "busy % (GET /api/workers)"] == 0.0


def test_new_keys_differ() -> None:
    assert new_key().startswith("order-") and new_key() != new_key()
