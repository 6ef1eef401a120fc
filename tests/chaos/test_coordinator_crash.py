"""SIGKILL the coordinator mid-run, keep it down a while, then start it again."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.chaos.harness import Feed, Stack, StackFactory, assert_exactly_once
from tests.chaos.tasks import marks
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos


async def test_coordinator_sigkill_and_restart(stack: StackFactory, tmp_path: Path) -> None:
    """Workers keep running and buffer their reports; the new coordinator adopts their tasks
    and requeues only those of the worker that died meanwhile."""
    s = await stack(workers=3, concurrency=4)
    done = tmp_path / "marks"
    done.mkdir()
    async with Feed(s.url) as feed:
        await wait_for(lambda: feed.connects, 10, message="the SSE feed")
        ids = await s.batch("chaos-sleep", 40, {"seconds": 1.5, "marks": str(done)})
        await wait_for(lambda: _running(s, 12), 10, message="all 12 slots busy")
        running = {r["id"]: r["worker_id"] for r in await s.fetch(
            "SELECT id::text, worker_id FROM tasks WHERE status = 'running'")}
        names = {r["name"]: r["id"] for r in await s.fetch("SELECT id, name FROM workers")}
        victim = s.cluster.workers()[0].name
        survivors = {i for n, i in names.items() if n != victim}
        orphaned = {t for t, w in running.items() if w == names[victim]}
        adopted = {t: w for t, w in running.items() if w in survivors}

        # a crash that stays down until we start it again
        await s.cluster.coordinator("kill", restart=False)
        killed_at = dt.datetime.now(dt.UTC)

        # the scheduler keeps accepting work meanwhile (it waits as pending)
        status, body, _ = await s.request(
            "POST", "/api/schedule", {"command": "chaos-sleep", "payload": {"seconds": 0.1}})
        assert status == 201, body
        assert body["task"]["status"] == "pending"
        ids.append(body["id"])

        # the workers carry on: tasks they were running finish with nobody listening
        def finished_unheard() -> list[str]:
            return [t for t, _, _ in marks(done) if t in adopted]

        unheard = await wait_for(finished_unheard, 10,
                                 message="a running task to finish in the outage")
        assert await s.unfinished(unheard) == len(unheard)  # nobody recorded them yet
        await s.cluster.kill_worker(victim)  # and one worker dies while nobody watches

        await s.cluster.coordinator("start")
        restarted_at = dt.datetime.now(dt.UTC)
        await wait_for(lambda: _rejoined(feed, survivors, killed_at), 20,
                       message="the surviving workers (same ids) to register again")
        await s.wait_completed(ids, timeout=60)
        attempts = await assert_exactly_once(s, feed, ids)

    # tasks that were running on the surviving workers were adopted, not run again
    rows = {r["id"]: r for r in await s.fetch(
        "SELECT id::text, worker_id, completed_at FROM tasks WHERE id = ANY($1::uuid[])",
        list(running))}
    for task_id, worker_id in adopted.items():
        assert attempts[task_id] == 1, f"task {task_id} ran twice"
        assert rows[task_id]["worker_id"] == worker_id
    # the reports of the work done in the outage were buffered, then written after it
    completed = {e["task_id"]: e for e in feed.of("task_completed")}
    for task_id in unheard:
        assert killed_at < rows[task_id]["completed_at"] < restarted_at
        assert completed[task_id]["worker_id"] == adopted[task_id]
    # only the dead worker's tasks were requeued, once its grace was over
    assert orphaned
    moved = {e["task_id"]: e for e in feed.of("task_reassigned")
             if e.get("reason") == "worker did not come back"}
    assert set(moved) == orphaned
    assert all(e["worker_id"] == names[victim] for e in moved.values())
    assert all(attempts[t] == 2 for t in orphaned)
    others = {e.get("reason", "") for e in feed.of("task_reassigned") if e["task_id"] not in moved}
    assert all(r.startswith("delivery lost") for r in others), others
    assert [e["worker_id"] for e in feed.of("worker_offline")] == [names[victim]]


async def _running(s: Stack, n: int) -> bool:
    rows = await s.fetch("SELECT count(*) AS n FROM tasks WHERE status = 'running'")
    return bool(rows[0]["n"] >= n)


def _rejoined(feed: Feed, worker_ids: set[str], since: dt.datetime) -> bool:
    back = {e.get("worker_id") for e in feed.of("worker_online")
            if dt.datetime.fromisoformat(e["timestamp"]) > since}
    return worker_ids <= back
