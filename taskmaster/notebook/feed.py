"""Feed: the one background consumer behind the panels.

It owns three loops in one asyncio task: the SSE events (reconnecting, resuming from
the last event id), a low-rate poll of stats, workers and recent tasks, and the render
tick that redraws the views at 1-5 Hz. `stop()` cancels and awaits them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import aiohttp

from taskmaster.aio import wait_future
from taskmaster.client import ApiError
from taskmaster.notebook.state import DashboardState

log = logging.getLogger(__name__)

YIELD_EVERY = 256  # events folded in before the consumer lets the tick and polls run


class Renderable(Protocol):
    def render(self, state: DashboardState | None = None, force: bool = False) -> bool:
        """Redraw from the state if needed."""


class Feed:
    """Consumes client.events() and polls into a DashboardState; redraws views on a tick."""

    def __init__(
        self,
        client: Any,
        state: DashboardState | None = None,
        *,
        views: Iterable[Renderable] = (),
        poll_interval: float = 1.0,
        tasks_interval: float = 5.0,
        render_hz: float = 2.0,
    ) -> None:
        self.client = client
        self.state = state if state is not None else DashboardState()
        self.views: list[Renderable] = list(views)
        # called with every event, in order (e.g. an EventRecord that keeps them for measuring)
        self.listeners: list[Callable[[dict[str, Any]], Any]] = []
        self.poll_interval = poll_interval
        self.tasks_interval = tasks_interval
        self.render_period = 1.0 / min(5.0, max(1.0, render_hz))  # bounded redraw rate
        self.renders = 0
        self._task: asyncio.Task[None] | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._last_tasks_poll = float("-inf")

    @property
    def running(self) -> bool:
        """True while the background task runs."""
        return self._task is not None and not self._task.done()

    def add(self, *views: Renderable) -> None:
        """Redraw these views too at each tick."""
        self.views.extend(views)

    def start(self) -> asyncio.Task[None]:
        """Start the background task in the running event loop (idempotent)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "Feed.start() needs a running event loop: call it from a notebook cell "
                "or from a coroutine"
            ) from None
        if not self.running:
            self._task = loop.create_task(self._run(), name="taskmaster-feed")
        assert self._task is not None
        return self._task

    async def stop(self) -> None:
        """Cancel the background task and wait until it has finished."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not only the feed
        self.render()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._consume())
            group.create_task(self._poll_loop())
            group.create_task(self._tick())

    async def _consume(self) -> None:
        state = self.state
        try:
            n = 0
            async for event in self.client.events(
                last_event_id=state.last_event_id, on_status=self._connection
            ):
                state.apply(event)
                for listener in self.listeners:
                    listener(event)
                self._notify()
                n += 1
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a busy stream must not starve the tick
        except ApiError as exc:  # not retryable (e.g. 401): say so, keep polling
            log.warning("event stream refused: %s", exc)
            self._connection(f"refused: {exc}")

    def _connection(self, status: str) -> None:
        self.state.connection = status
        self.state.versions["stats"] += 1

    async def _poll_loop(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.poll_interval)

    async def poll(self, tasks: bool | None = None) -> None:
        """Poll stats and workers (and recent tasks every tasks_interval) once."""
        now = time.monotonic()
        if tasks is None:
            tasks = now - self._last_tasks_poll >= self.tasks_interval
        try:
            self.state.set_stats(await self.client.stats())
            self.state.set_workers(await self.client.workers())
            if tasks:
                self._last_tasks_poll = now
                page, _cursor = await self.client.tasks(limit=self.state.recent)
                self.state.merge_tasks(page)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("poll failed: %s", exc)  # the scheduler may be restarting
        self._notify()

    async def _tick(self) -> None:
        while True:
            self.render()
            await asyncio.sleep(self.render_period)

    def render(self) -> None:
        """Redraw every view whose sections changed."""
        self.renders += 1
        for view in self.views:
            try:
                view.render(self.state)
            except Exception:
                log.exception("rendering %s failed", type(view).__name__)

    def _notify(self) -> None:
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    async def wait_for(
        self, predicate: Callable[[DashboardState], Any], timeout: float = 30.0
    ) -> DashboardState:
        """Wait until predicate(state) is true; TimeoutError (with a summary) otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.state):
            if self._task is not None and self._task.done() and not self._task.cancelled():
                self._task.result()  # the feed died: raise why, instead of timing out
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"condition not met within {timeout}s; {self.state.summary()}"
                )
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                await wait_future(waiter, remaining)
            finally:
                self._waiters.discard(waiter)
        self.render()
        return self.state


def live(client: Any, *views: Any, **options: Any) -> Feed:
    """Feed panels used on their own: they share one state, and the feed is started.

    `feed = live(client, TaskMonitor(), WorkersPanel())`; later `await feed.stop()`.
    """
    state = views[0].state if views else DashboardState()
    for view in views:
        view.state = state
    feed = Feed(client, state, views=views, **options)
    feed.listeners.extend(v.on_event for v in views if hasattr(v, "on_event"))  # e.g. TaskStream
    feed.start()
    return feed
