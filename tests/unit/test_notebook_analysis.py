"""What the notebooks measure from recorded events: audits, throughput, concurrency, gaps;
and the source listings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from taskmaster.model import EventType
from taskmaster.notebook import source
from taskmaster.notebook.analysis import (
    DEMO_GUIDE,
    EventRecord,
    audit,
    busy_seconds,
    by_worker,
    completions,
    finished_by,
    gaps,
    lifecycle,
    max_running,
    pickup_delays,
    rate,
    reassigned_from,
    span,
    spread,
    throughput,
    utilisation,
    when,
)

T0 = 1_800_000_000.0
S, A, C = EventType.TASK_SCHEDULED, EventType.TASK_ASSIGNED, EventType.TASK_COMPLETED


def ev(kind: str, task: str | None = None, at: float = 0.0, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"event": kind,
                           "timestamp": datetime.fromtimestamp(T0 + at, UTC).isoformat()}
    if task is not None:
        out["task_id"] = task
    out.update(extra)
    return out


def run(task: str, worker: str, start: float, end: float, attempt: int = 1) -> list[dict[str, Any]]:
    """One delivery that ran from start to end and completed."""
    return [
        ev("task_assigned", task, start, worker_id=worker, attempt=attempt),
        ev("task_running", task, start, worker_id=worker, attempt=attempt),
        ev("task_completed", task, end, worker_id=worker, attempt=attempt,
           duration_ms=(end - start) * 1000),
    ]


def test_when_reads_iso_timestamps_and_tolerates_garbage() -> None:
    assert when(ev("x", at=1.5)) == pytest.approx(T0 + 1.5)
    assert when({"timestamp": "yesterday"}) == 0.0 and when({}) == 0.0


def test_audit_finds_lost_doubled_and_failed_tasks() -> None:
    events = [
        *run("a", "w1", 0, 1),
        *run("b", "w1", 1, 2), ev("task_completed", "b", 3, worker_id="w2"),
        ev("task_failed", "c", 2, worker_id="w2"),
        *run("other", "w1", 0, 1),
    ]
    result = audit(events, ["a", "b", "c", "d"])
    assert (result.expected, result.completed_once) == (4, 1)
    assert result.twice == ("b",) and result.failed == ("c",) and result.lost == ("c", "d")
    assert not result.ok
    with pytest.raises(AssertionError, match="completed twice"):
        result.check()
    fine = audit(events, ["a"])
    assert fine.ok and fine.check() is fine
    assert str(fine) == "1 tasks: 1 completed exactly once, 0 lost, 0 completed twice, 0 failed"


def test_throughput_rate_and_span_use_event_times() -> None:
    events = [ev("task_scheduled", t, 0) for t in "abcd"]
    events += run("a", "w1", 0, 1) + run("b", "w2", 0, 1) + run("c", "w1", 1, 2)
    events += run("d", "w2", 1, 2)
    assert throughput(events, "abcd") == pytest.approx(2.0)  # 4 tasks in 2 s
    assert span(events, "abcd") == pytest.approx(2.0)
    assert rate(events, T0 + 0.5, T0 + 1.5) == pytest.approx(2.0)  # a, b in one second
    assert rate(events, T0 + 1, T0 + 1) == 0.0
    assert throughput([], "abcd") == 0.0 and span(events, ["zzz"]) == 0.0


def test_concurrency_and_reassignment_from_the_events() -> None:
    events = run("a", "w1", 0, 2) + run("b", "w2", 0.5, 1) + run("c", "w3", 0.7, 3)
    assert max_running(events) == 3
    killed = [
        ev("task_running", "x", 0, worker_id="w1", attempt=1),
        ev("task_running", "y", 0, worker_id="w2", attempt=1),
        ev("task_reassigned", "x", 1, worker_id="w1", attempt=2),  # the next attempt's number
        *run("x", "w2", 2, 3, attempt=2),
    ]
    assert max_running(killed) == 2  # x left w1 when reassigned; y still runs
    assert reassigned_from(killed, "w1") == ["x"] and reassigned_from(killed, "w2") == []
    assert finished_by(killed, ["x", "y"]) == {"x": "w2"}
    assert lifecycle(killed, "x") == ["running", "reassigned", "assigned", "running", "completed"]


def test_per_worker_counts_busy_time_gaps_and_utilisation() -> None:
    events = [ev("task_scheduled", "a", 0), ev("task_scheduled", "b", 0)]
    events += run("a", "w1", 0.25, 1.25) + run("b", "w2", 0.5, 1.0)
    names = {"w1": "worker-1", "w2": "worker-2"}.get
    assert by_worker(events, names) == {"worker-1": 1, "worker-2": 1}
    assert busy_seconds(events, names) == pytest.approx({"worker-1": 1.0, "worker-2": 0.5})
    assert sorted(gaps(events, ["a", "b"])) == pytest.approx([0.25, 0.5])
    assert utilisation([{"w1": True, "w2": False}, {"w1": True, "w2": True}]) == {
        "w1": 1.0, "w2": 0.5}
    assert spread({"a": 3, "b": 1}) == 2 and spread({}) == 0


def test_event_record_marks_bounds_and_delays() -> None:
    clock = iter([T0 + 0.25, T0 + 0.5, T0 + 0.75, T0 + 1.0, T0 + 1.25])
    record = EventRecord(limit=4, clock=lambda: next(clock))
    record(ev("task_completed", "a", 0))
    mark = record.mark()
    for task in "bcd":
        record(ev("task_completed", task, 0))
    assert [e["task_id"] for e in record.since(mark)] == ["b", "c", "d"]
    assert record.count("task_completed", since=mark) == 3
    record(ev("worker_online", None, 0))  # past the limit: the oldest half goes
    assert len(record) == 3 and record.mark() == 5
    assert [e.get("task_id") for e in record.since(mark)] == ["c", "d", None]
    assert record.delays() == pytest.approx([0.75, 1.0])
    assert [e["task_id"] for e in record.of(["d"])] == ["d"]


def test_the_demo_guide_figures_and_event_types_as_strings() -> None:
    assert DEMO_GUIDE.scaling == {1: 0.5, 3: 1.5, 5: 2.5} and DEMO_GUIDE.assignment_s == 1.0
    # events arrive as JSON strings; the enum members compare equal to them
    events = [{"event": str(EventType.TASK_COMPLETED), "task_id": "a"}]
    assert audit(events, ["a"]).ok and completions(events) == events


def test_source_listings_come_from_the_package() -> None:
    claim = source.sql("assign_tasks")
    assert "FOR UPDATE SKIP LOCKED" in claim and claim.path == "taskmaster/store/queries.sql"
    assert claim.code.startswith("-- name: assign_tasks") and "-- name:" not in claim.code[5:]
    assert claim.link.endswith(f"#L{claim.first}-L{claim.last}") and claim.first < claim.last
    markdown = claim._repr_markdown_()
    assert "```sql" in markdown and "`taskmaster/store/queries.sql`, lines " in markdown
    assert "](../" not in markdown  # no link out of a Lab rooted at notebooks/
    listing = source.code(source.sql)
    assert listing.path == "taskmaster/notebook/source.py" and "def sql(" in listing
    with pytest.raises(KeyError, match="no query named"):
        source.sql("no_such_query")


def test_pickup_delays_count_from_when_a_slot_was_free_not_from_creation() -> None:
    events = [
        ev(S, "a", 0.0), ev(S, "b", 0.0),
        ev(A, "a", 0.01, worker_id="w1"),  # a free slot at once: 10 ms
        ev(C, "a", 2.0, worker_id="w1"),
        ev(A, "b", 2.03, worker_id="w1"),  # waited 2 s for the slot, 30 ms after it freed
    ]
    delays = sorted(pickup_delays(events, ["a", "b"]))
    assert delays == pytest.approx([0.01, 0.03], abs=1e-3)
    # a poll-based scheduler that looked only once a second would show here
    polled = [*events[:4], ev(A, "b", 3.0, worker_id="w1")]
    assert max(pickup_delays(polled, ["a", "b"])) == pytest.approx(1.0, abs=1e-3)


def test_failover_report_times_the_first_new_task_of_a_moved_worker() -> None:
    from taskmaster.notebook.analysis import failover_report

    def ev(kind: str, task: str, worker: str, at: float) -> dict[str, object]:
        stamp = datetime.fromtimestamp(at, UTC).isoformat()
        return {"event": kind, "task_id": task, "worker_id": worker, "timestamp": stamp}

    crash = 1_000.0
    events = [ev("task_assigned", "t1", "w1", crash - 0.5), ev("task_running", "t1", "w1", crash - 0.4),
              ev("task_completed", "t1", "w1", crash - 1.5), ev("task_completed", "t0", "w2", crash - 0.5)]
    # t1 started on the moved worker before the crash: not a failover yet
    assert failover_report(events, {"w1"}, crash) is None
    events += [ev("task_completed", "t1", "w1", crash + 0.3),  # reported through the other
               ev("task_assigned", "t2", "w1", crash + 0.10), ev("task_running", "t2", "w1", crash + 0.12),
               ev("task_completed", "t2", "w1", crash + 1.2), ev("task_completed", "t3", "w2", crash + 2.5)]
    report = failover_report(events, {"w1"}, crash)
    assert report is not None
    assert round(report.seconds, 3) == 0.12
    assert report.per_second == (1, 1, 1, 1, 1) and report.quiet_seconds == 0
    assert report.restarted == 0
    # a second with no completion is a gap; a task put back from a moved worker is counted
    events += [ev("task_reassigned", "t4", "w1", crash + 0.2)]
    later = failover_report(events, {"w1"}, crash, after=5)
    assert later is not None and later.quiet_seconds == 2 and later.restarted == 1
