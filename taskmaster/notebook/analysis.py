"""Measuring what the notebooks claim, from the SSE events and the API; pure Python.

The notebooks assert the demo guide's claims with numbers measured on the reader's machine:
nothing lost, nothing completed twice, tasks in parallel, throughput growing with
workers, a killed worker's tasks finished elsewhere. The functions here compute those
numbers from lists of event dicts (as GET /api/logs/stream sends them), so they are
tested without a stack.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from taskmaster.model import EventType

Event = Mapping[str, Any]

# Events that end a run of a task on a worker (it no longer occupies a slot there).
_LEAVES = frozenset({
    EventType.TASK_COMPLETED, EventType.TASK_FAILED, EventType.TASK_RETRYING,
    EventType.TASK_REASSIGNED, EventType.TASK_CANCELLED, EventType.TASK_REJECTED,
})


@dataclass(frozen=True, slots=True)
class GuideFigures:
    """The figures quoted by the TaskMaster interactive demo guide, a Node.js demo of the
    same system (M1 Mac / i7, 0.5-0.8 s tasks)."""

    creation_ms: float = 200.0  # 50 tasks created
    assignment_s: float = 1.0  # the scheduler polls the database every second
    task_seconds: tuple[float, float] = (0.5, 0.8)
    drain_seconds: tuple[float, float] = (30.0, 40.0)  # 50 tasks on 3 workers
    throughput: tuple[float, float] = (1.5, 2.0)  # tasks/s on 3 workers
    scaling: Mapping[int, float] = field(
        default_factory=lambda: {1: 0.5, 3: 1.5, 5: 2.5}
    )  # tasks/s by worker count


DEMO_GUIDE = GuideFigures()


def when(event: Event) -> float:
    """The event's timestamp as epoch seconds (0.0 when it has none)."""
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            return 0.0
    return 0.0


class EventRecord:
    """Every event a Feed receives, in order, for measuring (a Feed listener).

    `mark()` before an action and `since(mark)` after it give the events in between.
    Bounded: past `limit` events the oldest half is dropped.
    """

    def __init__(self, limit: int = 500_000, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self.events: list[dict[str, Any]] = []
        self.received: list[float] = []  # when each event reached us (epoch seconds)
        self.dropped = 0

    def __call__(self, event: Mapping[str, Any]) -> None:
        """Keep one event."""
        self.events.append(dict(event))
        self.received.append(self.clock())
        if len(self.events) > self.limit:
            half = len(self.events) // 2
            del self.events[:half]
            del self.received[:half]
            self.dropped += half

    def delays(self, kinds: Iterable[str] = (EventType.TASK_COMPLETED,)) -> list[float]:
        """Seconds between each event's timestamp and its arrival here, for these kinds."""
        wanted = set(kinds)
        return [
            got - when(e) for e, got in zip(self.events, self.received, strict=True)
            if e.get("event") in wanted and when(e)
        ]

    def mark(self) -> int:
        """How many events were received so far (a position for since())."""
        return self.dropped + len(self.events)

    def since(self, mark: int = 0) -> list[dict[str, Any]]:
        """The events received after a mark()."""
        return self.events[max(0, mark - self.dropped):]

    def count(self, kind: str, since: int = 0) -> int:
        """How many events of this type arrived after the mark `since`."""
        return sum(1 for e in self.since(since) if e.get("event") == kind)

    def of(self, task_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The events about these tasks."""
        wanted = set(map(str, task_ids))
        return [e for e in self.events if e.get("task_id") in wanted]

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        return "EventRecord()"


@dataclass(frozen=True, slots=True)
class Audit:
    """Did every task complete, and complete once? (from task_completed events)."""

    expected: int
    completed_once: int
    lost: tuple[str, ...]  # no completion seen
    twice: tuple[str, ...]  # more than one completion seen
    failed: tuple[str, ...]  # a task_failed event (no attempts left)

    @property
    def ok(self) -> bool:
        """True when each task completed exactly once and none failed."""
        return not (self.lost or self.twice or self.failed)

    def check(self) -> Audit:
        """Raise AssertionError naming the tasks at fault unless ok; return self."""
        if not self.ok:
            raise AssertionError(
                f"{self}: lost {list(self.lost)[:5]}, completed twice {list(self.twice)[:5]}, "
                f"failed {list(self.failed)[:5]}"
            )
        return self

    def __str__(self) -> str:
        return (
            f"{self.expected} tasks: {self.completed_once} completed exactly once, "
            f"{len(self.lost)} lost, {len(self.twice)} completed twice, "
            f"{len(self.failed)} failed"
        )


def audit(events: Iterable[Event], task_ids: Iterable[str]) -> Audit:
    """Count the completions of each task: lost, once, twice."""
    ids = [str(t) for t in task_ids]
    wanted = set(ids)
    done: Counter[str] = Counter()
    failed: set[str] = set()
    for e in events:
        task = e.get("task_id")
        if task not in wanted:
            continue
        if e.get("event") == EventType.TASK_COMPLETED:
            done[str(task)] += 1
        elif e.get("event") == EventType.TASK_FAILED:
            failed.add(str(task))
    return Audit(
        expected=len(wanted),
        completed_once=sum(1 for t in wanted if done[t] == 1),
        lost=tuple(t for t in ids if done[t] == 0),
        twice=tuple(t for t in ids if done[t] > 1),
        failed=tuple(t for t in ids if t in failed),
    )


def completions(events: Iterable[Event], task_ids: Iterable[str] | None = None) -> list[Event]:
    """The task_completed events (of these tasks), in order."""
    wanted = None if task_ids is None else set(map(str, task_ids))
    return [
        e for e in events
        if e.get("event") == EventType.TASK_COMPLETED and (wanted is None or e.get("task_id") in wanted)
    ]


def by_worker(events: Iterable[Event], names: Callable[[Any], str] = str) -> Counter[str]:
    """Completed tasks per worker name."""
    return Counter(names(e.get("worker_id")) for e in completions(events))


def busy_seconds(events: Iterable[Event], names: Callable[[Any], str] = str) -> dict[str, float]:
    """Seconds spent running tasks that completed, per worker name (from duration_ms)."""
    out: dict[str, float] = {}
    for e in completions(events):
        name = names(e.get("worker_id"))
        out[name] = out.get(name, 0.0) + float(e.get("duration_ms") or 0.0) / 1000
    return out


def throughput(events: Sequence[Event], task_ids: Iterable[str] | None = None) -> float:
    """Completions per second from the first event about the tasks to the last completion."""
    wanted = None if task_ids is None else set(map(str, task_ids))
    mine = [e for e in events if wanted is None or e.get("task_id") in wanted]
    done = completions(mine)
    if not done:
        return 0.0
    start = min(when(e) for e in mine)
    span = max(when(e) for e in done) - start
    return len(done) / span if span > 0 else 0.0


def rate(events: Iterable[Event], start: float, end: float) -> float:
    """Completions per second with a timestamp in [start, end)."""
    if end <= start:
        return 0.0
    n = sum(1 for e in completions(events) if start <= when(e) < end)
    return n / (end - start)


def running_over_time(events: Iterable[Event]) -> list[tuple[float, int]]:
    """(time, tasks running) after each change, from task_running and the events ending runs."""
    running: set[tuple[Any, Any]] = set()
    out: list[tuple[float, int]] = []
    for e in sorted(events, key=when):
        kind, key = e.get("event"), (e.get("task_id"), e.get("attempt"))
        if kind == EventType.TASK_RUNNING:
            running.add(key)
        elif kind in _LEAVES:
            running.discard(key)
            if kind == EventType.TASK_REASSIGNED:  # the attempt number is the next one here
                running = {k for k in running if k[0] != key[0]}
        else:
            continue
        out.append((when(e), len(running)))
    return out


def max_running(events: Iterable[Event]) -> int:
    """The most tasks running at the same moment."""
    return max((n for _, n in running_over_time(events)), default=0)


def reassigned_from(events: Iterable[Event], worker_id: str) -> list[str]:
    """Tasks taken back from this worker (task_reassigned events naming it), in order."""
    seen: dict[str, None] = {}
    for e in events:
        if e.get("event") == EventType.TASK_REASSIGNED and e.get("worker_id") == worker_id:
            seen.setdefault(str(e.get("task_id")), None)
    return list(seen)


def finished_by(events: Iterable[Event], task_ids: Iterable[str]) -> dict[str, Any]:
    """The worker id that completed each of these tasks."""
    wanted = set(map(str, task_ids))
    return {
        str(e["task_id"]): e.get("worker_id")
        for e in completions(events) if e.get("task_id") in wanted
    }


def lifecycle(events: Iterable[Event], task_id: str) -> list[str]:
    """The status changes of one task, in order, progress reports left out."""
    steps: list[str] = []
    for e in events:
        kind = str(e.get("event", ""))
        if e.get("task_id") == task_id and kind != EventType.TASK_PROGRESS:
            step = kind.removeprefix("task_")
            if not steps or steps[-1] != step:
                steps.append(step)
    return steps


def utilisation(samples: Sequence[Mapping[str, bool]]) -> dict[str, float]:
    """Per worker, the share of samples in which it held a task."""
    counts: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for sample in samples:
        for name, busy in sample.items():
            seen[name] += 1
            counts[name] += bool(busy)
    return {name: counts[name] / seen[name] for name in sorted(seen)}


def spread(counts: Mapping[str, int | float]) -> float:
    """Largest minus smallest value (0 for an even distribution)."""
    values = list(counts.values())
    return max(values) - min(values) if values else 0


def gaps(events: Iterable[Event], task_ids: Iterable[str],
         start: str = EventType.TASK_SCHEDULED, end: str = EventType.TASK_ASSIGNED) -> list[float]:
    """Per task, seconds from its first `start` event to its first `end` event after it."""
    wanted = set(map(str, task_ids))
    began: dict[str, float] = {}
    out: dict[str, float] = {}
    for e in events:
        task = str(e.get("task_id"))
        if task not in wanted:
            continue
        if e.get("event") == start and task not in began:
            began[task] = when(e)
        elif e.get("event") == end and task in began and task not in out:
            out[task] = when(e) - began[task]
    return list(out.values())


def span(events: Iterable[Event], task_ids: Iterable[str]) -> float:
    """Seconds from the first event about these tasks to their last completion."""
    wanted = set(map(str, task_ids))
    mine = [e for e in events if e.get("task_id") in wanted]
    done = completions(mine)
    if not done:
        return 0.0
    return max(when(e) for e in done) - min(when(e) for e in mine)


def pickup_delays(events: Iterable[Event], task_ids: Iterable[str]) -> list[float]:
    """Per task, seconds from the moment it could have been assigned to its assignment.

    That moment is the later of its `task_scheduled` event and the last time, before the
    assignment, that its worker let go of a task (a slot became free there). A burst of
    50 tasks on 3 slots waits in the queue for seconds; this measures the part that is the
    scheduler's own doing: a poll-based one adds up to a polling period to every value.
    """
    wanted = set(map(str, task_ids))
    scheduled: dict[str, float] = {}
    freed: dict[str, float] = {}  # worker id -> when it last let go of a task
    out: dict[str, float] = {}
    for e in events:
        kind, task, worker = e.get("event"), str(e.get("task_id")), e.get("worker_id")
        if kind == EventType.TASK_SCHEDULED and task not in scheduled:
            scheduled[task] = when(e)
        elif kind in _LEAVES and worker is not None:
            freed[str(worker)] = when(e)
        elif kind == EventType.TASK_ASSIGNED and task in wanted and task in scheduled \
                and task not in out:
            ready = max(scheduled[task], freed.get(str(worker), 0.0))
            out[task] = max(0.0, when(e) - ready)
    return list(out.values())


@dataclass(frozen=True, slots=True)
class Failover:
    """A coordinator crash seen from the events: how long until a worker that moved ran a
    new task, the completions per second around it, and the moved workers' tasks that had
    to start again."""

    seconds: float  # from the crash to the first task a moved worker started anew
    per_second: tuple[int, ...]  # completions in each whole second around the crash
    restarted: int  # tasks taken back from the moved workers (task_reassigned naming them)

    @property
    def quiet_seconds(self) -> int:
        """Seconds around the crash in which nothing completed (a gap in the chart)."""
        return sum(1 for n in self.per_second if n == 0)


def failover_report(events: Sequence[Event], moved: Iterable[str], crashed_at: float, *,
                    before: int = 2, after: int = 3) -> Failover | None:
    """What a coordinator crash at `crashed_at` (epoch seconds) did to the workers it held
    (`moved`, their ids); None until one of them has started a task assigned after it.

    `per_second` covers `before` whole seconds before the crash and `after` after it."""
    workers = set(moved)
    fresh = {str(e.get("task_id")) for e in events
             if e.get("event") == EventType.TASK_ASSIGNED and e.get("worker_id") in workers
             and when(e) > crashed_at}
    starts = [when(e) for e in events if e.get("event") == EventType.TASK_RUNNING
              and str(e.get("task_id")) in fresh and e.get("worker_id") in workers]
    if not starts:
        return None
    done = [when(e) for e in events if e.get("event") == EventType.TASK_COMPLETED]
    buckets = [sum(1 for t in done if crashed_at + i <= t < crashed_at + i + 1)
               for i in range(-before, after)]
    restarted = sum(1 for e in events if e.get("event") == EventType.TASK_REASSIGNED
                    and e.get("worker_id") in workers and when(e) > crashed_at)
    return Failover(seconds=max(0.0, min(starts) - crashed_at), per_second=tuple(buckets),
                    restarted=restarted)
