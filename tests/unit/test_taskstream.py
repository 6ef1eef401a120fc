"""The task stream's layout (rows per worker slot, a bar per attempt) and its panel."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from taskmaster.notebook.streamlayout import StreamLayout
from taskmaster.notebook.taskstream import COLORS, TaskStream

T0 = 1_800_000_000.0


class Run:
    """Events shaped as the store writes them (see queries.sql), with a clock."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, at: float, kind: str, **fields: Any) -> Run:
        event = {"id": len(self.events) + 1, "event": kind,
                 "timestamp": datetime.fromtimestamp(T0 + at, UTC).isoformat(), **fields}
        self.events.append(event)
        return self

    def worker(self, at: float, wid: str, name: str, capacity: int = 1) -> Run:
        return self.add(at, "worker_online", worker_id=wid, name=name, host="h",
                        capacity=capacity)

    def task(self, at: float, tid: str, wid: str, took: float, attempt: int = 1,
             end: str = "task_completed") -> Run:
        self.add(at, "task_assigned", task_id=tid, worker_id=wid, attempt=attempt,
                 command="sleep")
        self.add(at, "task_running", task_id=tid, worker_id=wid, attempt=attempt)
        return self.add(at + took, end, task_id=tid, worker_id=wid, attempt=attempt,
                        command="sleep", duration_ms=took * 1000)


    def ordered(self) -> list[dict[str, Any]]:
        """In time order, as the feed sends them (ids renumbered)."""
        events = sorted(self.events, key=lambda e: e["timestamp"])
        return [{**e, "id": i} for i, e in enumerate(events, start=1)]


def layout_of(run: Run, **options: Any) -> StreamLayout:
    layout = StreamLayout(**options)
    layout.apply_many(run.ordered())
    return layout


def test_one_row_per_worker_slot_and_a_bar_per_attempt() -> None:
    run = Run().worker(0, "a", "worker-1", capacity=2).worker(0, "b", "worker-2")
    run.task(1, "t1", "a", 2).task(1.5, "t2", "a", 1).task(1, "t3", "b", 1)
    run.task(3.5, "t4", "a", 1)  # t1 and t2 are done: it takes the first slot again
    layout = layout_of(run)
    rows, bars = layout.visible()
    assert [(r, b.task_id) for b in bars for r in [b.row]] == [
        (("a", 0), "t1"), (("b", 0), "t3"), (("a", 1), "t2"), (("a", 0), "t4")]
    assert rows == [("a", 0), ("a", 1), ("b", 0)]
    t1 = bars[0]
    assert (t1.start, t1.end, t1.outcome, t1.command) == (T0 + 1, T0 + 3, "completed", "sleep")
    assert layout.snapshot()["rows"] == ["worker-1/1", "worker-1/2", "worker-2/1"]


def test_a_killed_workers_bar_is_cut_and_the_task_runs_again_on_another_row() -> None:
    run = Run().worker(0, "a", "worker-1").worker(0, "b", "worker-2")
    run.add(1, "task_assigned", task_id="t1", worker_id="a", attempt=1, command="sleep")
    run.add(1, "task_running", task_id="t1", worker_id="a", attempt=1)
    run.add(4, "task_reassigned", task_id="t1", worker_id="a", attempt=1,
            reason="worker-1 missed its heartbeats")
    run.add(4, "worker_offline", worker_id="a", name="worker-1", reason="heartbeats")
    run.task(4.5, "t1", "b", 1, attempt=2)
    layout = layout_of(run)
    first, second = layout.attempts("t1")
    assert (first.row, first.end, first.outcome) == (("a", 0), T0 + 4, "reassigned")
    assert (second.row, second.attempt, second.outcome) == (("b", 0), 2, "completed")
    assert second.command == "sleep" and second.start > first.end
    assert layout.cut() == [first]
    # the dead worker's row stays while its cut bar is in the window, then goes
    assert layout.snapshot()["rows"] == ["worker-1/1", "worker-2/1"]
    run.add(200, "worker_online", worker_id="c", name="worker-3", capacity=1)
    layout.apply(run.events[-1])
    assert layout.visible() == ([("b", 0)], [])  # worker-2 is still online


def test_a_worker_going_offline_cuts_what_it_still_held() -> None:
    run = Run().worker(0, "a", "worker-1", capacity=3)
    for i in range(3):
        run.add(1, "task_running", task_id=f"t{i}", worker_id="a", attempt=1)
    run.add(2, "worker_offline", worker_id="a", name="worker-1")
    layout = layout_of(run)
    assert [(b.row[1], b.end, b.outcome) for b in layout.bars] == [
        (0, T0 + 2, "reassigned"), (1, T0 + 2, "reassigned"), (2, T0 + 2, "reassigned")]
    assert layout.open == {}


@pytest.mark.parametrize(("kind", "outcome"), [
    ("task_completed", "completed"), ("task_failed", "failed"), ("task_retrying", "failed"),
    ("task_cancelled", "cancelled"), ("task_reassigned", "reassigned")])
def test_each_ending_has_its_outcome(kind: str, outcome: str) -> None:
    layout = layout_of(Run().worker(0, "a", "w").task(1, "t", "a", 1, end=kind))
    assert [b.outcome for b in layout.bars] == [outcome]


def test_the_window_slides_and_the_bars_are_bounded() -> None:
    run = Run().worker(0, "a", "worker-1")
    for i in range(100):
        run.task(i, f"t{i}", "a", 0.5)
    layout = layout_of(run, window=10)
    _, bars = layout.visible()
    assert [b.task_id for b in bars] == [f"t{i}" for i in range(89, 100)]
    assert len(layout.bars) <= 12  # ended bars leave the window as time moves on
    small = layout_of(run, window=1000, max_bars=20)
    assert len(small.bars) == 20 and small.dropped == 80
    assert small.bars[-1].task_id == "t99"


def test_a_replayed_event_and_a_reset() -> None:
    run = Run().worker(0, "a", "worker-1").task(1, "t1", "a", 1)
    layout = layout_of(run)
    layout.apply(run.ordered()[2])  # the same task_running again (a reconnect overlap)
    assert len(layout.bars) == 1
    layout.apply({**Run().add(5, "stack_reset").events[0], "id": 1})
    assert layout.visible() == ([], []) and not layout.open


def test_rows_are_named_by_what_the_polls_tell_and_keep_their_own_label() -> None:
    run = Run().add(1, "task_running", task_id="t1", worker_id="id-1", attempt=1)
    run.add(2, "task_reassigned", task_id="t1", worker_id="id-1", attempt=1)
    run.add(2, "worker_offline", worker_id="id-1")
    run.worker(3, "id-2", "worker-1")  # the same name, restarted: a new id
    run.add(3, "task_running", task_id="t1", worker_id="id-2", attempt=2)
    layout = layout_of(run)
    assert layout.snapshot()["rows"] == ["id-1/1", "worker-1/1"]  # id-1's name never came
    layout.learn({"id-1": "worker-1"})  # a poll of /api/workers
    assert layout.snapshot()["rows"] == ["worker-1/1", "worker-1/1'"]


def test_a_start_told_before_the_end_it_follows_keeps_its_slot() -> None:
    """One report can carry a task's end and the next task's start; the store writes the
    start first. A full worker's next bar waits for the slot that frees."""
    run = Run().worker(0, "a", "worker-1", capacity=1)
    run.add(1, "task_running", task_id="t1", worker_id="a", attempt=1)
    events = run.ordered()
    events += [{"id": 10, "event": "task_running", "task_id": "t2", "worker_id": "a",
                "attempt": 1, "timestamp": events[-1]["timestamp"]},
               {"id": 11, "event": "task_completed", "task_id": "t1", "worker_id": "a",
                "attempt": 1, "timestamp": events[-1]["timestamp"]},
               {"id": 12, "event": "task_running", "task_id": "t3", "worker_id": "a",
                "attempt": 1, "timestamp": events[-1]["timestamp"]},
               {"id": 13, "event": "task_completed", "task_id": "t3", "worker_id": "a",
                "attempt": 1, "timestamp": events[-1]["timestamp"]}]
    layout = StreamLayout()
    layout.apply_many(events)
    assert [(b.task_id, b.row, b.outcome) for b in layout.bars] == [
        ("t1", ("a", 0), "completed"), ("t2", ("a", 0), "running"),
        ("t3", ("a", 1), "completed")]  # t3 ended while t2 held the slot: a row of its own
    # a worker whose slots were never told grows its rows as needed
    free = StreamLayout()
    free.apply_many(e for e in events if e["event"] != "worker_online")
    assert [b.row for b in free.bars] == [("a", 0), ("a", 1), ("a", 0)]


def test_bad_events_change_nothing_and_bad_bounds_say_so() -> None:
    layout = StreamLayout()
    for event in ({}, {"event": "task_running"}, {"event": "task_running", "task_id": "t"},
                  {"event": "task_completed", "task_id": "nope"}, {"event": 3}):
        layout.apply(event)
    assert not layout.bars and not layout.rows
    with pytest.raises(ValueError, match="window > 0"):
        StreamLayout(window=0)


def test_the_panel_redraws_only_when_the_layout_changed() -> None:
    run = Run().worker(0, "a", "worker-1", capacity=2).worker(0, "b", "worker-2")
    run.task(1, "t1", "a", 2).task(1, "t2", "b", 1)
    run.add(3.5, "task_running", task_id="t3", worker_id="a", attempt=1)
    panel = TaskStream(window=30)
    for event in run.ordered():
        panel.on_event(event)
    assert panel.render() and not panel.render()
    assert panel.rows_with_bars() == ["worker-1/1", "worker-2/1"]
    # the first row on top: the names' scale lists them from the bottom up
    assert panel.bars.x.shape == (3, 2) and list(panel.y_names.domain) == [
        "worker-2/1", "worker-1/1"]
    assert panel.bars.y[:, 0].tolist() == [1.0, 0.0, 1.0]  # t1, t2 (worker-2), t3
    assert panel.bars.colors == [COLORS["completed"], COLORS["completed"], COLORS["running"]]
    assert panel.bars.labels[0].startswith("task t1 · sleep · attempt 1 · 2.00s")
    panel._hover(panel.bars, {"data": {"index": 2}})
    assert "task t3" in panel.hovered.value and "running" in panel.hovered.value


def test_the_shipped_recording_lays_out_the_tour() -> None:
    """The five parts as recorded from a real stack (notebooks/recordings/tour.jsonl)."""
    from pathlib import Path

    from taskmaster.notebook.recording import load

    path = Path(__file__).resolve().parents[2] / "notebooks" / "recordings" / "tour.jsonl"
    assert path.stat().st_size < 2_000_000
    recording = load(path)
    layout = StreamLayout(window=3600)
    layout.apply_many(recording.events)
    layout.learn({w["id"]: w["name"] for p in recording.polls for w in p["workers"]})
    rows = layout.snapshot()["rows"]
    # two slots per worker, worker-4 and -5 from the scaling, a new worker-1 after the kill
    assert {"worker-1/1", "worker-1/2", "worker-4/1", "worker-5/2", "worker-1/1'"} <= set(rows)
    cut = layout.cut()
    assert len(cut) == 2 and {layout.label(b.row) for b in cut} == {"worker-1/1", "worker-1/2"}
    for bar in cut:
        later = layout.attempts(bar.task_id)[-1]
        assert later.attempt == bar.attempt + 1 and later.row[0] != bar.row[0]
        assert later.outcome == "completed" and later.start >= bar.end
    assert sum(b.outcome == "completed" for b in layout.bars) == recording.final_stats["completed"]


def test_the_benchmark_runs_and_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.taskstream import main

    assert main(["--tasks", "300", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "us/event (median)" in out and "ms/redraw" in out and "% of one core" in out
