"""Recordings: the file, its bound, its errors, and a replay into the panels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskmaster.cli.parser import build_parser
from taskmaster.client import ApiError
from taskmaster.notebook import Dashboard, live
from taskmaster.notebook.recording import (
    Recorder,
    RecordingError,
    RecordingTooLarge,
    Replay,
    load,
)
from taskmaster.notebook.streamlayout import StreamLayout
from taskmaster.notebook.taskstream import TaskStream
from tests.unit.test_taskstream import Run


def a_run() -> Run:
    run = Run().worker(0, "a", "worker-1", capacity=2).worker(0, "b", "worker-2")
    for i in range(20):
        run.task(i * 0.1, f"t{i}", "ab"[i % 2], 0.3)
    run.add(1.0, "task_running", task_id="t-cut", worker_id="a", attempt=1)
    run.add(1.5, "task_reassigned", task_id="t-cut", worker_id="a", attempt=1)
    run.add(1.5, "worker_offline", worker_id="a", name="worker-1")
    run.task(1.6, "t-cut", "b", 0.2, attempt=2)
    return run


def write(path: Path, run: Run) -> Recorder:
    clock = iter(range(10_000))
    recorder = Recorder(path, clock=lambda: next(clock) / 100)
    for i, event in enumerate(run.ordered()):
        recorder.event(event)
        if i % 10 == 0:
            recorder.snapshot({"total": i, "completed": i // 2}, [{"name": "worker-1"}])
    recorder.snapshot({"total": 22, "completed": 21}, [{"name": "worker-2"}])
    recorder.close()
    return recorder


def test_a_recording_reads_back_what_was_written(tmp_path: Path) -> None:
    run = a_run()
    write(tmp_path / "r.jsonl", run)
    recording = load(tmp_path / "r.jsonl")
    assert recording.events == run.ordered()
    assert recording.final_stats == {"total": 22, "completed": 21}
    assert recording.end["reason"] == "stopped" and recording.duration > 0


def test_a_recording_is_bounded_and_ends_cleanly(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "small.jsonl", max_bytes=2048)
    with pytest.raises(RecordingTooLarge, match=r"bound of 2048 bytes.*--max-bytes"):
        for event in a_run().ordered():
            recorder.event(event)
    assert recorder.closed and (tmp_path / "small.jsonl").stat().st_size <= 2048
    recording = load(tmp_path / "small.jsonl")
    assert 0 < len(recording.events) < len(a_run().events)
    assert "size bound" in recording.end["reason"]
    with pytest.raises(ValueError, match="at least 1024 bytes"):
        Recorder(tmp_path / "x.jsonl", max_bytes=10)


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ('{"kind": "event"}\n', "not a TaskMaster recording"),
    ('{"kind": "header", "format": "taskmaster-recording", "version": 9}\n', "version 9"),
    ('{"kind": "header", "format": "taskmaster-recording", "version": 1}\nnope\n',
     "line 2: not JSON"),
    ('{"kind": "header", "format": "taskmaster-recording", "version": 1}\n{"kind": "event"}\n',
     "line 2: expected an event or stats line"),
])
def test_a_bad_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(RecordingError, match=message):
        load(path)


async def test_a_replay_feeds_the_same_panels_as_the_live_run(tmp_path: Path) -> None:
    run = a_run()
    write(tmp_path / "r.jsonl", run)
    live_layout = StreamLayout()
    live_layout.apply_many(run.ordered())

    replay = Replay(tmp_path / "r.jsonl", speed=0)
    stream = TaskStream()
    feed = live(replay, stream, poll_interval=0.05)
    try:
        await feed.wait_for(lambda s: replay.finished and s.stats.get("total") == 22, 10)
    finally:
        await feed.stop()
    assert stream.stream.snapshot() == live_layout.snapshot()
    assert feed.state.count("task_completed") == 21 and stream.renders >= 1
    first, second = stream.stream.attempts("t-cut")
    assert first.outcome == "reassigned" and second.attempt == 2 and second.row != first.row


async def test_a_replay_at_speed_takes_the_recorded_time(tmp_path: Path) -> None:
    write(tmp_path / "r.jsonl", a_run())
    replay = Replay(tmp_path / "r.jsonl", speed=4)  # ~0.8 s recorded: ~0.2 s
    seen = [e async for e in replay.events(reconnect=False)]
    assert len(seen) == len(a_run().events) and replay.clock == load(tmp_path / "r.jsonl").duration
    later = [e async for e in Replay(tmp_path / "r.jsonl", speed=0).events(
        last_event_id=seen[-3]["id"], reconnect=False)]
    assert later == seen[-2:]


async def test_a_dashboard_on_a_replay_refuses_to_act(tmp_path: Path) -> None:
    write(tmp_path / "r.jsonl", a_run())
    replay = Replay(tmp_path / "r.jsonl", speed=0)
    dash = Dashboard(replay)
    await dash.ready(timeout=10)
    await dash.wait_for(lambda s: replay.finished, 10)
    await dash.stop()
    assert dash.taskstream.stream.cut() and await replay.commands() == ["sleep"]
    with pytest.raises(ApiError, match="recording being replayed"):
        await replay.schedule("sleep")
    with pytest.raises(ValueError, match="speed"):
        Replay(tmp_path / "r.jsonl", speed=-1)


async def test_the_record_button_writes_what_the_feed_receives(tmp_path: Path) -> None:
    write(tmp_path / "r.jsonl", a_run())
    replay = Replay(tmp_path / "r.jsonl", speed=0)
    dash = Dashboard(replay, poll_interval=0.05)
    dash.record.folder = tmp_path / "out"
    dash.record.button.value = True  # the click
    assert dash.record.recording
    await dash.ready(timeout=10)
    await dash.wait_for(lambda s: replay.finished and s.stats.get("total") == 22, 10)
    dash.record.button.value = False
    saved = dash.record.saved
    await dash.stop()
    assert saved is not None and "saved" in dash.record.status.value
    again = load(saved)
    assert again.events == load(tmp_path / "r.jsonl").events
    assert again.final_stats == {"total": 22, "completed": 21}


def test_the_record_command_checks_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["record", "--seconds", "2.5", "out.jsonl"])
    assert (args.seconds, args.out, args.max_bytes) == (2.5, "out.jsonl", 50_000_000)
    for bad in (["record", "--seconds", "0", "o.jsonl"], ["record", "o.jsonl"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)
    assert "--seconds" in capsys.readouterr().err


def test_the_shipped_format_is_plain_json_lines(tmp_path: Path) -> None:
    write(tmp_path / "r.jsonl", a_run())
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "header" and lines[-1]["kind"] == "end"
    assert {x["kind"] for x in lines[1:-1]} == {"event", "stats"}
