"""Protobuf at the edge: the model's values to and from the messages of proto/taskmaster.proto.

Only the gRPC adapters (the coordinator's servicer, the worker's session) call these; no
protobuf message travels further into either.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from taskmaster.model import Delivery, Report, ReportState, TaskRef, clean_error
from taskmaster.rpc import taskmaster_pb2 as pb

_STATES = {
    pb.RUNNING: ReportState.RUNNING,
    pb.PROGRESS: ReportState.PROGRESS,
    pb.COMPLETED: ReportState.COMPLETED,
    pb.FAILED: ReportState.FAILED,
    pb.CANCELLED: ReportState.CANCELLED,
    pb.REJECTED: ReportState.REJECTED,
}
_PB_STATES = {state: value for value, state in _STATES.items()}


def _from_us(us: int, name: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(us / 1e6, UTC) if us else None
    except (OverflowError, ValueError, OSError):
        raise ValueError(f"{name} {us} is not a time (unix microseconds)") from None


def _to_us(at: datetime | None) -> int:
    return round(at.timestamp() * 1e6) if at is not None else 0


def report_from_pb(u: pb.StatusUpdate) -> Report:
    """A StatusUpdate as a Report (an unknown state counts as failed; a result that is not
    JSON is kept as a JSON string of its text; an error message is cleaned, see
    clean_error). ValueError says why an update cannot be one (a task id that is not a UUID,
    a time out of range): a peer's bad update, refused alone."""
    try:
        task_id = uuid.UUID(u.task_id)
    except ValueError:
        raise ValueError(f"task_id {u.task_id[:50]!r} is not a UUID") from None
    result = u.result_json or None
    if result is not None and result != "null":  # most tasks return nothing
        try:
            json.loads(result)
        except ValueError:
            result = json.dumps(result)
    return Report(
        task_id=task_id, attempt=u.attempt,
        state=_STATES.get(u.state, ReportState.FAILED),
        progress=max(0, min(100, u.progress)), result_json=result,
        error=clean_error(u.error) if u.error else None,
        started_at=_from_us(u.started_at_us, "started_at_us"),
        finished_at=_from_us(u.finished_at_us, "finished_at_us"), seq=u.seq,
    )


def report_to_pb(r: Report, seq: int) -> pb.StatusUpdate:
    """A Report as a StatusUpdate, numbered seq (a worker numbers its reports as it
    sends them)."""
    return pb.StatusUpdate(
        task_id=str(r.task_id), attempt=r.attempt, state=_PB_STATES[r.state],
        progress=r.progress, result_json=r.result_json or "",
        error=r.error or "", started_at_us=_to_us(r.started_at),
        finished_at_us=_to_us(r.finished_at), seq=seq)


def refs_from_pb(refs: Iterable[pb.TaskRef]) -> list[TaskRef]:
    """TaskRef messages as model TaskRefs."""
    return [TaskRef(uuid.UUID(r.task_id), r.attempt) for r in refs]


def refs_to_pb(refs: Iterable[tuple[uuid.UUID, int]]) -> list[pb.TaskRef]:
    """(task id, attempt) pairs as TaskRef messages."""
    return [pb.TaskRef(task_id=str(t), attempt=a) for t, a in refs]


def delivery_to_pb(d: Delivery) -> pb.Assignment:
    """A Delivery as an Assignment."""
    return pb.Assignment(task_id=str(d.task_id), attempt=d.attempt, command=d.command,
                         payload_json=d.payload_json, timeout_seconds=d.timeout_seconds)


def delivery_from_pb(a: pb.Assignment) -> Delivery:
    """An Assignment as a Delivery (the receiving worker is implied)."""
    return Delivery(task_id=uuid.UUID(a.task_id), attempt=a.attempt, command=a.command,
                    payload_json=a.payload_json, timeout_seconds=a.timeout_seconds)
