"""A run recorded from a live stack and replayed with no stack gives the same panels; the
task stream shows the killed worker's bar cut and the task's next attempt on another row."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from taskmaster.client import Client
from taskmaster.cluster.local import LocalCluster
from taskmaster.model import EventType
from taskmaster.notebook import Dashboard
from taskmaster.notebook.recording import Replay, load
from tests.e2e.conftest import CHILD_ENV


async def test_a_recorded_run_replays_into_the_same_panels(cluster: LocalCluster,
                                                           tmp_path: Path) -> None:
    client = Client(cluster.url)
    dash = Dashboard(client, poll_interval=0.2)
    try:
        await dash.ready(timeout=30)
        dash.record.start(tmp_path / "live.jsonl")
        created = await client.schedule_batch("sleep", 6, payload={"seconds": 1.5})
        ids = [str(i) for i in created["ids"]]
        running = await dash.next_event(lambda e: e.get("event") == EventType.TASK_RUNNING,
                                        timeout=30, after=0)
        victim = dash.worker_name(running["worker_id"])
        await cluster.kill_worker(victim)
        await dash.wait_done(ids, timeout=60)
        await dash.wait_for(lambda s: s.count(EventType.TASK_REASSIGNED) >= 1, 30)
        await dash.refresh()  # the final counts, polled
        saved = dash.record.stop()
        live_stream = dash.taskstream.stream.snapshot()
        live_counts = dict(dash.state.counts)
        live_summary = dash.state.summary()
    finally:
        await dash.stop()
        await client.close()

    # the kill, as the task stream shows it: a cut bar, the same task later on another row
    cut = [b for b in live_stream["bars"] if b[6] == "reassigned"]
    assert cut, live_stream
    later = [b for b in live_stream["bars"] if b[0] == cut[0][0] and b[1] == cut[0][1] + 1]
    assert later and later[0][3] != cut[0][3] and later[0][4] >= cut[0][5]

    assert saved is not None
    replay = Replay(saved, speed=0)
    again = Dashboard(replay, poll_interval=0.05)
    try:
        await again.ready(timeout=10)
        await again.wait_for(lambda s: replay.finished and s.summary() == live_summary, 10)
    finally:
        await again.stop()
    assert again.taskstream.stream.snapshot() == live_stream
    assert dict(again.state.counts) == live_counts
    assert load(saved).final_stats["completed"] == 6


async def test_the_record_command_writes_the_feed(cluster: LocalCluster, tmp_path: Path) -> None:
    async with Client(cluster.url) as client:
        created = await client.schedule_batch("noop", 20)
        await client.wait_until(lambda s: s.get("completed") == 20, timeout=30)
        out = tmp_path / "cli.jsonl"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "taskmaster", "record", "--seconds", "1.5", "--from-start",
            "--stats-interval", "0.5", "--url", cluster.url, str(out),
            env={**os.environ, **CHILD_ENV},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr.decode()
        assert "recorded" in stdout.decode()
        recording = load(out)
        done = {e["task_id"] for e in recording.events if e["event"] == "task_completed"}
        assert done == {str(i) for i in created["ids"]}
        assert recording.final_stats["completed"] == 20 and len(recording.polls) >= 2

        small = tmp_path / "small.jsonl"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "taskmaster", "record", "--seconds", "5", "--from-start",
            "--max-bytes", "2000", "--url", cluster.url, str(small),
            env={**os.environ, **CHILD_ENV},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1 and "--max-bytes" in stderr.decode()
        assert small.stat().st_size <= 2000 and load(small).end
