"""Value objects: statuses, JSON shapes of the API, and merging of worker reports."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from taskmaster.model import (
    EVENT_TYPES,
    Event,
    Report,
    Task,
    TaskStatus,
    Worker,
    WorkerStatus,
    merge_reports,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

TASK_KEYS = {
    "id", "command", "payload", "status", "priority", "scheduled_at", "created_at",
    "assigned_at", "started_at", "completed_at", "failed_at", "cancelled_at", "worker_id",
    "attempt", "max_attempts", "timeout_seconds", "progress", "result", "error",
    "idempotency_key", "cancel_requested",
}
WORKER_KEYS = {
    "id", "name", "host", "pid", "status", "capacity", "tasks_completed", "tasks_failed",
    "current_task_id", "current_task_ids", "registered_at", "last_heartbeat", "coordinator",
}


def task_row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": uuid.UUID(int=1), "command": "noop", "payload": {"n": 1}, "status": "running",
        "priority": 2, "scheduled_at": T0, "created_at": T0, "assigned_at": T0,
        "started_at": T0 + timedelta(seconds=1), "completed_at": None, "failed_at": None,
        "cancelled_at": None, "worker_id": "w1", "attempt": 2, "max_attempts": 3,
        "timeout_seconds": 30.0, "progress": 40, "result": None, "error": None,
        "idempotency_key": "k", "cancel_requested": False,
        "history": [{"attempt": 1, "worker_id": "w0", "error": "boom"}],
    }
    row.update(changes)
    return row


# ---- statuses ----

def test_task_status_classes() -> None:
    assert {s for s in TaskStatus if s.active} == {TaskStatus.ASSIGNED, TaskStatus.RUNNING}
    assert {s for s in TaskStatus if s.final} == {
        TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED
    }
    assert TaskStatus("pending") is TaskStatus.PENDING
    assert str(TaskStatus.RUNNING) == "running"


def test_event_types_are_unique() -> None:
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES)


# ---- Task ----

def test_task_from_record() -> None:
    t = Task.from_record(task_row())
    assert t.payload == {"n": 1}
    assert t.status is TaskStatus.RUNNING
    assert t.history == ({"attempt": 1, "worker_id": "w0", "error": "boom"},)


def test_task_from_record_keeps_json_values_as_they_are() -> None:
    t = Task.from_record(task_row(payload=[1, 2], result={"ok": True}, history=[]))
    assert (t.payload, t.result, t.history) == ([1, 2], {"ok": True}, ())
    # the pool's codecs have decoded the JSON already: a str is a JSON string value
    t = Task.from_record(task_row(payload="done", result="[1]"))
    assert (t.payload, t.result) == ("done", "[1]")


def test_task_is_frozen() -> None:
    t = Task.from_record(task_row())
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.status = TaskStatus.FAILED  # type: ignore[misc]


def test_task_to_json_shape() -> None:
    t = Task.from_record(task_row())
    out = t.to_json()
    assert set(out) == TASK_KEYS
    assert out["id"] == str(uuid.UUID(int=1))
    assert out["status"] == "running"
    assert out["created_at"] == T0.isoformat()
    assert out["started_at"] == (T0 + timedelta(seconds=1)).isoformat()
    assert out["completed_at"] is None
    assert out["payload"] == {"n": 1}
    assert out["cancel_requested"] is False
    json.dumps(out)  # serialisable as is


def test_task_to_json_detail_lists_every_attempt() -> None:
    t = Task.from_record(task_row(status="failed", error="again", failed_at=T0))
    out = t.to_json_detail()
    assert set(out) == TASK_KEYS | {"attempts"}
    assert [a["attempt"] for a in out["attempts"]] == [1, 2]
    assert out["attempts"][0]["worker_id"] == "w0"
    last = out["attempts"][-1]
    assert (last["worker_id"], last["status"], last["error"]) == ("w1", "failed", "again")
    json.dumps(out)


def test_task_to_json_detail_hides_error_of_a_live_attempt() -> None:
    out = Task.from_record(task_row(error="old")).to_json_detail()
    assert out["attempts"][-1]["error"] is None


# ---- Worker ----

def worker_row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "w1", "name": "worker-1", "host": "h", "pid": 42, "status": "online",
        "capacity": 2, "tasks_completed": 5, "tasks_failed": 1, "registered_at": T0,
        "last_heartbeat": T0, "current_task_ids": [uuid.UUID(int=7), uuid.UUID(int=8)],
    }
    row.update(changes)
    return row


def test_worker_to_json_shape() -> None:
    w = Worker.from_record(worker_row())
    out = w.to_json()
    assert set(out) == WORKER_KEYS
    assert out["status"] == "online"
    assert out["current_task_ids"] == [str(uuid.UUID(int=7)), str(uuid.UUID(int=8))]
    assert out["current_task_id"] == str(uuid.UUID(int=7))
    assert out["last_heartbeat"] == T0.isoformat()
    json.dumps(out)


def test_idle_worker_has_no_current_task() -> None:
    w = Worker.from_record(worker_row(current_task_ids=None, status="draining"))
    out = w.to_json()
    assert w.status is WorkerStatus.DRAINING
    assert out["current_task_id"] is None
    assert out["current_task_ids"] == []


# ---- Event ----

def test_event_to_json_shape() -> None:
    tid = uuid.UUID(int=9)
    e = Event.from_record({
        "id": 3, "event": "task_failed", "ts": T0, "task_id": tid, "worker_id": "w1",
        "data": {"attempt": 2, "error": "boom"},
    })
    assert e.to_json() == {
        "event": "task_failed", "task_id": str(tid), "timestamp": T0.isoformat(),
        "worker_id": "w1", "attempt": 2, "error": "boom",
    }
    assert list(e.to_json())[:3] == ["event", "task_id", "timestamp"]


def test_worker_event_has_no_task_id() -> None:
    e = Event.from_record({
        "id": 4, "event": "worker_online", "ts": T0, "task_id": None, "worker_id": "w1",
        "data": None,
    })
    assert e.data == {}
    assert e.to_json() == {"event": "worker_online", "timestamp": T0.isoformat(), "worker_id": "w1"}


# ---- merge_reports ----

A = uuid.UUID(int=100)
B = uuid.UUID(int=200)


def rep(state: str, *, task: uuid.UUID = A, attempt: int = 1, **kw: object) -> Report:
    return Report(task_id=task, attempt=attempt, state=state, **kw)  # type: ignore[arg-type]


def test_report_final() -> None:
    assert {s for s in ("running", "progress", "completed", "failed", "cancelled", "rejected")
            if rep(s).final} == {"completed", "failed", "cancelled", "rejected"}


def test_merge_keeps_distinct_deliveries_in_order_of_first_sight() -> None:
    reports = [rep("running", task=B), rep("running", task=A), rep("running", task=A, attempt=2)]
    merged = merge_reports(reports)
    assert [(r.task_id, r.attempt) for r in merged] == [(B, 1), (A, 1), (A, 2)]
    assert merge_reports([]) == []


def test_final_wins_over_progress_in_either_order() -> None:
    started = T0
    done = T0 + timedelta(seconds=2)
    running = rep("running", started_at=started, progress=0, seq=1)
    progress = rep("progress", progress=60, seq=2)
    completed = rep("completed", result_json='{"x": 1}', finished_at=done, seq=3)
    for order in ([running, progress, completed], [completed, progress, running],
                  [progress, completed, running]):
        [m] = merge_reports(order)
        assert m.state == "completed"
        assert m.result_json == '{"x": 1}'
        assert m.started_at == started
        assert m.finished_at == done
        assert m.progress == 60
        assert m.seq == 3


def test_progress_is_the_highest_seen() -> None:
    [m] = merge_reports([rep("progress", progress=70), rep("progress", progress=30)])
    assert (m.state, m.progress) == ("progress", 70)


def test_started_at_survives_a_later_report_without_it() -> None:
    [m] = merge_reports([rep("running", started_at=T0), rep("failed", error="boom")])
    assert (m.state, m.error, m.started_at) == ("failed", "boom", T0)


def test_later_final_report_wins_over_earlier_final() -> None:
    [m] = merge_reports([rep("rejected", error="dup"), rep("cancelled", error="stop")])
    assert (m.state, m.error) == ("cancelled", "stop")


def test_merge_does_not_mix_attempts() -> None:
    merged = merge_reports([rep("failed", attempt=1, error="boom"), rep("running", attempt=2)])
    assert [(r.attempt, r.state) for r in merged] == [(1, "failed"), (2, "running")]
