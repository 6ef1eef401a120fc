"""Steady load: tasks created at a held rate, for as long as wanted.

One generator behind `taskmaster load` and the dashboard's Steady load panel, over the
scheduler's HTTP API (taskmaster.client). It keeps a schedule, not a sleep per task: at
each tick it creates, in one POST /api/schedule/batch, as many tasks as the rate says are
due by now, so a slow answer is caught up at the next tick and the rate holds on average
(benchmarks/: the `load` scenario). Bounded: the rate (TASKMASTER_LOAD_MAX_RATE), one
request in flight, a backlog of at most BACKLOG_SECONDS of tasks (older ones are skipped
and counted), and no creation while the queue holds TASKMASTER_LOAD_MAX_PENDING tasks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from taskmaster.client import ApiError, Client
from taskmaster.config import Settings
from taskmaster.errors import InvalidInput

TICK = 0.05  # seconds between two looks at the schedule
BACKLOG_SECONDS = 5.0  # tasks due longer ago than this (the API was away) are skipped
STATS_EVERY = 1.0  # seconds between two reads of the queue depth
# answers worth waiting out: the scheduler is restarting, overloaded or rate limiting
_TRANSIENT = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadProgress:
    """Where a steady load stands."""

    created: int = 0
    elapsed: float = 0.0  # seconds since it started
    target: float = 0.0  # tasks/s asked for (the latest rate)
    command: str = ""
    skipped: int = 0  # tasks not created: due while the API was away for long
    errors: int = 0  # requests that failed and were retried
    last_error: str = ""
    paused: bool = False  # the queue is at TASKMASTER_LOAD_MAX_PENDING
    stats: dict[str, Any] = field(default_factory=dict)  # the latest GET /api/stats
    done: bool = False

    @property
    def rate(self) -> float:
        """Tasks created per second since the start."""
        return self.created / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        """One line for a terminal or a toast."""
        text = (f"created {self.created:,} {self.command} task{'' if self.created == 1 else 's'}"
                f" in {self.elapsed:.1f} s: {self.rate:.1f}/s (target {self.target:g}/s)")
        s = self.stats
        if s:
            text += (f"; queue {s.get('queue_depth', 0):,}, running {s.get('running', 0):,},"
                     f" completed {s.get('completed', 0):,}")
        if self.paused:
            text += "; paused: the queue is full (TASKMASTER_LOAD_MAX_PENDING)"
        if self.skipped:
            text += f"; {self.skipped:,} skipped while the API was away"
        return text


class LoadError(Exception):
    """The scheduler refused the load (e.g. an unknown command): it stops."""


def check_rate(rate: Any, max_rate: float) -> float:
    """A rate: a number above 0 and at most max_rate (InvalidInput naming `rate`)."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise InvalidInput(422, "rate must be a number of tasks per second", "rate")
    if not 0 < rate <= max_rate:
        raise InvalidInput(422, f"rate must be above 0 and at most {max_rate:g} tasks/s "
                           "(TASKMASTER_LOAD_MAX_RATE)", "rate")
    return float(rate)


class SteadyLoad:
    """Create `command` tasks at `rate` per second (for `seconds`, or until stop())."""

    def __init__(self, client: Client, *, rate: float, command: str = "demo-job",
                 payload: Any = None, seconds: float | None = None,
                 settings: Settings | None = None, tick: float = TICK,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        settings = settings or Settings.from_env()
        self.client = client
        self.max_rate = settings.load_max_rate
        self.max_pending = settings.load_max_pending
        self.rate = check_rate(rate, self.max_rate)
        if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
            raise InvalidInput(422, "seconds must be a number above 0", "seconds")
        self.command = command
        self.payload = payload
        self.seconds = seconds
        self.tick = tick
        self.clock = clock
        self.sleep = sleep
        self._stop = asyncio.Event()
        self._progress = LoadProgress(target=self.rate, command=command)
        # the schedule: `_base_count` tasks were due at `_base_time`, then `rate` a second
        self._start = 0.0
        self._base_time = 0.0
        self._base_count = 0

    @property
    def progress(self) -> LoadProgress:
        """Where the load stands now."""
        return self._progress

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on (no catch-up of the old rate, no burst)."""
        rate = check_rate(rate, self.max_rate)
        now = self.clock()
        self._rebase(now)
        self.rate = rate
        self._update(target=rate)

    def stop(self) -> None:
        """Stop at the next tick (run() then returns)."""
        self._stop.set()

    def _rebase(self, now: float) -> None:
        self._base_count = self._progress.created + self._progress.skipped
        self._base_time = now

    def _update(self, **changes: Any) -> None:
        values = {f: getattr(self._progress, f) for f in LoadProgress.__dataclass_fields__}
        values.update(changes)
        self._progress = LoadProgress(**values)

    def due(self, now: float) -> int:
        """Tasks due by `now` and not yet created (or skipped)."""
        end = now if self.seconds is None else min(now, self._start + self.seconds)
        wanted = self._base_count + math.floor((end - self._base_time) * self.rate + 1e-9)
        return max(0, wanted - self._progress.created - self._progress.skipped)

    async def run(self, on_progress: Callable[[LoadProgress], Any] | None = None,
                  every: float = 1.0) -> LoadProgress:
        """Create tasks on schedule until `seconds` have passed or stop(); the final progress.
        `on_progress` is called every `every` seconds, and at the end. LoadError when the
        scheduler refuses the tasks (a 4xx)."""
        self._start = self._base_time = self.clock()
        self._base_count = 0
        next_report = next_stats = self._start
        try:
            while not self._stop.is_set():
                now = self.clock()
                self._update(elapsed=now - self._start)
                if self.max_pending and now >= next_stats:
                    next_stats = now + STATS_EVERY
                    await self._read_stats(now)
                if not self._progress.paused:
                    await self._create(self.due(now))
                if on_progress is not None and now >= next_report:
                    next_report = now + every
                    on_progress(self._progress)
                if self.seconds is not None and now - self._start >= self.seconds and (
                        self.due(now) == 0 or now - self._start >= self.seconds + BACKLOG_SECONDS):
                    break  # all created, or the API stayed away past the end
                pause = self.tick - (self.clock() - now)
                if pause > 0:
                    await self._wait(pause)
        finally:
            self._update(elapsed=self.clock() - self._start, done=True)
            if on_progress is not None:
                on_progress(self._progress)
        return self._progress

    async def _wait(self, seconds: float) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([stop, asyncio.ensure_future(self.sleep(seconds))],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    async def _create(self, due: int) -> None:
        if due <= 0:
            return
        backlog = max(1, math.ceil(self.rate * BACKLOG_SECONDS))
        if due > backlog:  # the API was away for long: no flood once it is back
            self._update(skipped=self._progress.skipped + due - backlog)
            due = backlog
        n = min(due, max(1, math.ceil(self.rate)))  # at most a second's worth per request
        try:
            await self.client.schedule_batch(self.command, n, payload=self.payload)
        except ApiError as exc:
            if exc.status not in _TRANSIENT:
                raise LoadError(f"the scheduler refused the tasks: {exc}") from exc
            self._failed(str(exc))
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        self._update(created=self._progress.created + n)

    def _failed(self, error: str) -> None:
        self._update(errors=self._progress.errors + 1, last_error=error)

    async def _read_stats(self, now: float) -> None:
        try:
            stats = await self.client.stats()
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._failed(f"stats: {exc}")
            return
        paused = int(stats.get("queue_depth") or 0) >= self.max_pending
        if self._progress.paused and not paused:
            self._rebase(now)  # resume on schedule from now: no burst for the pause
        elif paused and not self._progress.paused:
            self._rebase(now)
        self._update(stats=stats, paused=paused)
        if paused:
            self._base_time = now  # while paused nothing falls due
