"""A worker cut off by a network partition, then reconnected with a stale result."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import (
    CHILD_ENV,
    Feed,
    Stack,
    StackFactory,
    assert_exactly_once,
)
from tests.chaos.netns import Namespace
from tests.chaos.tasks import marks
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos


@pytest.fixture
def netns() -> Iterator[Namespace]:
    """A namespace of the test's own; never skipped (CI runs as root): it fails instead."""
    ns = Namespace.create()
    try:
        yield ns
    finally:
        ns.delete()


@contextlib.asynccontextmanager
async def worker_in(ns: Namespace, s: Stack, name: str, log: Path) -> AsyncIterator[int]:
    """A worker process inside the namespace, dialing the coordinator's veth address."""
    env = {**os.environ, **s.cluster.settings.env(), **CHILD_ENV, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *ns.prefix(), sys.executable, "-m", "taskmaster", "worker", "--name", name,
            "--coordinator", s.cluster.coordinator_address, "--concurrency", "2",
            env=env, stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        yield proc.pid
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_partitioned_worker_is_replaced_and_fenced(
    netns: Namespace, stack: StackFactory, tmp_path: Path
) -> None:
    # (netns first: the stack, bound on its veth, must stop before the veth goes away)
    """Missed heartbeats put its tasks back; its late results are refused; each task completes once."""
    s = await stack(workers=0, coordinator_host=netns.host_ip)
    assert s.cluster.coordinator_address.startswith(netns.host_ip + ":")
    done = tmp_path / "marks"
    done.mkdir()
    cutoff_log = s.cluster.logs / "cutoff.log"
    async with Feed(s.url) as feed, worker_in(netns, s, "cutoff", cutoff_log) as cutoff_pid:
        await wait_for(lambda: feed.connects, 10, message="the SSE feed")
        await wait_for(lambda: _online(s, {"cutoff"}), 20, message="the namespaced worker to register")
        cutoff_id = (await s.fetch("SELECT id FROM workers WHERE name = 'cutoff'"))[0]["id"]
        ids = await s.batch("chaos-sleep", 2, {"seconds": 3.0, "marks": str(done)})
        await wait_for(lambda: _running_on(s, ids, cutoff_id), 10, message="both tasks running on it")

        netns.cut()
        cut_at = time.monotonic()
        await s.cluster.scale(1)  # somewhere for its tasks to go

        # missed heartbeats (3 x 0.5 s): both tasks go back, naming the lost worker
        def reassigned() -> list[dict[str, object]]:
            found = [e for e in feed.of("task_reassigned") if e["task_id"] in ids]
            return found if len(found) == 2 else []

        moved = await wait_for(reassigned, 10, message="the cut-off worker's tasks to be reassigned")
        detected = time.monotonic() - cut_at
        assert all(e["worker_id"] == cutoff_id for e in moved)
        assert all("missed heartbeats" in str(e["reason"]) for e in moved)
        assert 1.0 <= detected < 5.0, f"partition detected after {detected:.2f}s"

        # meanwhile, unaware, the cut-off worker finishes its (now stale) deliveries
        await wait_for(lambda: _marked(done, cutoff_pid, ids), 10,
                       message="the cut-off worker to finish its stale deliveries")
        await s.wait_completed(ids, timeout=20)

        healed_at = dt.datetime.now(dt.UTC)
        netns.heal()
        # it comes back (same worker id), resends its results, and they are refused
        await wait_for(lambda: _back(feed, cutoff_id, healed_at), 30,
                       message="the cut-off worker to reconnect")
        coordinator_log = s.cluster.logs / "coordinator.log"

        def refused() -> bool:
            text = coordinator_log.read_text(errors="replace")
            return all(f"refused a stale report on task {t} attempt 1" in text for t in ids)

        await wait_for(refused, 10, message="the coordinator to refuse both stale results")
        attempts = await assert_exactly_once(s, feed, ids)

    assert attempts == {t: 2 for t in ids}
    rows = await s.fetch(
        "SELECT worker_id, result::text, history::text FROM tasks WHERE id = ANY($1::uuid[])", ids)
    for r in rows:
        assert r["worker_id"] != cutoff_id
        assert f'"pid": {cutoff_pid}' not in r["result"], "the stale result was kept"
        assert cutoff_id in r["history"]  # attempt 1, on the cut-off worker, is on record


async def _online(s: Stack, names: set[str]) -> bool:
    return names <= {w["name"] for w in await s.workers() if w["status"] == "online"}


async def _running_on(s: Stack, ids: list[str], worker_id: str) -> bool:
    rows = await s.fetch("SELECT count(*) AS n FROM tasks WHERE id = ANY($1::uuid[]) "
                         "AND status = 'running' AND worker_id = $2", ids, worker_id)
    return bool(rows[0]["n"] == len(ids))


def _marked(folder: Path, pid: int, ids: list[str]) -> bool:
    return {t for t, attempt, p in marks(folder) if p == pid and attempt == 1} == set(ids)


def _back(feed: Feed, worker_id: str, since: dt.datetime) -> bool:
    return any(e.get("worker_id") == worker_id
               and dt.datetime.fromisoformat(e["timestamp"]) > since
               for e in feed.of("worker_online"))
