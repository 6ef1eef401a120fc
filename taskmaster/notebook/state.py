"""What the dashboard knows, fed by events and polls; pure Python, no widgets.

Applying an event is O(1) and touches no widget: counters, a bounded LRU of recent
tasks, a bounded activity deque and per-second buckets. Each section has a version
number that views compare at their render tick, so a burst of thousands of events
costs one redraw per tick, never one per event.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from taskmaster.model import EventType, TaskStatus, WorkerStatus

SECTIONS = ("tasks", "log", "workers", "stats", "series")

# the status each task event leaves the task in (None: unchanged)
EVENT_STATUS: dict[str, TaskStatus | None] = {
    EventType.TASK_SCHEDULED: TaskStatus.PENDING,
    EventType.TASK_ASSIGNED: TaskStatus.ASSIGNED,
    EventType.TASK_RUNNING: TaskStatus.RUNNING,
    EventType.TASK_PROGRESS: None,
    EventType.TASK_COMPLETED: TaskStatus.COMPLETED,
    EventType.TASK_FAILED: TaskStatus.FAILED,
    EventType.TASK_RETRYING: TaskStatus.PENDING,
    EventType.TASK_REASSIGNED: TaskStatus.PENDING,
    EventType.TASK_CANCELLED: TaskStatus.CANCELLED,
    EventType.TASK_REJECTED: TaskStatus.PENDING,
}
WORKER_EVENTS: dict[str, WorkerStatus] = {
    EventType.WORKER_ONLINE: WorkerStatus.ONLINE,
    EventType.WORKER_DRAINING: WorkerStatus.DRAINING,
    EventType.WORKER_OFFLINE: WorkerStatus.OFFLINE,
}
# how far along a task is: a poll older than the events applied never moves a row back
_RANK: dict[str, int] = {
    TaskStatus.PENDING: 0, TaskStatus.ASSIGNED: 1, TaskStatus.RUNNING: 2,
    TaskStatus.COMPLETED: 3, TaskStatus.FAILED: 3, TaskStatus.CANCELLED: 3,
}
FINAL = frozenset(s for s in TaskStatus if s.final)


@dataclass(slots=True)
class TaskRow:
    """One line of the live task monitor."""

    id: str
    seq: int  # order of first sight: the monitor lists newest first and rows do not jump
    command: str = ""
    status: str = TaskStatus.PENDING
    progress: int = 0
    worker_id: str | None = None
    attempt: int = 1
    reassigned: int = 0  # how many times the task was taken from a dead worker
    error: str | None = None

    @property
    def final(self) -> bool:
        """True once the task is completed, failed or cancelled."""
        return self.status in FINAL


@dataclass(slots=True, repr=False)
class DashboardState:
    """Bounded, coalescing model of the cluster as seen through the API."""

    recent: int = 50
    log_size: int = 200
    window: int = 300  # seconds kept in the chart series
    tasks: OrderedDict[str, TaskRow] = field(default_factory=OrderedDict)
    log: deque[Mapping[str, Any]] = field(init=False)
    counts: Counter[str] = field(default_factory=Counter)
    stats: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    completed_buckets: dict[int, int] = field(default_factory=dict)
    samples: deque[tuple[float, int, int]] = field(init=False)
    versions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    last_event_id: int | str | None = None
    connection: str = "idle"
    _seq: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.log = deque(maxlen=self.log_size)
        self.samples = deque(maxlen=self.window)

    # events
    def apply(self, event: Mapping[str, Any]) -> None:
        """Fold one SSE event in (cheap: no formatting, no widgets)."""
        kind = str(event.get("event", ""))
        self.counts[kind] += 1
        self.log.appendleft(event)  # formatted only if shown, at render time
        self.versions["log"] += 1
        if "id" in event:
            self.last_event_id = event["id"]
        if kind in EVENT_STATUS:
            self._apply_task(kind, event)
        elif kind in WORKER_EVENTS:
            self._apply_worker(kind, event)

    def apply_many(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Fold several events in, in order."""
        for event in events:
            self.apply(event)

    def _row(self, task_id: str) -> TaskRow:
        row = self.tasks.get(task_id)
        if row is None:
            self._seq += 1
            row = self.tasks[task_id] = TaskRow(id=task_id, seq=self._seq)
            if len(self.tasks) > self.recent:
                self.tasks.popitem(last=False)  # the least recently active task goes
        else:
            self.tasks.move_to_end(task_id)
        return row

    def _apply_task(self, kind: str, event: Mapping[str, Any]) -> None:
        task_id = event.get("task_id")
        if not task_id:
            return
        row = self._row(str(task_id))
        status = EVENT_STATUS[kind]
        if status is not None:
            row.status = status
        if event.get("command"):
            row.command = str(event["command"])
        if event.get("worker_id") and kind in (EventType.TASK_ASSIGNED, EventType.TASK_RUNNING):
            row.worker_id = str(event["worker_id"])
        attempt = event.get("next_attempt") or event.get("attempt")
        if isinstance(attempt, int):
            row.attempt = attempt
        if kind == EventType.TASK_PROGRESS:
            row.progress = _clamp(event.get("progress"), row.progress)
            if row.status in (TaskStatus.PENDING, TaskStatus.ASSIGNED):
                row.status = TaskStatus.RUNNING
        elif kind == EventType.TASK_COMPLETED:
            row.progress = 100
            self._count_completion(event)
        elif EVENT_STATUS[kind] is TaskStatus.PENDING:  # back in the queue, on no worker
            row.progress, row.worker_id = 0, None
        if kind == EventType.TASK_REASSIGNED:
            row.reassigned += 1
        if event.get("error"):
            row.error = str(event["error"])
        self.versions["tasks"] += 1

    def _count_completion(self, event: Mapping[str, Any]) -> None:
        second = _epoch_second(event.get("timestamp"))
        if second >= int(time.time()) - self.window:
            self.completed_buckets[second] = self.completed_buckets.get(second, 0) + 1
            self.versions["series"] += 1
        worker = self.workers.get(str(event.get("worker_id")))
        if worker is not None:  # live count between two polls
            worker["tasks_completed"] = int(worker.get("tasks_completed") or 0) + 1
            self.versions["workers"] += 1

    def _apply_worker(self, kind: str, event: Mapping[str, Any]) -> None:
        worker_id = str(event.get("worker_id") or event.get("name") or "")
        if not worker_id:
            return
        worker = self.workers.setdefault(
            worker_id, {"id": worker_id, "name": event.get("name") or worker_id}
        )
        worker["status"] = WORKER_EVENTS[kind]
        if kind == EventType.WORKER_OFFLINE:
            worker["current_task_id"], worker["current_task_ids"] = None, []
        self.versions["workers"] += 1

    # polls
    def set_stats(self, stats: Mapping[str, Any], now: float | None = None) -> None:
        """Take a GET /api/stats answer; it also adds a queue depth / running sample."""
        self.stats = dict(stats)
        now = time.time() if now is None else now
        self.samples.append(
            (now, int(stats.get("queue_depth") or 0), int(stats.get("running") or 0))
        )
        self.versions["stats"] += 1
        self.versions["series"] += 1

    def set_workers(self, workers: Iterable[Mapping[str, Any]]) -> None:
        """Take a GET /api/workers answer (it replaces what events told)."""
        self.workers = {str(w.get("id") or w.get("name")): dict(w) for w in workers}
        self.versions["workers"] += 1

    def merge_tasks(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        """Take a GET /api/tasks page: fill free rows, never move a row back in time."""
        fresh: list[TaskRow] = []
        for task in tasks:  # newest first
            task_id = str(task["id"])
            row = self.tasks.get(task_id)
            if row is None:
                if len(self.tasks) >= self.recent:
                    continue  # polled rows never push out rows the event feed made
                row = self.tasks[task_id] = TaskRow(id=task_id, seq=0)
                self.tasks.move_to_end(task_id, last=False)  # first to go when full
                fresh.append(row)
            elif _order(task) < _order_row(row):
                continue  # the poll is older than the events already applied
            progress = _clamp(task.get("progress"), row.progress)
            if _order(task) == _order_row(row):
                progress = max(progress, row.progress)
            row.status = str(task.get("status") or row.status)
            row.command = str(task.get("command") or row.command)
            row.progress = progress
            row.worker_id = task.get("worker_id") or row.worker_id
            row.attempt = int(task.get("attempt") or row.attempt)
            row.error = task.get("error") or row.error
        for row in reversed(fresh):
            self._seq += 1
            row.seq = self._seq
        self.versions["tasks"] += 1

    # reading
    def recent_tasks(self) -> list[TaskRow]:
        """The recent tasks, newest first (by first sight)."""
        return sorted(self.tasks.values(), key=lambda r: r.seq, reverse=True)

    def completed_series(self, now: float | None = None) -> tuple[list[float], list[int]]:
        """Completed tasks per whole second over the window, zeros filled, up to now-1."""
        end = int(time.time() if now is None else now) - 1
        start = end - self.window + 1
        for second in [s for s in self.completed_buckets if s < start]:
            del self.completed_buckets[second]
        first = min(self.completed_buckets, default=end + 1)
        if self.samples:
            first = min(first, int(self.samples[0][0]))
        first = max(first, start)
        xs = list(range(first, end + 1))
        return [float(x) for x in xs], [self.completed_buckets.get(x, 0) for x in xs]

    def worker_name(self, worker_id: Any) -> str:
        """A worker's display name (its id when unknown)."""
        worker = self.workers.get(str(worker_id))
        return str(worker.get("name") or worker_id) if worker else str(worker_id or "")

    def count(self, kind: str) -> int:
        """How many events of one type were received."""
        return self.counts[kind]

    @property
    def events_seen(self) -> int:
        """Events received since the state was made."""
        return sum(self.counts.values())

    def __repr__(self) -> str:
        return f"DashboardState({self.summary()})"

    def summary(self) -> str:
        """A one-line, id-free description (stable text for notebooks)."""
        s = self.stats
        online = sum(1 for w in self.workers.values() if w.get("status") == WorkerStatus.ONLINE)
        return (
            f"tasks: {s.get('total', 0)} total, {s.get('pending', 0)} pending, "
            f"{s.get('running', 0)} running, {s.get('completed', 0)} completed, "
            f"{s.get('failed', 0)} failed; workers: {online} online"
        )


def _clamp(value: Any, default: int) -> int:
    try:
        return max(0, min(100, int(value)))
    except (TypeError, ValueError):
        return default


def _order(task: Mapping[str, Any]) -> tuple[int, int]:
    return int(task.get("attempt") or 0), _RANK.get(str(task.get("status")), 0)


def _order_row(row: TaskRow) -> tuple[int, int]:
    return row.attempt, _RANK.get(row.status, 0)


def _epoch_second(timestamp: Any) -> int:
    """Whole epoch second of an ISO-8601 timestamp; now when missing or invalid."""
    if isinstance(timestamp, str):
        try:
            return int(datetime.fromisoformat(timestamp).timestamp())
        except ValueError:
            pass
    return int(time.time())
