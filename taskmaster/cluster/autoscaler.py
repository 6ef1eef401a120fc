"""The autoscaler's loop: look at the stack, ask the policy, resize the pool, say why.

The policy (taskmaster.autoscale) is pure; this loop does the I/O around it for any pool
that can be resized (the local stack's supervisor, the compose backend). Every
`policy.interval` seconds it reads GET /api/stats, asks the policy for a size given the
workers running now, and when that differs it records a `pool_scaled` event (from, to,
reason) and then resizes. Scaling down is the pool's own graceful scale: the workers that
leave get SIGTERM and drain (finish their tasks, take no new ones), so no running task is
killed or reassigned by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from taskmaster.autoscale import Autoscaler, Decision, Observation, Policy
from taskmaster.errors import InvalidInput

log = logging.getLogger(__name__)

Stats = Callable[[], Awaitable[dict[str, Any]]]
Record = Callable[[dict[str, Any]], Awaitable[Any]]


class AutoscaleLoop:
    """Runs the policy against one pool while it is enabled (configure() turns it on/off)."""

    def __init__(self, policy: Policy, *, stats: Stats, current: Callable[[], int],
                 scale: Callable[[int], Awaitable[Any]], record: Record | None = None,
                 concurrency: int = 1, max_workers: int = 32,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.scaler = Autoscaler(policy)
        self._stats = stats
        self._current = current
        self._scale = scale
        self._record = record
        self.concurrency = concurrency
        self.max_workers = max_workers
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._halt: asyncio.Event | None = None  # set: the loop ends after its current look
        self.errors = 0  # looks that failed (the stack was away); the loop goes on
        self.last_error = ""

    @property
    def policy(self) -> Policy:
        """The settings in force."""
        return self.scaler.policy

    def status(self) -> dict[str, Any]:
        """What GET /api/pool/autoscale answers."""
        return {**self.scaler.status(), "workers": self._current(),
                "errors": self.errors, "last_error": self.last_error}

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change settings (InvalidInput names a wrong field and changes nothing); starts
        or stops the loop with `enabled`. The new status."""
        if not isinstance(changes, dict):
            raise InvalidInput(422, "the body must be a JSON object", None)
        self.scaler.configure(self.policy.updated(changes, self.max_workers))
        if self.policy.enabled:
            self.start()
        else:
            self._halt_soon()
        log.info("autoscale %s: %s..%s workers, target %s",
                 "on" if self.policy.enabled else "off", self.policy.min, self.policy.max,
                 self.policy.target_text)
        return self.status()

    def start(self) -> None:
        """Run the loop (when enabled and not running yet)."""
        running = self._task is not None and not self._task.done()
        if self.policy.enabled and not (running and self._halt and not self._halt.is_set()):
            self._halt = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(self._halt),
                                                                name="autoscale")

    def _halt_soon(self) -> None:
        # a resize under way finishes (a half-done `docker compose up` helps nobody)
        if self._halt is not None:
            self._halt.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop: a resize under way gets `timeout` seconds to finish, then is
        cancelled."""
        self._halt_soon()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def step(self) -> Decision:
        """One look and, when the policy says so, one resize."""
        obs = Observation.from_stats(await self._stats(), self.concurrency)
        current = self._current()
        decision = self.scaler.decide(self._clock(), current, obs)
        if decision.changed:
            log.info("autoscale: %d -> %d workers (%s)", decision.current, decision.to,
                     decision.reason)
            if self._record is not None:
                try:
                    await self._record(decision.to_json())
                except Exception as exc:  # the feed misses one line; the pool still follows
                    log.warning("autoscale: could not record the pool_scaled event: %s", exc)
            await self._scale(decision.to)
        return decision

    async def _run(self, halt: asyncio.Event) -> None:
        while not halt.is_set():
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the scheduler restarting, a refused scale: look again
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("autoscale: %s", self.last_error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), self.policy.interval)
