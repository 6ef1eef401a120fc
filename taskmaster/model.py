"""Frozen value objects at the centre: tasks, workers, events."""

from __future__ import annotations

import enum
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

# ---- JSON that PostgreSQL can store ----

class UnstorableValue(ValueError):
    """A value PostgreSQL's json/jsonb refuses: NaN or Infinity, a NUL character, an unpaired
    UTF-16 surrogate (its message says what and where, e.g. `NaN at $.ratio`)."""


def unstorable(value: Any) -> str | None:
    """What PostgreSQL would refuse in a JSON value, and where (`a NUL character (\\u0000)
    at $.name`); None when it can be stored."""
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:  # a loop, not recursion: the value may be nested ~1000 deep
        v, path = stack.pop()
        if isinstance(v, dict):
            for k, item in v.items():
                stack.append((k, f"{path} (a key)"))
                stack.append((item, f"{path}.{k}" if isinstance(k, str) else f"{path}[{k!r}]"))
        elif isinstance(v, list | tuple):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(v))
        elif isinstance(v, str):
            if "\x00" in v:
                return f"a NUL character (\\u0000) at {path}"
            try:
                v.encode()
            except UnicodeEncodeError:
                return f"an unpaired UTF-16 surrogate at {path}"
        elif isinstance(v, float) and not math.isfinite(v):
            word = "NaN" if math.isnan(v) else "Infinity" if v > 0 else "-Infinity"
            return f"{word} at {path}"
    return None


def storable_json(value: Any) -> str:
    """value as JSON text PostgreSQL's jsonb accepts (objects JSON lacks become their str());
    UnstorableValue names what it refuses and where."""
    if value is None:  # most handlers return nothing: no encoder for that
        return "null"
    try:
        text = json.dumps(value, default=str, allow_nan=False)
    except ValueError:  # NaN or Infinity: find where
        raise UnstorableValue(unstorable(value) or "NaN or Infinity") from None
    # cheap first: only text with an escaped NUL or surrogate is looked at closely
    if "\\u0000" in text or "\\ud" in text:
        why = unstorable(json.loads(text))
        if why:
            raise UnstorableValue(why)
    return text


# an error message longer than this is cut (a report's error is free text from a handler)
MAX_ERROR_CHARS = 8192


def clean_error(text: str) -> str:
    """An error message PostgreSQL's text column takes: NUL characters and unpaired
    surrogates replaced by U+FFFD, at most MAX_ERROR_CHARS characters."""
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS - 1] + "\u2026"
    return _UNSTORABLE_CHARS.sub("\ufffd", text)


_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """True while the task is held by a worker."""
        return self in _ACTIVE

    @property
    def final(self) -> bool:
        """True once nothing more will happen to the task."""
        return self in _FINAL


# looked up for every report: sets, not tuples of members (a member lookup is slow)
_ACTIVE = frozenset({TaskStatus.ASSIGNED, TaskStatus.RUNNING})
_FINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class WorkerStatus(enum.StrEnum):
    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"


class EventType(enum.StrEnum):
    """The lifecycle events of the feed (the `event` field of every SSE message)."""

    TASK_SCHEDULED = "task_scheduled"
    TASK_ASSIGNED = "task_assigned"
    TASK_RUNNING = "task_running"
    TASK_PROGRESS = "task_progress"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_RETRYING = "task_retrying"
    TASK_REASSIGNED = "task_reassigned"
    TASK_CANCEL_REQUESTED = "task_cancel_requested"
    TASK_CANCELLED = "task_cancelled"
    TASK_REJECTED = "task_rejected"
    WORKER_ONLINE = "worker_online"
    WORKER_DRAINING = "worker_draining"
    WORKER_OFFLINE = "worker_offline"
    # every task, event and counter was cleared (POST /api/reset); the first event after it
    STACK_RESET = "stack_reset"
    # the autoscaler resized the worker pool (data: from, to, reason)
    POOL_SCALED = "pool_scaled"
    # sent by the feed itself, never stored: a reconnecting client missed more than the
    # replay limit (TASKMASTER_SSE_REPLAY)
    REPLAY_TRUNCATED = "replay_truncated"


EVENT_TYPES = tuple(e.value for e in EventType if e is not EventType.REPLAY_TRUNCATED)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    id: uuid.UUID
    command: str
    payload: Any
    status: TaskStatus
    priority: int
    scheduled_at: datetime
    created_at: datetime
    assigned_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None
    worker_id: str | None
    attempt: int
    max_attempts: int
    timeout_seconds: float
    progress: int
    result: Any
    error: str | None
    idempotency_key: str | None
    cancel_requested: bool = False
    history: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> Task:
        """Convert a database row."""
        return cls(
            id=r["id"],
            command=r["command"],
            payload=r["payload"],
            status=TaskStatus(r["status"]),
            priority=r["priority"],
            scheduled_at=r["scheduled_at"],
            created_at=r["created_at"],
            assigned_at=r["assigned_at"],
            started_at=r["started_at"],
            completed_at=r["completed_at"],
            failed_at=r["failed_at"],
            cancelled_at=r["cancelled_at"],
            worker_id=r["worker_id"],
            attempt=r["attempt"],
            max_attempts=r["max_attempts"],
            timeout_seconds=r["timeout_seconds"],
            progress=r["progress"],
            result=r["result"],
            error=r["error"],
            idempotency_key=r["idempotency_key"],
            cancel_requested=r["cancel_requested"],
            history=tuple(r["history"] or ()),
        )

    def to_json(self) -> dict[str, Any]:
        """The API's JSON shape."""
        return {
            "id": str(self.id),
            "command": self.command,
            "payload": self.payload,
            "status": self.status.value,
            "priority": self.priority,
            "scheduled_at": _iso(self.scheduled_at),
            "created_at": _iso(self.created_at),
            "assigned_at": _iso(self.assigned_at),
            "started_at": _iso(self.started_at),
            "completed_at": _iso(self.completed_at),
            "failed_at": _iso(self.failed_at),
            "cancelled_at": _iso(self.cancelled_at),
            "worker_id": self.worker_id,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "timeout_seconds": self.timeout_seconds,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
            "idempotency_key": self.idempotency_key,
            "cancel_requested": self.cancel_requested,
        }

    def to_json_detail(self) -> dict[str, Any]:
        """The JSON of GET /api/tasks/{id}: the task plus every attempt's history."""
        out = self.to_json()
        attempts = [dict(h) for h in self.history]
        if attempts and attempts[-1].get("attempt") == self.attempt:
            # the last attempt already ended (failed for good, or lost): it is on record
            attempts[-1]["status"] = self.status.value
            out["attempts"] = attempts
            return out
        attempts.append({
            "attempt": self.attempt,
            "worker_id": self.worker_id,
            "status": self.status.value,
            "assigned_at": _iso(self.assigned_at),
            "started_at": _iso(self.started_at),
            "error": self.error if self.status is TaskStatus.FAILED else None,
        })
        out["attempts"] = attempts
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Worker:
    id: str
    name: str
    host: str
    pid: int
    status: WorkerStatus
    capacity: int
    tasks_completed: int
    tasks_failed: int
    registered_at: datetime
    last_heartbeat: datetime
    current_task_ids: tuple[str, ...]
    coordinator: str | None = None  # the name of the coordinator holding it, if live

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> Worker:
        """Convert a database row (with an aggregated current_task_ids column)."""
        return cls(
            id=r["id"],
            name=r["name"],
            host=r["host"],
            pid=r["pid"],
            status=WorkerStatus(r["status"]),
            capacity=r["capacity"],
            # plus the deltas not yet folded into the row (store/queries.sql, worker_counts)
            tasks_completed=r["tasks_completed"] + (r.get("completed_delta") or 0),
            tasks_failed=r["tasks_failed"] + (r.get("failed_delta") or 0),
            registered_at=r["registered_at"],
            last_heartbeat=r["last_heartbeat"],
            current_task_ids=tuple(str(t) for t in (r["current_task_ids"] or ())),
            coordinator=r.get("coordinator"),
        )

    def to_json(self) -> dict[str, Any]:
        """The API's JSON shape (current_task_id as in the demo guide, plus the full list)."""
        return {
            "id": self.id,
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "status": self.status.value,
            "capacity": self.capacity,
            "tasks_completed": self.tasks_completed,
            "tasks_failed": self.tasks_failed,
            "current_task_id": self.current_task_ids[0] if self.current_task_ids else None,
            "current_task_ids": list(self.current_task_ids),
            "registered_at": _iso(self.registered_at),
            "last_heartbeat": _iso(self.last_heartbeat),
            "coordinator": self.coordinator,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    id: int
    event: EventType
    timestamp: datetime
    task_id: uuid.UUID | None
    worker_id: str | None
    data: Mapping[str, Any]

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> Event:
        """Convert a database row."""
        return cls(
            id=r["id"],
            event=EventType(r["event"]),
            timestamp=r["ts"],
            task_id=r["task_id"],
            worker_id=r["worker_id"],
            data=r["data"] or {},
        )

    def to_json(self) -> dict[str, Any]:
        """The SSE line's JSON: the demo guide's event/task_id/timestamp, plus details."""
        out: dict[str, Any] = {"event": self.event.value}
        if self.task_id is not None:
            out["task_id"] = str(self.task_id)
        out["timestamp"] = self.timestamp.isoformat()
        if self.worker_id is not None:
            out["worker_id"] = self.worker_id
        out.update(self.data)
        return out


class ReportState(enum.StrEnum):
    """What a worker says of one delivery."""

    RUNNING = "running"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # never started (worker full, draining or stopping): no attempt used

    @property
    def final(self) -> bool:
        """True when the report ends the delivery."""
        return self not in _UNDER_WAY


_UNDER_WAY = frozenset({ReportState.RUNNING, ReportState.PROGRESS})
REPORT_STATES = tuple(s.value for s in ReportState)


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """A worker's report on one delivery (task id + attempt)."""

    task_id: uuid.UUID
    attempt: int
    state: ReportState
    progress: int = 0
    result_json: str | None = None  # a completed task's result, as JSON text
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seq: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.state, ReportState):  # a plain string names a state too
            object.__setattr__(self, "state", ReportState(self.state))

    @property
    def final(self) -> bool:
        """True when the report ends the delivery."""
        return self.state.final


    @property
    def ref(self) -> TaskRef:
        """The delivery this report is about."""
        return TaskRef(self.task_id, self.attempt)

    def then(self, later: Report) -> Report:
        """This report and a later one on the same delivery, as one: a final report wins
        over running/progress ones; the start time and the highest progress survive."""
        keep, other = (self, later) if self.final and not later.final else (later, self)
        return Report(
            task_id=keep.task_id,
            attempt=keep.attempt,
            state=keep.state,
            progress=max(keep.progress, other.progress),
            result_json=keep.result_json,
            error=keep.error,
            started_at=keep.started_at or other.started_at,
            finished_at=keep.finished_at or other.finished_at,
            seq=max(keep.seq, other.seq),
        )


def merge_reports(reports: list[Report]) -> list[Report]:
    """Collapse several reports on one delivery into one (Report.then), keeping the order
    of first sight, so that one statement can apply the whole batch."""
    merged: dict[TaskRef, Report] = {}
    for r in reports:
        prev = merged.get(r.ref)
        merged[r.ref] = r if prev is None else prev.then(r)
    return list(merged.values())


class TaskRef(NamedTuple):
    """One delivery of a task: its id and the attempt (the fencing token)."""

    task_id: uuid.UUID
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """A task handed to a worker: what goes over the wire."""

    task_id: uuid.UUID
    attempt: int
    command: str
    payload_json: str
    timeout_seconds: float
    worker_id: str = ""

    @property
    def ref(self) -> TaskRef:
        """The delivery's task id and attempt."""
        return TaskRef(self.task_id, self.attempt)
