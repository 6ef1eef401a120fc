"""The demo guide's walk-through against real processes: the five curl commands, 50 demo-jobs on three
workers, every task_completed on the SSE stream, and `taskmaster status` on the stack."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

from taskmaster.cluster.local import LocalCluster
from tests.helpers import SseReader, wait_for

GUIDE_BATCH = {"command": "demo-job", "count": 50, "delay_seconds": 0}


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    """GET a JSON document."""
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def watch_workers(http: aiohttp.ClientSession, url: str,
                        seen: list[list[dict[str, Any]]]) -> None:
    """Record /api/workers until cancelled."""
    while True:
        seen.append(await get_json(http, url + "/api/workers"))
        await asyncio.sleep(0.05)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = best = 0
    for _, step in edges:
        open_now += step
        best = max(best, open_now)
    return best


async def test_the_demo_guides_tour_runs_on_real_processes(cluster: LocalCluster) -> None:
    url = cluster.url
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as http, \
            http.get(url + "/api/logs/stream") as stream:
        assert stream.status == 200
        workers = await get_json(http, url + "/api/workers")
        assert sorted(w["name"] for w in workers) == ["worker-1", "worker-2", "worker-3"]
        assert {w["status"] for w in workers} == {"online"}

        samples: list[list[dict[str, Any]]] = []
        watcher = asyncio.create_task(watch_workers(http, url, samples))
        started = time.monotonic()
        async with http.post(url + "/api/schedule/batch", json=GUIDE_BATCH) as resp:
            assert resp.status == 201
            created = await resp.json()
        ids = created["ids"]
        assert created["created"] == 50 and len(set(ids)) == 50

        sse = SseReader(stream)
        events = await sse.events(
            lambda evs: len({e.data["task_id"] for e in evs
                             if e.data and e.data["event"] == "task_completed"}) == 50,
            timeout=60)
        drained = time.monotonic() - started
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

        stats = await get_json(http, url + "/api/stats")
        tasks = await get_json(http, url + "/api/tasks?limit=100")

    completed = [e.data["task_id"] for e in events if e.data["event"] == "task_completed"]
    assert sorted(completed) == sorted(ids)  # one line per task, none twice
    assert all(e.id is not None for e in events)
    assert (stats["completed"], stats["pending"], stats["running"]) == (50, 0, 0)
    assert stats["workers_online"] == 3
    assert {t["status"] for t in tasks} == {"completed"} and len(tasks) == 50

    # /api/workers: three online, current_task_id seen set and changing during the run
    current = [(w["name"], w["current_task_id"]) for s in samples for w in s
               if w["current_task_id"]]
    assert {name for name, _ in current} == {"worker-1", "worker-2", "worker-3"}
    assert len({tid for _, tid in current}) > 3
    assert {w["status"] for s in samples for w in s} == {"online"}

    # the three workers worked in parallel, each taking a fair share
    done = [t for t in tasks if t["started_at"] and t["completed_at"]]
    spans = [(_ts(t["started_at"]), _ts(t["completed_at"])) for t in done]
    assert max_overlap(spans) == 3
    shares = Counter(t["worker_id"] for t in tasks)
    assert len(shares) == 3 and min(shares.values()) >= 10, shares
    first = min(_ts(t["assigned_at"]) - _ts(t["created_at"]) for t in tasks)
    print(f"\n50 demo-jobs on 3 workers drained in {drained:.2f}s "
          f"(physics: about {50 * 0.65 / 3:.1f}s); first assigned {first * 1000:.1f} ms "
          f"after creation; queue wait p95 {stats['queue_wait_p95_ms']} ms", file=sys.stderr)


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


async def test_status_and_user_tasks_on_the_running_stack(cluster: LocalCluster) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(cluster.url + "/api/schedule",
                             json={"command": "count-calls", "payload": {"seconds": 0.01}}
                             ) as resp:
            assert resp.status == 201, await resp.text()  # offered by the --tasks module
            tid = (await resp.json())["id"]

        async def finished() -> Any:
            task = await get_json(http, f"{cluster.url}/api/tasks/{tid}")
            return task if task["status"] == "completed" else None

        task = await wait_for(finished, 20, message="the user task to complete")
    assert task["result"] == {"calls": 1}

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "status", "--url", cluster.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    for name in ("worker-1", "worker-2", "worker-3"):
        assert name in text
    assert "TASKS_COMPLETED" in text and "WORKERS_ONLINE" in text
    header, values = [line.split() for line in text.strip().splitlines()[-2:]]
    row = dict(zip(header, values, strict=True))
    assert (row["TOTAL"], row["COMPLETED"], row["WORKERS_ONLINE"]) == ("1", "1", "3")
