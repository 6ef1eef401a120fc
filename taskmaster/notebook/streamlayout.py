"""The task stream's layout: rows per worker slot and a bar per attempt, from feed events.

Pure Python, no widgets: `StreamLayout.apply(event)` folds one event in (O(1) amortised);
the panel (taskstream.py) reads `visible()` at its render tick, so a burst of thousands of
events costs one redraw per tick, never one per event.

A bar runs from an attempt's `task_running` to its end (`task_completed`, `task_failed`,
`task_retrying`, `task_cancelled`, `task_reassigned`, or its worker going offline), on the
lowest free slot of its worker. Times are the events' own timestamps, so replaying a
recording lays out exactly what the live run laid out.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from taskmaster.model import EventType

# how each attempt-ending event colours its bar
ENDINGS: dict[str, str] = {
    EventType.TASK_COMPLETED: "completed",
    EventType.TASK_FAILED: "failed",
    EventType.TASK_RETRYING: "failed",  # this attempt failed; a later one may run
    EventType.TASK_CANCELLED: "cancelled",
    EventType.TASK_REASSIGNED: "reassigned",  # cut: its worker died or stopped answering
    EventType.TASK_REJECTED: "reassigned",  # given back unstarted
}
OUTCOMES = ("running", "completed", "failed", "reassigned", "cancelled")
MAX_COMMANDS = 10_000  # assigned-but-not-running tasks whose command is remembered
MAX_NAMES = 10_000  # worker ids whose names are remembered
MAX_WAITING = 1_000  # attempts of one full worker waiting for a slot (then rows are added)


@dataclass(slots=True)
class Bar:
    """One attempt of one task on one worker slot."""

    task_id: str
    attempt: int
    command: str
    row: tuple[str, int]  # (worker id, slot)
    start: float  # epoch seconds
    end: float | None = None  # None while it runs
    outcome: str = "running"

    def duration(self, now: float) -> float:
        """Seconds from start to end (to now while running)."""
        return (self.end if self.end is not None else now) - self.start

    def key(self, label: str) -> tuple[Any, ...]:
        """What a picture of it shows (for comparing two layouts), on its row's label."""
        return (self.task_id, self.attempt, self.command, label, self.start, self.end,
                self.outcome)


@dataclass(slots=True)
class _Worker:
    capacity: int | None = None  # slots (None: not told yet, rows are added as needed)
    online: bool = True
    slots: list[str | None] = field(default_factory=list)  # task id per slot (None: free)
    # attempts that started while every slot was taken: one report can tell a task's start
    # before the end of the one whose slot it took; they take the next slot that frees
    waiting: list[Bar] = field(default_factory=list)


@dataclass(slots=True, repr=False)
class StreamLayout:
    """Bounded model of the task stream: `window` seconds of bars, at most `max_bars`."""

    window: float = 60.0
    max_bars: int = 5_000
    max_rows: int = 200
    now: float = 0.0  # the latest event time seen (the right edge of the window)
    version: int = 0  # bumped on every change the picture shows
    bars: deque[Bar] = field(default_factory=deque)  # in order of start
    open: dict[str, Bar] = field(default_factory=dict)  # running attempts, by task id
    rows: dict[tuple[str, int], float] = field(default_factory=dict)  # -> when last used
    workers: dict[str, _Worker] = field(default_factory=dict)  # by worker id
    names: OrderedDict[str, str] = field(default_factory=OrderedDict)  # worker id -> name
    commands: OrderedDict[str, str] = field(default_factory=OrderedDict)  # task id -> command
    held: dict[str, _Worker] = field(default_factory=dict)  # running task id -> its worker
    events: int = 0
    last_id: int = -1  # the last numeric event id folded in
    dropped: int = 0  # bars pushed out by max_bars before they left the window

    def __post_init__(self) -> None:
        if self.window <= 0 or self.max_bars < 1 or self.max_rows < 1:
            raise ValueError("StreamLayout needs window > 0, max_bars >= 1 and max_rows >= 1")

    # folding events in
    def apply(self, event: Mapping[str, Any]) -> None:
        """Fold one feed event in (cheap: no formatting, no widgets)."""
        kind = event.get("event")
        eid = event.get("id")
        if isinstance(eid, int):  # an event seen twice (a reconnect's overlap) counts once
            if eid <= self.last_id and kind != EventType.STACK_RESET:
                return
            self.last_id = eid
        self.events += 1
        if kind == EventType.TASK_RUNNING:
            self._running(event)
        elif kind in ENDINGS:
            self._end(event, ENDINGS[str(kind)])
        elif kind == EventType.TASK_ASSIGNED:
            if event.get("command") and event.get("task_id"):
                self._remember(str(event["task_id"]), str(event["command"]))
        elif kind == EventType.WORKER_ONLINE:
            self._online(event)
        elif kind == EventType.WORKER_OFFLINE:
            self._offline(event)
        elif kind == EventType.STACK_RESET:
            self._reset(event)

    def apply_many(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Fold several events in, in order."""
        for event in events:
            self.apply(event)

    __call__ = apply  # a layout is also a feed listener

    def _time(self, event: Mapping[str, Any]) -> float:
        stamp = event.get("timestamp")
        when = self.now
        if isinstance(stamp, str):
            try:
                when = datetime.fromisoformat(stamp).timestamp()
            except ValueError:
                pass
        elif isinstance(stamp, int | float):
            when = float(stamp)
        if when > self.now:
            self.now = when
            self._prune()
        return when

    def _remember(self, task_id: str, command: str) -> None:
        self.commands[task_id] = command
        self.commands.move_to_end(task_id)
        if len(self.commands) > MAX_COMMANDS:
            self.commands.popitem(last=False)

    def _worker(self, worker_id: str) -> _Worker:
        worker = self.workers.get(worker_id)
        if worker is None:  # its worker_online came before we listened
            worker = self.workers[worker_id] = _Worker()
        return worker

    def _running(self, event: Mapping[str, Any]) -> None:
        task_id = str(event.get("task_id") or "")
        worker_id = str(event.get("worker_id") or "")
        if not task_id or not worker_id:
            return
        attempt = event.get("attempt")
        attempt = attempt if isinstance(attempt, int) else 1
        start = self._time(event)
        old = self.open.get(task_id)
        if old is not None:
            if old.attempt == attempt:
                return  # told twice
            self._close(old, start, "reassigned")  # its end never came: a later attempt runs
        worker = self._worker(worker_id)
        worker.online = True
        command = self.commands.pop(task_id, None) or str(event.get("command") or "")
        bar = Bar(task_id=task_id, attempt=attempt, command=command, row=(worker_id, -1),
                  start=start)
        self.open[task_id] = bar
        self.held[task_id] = worker
        if None in worker.slots or worker.capacity is None \
                or len(worker.slots) < worker.capacity or len(worker.waiting) >= MAX_WAITING:
            self._place(worker, bar)
        else:
            worker.waiting.append(bar)

    def _place(self, worker: _Worker, bar: Bar) -> None:
        """Put a bar on its worker's lowest free slot (a new one if none is free)."""
        try:
            slot = worker.slots.index(None)
        except ValueError:
            slot = len(worker.slots)
            worker.slots.append(None)
        worker.slots[slot] = bar.task_id
        bar.row = (bar.row[0], slot)
        self._use_row(bar.row, bar.start)
        self.bars.append(bar)
        if len(self.bars) > self.max_bars:
            self.bars.popleft()
            self.dropped += 1
        self.version += 1

    def _end(self, event: Mapping[str, Any], outcome: str) -> None:
        task_id = str(event.get("task_id") or "")
        end = self._time(event)
        self.commands.pop(task_id, None)
        bar = self.open.get(task_id)
        if bar is not None:
            if not bar.command and event.get("command"):
                bar.command = str(event["command"])
            self._close(bar, end, outcome)

    def _close(self, bar: Bar, end: float, outcome: str) -> None:
        bar.end, bar.outcome = max(end, bar.start), outcome
        del self.open[bar.task_id]
        worker = self.held.pop(bar.task_id, None)
        if worker is not None and bar.row[1] < 0:  # it ends before a slot freed: place it now
            worker.waiting.remove(bar)
            self._place(worker, bar)
        slot = bar.row[1]
        if worker is not None and slot < len(worker.slots) and worker.slots[slot] == bar.task_id:
            worker.slots[slot] = None
            if worker.waiting:
                self._place(worker, worker.waiting.pop(0))
        self._use_row(bar.row, bar.end)
        self.version += 1

    def _online(self, event: Mapping[str, Any]) -> None:
        worker_id = str(event.get("worker_id") or "")
        if not worker_id:
            return
        capacity = event.get("capacity")
        if event.get("name"):
            self.learn({worker_id: str(event["name"])})
        self._time(event)
        worker = self.workers.get(worker_id)
        if worker is None:
            worker = self.workers[worker_id] = _Worker()
        worker.online = True
        if isinstance(capacity, int) and capacity > 0:
            worker.capacity = capacity
        self.version += 1

    def _offline(self, event: Mapping[str, Any]) -> None:
        worker_id = str(event.get("worker_id") or "")
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return
        end = self._time(event)
        # what its reassignment events did not end yet
        for task_id in [*worker.slots, *(b.task_id for b in worker.waiting)]:
            bar = self.open.get(task_id) if task_id is not None else None
            if bar is not None:
                self._close(bar, end, "reassigned")
        self._prune()
        self.version += 1

    def _reset(self, event: Mapping[str, Any]) -> None:
        self.bars.clear()
        self.open.clear()
        self.held.clear()
        self.rows.clear()
        self.commands.clear()
        for worker in self.workers.values():
            worker.slots, worker.waiting = [], []
        self._time(event)
        self.version += 1

    def _use_row(self, row: tuple[str, int], when: float) -> None:
        self.rows[row] = max(when, self.rows.get(row, when))
        if len(self.rows) > self.max_rows:
            self._prune_rows()

    def _prune(self) -> None:
        """Drop bars that ended before the window; they are in start order, so stop at the
        first one still inside (or running)."""
        cutoff = self.now - self.window
        bars = self.bars
        while bars and bars[0].end is not None and bars[0].end < cutoff:
            bars.popleft()
            self.version += 1

    def _prune_rows(self) -> None:
        busy = {bar.row for bar in self.open.values()}
        idle = sorted((used, row) for row, used in self.rows.items() if row not in busy)
        for _, row in idle[: len(self.rows) - self.max_rows]:  # the longest unused go
            del self.rows[row]

    # reading
    def learn(self, names: Mapping[str, str]) -> None:
        """Take worker names by id (from worker_online events, or the panels' polls);
        rows show a worker's id until its name is known."""
        for worker_id, name in names.items():
            if self.names.get(worker_id) != name:
                self.names[worker_id] = name
                self.version += 1
            self.names.move_to_end(worker_id)
        while len(self.names) > MAX_NAMES:
            self.names.popitem(last=False)

    def learn_capacity(self, capacities: Mapping[str, int]) -> None:
        """Take workers' slot counts by id (from the panels' polls of /api/workers)."""
        for worker_id, capacity in capacities.items():
            worker = self.workers.get(worker_id)
            if worker is not None and worker.capacity is None and capacity > 0:
                worker.capacity = capacity

    def label(self, row: tuple[str, int]) -> str:
        """A row's name on the axis: its worker's name and slot, e.g. `worker-1/2`."""
        return f"{self.names.get(row[0], row[0])}/{row[1] + 1}"

    def labels(self, rows: Iterable[tuple[str, int]]) -> list[str]:
        """The rows' labels; a name's later incarnation (a worker restarted under its
        name) is marked with a prime so every row keeps a label of its own."""
        out: list[str] = []
        for row in rows:
            label = self.label(row)
            while label in out:
                label += "'"
            out.append(label)
        return out

    def visible(self) -> tuple[list[tuple[str, int]], list[Bar]]:
        """The rows shown (by worker name, then slot; a departed worker's rows stay while a
        bar of theirs is in the window) and the bars in the window."""
        cutoff = self.now - self.window
        bars = [b for b in self.bars if b.end is None or b.end >= cutoff]
        used = {b.row for b in bars}
        online = {worker_id for worker_id, w in self.workers.items() if w.online}
        rows = sorted((r for r in self.rows if r in used or r[0] in online),
                      key=lambda r: _row_order(self.names.get(r[0], r[0]), r[1]))
        return rows, bars

    def snapshot(self) -> dict[str, Any]:
        """What the panel shows, as plain data (equal layouts draw equal pictures)."""
        rows, bars = self.visible()
        labels = dict(zip(rows, self.labels(rows), strict=True))
        return {"now": self.now, "rows": list(labels.values()),
                "bars": [b.key(labels[b.row]) for b in bars]}

    def attempts(self, task_id: str) -> list[Bar]:
        """Every bar of one task still in the window, oldest first."""
        return [b for b in self.bars if b.task_id == task_id]

    def cut(self) -> list[Bar]:
        """Bars ended by a reassignment (their worker died), oldest first."""
        return [b for b in self.bars if b.outcome == "reassigned"]

    def __repr__(self) -> str:
        rows, bars = self.visible()
        running = sum(1 for b in bars if b.end is None)
        return f"StreamLayout({len(rows)} rows, {len(bars)} bars, {running} running)"


def _row_order(name: str, slot: int) -> tuple[Any, ...]:
    """worker-2 before worker-10: digits compare as numbers."""
    parts = re.split(r"(\d+)", name)
    return (*((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts), slot)
