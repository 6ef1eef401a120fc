"""The dashboard's state model: coalescing, bounds, ordering (no widgets involved)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from taskmaster.notebook.state import DashboardState

NOW = int(time.time())


def iso(second: float) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat()


def ev(kind: str, task: str | None = None, eid: int = 0, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": eid, "event": kind, "timestamp": iso(time.time())}
    if task is not None:
        out["task_id"] = task
    out.update(extra)
    return out


def lifecycle(task: str, worker: str = "w1") -> list[dict[str, Any]]:
    return [
        ev("task_scheduled", task, command="demo-job"),
        ev("task_assigned", task, worker_id=worker, attempt=1),
        ev("task_running", task, worker_id=worker, attempt=1),
        ev("task_progress", task, worker_id=worker, progress=40),
        ev("task_completed", task, worker_id=worker, duration_ms=12),
    ]


def test_a_task_follows_its_events() -> None:
    state = DashboardState()
    steps = lifecycle("t1")
    seen = []
    for event in steps:
        state.apply(event)
        row = state.tasks["t1"]
        seen.append((row.status, row.progress))
    assert seen == [("pending", 0), ("assigned", 0), ("running", 0), ("running", 40),
                    ("completed", 100)]
    assert state.tasks["t1"].command == "demo-job" and state.tasks["t1"].worker_id == "w1"
    assert state.count("task_completed") == 1 and state.events_seen == 5


def test_reassigned_tasks_are_marked_and_restart() -> None:
    state = DashboardState()
    state.apply_many(lifecycle("t1")[:4])
    state.apply(ev("task_reassigned", "t1", worker_id="w1", reason="worker lost",
                   next_attempt=2))
    row = state.tasks["t1"]
    assert (row.status, row.progress, row.worker_id, row.attempt, row.reassigned) == (
        "pending", 0, None, 2, 1)
    state.apply(ev("task_assigned", "t1", worker_id="w2", attempt=2))
    assert state.tasks["t1"].worker_id == "w2" and state.tasks["t1"].reassigned == 1


def test_recent_tasks_are_bounded_and_keep_the_active_ones() -> None:
    state = DashboardState(recent=3)
    for i in range(5):
        state.apply(ev("task_scheduled", f"t{i}"))
    assert [r.id for r in state.recent_tasks()] == ["t4", "t3", "t2"]
    state.apply(ev("task_running", "t2"))  # activity keeps t2; the idlest (t3) goes next
    state.apply(ev("task_scheduled", "t5"))
    assert [r.id for r in state.recent_tasks()] == ["t5", "t4", "t2"]


def test_activity_log_is_bounded_newest_first() -> None:
    state = DashboardState(log_size=10)
    for i in range(1, 26):
        state.apply(ev("task_scheduled", f"t{i}", eid=i))
    assert [e["id"] for e in state.log] == list(range(25, 15, -1))
    assert state.last_event_id == 25


def test_a_burst_is_counters_only_until_the_next_render() -> None:
    state = DashboardState(recent=50, log_size=100)
    before = dict(state.versions)
    start = time.perf_counter()
    for i in range(20_000):
        state.apply(ev("task_completed", f"t{i % 500}", eid=i, worker_id="w1"))
    elapsed = time.perf_counter() - start
    assert len(state.tasks) == 50 and len(state.log) == 100
    assert state.count("task_completed") == 20_000
    assert state.versions["tasks"] - before["tasks"] == 20_000  # one cheap bump per event
    assert elapsed < 2.0  # generous: the bound is about no per-event rendering at all


def test_worker_events_and_polls() -> None:
    state = DashboardState()
    state.set_workers([{"id": "w1", "name": "worker-1", "status": "online",
                        "tasks_completed": 3, "current_task_id": "t9"}])
    state.apply(ev("task_completed", "t9", worker_id="w1"))
    assert state.workers["worker-1"]["tasks_completed"] == 4  # live between two polls
    state.apply(ev("worker_offline", worker_id="w1", name="worker-1"))
    assert state.workers["worker-1"]["status"] == "offline"
    assert state.workers["worker-1"]["current_task_id"] is None
    state.apply(ev("worker_online", worker_id="w2", name="worker-2"))
    assert state.workers["worker-2"] == {"id": "w2", "name": "worker-2", "status": "online",
                                         "tasks_completed": 0, "tasks_failed": 0}
    assert state.worker_name("w1") == "worker-1" and state.worker_name("w2") == "worker-2"


def test_a_worker_restarted_under_its_name_is_one_row() -> None:
    state = DashboardState()
    state.set_workers([{"id": "a", "name": "worker-2", "status": "online", "tasks_completed": 7}])
    state.apply(ev("task_assigned", "t1", worker_id="a", attempt=1))
    state.apply(ev("worker_offline", worker_id="a", name="worker-2"))
    state.apply(ev("worker_online", worker_id="b", name="worker-2"))  # scaled back up
    assert list(state.workers) == ["worker-2"]
    assert state.workers["worker-2"]["id"] == "b" and state.workers["worker-2"]["status"] == "online"
    assert state.workers["worker-2"]["tasks_completed"] == 0  # a new incarnation counts afresh
    # late news of the old incarnation changes nothing of the new one
    state.apply(ev("worker_offline", worker_id="a", name="worker-2"))
    state.apply(ev("task_completed", "t1", worker_id="a"))
    assert state.workers["worker-2"]["status"] == "online"
    assert state.workers["worker-2"]["tasks_completed"] == 0
    assert state.worker_name("a") == "worker-2"  # older rows still show the name
    # a poll of a scheduler listing both incarnations keeps the live one
    state.set_workers([
        {"id": "b", "name": "worker-2", "status": "online", "registered_at": "2026-01-01T00:01"},
        {"id": "a", "name": "worker-2", "status": "offline", "registered_at": "2026-01-01T00:00"},
        {"id": "c", "name": "worker-1", "status": "offline", "registered_at": "2026-01-01T00:00"},
        {"id": "d", "name": "worker-1", "status": "offline", "registered_at": "2026-01-01T00:02"},
    ])
    assert {n: w["id"] for n, w in state.workers.items()} == {"worker-2": "b", "worker-1": "d"}
    assert state.online_workers() == 1


def test_a_reset_empties_the_monitor_and_the_log_and_keeps_the_live_workers() -> None:
    state = DashboardState()
    state.set_workers([{"id": "a", "name": "worker-1", "status": "online", "tasks_completed": 5},
                       {"id": "z", "name": "worker-9", "status": "offline"}])
    state.apply_many(lifecycle("t1", worker="a"))
    state.set_stats({"queue_depth": 3, "running": 1, "workers_online": 1})
    series_before = sum(state.completed_series()[1])
    state.apply(ev("stack_reset", eid=99, tasks=1, pending=0, running=0, workers_dropped=1))
    assert not state.tasks and [e["event"] for e in state.log] == ["stack_reset"]
    assert list(state.workers) == ["worker-1"]
    assert state.workers["worker-1"]["tasks_completed"] == 0
    assert state.resets == 1 and state.last_event_id == 99
    assert sum(state.completed_series()[1]) == series_before  # the chart keeps its history


def test_polled_tasks_fill_free_rows_but_never_go_back_in_time() -> None:
    state = DashboardState(recent=3)
    state.apply_many(lifecycle("t1"))  # completed by the events
    state.merge_tasks([
        {"id": "t3", "status": "running", "attempt": 1, "progress": 50, "command": "noop"},
        {"id": "t2", "status": "pending", "attempt": 1, "progress": 0, "command": "noop"},
        {"id": "t1", "status": "running", "attempt": 1, "progress": 70},  # an older view
        {"id": "t0", "status": "pending", "attempt": 1},  # no room left
    ])
    assert [r.id for r in state.recent_tasks()] == ["t3", "t2", "t1"]
    assert (state.tasks["t1"].status, state.tasks["t1"].progress) == ("completed", 100)
    assert state.tasks["t3"].progress == 50
    state.apply(ev("task_scheduled", "t4"))  # event rows push polled rows out first
    assert set(state.tasks) == {"t1", "t3", "t4"}


def test_completed_per_second_and_sample_ring() -> None:
    now = int(time.time())  # completions are bucketed against the real clock
    state = DashboardState(window=10)
    for second, n in ((now - 5, 2), (now - 3, 4), (now - 30, 9)):
        for i in range(n):
            state.apply(ev("task_completed", f"t{second}-{i}", timestamp=iso(second + 0.5)))
    xs, ys = state.completed_series(now=now)
    assert xs[0] >= now - 10 and xs[-1] == now - 1
    by_second = dict(zip(xs, ys, strict=True))
    assert by_second[now - 5] == 2 and by_second[now - 3] == 4 and by_second[now - 4] == 0
    assert sum(ys) == 6  # the completion outside the window was not counted
    for i in range(25):
        state.set_stats({"queue_depth": i, "running": 1, "assigned": 1, "workers_online": 2},
                        now=now - 25 + i)
    # (time, queue depth, running = assigned + running, workers online)
    assert len(state.samples) == 10 and state.samples[-1] == (now - 1, 24, 2, 2)
    for second in (now - 4, now - 4, now - 2):
        state.apply(ev("task_scheduled", f"c{second}", timestamp=iso(second + 0.1)))
    created = dict(zip(*state.created_series(now=now), strict=True))
    assert created[now - 4] == 2 and created[now - 2] == 1 and created[now - 3] == 0


def test_summary_has_no_ids() -> None:
    state = DashboardState()
    state.set_stats({"total": 50, "pending": 0, "running": 0, "completed": 50, "failed": 0})
    state.set_workers([{"id": "abc", "name": "worker-1", "status": "online"}])
    assert state.summary() == (
        "tasks: 50 total, 0 pending, 0 running, 50 completed, 0 failed; workers: 1 online"
    )
    assert repr(state) == f"DashboardState({state.summary()})"
