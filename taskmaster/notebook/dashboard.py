"""Dashboard: every panel of the demo guide's React UI in one widget, fed by one Feed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiohttp
import ipywidgets as widgets

from taskmaster.client import ApiError
from taskmaster.model import EventType
from taskmaster.notebook.analysis import Audit, EventRecord, audit
from taskmaster.notebook.autoscale import AutoscalePanel
from taskmaster.notebook.chart import ThroughputChart
from taskmaster.notebook.controls import BulkTaskPanel, PoolOps, ResetPanel, WorkerControlPanel
from taskmaster.notebook.feed import Feed
from taskmaster.notebook.load import SteadyLoadPanel
from taskmaster.notebook.recordpanel import RecordButton
from taskmaster.notebook.snapshot import Snapshot
from taskmaster.notebook.state import DashboardState
from taskmaster.notebook.taskstream import TaskStream
from taskmaster.notebook.views import ActivityLog, StatsPanel, TaskMonitor, WorkersPanel

_FINAL_EVENTS = frozenset({EventType.TASK_COMPLETED, EventType.TASK_FAILED,
                           EventType.TASK_CANCELLED})


class Dashboard(widgets.VBox):
    """Bulk create, steady load, reset and worker controls on top, stats and the charts,
    then tasks, workers, log.

    `client` is a taskmaster.client.Client; the worker controls drive its /api/pool
    methods (`pool` replaces them only where the panel, not the HTTP, is under test).
    """

    def __init__(
        self,
        client: Any,
        pool: PoolOps | None = None,
        *,
        commands: Sequence[str] | None = None,
        recent: int = 50,
        log_size: int = 200,
        log_lines: int = 50,
        window: int = 300,
        workers: int = 3,
        render_hz: float = 2.0,
        poll_interval: float = 1.0,
        coordinators: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        self.client = client
        self.state = DashboardState(recent=recent, log_size=log_size, window=window)
        self.bulk = BulkTaskPanel(client, commands=commands)
        self.load = SteadyLoadPanel(client, commands=commands)
        self.reset = ResetPanel(client)
        self.autoscale = AutoscalePanel(client)
        self.controls = WorkerControlPanel(
            pool if pool is not None else client, state=self.state, workers=workers,
            coordinators=coordinators,
        )
        self.stats = StatsPanel(self.state)
        self.chart = ThroughputChart(self.state)
        self.taskstream = TaskStream(self.state, window=min(window, 60))
        self.monitor = TaskMonitor(self.state)
        self.workers_panel = WorkersPanel(self.state)
        self.activity = ActivityLog(self.state, lines=log_lines)
        self.feed = Feed(
            client,
            self.state,
            views=[self.stats, self.chart, self.monitor, self.workers_panel, self.activity,
                   self.controls, self.taskstream],
            render_hz=render_hz,
            poll_interval=poll_interval,
        )
        self.events = EventRecord()  # every event, for measuring what the panels show
        self.feed.listeners.append(self.events)
        self.feed.listeners.append(self.taskstream.on_event)
        self.feed.listeners.append(self.autoscale.on_event)
        self.record = RecordButton(self.feed)
        super().__init__(
            children=[
                widgets.HBox([widgets.VBox([self.bulk, self.load, self.autoscale, self.reset,
                                            self.record],
                                           layout=widgets.Layout(width="40%")),
                              _sized(self.controls, widgets.Layout(width="60%"))]),
                self.stats,
                self.chart,
                self.taskstream,
                widgets.HBox([
                    _sized(self.monitor, widgets.Layout(width="60%")),
                    widgets.VBox([self.workers_panel, self.activity],
                                 layout=widgets.Layout(width="40%")),
                ]),
            ],
            **kwargs,
        )
        self.add_class("tm-dashboard")

    def start(self) -> Any:
        """Start the background feed (events, polls, render tick) in the running loop."""
        return self.feed.start()

    async def stop(self) -> None:
        """Stop the steady load and the feed, and wait for them."""
        await self.load.stop_and_wait()
        await self.feed.stop()
        self.record.stop()

    async def ready(self, timeout: float = 30.0) -> DashboardState:
        """Wait until the event stream is connected and stats and workers were polled."""
        if not self.feed.running:
            self.start()
        state = await self.feed.wait_for(
            lambda s: s.connection == "connected" and bool(s.stats), timeout
        )
        try:
            await self.autoscale.refresh()
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            # no pool manager (a compose stack) or the pool API refused: the panel says so
            self.autoscale.show(f"Autoscale unavailable: {exc}", ok=False)
        return state

    async def next_event(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 30.0,
        after: int | None = None,
    ) -> dict[str, Any]:
        """The first event received after `after` (an `events.mark()`; default now) that
        satisfies predicate; TimeoutError otherwise."""
        position = [self.events.mark() if after is None else after]
        found: list[dict[str, Any]] = []

        def seen(_state: DashboardState) -> bool:
            fresh = self.events.since(position[0])
            position[0] += len(fresh)
            found.extend(e for e in fresh if predicate(e))
            return bool(found)

        await self.feed.wait_for(seen, timeout)
        return found[0]

    async def wait_done(self, task_ids: Iterable[str], timeout: float = 60.0) -> Audit:
        """Wait until each task has completed, failed or been cancelled (as the events tell);
        return the audit of their completions."""
        ids = [str(t) for t in task_ids]
        left = set(ids)
        position = [0]

        def finished(_state: DashboardState) -> bool:
            fresh = self.events.since(position[0])
            position[0] += len(fresh)
            for e in fresh:
                if e.get("event") in _FINAL_EVENTS:
                    left.discard(str(e.get("task_id")))
            return not left

        try:
            await self.feed.wait_for(finished, timeout)
        except TimeoutError:
            raise TimeoutError(f"{len(left)} of {len(ids)} tasks not finished within "
                               f"{timeout}s; {self.state.summary()}") from None
        return audit(self.events.events, ids)

    def worker_name(self, worker_id: Any) -> str:
        """A worker's name from its id (as the panels show it)."""
        return self.state.worker_name(worker_id)

    async def refresh(self) -> DashboardState:
        """Poll everything once and redraw now (no background task needed)."""
        await self.feed.poll(tasks=True)
        self.feed.render()
        return self.state

    async def wait_for(
        self, predicate: Callable[[DashboardState], Any], timeout: float = 30.0
    ) -> DashboardState:
        """Wait until predicate(state) holds, e.g.
        `lambda s: s.count(EventType.TASK_COMPLETED) >= 50`."""
        return await self.feed.wait_for(predicate, timeout)

    def snapshot(self) -> Snapshot:
        """The stats line and the three charts as they are now, as a still SVG picture:
        what a reader of the notebook file sees without running it."""
        picture = self.chart.snapshot()
        picture.caption = self.summary()
        return picture

    def summary(self) -> str:
        """One id-free line about the cluster (stable notebook output)."""
        return self.state.summary()

    def __repr__(self) -> str:
        return "Dashboard()"


def _sized(widget: widgets.Widget, layout: widgets.Layout) -> widgets.Widget:
    widget.layout = layout
    return widget
