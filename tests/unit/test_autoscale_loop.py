"""The autoscaler's loop around the policy: it records why before it resizes, survives a
stack that is away, and is turned on and off by its settings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskmaster.autoscale import Policy
from taskmaster.cluster.autoscaler import AutoscaleLoop
from taskmaster.errors import InvalidInput


class Pool:
    def __init__(self) -> None:
        self.size = 1
        self.stats: dict[str, Any] = {"queue_depth": 0, "running": 0}
        self.log: list[tuple[str, Any]] = []
        self.now = 0.0

    async def read(self) -> dict[str, Any]:
        if isinstance(self.stats, Exception):
            raise self.stats
        return dict(self.stats)

    async def scale(self, n: int) -> None:
        self.log.append(("scale", n))
        self.size = n

    async def record(self, decision: dict[str, Any]) -> None:
        self.log.append(("event", decision))


def loop_for(pool: Pool, **policy: Any) -> AutoscaleLoop:
    return AutoscaleLoop(Policy(enabled=True, target_kind="backlog", target=1.0, **policy),
                         stats=pool.read, current=lambda: pool.size, scale=pool.scale,
                         record=pool.record, clock=lambda: pool.now)


async def test_a_resize_is_recorded_then_done() -> None:
    pool = Pool()
    loop = loop_for(pool)
    pool.stats = {"queue_depth": 9, "running": 1, "assigned": 0}
    d = await loop.step()
    assert (d.current, d.to) == (1, 5)
    event, scale = pool.log
    assert event[0] == "event" and event[1]["from"] == 1 and event[1]["to"] == 5
    assert "queue 9" in event[1]["reason"] and scale == ("scale", 5)
    pool.now = 1.0
    await loop.step()  # cooling down: nothing recorded, nothing resized
    assert len(pool.log) == 2
    assert loop.status()["last_change"]["to"] == 5 and loop.status()["workers"] == 5


async def test_the_loop_runs_while_enabled_and_survives_errors() -> None:
    pool = Pool()
    loop = loop_for(pool, interval=0.05)
    pool.stats = ConnectionError("scheduler away")  # type: ignore[assignment]
    loop.start()
    try:
        for _ in range(100):
            if loop.errors >= 2:
                break
            await asyncio.sleep(0.02)
        assert loop.errors >= 2 and "scheduler away" in loop.last_error
        pool.stats = {"queue_depth": 3, "running": 1}
        for _ in range(100):
            if pool.size == 4:
                break
            await asyncio.sleep(0.02)
        assert pool.size == 4
        task = loop._task
        status = loop.configure({"enabled": False})
        assert status["enabled"] is False and task is not None
        await asyncio.wait_for(task, 5)  # it ends by itself after its current look
    finally:
        await loop.stop()


async def test_stop_lets_a_resize_under_way_finish() -> None:
    pool = Pool()
    resized = asyncio.Event()

    async def slow_scale(n: int) -> None:
        await asyncio.sleep(0.3)  # e.g. `docker compose up --scale` waiting for a drain
        pool.size = n
        resized.set()

    loop = AutoscaleLoop(Policy(enabled=True, target_kind="backlog", target=1.0),
                         stats=pool.read, current=lambda: pool.size, scale=slow_scale)
    pool.stats = {"queue_depth": 3, "running": 1}
    loop.start()
    await asyncio.sleep(0.1)
    await loop.stop()
    assert resized.is_set() and pool.size == 4


async def test_bad_settings_change_nothing() -> None:
    pool = Pool()
    loop = loop_for(pool)
    before = loop.policy
    with pytest.raises(InvalidInput) as exc:
        loop.configure({"max": 0})
    assert exc.value.field == "max" and loop.policy == before
    with pytest.raises(InvalidInput):
        loop.configure([1, 2])  # type: ignore[arg-type]
