"""The steady-load generator's schedule, on a simulated clock (no timing in the test).

What it sends to a stand-in client is checked against the rate: how many tasks are due
at each moment, catching up after a slow answer, skipping (and counting) a long outage,
pausing on a full queue, a rate change without a burst, and a refusal stopping it. The
rate a real stack holds is measured by the benchmark (`python -m benchmarks --only load`).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from taskmaster.client import ApiError
from taskmaster.config import Settings
from taskmaster.errors import InvalidInput
from taskmaster.load import BACKLOG_SECONDS, LoadError, LoadProgress, SteadyLoad, check_rate


class Clock:
    """Simulated time: sleeping advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class FakeClient:
    """Records each batch with the simulated time it was sent at."""

    def __init__(self, clock: Clock, latency: float = 0.0) -> None:
        self.clock = clock
        self.latency = latency
        self.sent: list[tuple[float, int]] = []
        self.fail: list[BaseException] = []  # raised by the next calls, in order
        self.queue_depth = 0

    async def schedule_batch(self, command: str, count: int, payload: Any = None,
                             **_kw: Any) -> dict[str, Any]:
        self.clock.now += self.latency
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append((self.clock.now, count))
        return {"created": count, "command": command, "ids": []}

    async def stats(self) -> dict[str, Any]:
        return {"queue_depth": self.queue_depth, "running": 0, "completed": 0}

    def created_by(self, t: float) -> int:
        return sum(n for at, n in self.sent if at <= t)


def make(client: FakeClient, clock: Clock, **kw: Any) -> SteadyLoad:
    kw.setdefault("settings", Settings())
    return SteadyLoad(client, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0.5, 3, 20, 100, 500])
async def test_it_creates_what_the_rate_says_and_no_more(rate: float) -> None:
    clock = Clock()
    client = FakeClient(clock)
    load = make(client, clock, rate=rate, command="noop", seconds=10)
    start = clock.now
    progress = await load.run()
    assert progress.created == math.floor(rate * 10) and progress.done
    # at every moment, never ahead of the schedule and never more than one tick behind it
    for at, _ in client.sent:
        due = math.floor((at - start) * rate + 1e-9)
        assert due - rate * 0.06 - 1 <= client.created_by(at) <= due
    assert max(n for _, n in client.sent) <= max(1, math.ceil(rate))  # one second at most


async def test_a_slow_answer_is_caught_up_at_the_next_tick() -> None:
    clock = Clock()
    client = FakeClient(clock)
    load = make(client, clock, rate=100, seconds=5)
    start = clock.now

    async def slow_once(command: str, count: int, payload: Any = None, **kw: Any) -> Any:
        if not client.sent:
            clock.now += 1.5  # the first answer takes 1.5 s
        return await FakeClient.schedule_batch(client, command, count, payload)

    client.schedule_batch = slow_once  # type: ignore[method-assign]
    progress = await load.run()
    assert progress.created == 500 and progress.skipped == 0
    assert client.sent[0] == (pytest.approx(start + 1.55), 5)  # the slow one
    assert client.sent[1][1] == 100  # the backlog of 1.5 s, a second's worth at most
    assert client.created_by(start + 3) >= 300 - 6  # back on schedule within a tick or two


async def test_a_long_outage_skips_what_is_older_than_the_backlog_and_counts_it() -> None:
    clock = Clock()
    client = FakeClient(clock)
    load = make(client, clock, rate=10, seconds=30)
    client.fail = [ApiError(503, "database unavailable")] * 200  # ~10 s of failed ticks
    progress = await load.run()
    assert progress.errors == 200 and "database unavailable" in progress.last_error
    assert progress.skipped > 0
    assert progress.created + progress.skipped == 300  # every due task created or counted
    # after the outage no burst larger than the backlog bound
    assert sum(n for _, n in client.sent[:int(BACKLOG_SECONDS) + 1]) <= 10 * BACKLOG_SECONDS + 10


async def test_a_refusal_stops_the_load() -> None:
    clock = Clock()
    client = FakeClient(clock)
    client.fail = [ApiError(422, "unknown command 'nope'", "command")]
    load = make(client, clock, rate=5, command="nope")
    with pytest.raises(LoadError, match="unknown command 'nope'"):
        await load.run()
    assert load.progress.done and load.progress.created == 0


async def test_a_full_queue_pauses_it_without_a_burst_afterwards() -> None:
    clock = Clock()
    client = FakeClient(clock)
    load = make(client, clock, rate=20, seconds=12, settings=Settings(load_max_pending=100))
    start = clock.now
    seen: list[LoadProgress] = []

    def watch(p: LoadProgress) -> None:
        seen.append(p)
        # the queue is full from second 3 to second 7
        client.queue_depth = 150 if 3 <= clock.now - start < 7 else 0

    progress = await load.run(watch, every=0.5)
    assert any(p.paused for p in seen) and not progress.paused
    assert "paused: the queue is full" in next(p.line() for p in seen if p.paused)
    paused = [n for at, n in client.sent if start + 4.5 <= at < start + 7]
    assert paused == []  # nothing created while paused
    assert max(n for _, n in client.sent) <= 20  # no catch-up burst for the pause
    assert 160 <= progress.created <= 180  # about 8 s of 12 at 20/s


async def test_a_new_rate_applies_from_now_without_a_burst() -> None:
    clock = Clock()
    client = FakeClient(clock)
    load = make(client, clock, rate=10, seconds=10)
    start = clock.now

    changed: list[float] = []

    def change(p: LoadProgress) -> None:
        if clock.now - start >= 5 and not changed:
            load.set_rate(100)
            changed.append(clock.now)

    progress = await load.run(change, every=0.1)
    assert 540 <= progress.created <= 560  # 5 s at 10/s, then 5 s at 100/s
    assert client.created_by(changed[0]) <= 51
    # no burst: the new rate is not applied to the time already gone (that would be ~450
    # tasks at once); each tick brings its 0.05 s worth
    assert max(n for at, n in client.sent if at > changed[0]) <= 6


async def test_stop_ends_it_at_once() -> None:
    clock = Clock()
    client = FakeClient(clock)
    load = make(client, clock, rate=50)  # no end of its own

    def stop_at_3(p: LoadProgress) -> None:
        if clock.now - 1000.0 >= 3:
            load.stop()

    progress = await load.run(stop_at_3, every=0.05)
    assert progress.done and 145 <= progress.created <= 155


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf"), "5", True, 1001])
def test_rates_out_of_bounds_are_refused_naming_the_field(rate: Any) -> None:
    with pytest.raises(InvalidInput) as err:
        check_rate(rate, Settings().load_max_rate)
    assert err.value.field == "rate" and err.value.status == 422


def test_the_bounds_are_settings() -> None:
    settings = Settings.from_env({"TASKMASTER_LOAD_MAX_RATE": "50",
                                  "TASKMASTER_LOAD_MAX_PENDING": "7"})
    with pytest.raises(InvalidInput, match="TASKMASTER_LOAD_MAX_RATE"):
        SteadyLoad(None, rate=60, settings=settings)  # type: ignore[arg-type]
    assert SteadyLoad(None, rate=50, settings=settings).max_pending == 7  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TASKMASTER_LOAD_MAX_RATE"):
        Settings(load_max_rate=0)
    with pytest.raises(ValueError, match="TASKMASTER_LOAD_MAX_PENDING"):
        Settings(load_max_pending=0)


def test_progress_reads_well() -> None:
    p = LoadProgress(created=1, elapsed=2.0, target=0.5, command="demo-job",
                     stats={"queue_depth": 3, "running": 1, "completed": 1200})
    assert p.line() == ("created 1 demo-job task in 2.0 s: 0.5/s (target 0.5/s); queue 3, "
                        "running 1, completed 1,200")
