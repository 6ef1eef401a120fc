"""POST /api/reset: a known state between demos, with nothing half done.

Coordinator, scheduler and workers run in this process on real sockets and a real
PostgreSQL. A reset while tasks run stops them (their handlers see it), leaves no task,
event or count behind, keeps the online workers (counters zeroed), drops the offline
ones; what the stopped workers report afterwards is refused and brings nothing back; the
feed's ids keep rising across it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from taskmaster.config import Settings
from tests.helpers import SseReader, count_rows, fast_settings, fetch, wait_for
from tests.integration import sample_tasks
from tests.integration.live import table_counts
from tests.integration.test_failures import Api, api_stack

# no prefetch: the reset's counts below name exactly which tasks wait and which run
SETTINGS = fast_settings(enable_pool_api=True, prefetch=0)


async def stats(api: Api) -> dict[str, Any]:
    status, out = await api.call("GET", "/api/stats")
    assert status == 200, out
    return dict(out)


async def create_batch(api: Api, command: str, count: int, payload: Any = None) -> list[str]:
    body: dict[str, Any] = {"command": command, "count": count}
    if payload is not None:
        body["payload"] = payload
    status, out = await api.call("POST", "/api/schedule/batch", body)
    assert status == 201, out
    return [str(i) for i in out["ids"]]


async def counts_match_rows(api: Api, database_url: str) -> bool:
    """/api/stats (kept by triggers) says what the tasks table holds, status by status."""
    rows = {r["status"]: r["n"] for r in await fetch(
        database_url, "SELECT status, count(*) AS n FROM tasks GROUP BY status")}
    s = await stats(api)
    return all(s[k] == rows.get(k, 0) for k in
               ("pending", "assigned", "running", "completed", "failed", "cancelled"))


async def test_a_reset_while_tasks_run_leaves_nothing_half_done(database_url: str) -> None:
    async with api_stack(database_url, SETTINGS, workers=2, concurrency=2) as api, \
            aiohttp.ClientSession() as http:
        coordinator = api.coordinator.coordinator
        # finished work, so that the counters have something to clear
        done = await create_batch(api, "noop", 6)
        await wait_for(lambda: _all_final(api, done), 15, message="the first tasks to finish")
        # a worker that left: an offline row
        gone = uuid.uuid4().hex
        await coordinator.store.upsert_worker(worker_id=gone, name="worker-gone", host="h",
                                              pid=1, capacity=1, commands=["noop"])
        await coordinator.store.workers_offline([gone], "left")
        # four handlers running until cancelled (every slot), ten waiting behind them
        running = await create_batch(api, "wait-for-cancel", 4)
        pending = await create_batch(api, "noop", 10)

        async def all_running() -> bool:
            return (await stats(api))["running"] == 4
        await wait_for(all_running, 15, message="four tasks running")
        async with http.get(api.url + "/api/logs/stream") as resp:
            reader = SseReader(resp)
            before = (await fetch(database_url, "SELECT max(id) AS id FROM events"))[0]["id"]

            status, out = await api.call("POST", "/api/reset")
            assert status == 200, out
            assert out == {"tasks": 20, "pending": 10, "running": 4, "workers_dropped": 1,
                           "workers_kept": 2, "event_id": out["event_id"]}
            assert out["event_id"] > before  # ids keep rising

            # the feed announces it, with the reset's id
            got = await reader.events(lambda es: any(e.data and e.data["event"] == "stack_reset"
                                                     for e in es))
            reset = next(e for e in got if e.data and e.data["event"] == "stack_reset")
            assert reset.id == out["event_id"] and reset.data["tasks"] == 20

        # nothing left: no task, no count, one event, the live workers with zeroed counters
        assert await count_rows(database_url, "tasks") == 0
        assert await count_rows(database_url, "task_counts") == 0
        assert await count_rows(database_url, "worker_counts") == 0
        assert [r["event"] for r in await fetch(database_url, "SELECT event FROM events")] == [
            "stack_reset"]
        workers = await fetch(database_url, "SELECT name, status, tasks_completed, tasks_failed "
                                            "FROM workers ORDER BY name")
        assert [(w["status"], w["tasks_completed"], w["tasks_failed"]) for w in workers] == [
            ("online", 0, 0), ("online", 0, 0)]
        s = await stats(api)
        assert (s["total"], s["pending"], s["running"], s["completed"], s["workers_online"]) == (
            0, 0, 0, 0, 2)

        # the running handlers were told to stop, and did; the coordinator refused their
        # reports (the tasks are gone) and freed every slot
        await wait_for(lambda: set(running) <= sample_tasks.CANCELLED, 10,
                       message="the running handlers to see the reset")
        await wait_for(lambda: all(not s.held for s in coordinator.sessions.values()), 10,
                       message="every slot free again")
        assert coordinator.counters["refused"] >= 4
        # ... and nothing came back from them
        assert await count_rows(database_url, "tasks") == 0
        assert (await stats(api))["total"] == 0
        assert all(w["tasks_completed"] == 0 for w in await fetch(
            database_url, "SELECT tasks_completed FROM workers"))
        assert not set(pending) & {str(r["id"]) for r in await fetch(
            database_url, "SELECT id FROM tasks")}

        # the stack works on: new tasks run on the kept workers, counted once
        fresh = await create_batch(api, "noop", 8)
        await wait_for(lambda: _all_final(api, fresh), 15, message="new tasks to complete")
        s = await stats(api)
        assert (s["total"], s["completed"]) == (8, 8)
        assert await counts_match_rows(api, database_url)


async def _all_final(api: Api, ids: list[str]) -> bool:
    for task_id in ids:
        if not await api.status_is(task_id, "completed", "failed", "cancelled"):
            return False
    return True


async def test_a_client_resuming_from_before_a_reset_gets_the_reset_and_what_follows(
        database_url: str) -> None:
    async with api_stack(database_url, SETTINGS, workers=1, concurrency=1) as api, \
            aiohttp.ClientSession() as http:
        ids = await create_batch(api, "noop", 3)
        await wait_for(lambda: _all_final(api, ids), 15, message="three tasks done")
        last = (await fetch(database_url, "SELECT max(id) AS id FROM events"))[0]["id"]
        status, out = await api.call("POST", "/api/reset", {})
        assert status == 200, out
        after = await create_batch(api, "noop", 2)
        await wait_for(lambda: _all_final(api, after), 15, message="two more done")
        # a client that saw `last` reconnects: its id is still valid
        async with http.get(api.url + "/api/logs/stream",
                            headers={"Last-Event-ID": str(last)}) as resp:
            assert resp.status == 200
            got = await SseReader(resp).events(
                lambda es: sum(e.data["event"] == "task_completed" for e in es if e.data) >= 2)
        kinds = [e.data["event"] for e in got if e.data]
        assert kinds[0] == "stack_reset"
        assert [e.id for e in got] == sorted(e.id for e in got) and got[0].id > last
        assert {e.data.get("task_id") for e in got if e.data.get("task_id")} == set(after)


async def test_creates_during_a_reset_are_counted_whole(database_url: str) -> None:
    """Creates, claims and reports wait for the reset's transaction: whatever was before
    is gone, whatever came after is counted, and the counts equal the rows."""
    async with api_stack(database_url, SETTINGS, workers=2, concurrency=4) as api:
        async def create(i: int) -> None:
            status, out = await api.call("POST", "/api/schedule",
                                         {"command": "noop", "payload": {"i": i}})
            assert status == 201, out

        creates = [asyncio.create_task(create(i)) for i in range(300)]
        await asyncio.sleep(0.05)
        status, out = await api.call("POST", "/api/reset")
        assert status == 200, out
        await asyncio.gather(*creates)

        async def settled() -> bool:
            s = await stats(api)
            return s["pending"] == s["assigned"] == s["running"] == 0
        await wait_for(settled, 30, message="every task finished")
        kept = await count_rows(database_url, "tasks")
        assert kept + out["tasks"] == 300  # each create either went with the reset or stayed
        assert (await stats(api))["completed"] == kept
        assert await counts_match_rows(api, database_url)


@pytest.mark.parametrize(("settings", "body", "headers", "status", "field"), [
    (fast_settings(), None, {}, 403, None),  # pool API (and reset) off
    (fast_settings(enable_pool_api=True, api_token="t"), None, {}, 401, "Authorization"),
    (fast_settings(enable_pool_api=True), [], {}, 400, "body"),
    (fast_settings(enable_pool_api=True), {"all": True}, {}, 422, "all"),
    (fast_settings(enable_pool_api=True), b"{not json", {"Content-Type": "application/json"},
     400, "body"),
], ids=["disabled", "no-token", "not-an-object", "unknown-field", "malformed"])
async def test_a_refused_reset_changes_nothing(database_url: str, settings: Settings, body: Any,
                                               headers: dict[str, str], status: int,
                                               field: str | None) -> None:
    # no worker: nothing changes the tables but the request under test
    async with api_stack(database_url, settings, workers=0) as api:
        token = {"Authorization": "Bearer t"} if settings.api_token else {}
        async with api.http.post(api.url + "/api/schedule/batch", headers=token,
                                 json={"command": "noop", "count": 3}) as resp:
            assert resp.status == 201
        before = await table_counts(database_url)
        kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with api.http.post(api.url + "/api/reset", headers=headers, **kw) as resp:
            answer = await resp.json()
            assert resp.status == status, answer
        assert answer["field"] == field and answer["error"]
        assert await table_counts(database_url) == before
