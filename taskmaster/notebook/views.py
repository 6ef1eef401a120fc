"""Read-only panels: stats, workers, live task monitor, activity log.

Each panel is an ipywidgets box over one HTML widget, redrawn by `render(state)` only
when the state sections it shows have changed; `repr()` is short and free of ids, so
notebook text outputs stay stable.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import ipywidgets as widgets

from taskmaster.model import EventType, TaskStatus, WorkerStatus
from taskmaster.notebook.state import DashboardState, TaskRow


def event_badge(kind: str) -> str:
    """The badge an event shows in the activity log: its type without the task_/worker_
    prefix (task_reassigned -> reassigned)."""
    return str(kind).removeprefix("task_").removeprefix("worker_")


STATUS_COLORS: dict[str, str] = {
    TaskStatus.PENDING: "#6b7280",
    TaskStatus.ASSIGNED: "#2563eb",
    TaskStatus.RUNNING: "#d97706",
    TaskStatus.COMPLETED: "#16a34a",
    TaskStatus.FAILED: "#dc2626",
    TaskStatus.CANCELLED: "#9ca3af",
    WorkerStatus.ONLINE: "#16a34a",
    WorkerStatus.DRAINING: "#d97706",
    WorkerStatus.OFFLINE: "#9ca3af",
    event_badge(EventType.TASK_REASSIGNED): "#7c3aed",
    event_badge(EventType.TASK_RETRYING): "#d97706",
    event_badge(EventType.TASK_REJECTED): "#dc2626",
    event_badge(EventType.STACK_RESET): "#111827",
    event_badge(EventType.POOL_SCALED): "#0891b2",
}
_TABLE = "border-collapse:collapse;width:100%;font-size:12px"
_CELL = "padding:2px 6px;border-bottom:1px solid #e5e7eb;text-align:left"


def badge(status: str) -> str:
    """A coloured status pill, as HTML."""
    color = STATUS_COLORS.get(status, "#6b7280")
    return (
        f'<span class="tm-badge tm-{html.escape(status)}" style="background:{color};'
        f'color:white;border-radius:8px;padding:0 6px">{html.escape(status)}</span>'
    )


def progress_bar(percent: int, status: str) -> str:
    """A small HTML progress bar."""
    color = STATUS_COLORS.get(status, "#6b7280")
    return (
        f'<div class="tm-progress" title="{percent}%" style="background:#e5e7eb;width:120px;'
        f'height:8px;border-radius:4px;display:inline-block"><div style="width:{percent}%;'
        f'height:100%;background:{color};border-radius:4px"></div></div> {percent}%'
    )


def table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    """An HTML table of already escaped cells."""
    if not rows:
        return f'<div class="tm-empty" style="color:#6b7280">{html.escape(empty)}</div>'
    head = "".join(f'<th style="{_CELL}">{h}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in row) + "</tr>" for row in rows
    )
    return f'<table style="{_TABLE}"><tr>{head}</tr>{body}</table>'


def natural(name: str) -> tuple[str, int, str]:
    """Sort key: worker-2 before worker-10."""
    m = re.fullmatch(r"(.*?)(\d+)", name)
    return (m.group(1), int(m.group(2)), name) if m else (name, -1, name)


def short(value: Any) -> str:
    """The first 8 characters of an id, escaped."""
    return html.escape(str(value)[:8]) if value else ""


class View(widgets.VBox):
    """A panel that redraws from a DashboardState when its sections changed."""

    title = ""
    sections: tuple[str, ...] = ()
    max_height: str | None = None  # long panels scroll instead of growing the page

    def __init__(self, state: DashboardState | None = None, **kwargs: Any) -> None:
        self.state = state if state is not None else DashboardState()
        self.body = widgets.HTML()
        if self.max_height:
            self.body.layout = widgets.Layout(max_height=self.max_height, overflow="auto")
        header = widgets.HTML(f"<b>{html.escape(self.title)}</b>")
        super().__init__(children=[header, self.body], **kwargs)
        self.add_class("tm-panel")
        self._drawn: tuple[int, ...] | None = None
        self.render(force=True)

    def render(self, state: DashboardState | None = None, force: bool = False) -> bool:
        """Redraw if the shown sections changed (or when forced); True if redrawn."""
        state = state if state is not None else self.state
        key = tuple(state.versions[s] for s in self.sections)
        if key == self._drawn and not force:
            return False
        self._drawn = key
        self.body.value = self.draw(state)
        return True

    def draw(self, state: DashboardState) -> str:
        """The panel's HTML."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StatsPanel(View):
    """Totals from GET /api/stats, the feed's connection and events received."""

    title = "Stats"
    sections = ("stats", "log")
    CARDS = (
        ("Total", "total"),
        ("Pending", "pending"),
        ("Running", "running"),
        ("Completed", "completed"),
        ("Failed", "failed"),
        ("Queue depth", "queue_depth"),
        ("Throughput /s", "throughput"),
        ("Workers online", "workers_online"),
    )

    def draw(self, state: DashboardState) -> str:
        """Cards with the numbers, then a status line."""
        cards = []
        for label, key in self.CARDS:
            value = state.stats.get(key, 0)
            if isinstance(value, float):
                value = f"{value:.1f}"
            cards.append(
                f'<div class="tm-card" style="display:inline-block;min-width:90px;margin:2px;'
                f'padding:4px 8px;border:1px solid #e5e7eb;border-radius:6px">'
                f'<div style="font-size:11px;color:#6b7280">{label}</div>'
                f'<div style="font-size:18px"><b>{html.escape(str(value))}</b></div></div>'
            )
        wait = state.stats.get("queue_wait_p95_ms")
        line = f"feed: {html.escape(state.connection)}; events received: {state.events_seen}"
        if wait is not None:
            line += f"; queue wait p95: {float(wait):.0f} ms"
        return "".join(cards) + f'<div style="font-size:11px;color:#6b7280">{line}</div>'


class WorkersPanel(View):
    """Workers: status, current task, tasks completed."""

    title = "Workers"
    sections = ("workers",)

    def draw(self, state: DashboardState) -> str:
        """One row per worker, by name."""
        rows = []
        for w in sorted(state.workers.values(), key=lambda w: natural(str(w.get("name")))):
            current = list(w.get("current_task_ids") or [])
            if not current and w.get("current_task_id"):
                current = [w["current_task_id"]]
            task = short(current[0]) if current else "idle"
            if len(current) > 1:
                task += f" +{len(current) - 1}"
            rows.append([
                html.escape(str(w.get("name", ""))),
                badge(str(w.get("status", WorkerStatus.ONLINE))),
                task,
                str(int(w.get("tasks_completed") or 0)),
                str(int(w.get("tasks_failed") or 0)),
            ])
        headers = ["Worker", "Status", "Current task", "Completed", "Failed"]
        return table(headers, rows, "No workers")


class TaskMonitor(View):
    """Live task monitor: the most recent tasks with status badges and progress bars."""

    title = "Live Task Monitor"
    sections = ("tasks",)
    max_height = "420px"

    def draw(self, state: DashboardState) -> str:
        """One row per recent task, newest first."""
        rows = [self._row(r, state) for r in state.recent_tasks()]
        headers = ["Task", "Command", "Status", "Progress", "Worker", "Attempt"]
        return table(headers, rows, "No tasks yet")

    @staticmethod
    def _row(row: TaskRow, state: DashboardState) -> list[str]:
        status = badge(row.status)
        if row.reassigned:
            status += " " + badge(event_badge(EventType.TASK_REASSIGNED)) + f" x{row.reassigned}"
        return [
            short(row.id),
            html.escape(row.command),
            status,
            progress_bar(row.progress, row.status),
            html.escape(state.worker_name(row.worker_id)),
            str(row.attempt),
        ]


class ActivityLog(View):
    """The event feed, newest first (the last `lines` events)."""

    title = "Activity Log"
    sections = ("log",)
    max_height = "420px"

    def __init__(
        self, state: DashboardState | None = None, lines: int = 50, **kwargs: Any
    ) -> None:
        self.lines = lines
        super().__init__(state, **kwargs)

    def draw(self, state: DashboardState) -> str:
        """Monospace lines; formatting happens here, for the shown events only."""
        out = []
        for i, event in enumerate(state.log):
            if i >= self.lines:
                break
            out.append(format_event(event, state.worker_name))
        if not out:
            return '<div class="tm-empty" style="color:#6b7280">Waiting for events</div>'
        text = "<br>".join(out)
        return f'<div style="font-family:monospace;font-size:12px">{text}</div>'


DETAILS = ("attempt", "progress", "duration_ms", "error", "reason", "retry_at", "next_attempt",
           "tasks", "pending", "running", "workers_dropped")


def format_event(
    event: Mapping[str, Any], worker_name: Callable[[Any], str] = str
) -> str:
    """One activity log line, as HTML: time, type, task, worker, details."""
    stamp = ""
    ts = event.get("timestamp")
    if isinstance(ts, str):
        try:
            stamp = datetime.fromisoformat(ts).astimezone().strftime("%H:%M:%S")
        except ValueError:
            stamp = ts[:8]
    parts = [html.escape(stamp), badge(event_badge(str(event.get("event", ""))))]
    if event.get("task_id"):
        parts.append(short(event["task_id"]))
    if event.get("event") == EventType.POOL_SCALED:
        parts.append(f"workers {html.escape(str(event.get('from')))} &rarr; "
                     f"{html.escape(str(event.get('to')))}")
    if event.get("name") or event.get("worker_id"):
        parts.append("@" + html.escape(str(event.get("name") or worker_name(event["worker_id"]))))
    for key in DETAILS:
        if event.get(key) not in (None, ""):
            parts.append(f"{key}={html.escape(str(event[key]))}")
    return " ".join(parts)
