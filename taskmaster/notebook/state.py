"""What the dashboard knows, fed by events and polls; pure Python, no widgets.

Applying an event is O(1) and touches no widget: counters, a bounded LRU of recent
tasks, a bounded activity deque and per-second buckets. Each section has a version
number that views compare at their render tick, so a burst of thousands of events
costs one redraw per tick, never one per event.

Workers are known by name, one row each: a worker restarted under its name registers with
a new id, and its row follows the newest incarnation (GET /api/workers does the same).
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
# worker ids remembered to name the workers of older task rows and log lines
MAX_WORKER_IDS = 10_000
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
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name
    worker_ids: OrderedDict[str, str] = field(default_factory=OrderedDict)  # id -> name
    completed_buckets: dict[int, int] = field(default_factory=dict)
    created_buckets: dict[int, int] = field(default_factory=dict)
    # (time, queue depth, running, workers online), one per stats poll
    samples: deque[tuple[float, int, int, int]] = field(init=False)
    resets: int = 0  # stack_reset events seen
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
        if kind == EventType.TASK_SCHEDULED:
            self._count(self.created_buckets, event)
        if kind in EVENT_STATUS:
            self._apply_task(kind, event)
        elif kind in WORKER_EVENTS:
            self._apply_worker(kind, event)
        elif kind == EventType.STACK_RESET:
            self._apply_reset(event)

    def _apply_reset(self, event: Mapping[str, Any]) -> None:
        """Every task and event is gone: empty the monitor and the log (the reset line
        stays), zero the workers' counts, forget offline workers; the chart keeps its
        history, where the reset shows."""
        self.resets += 1
        self.tasks.clear()
        self.log.clear()
        self.log.appendleft(event)
        self.workers = {name: {**w, "tasks_completed": 0, "tasks_failed": 0,
                               "current_task_id": None, "current_task_ids": []}
                        for name, w in self.workers.items()
                        if w.get("status") != WorkerStatus.OFFLINE}
        for section in ("tasks", "log", "workers", "stats"):
            self.versions[section] += 1

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

    def _count(self, buckets: dict[int, int], event: Mapping[str, Any]) -> None:
        second = _epoch_second(event.get("timestamp"))
        if second >= int(time.time()) - self.window:
            buckets[second] = buckets.get(second, 0) + 1
            self.versions["series"] += 1

    def _count_completion(self, event: Mapping[str, Any]) -> None:
        self._count(self.completed_buckets, event)
        worker = self._incarnation(event.get("worker_id"))
        if worker is not None:  # live count between two polls
            worker["tasks_completed"] = int(worker.get("tasks_completed") or 0) + 1
            self.versions["workers"] += 1

    def _remember(self, worker_id: str, name: str) -> None:
        self.worker_ids[worker_id] = name
        self.worker_ids.move_to_end(worker_id)
        while len(self.worker_ids) > MAX_WORKER_IDS:
            self.worker_ids.popitem(last=False)

    def _incarnation(self, worker_id: Any) -> dict[str, Any] | None:
        """The row of this worker id, if the id is its name's current incarnation."""
        name = self.worker_ids.get(str(worker_id))
        worker = self.workers.get(name) if name is not None else None
        return worker if worker is not None and worker.get("id") == str(worker_id) else None

    def _apply_worker(self, kind: str, event: Mapping[str, Any]) -> None:
        worker_id = str(event.get("worker_id") or "")
        name = str(event.get("name") or self.worker_ids.get(worker_id) or worker_id)
        if not name:
            return
        if worker_id:
            self._remember(worker_id, name)
        worker = self.workers.get(name)
        if kind == EventType.WORKER_ONLINE and (worker is None or worker.get("id") != worker_id):
            # a new worker, or a new incarnation of the name: its row starts afresh
            worker = self.workers[name] = {"id": worker_id or name, "name": name,
                                           "tasks_completed": 0, "tasks_failed": 0}
        elif worker is None or (worker_id and worker.get("id") != worker_id):
            return  # an older incarnation of the name: its row has moved on
        worker["status"] = WORKER_EVENTS[kind]
        if kind == EventType.WORKER_OFFLINE:
            worker["current_task_id"], worker["current_task_ids"] = None, []
        self.versions["workers"] += 1

    # polls
    def set_stats(self, stats: Mapping[str, Any], now: float | None = None) -> None:
        """Take a GET /api/stats answer; it also adds a sample of the queue depth, the
        running tasks (assigned or running) and the workers online."""
        self.stats = dict(stats)
        now = time.time() if now is None else now
        running = int(stats.get("running") or 0) + int(stats.get("assigned") or 0)
        self.samples.append((now, int(stats.get("queue_depth") or 0), running,
                             int(stats.get("workers_online") or 0)))
        self.versions["stats"] += 1
        self.versions["series"] += 1

    def set_workers(self, workers: Iterable[Mapping[str, Any]]) -> None:
        """Take a GET /api/workers answer (it replaces what events told): one row per
        name, its live incarnation first, else its latest."""
        rows: dict[str, dict[str, Any]] = {}
        for w in workers:
            name = str(w.get("name") or w.get("id"))
            if w.get("id"):
                self._remember(str(w["id"]), name)
            old = rows.get(name)
            if old is None or _liveness(w) >= _liveness(old):
                rows[name] = dict(w)
        self.workers = rows
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
        return self._series(self.completed_buckets, now)

    def created_series(self, now: float | None = None) -> tuple[list[float], list[int]]:
        """Created tasks per whole second over the window, zeros filled, up to now-1."""
        return self._series(self.created_buckets, now)

    def _series(self, buckets: dict[int, int], now: float | None) -> tuple[list[float], list[int]]:
        end = int(time.time() if now is None else now) - 1
        start = end - self.window + 1
        for second in [s for s in buckets if s < start]:
            del buckets[second]
        # both rate series start together: at the first thing either saw, or the first poll
        first = min(min(self.completed_buckets, default=end + 1),
                    min(self.created_buckets, default=end + 1))
        if self.samples:
            first = min(first, int(self.samples[0][0]))
        first = max(first, start)
        xs = list(range(first, end + 1))
        return [float(x) for x in xs], [buckets.get(x, 0) for x in xs]

    def worker_name(self, worker_id: Any) -> str:
        """A worker's display name (its id when unknown)."""
        if not worker_id:
            return ""
        return self.worker_ids.get(str(worker_id)) or str(worker_id)

    def online_workers(self) -> int:
        """Workers the state shows online."""
        return sum(1 for w in self.workers.values() if w.get("status") == WorkerStatus.ONLINE)

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
        online = self.online_workers()
        return (
            f"tasks: {s.get('total', 0)} total, {s.get('pending', 0)} pending, "
            f"{s.get('running', 0)} running, {s.get('completed', 0)} completed, "
            f"{s.get('failed', 0)} failed; workers: {online} online"
        )


def _liveness(worker: Mapping[str, Any]) -> tuple[bool, str]:
    """Which of two rows of one name to show: a live one, then the latest registered."""
    return worker.get("status") != WorkerStatus.OFFLINE, str(worker.get("registered_at") or "")


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
