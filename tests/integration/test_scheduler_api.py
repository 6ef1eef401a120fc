"""Every endpoint of the scheduler's HTTP API on a real socket and a real PostgreSQL, and
bad input answered with a 4xx JSON error that names the field and changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from taskmaster.config import Settings
from taskmaster.model import Report
from taskmaster.store import Store
from tests.helpers import count_rows, fast_settings, fetch, serve_scheduler

MAX_BATCH = 200
MAX_BODY = 4096
MAX_PAYLOAD = 1024
MAX_PAGE = 50


@dataclass
class Api:
    """A running scheduler and an HTTP session on it."""

    url: str
    http: aiohttp.ClientSession
    database_url: str
    app: web.Application
    settings: Settings

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
        """(status, JSON body, headers)."""
        async with self.http.request(method, self.url + path, **kw) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body, resp.headers

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        """POST a JSON body."""
        return await self.call("POST", path, json=body, **kw)

    async def get(self, path: str, **kw: Any) -> tuple[int, Any, Any]:
        """GET."""
        return await self.call("GET", path, **kw)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    """A scheduler with small limits, so the limits can be tested."""
    settings = fast_settings(max_batch_count=MAX_BATCH, max_body_bytes=MAX_BODY,
                             max_payload_bytes=MAX_PAYLOAD, max_page_size=MAX_PAGE)
    async with serve_scheduler(settings, database_url) as (url, app), aiohttp.ClientSession() as http:
        yield Api(url, http, database_url, app, settings)


# ---- POST /api/schedule ----

async def test_schedule_stores_every_field(api: Api) -> None:
    body = {"command": "sleep", "payload": {"seconds": 2, "tags": ["a", "b"]},
            "delay_seconds": 30, "priority": 7, "max_attempts": 5, "timeout_seconds": 12.5}
    status, created, _ = await api.post("/api/schedule", body)
    assert status == 201, created
    task = created["task"]
    assert created["id"] == task["id"]
    assert (task["command"], task["payload"], task["status"]) == (
        "sleep", {"seconds": 2, "tags": ["a", "b"]}, "pending")
    assert (task["priority"], task["max_attempts"], task["timeout_seconds"]) == (7, 5, 12.5)
    assert (task["attempt"], task["progress"], task["worker_id"]) == (1, 0, None)
    assert task["idempotency_key"] is None

    [row] = await fetch(api.database_url, "SELECT * FROM tasks WHERE id = $1",
                        uuid.UUID(created["id"]))
    assert json.loads(row["payload"]) == body["payload"]
    assert row["scheduled_at"] - row["created_at"] == timedelta(seconds=30)
    assert (row["priority"], row["max_attempts"], row["timeout_seconds"]) == (7, 5, 12.5)


async def test_schedule_defaults_come_from_settings(api: Api) -> None:
    status, created, _ = await api.post("/api/schedule", {"command": "noop"})
    assert status == 201
    task = created["task"]
    assert task["max_attempts"] == api.settings.default_max_attempts
    assert task["timeout_seconds"] == api.settings.default_timeout
    assert (task["priority"], task["payload"]) == (0, {})
    assert task["scheduled_at"] == task["created_at"]


async def test_idempotency_key_in_the_body_answers_the_same_task(api: Api) -> None:
    body = {"command": "noop", "idempotency_key": "order-42"}
    first = await api.post("/api/schedule", body)
    again = await api.post("/api/schedule", {**body, "payload": {"ignored": True}})
    assert (first[0], again[0]) == (201, 200)
    assert first[1]["id"] == again[1]["id"]
    assert again[1]["task"]["idempotency_key"] == "order-42"
    assert again[1]["task"]["payload"] == {}
    assert await count_rows(api.database_url) == 1


async def test_idempotency_key_header_answers_the_same_task(api: Api) -> None:
    headers = {"Idempotency-Key": "hdr-1"}
    first = await api.post("/api/schedule", {"command": "noop"}, headers=headers)
    again = await api.post("/api/schedule", {"command": "noop"}, headers=headers)
    other = await api.post("/api/schedule", {"command": "noop"}, headers={"Idempotency-Key": "2"})
    assert (first[0], again[0], other[0]) == (201, 200, 201)
    assert first[1]["id"] == again[1]["id"] != other[1]["id"]
    assert first[1]["task"]["idempotency_key"] == "hdr-1"
    assert await count_rows(api.database_url) == 2


# ---- POST /api/schedule/batch ----

async def test_batch_creates_count_tasks_in_one_statement(api: Api) -> None:
    status, body, _ = await api.post("/api/schedule/batch",
                                     {"command": "demo-job", "count": 50, "delay_seconds": 0})
    assert status == 201, body
    assert (body["created"], body["command"]) == (50, "demo-job")
    ids = [uuid.UUID(i) for i in body["ids"]]
    assert len(set(ids)) == 50
    rows = await fetch(api.database_url,
                       "SELECT id, status, command, created_at FROM tasks WHERE id = ANY($1)", ids)
    assert len(rows) == 50
    assert {(r["status"], r["command"]) for r in rows} == {("pending", "demo-job")}
    # now() is the transaction's time: one statement gives every row the same created_at
    assert len({r["created_at"] for r in rows}) == 1
    events = await fetch(api.database_url,
                         "SELECT task_id FROM events WHERE event = 'task_scheduled'")
    assert {e["task_id"] for e in events} == set(ids)


async def test_batch_carries_the_optional_fields(api: Api) -> None:
    status, body, _ = await api.post("/api/schedule/batch", {
        "command": "sleep", "count": 3, "delay_seconds": 5, "payload": {"seconds": 0.1},
        "priority": -2, "max_attempts": 9, "timeout_seconds": 4})
    assert (status, body["created"]) == (201, 3)
    rows = await fetch(api.database_url, "SELECT * FROM tasks")
    assert len(rows) == 3
    for r in rows:
        assert json.loads(r["payload"]) == {"seconds": 0.1}
        assert (r["priority"], r["max_attempts"], r["timeout_seconds"]) == (-2, 9, 4.0)
        assert r["scheduled_at"] - r["created_at"] == timedelta(seconds=5)


async def test_batch_accepts_the_cap_itself(api: Api) -> None:
    status, body, _ = await api.post("/api/schedule/batch", {"command": "noop", "count": MAX_BATCH})
    assert (status, body["created"]) == (201, MAX_BATCH)


# ---- GET /api/stats ----

async def test_stats_count_by_status(api: Api, store: Store) -> None:
    status, empty, _ = await api.get("/api/stats")
    assert status == 200
    for key in ("total", "pending", "assigned", "running", "completed", "failed", "cancelled",
                "queue_depth", "workers_online", "workers_draining"):
        assert empty[key] == 0, key
    assert empty["throughput"] == 0
    assert {"throughput_window_seconds", "queue_wait_mean_ms", "queue_wait_p95_ms"} <= set(empty)

    await api.post("/api/schedule/batch", {"command": "noop", "count": 5})
    _, one, _ = await api.post("/api/schedule", {"command": "noop"})
    await api.post(f"/api/tasks/{one['id']}/cancel")
    await store.upsert_worker(worker_id="wk", name="wk", host="h", pid=1, capacity=2,
                              commands=["noop"])
    [d1, d2] = await store.assign(["wk", "wk"])
    await store.apply_reports([("wk", Report(task_id=d1.task_id, attempt=1, state="completed")),
                               ("wk", Report(task_id=d2.task_id, attempt=1, state="running"))],
                              retry_base=0.1, retry_max=1)

    _, s, _ = await api.get("/api/stats")
    assert (s["total"], s["pending"], s["running"], s["completed"], s["cancelled"]) == (6, 3, 1, 1, 1)
    assert (s["assigned"], s["failed"], s["queue_depth"], s["workers_online"]) == (0, 0, 3, 1)
    assert s["throughput"] > 0
    assert s["queue_wait_mean_ms"] is not None and s["queue_wait_p95_ms"] is not None


# ---- GET /api/tasks ----

async def _create(api: Api, n: int, command: str = "noop") -> list[str]:
    ids = []
    for i in range(n):
        status, body, _ = await api.post("/api/schedule", {"command": command, "payload": {"i": i}})
        assert status == 201
        ids.append(body["id"])
    return ids


async def test_tasks_are_listed_newest_first_with_a_status_filter(api: Api) -> None:
    ids = await _create(api, 4)
    await api.post(f"/api/tasks/{ids[1]}/cancel")
    status, listed, headers = await api.get("/api/tasks")
    assert status == 200
    assert [t["id"] for t in listed] == ids[::-1]
    assert "X-Next-Cursor" not in headers
    assert set(listed[0]) >= {"id", "command", "payload", "status", "priority", "scheduled_at",
                              "created_at", "assigned_at", "started_at", "completed_at",
                              "failed_at", "cancelled_at", "worker_id", "attempt", "max_attempts",
                              "timeout_seconds", "progress", "result", "error",
                              "idempotency_key", "cancel_requested"}
    _, cancelled, _ = await api.get("/api/tasks?status=cancelled")
    assert [t["id"] for t in cancelled] == [ids[1]]
    _, pending, _ = await api.get("/api/tasks", params={"status": "pending"})
    assert [t["id"] for t in pending] == [ids[3], ids[2], ids[0]]
    _, none, _ = await api.get("/api/tasks?status=failed")
    assert none == []


async def test_limit_is_capped(api: Api) -> None:
    await api.post("/api/schedule/batch", {"command": "noop", "count": MAX_PAGE + 5})
    status, page, headers = await api.get(f"/api/tasks?limit={MAX_PAGE}")
    assert (status, len(page)) == (200, MAX_PAGE)
    assert headers["X-Next-Cursor"]
    _, three, _ = await api.get("/api/tasks?limit=3")
    assert len(three) == 3
    for bad in (MAX_PAGE + 1, 0, -1, "ten"):
        status, err, _ = await api.get(f"/api/tasks?limit={bad}")
        assert (status, err["field"]) == (422, "limit"), (bad, err)


async def test_cursor_pagination_walks_every_task_once(api: Api) -> None:
    ids = await _create(api, 7)
    seen: list[str] = []
    path = "/api/tasks?limit=3"
    pages = 0
    while True:
        status, page, headers = await api.get(path)
        assert status == 200
        seen += [t["id"] for t in page]
        pages += 1
        cursor = headers.get("X-Next-Cursor")
        if not cursor:
            break
        assert 'rel="next"' in headers["Link"] and cursor in headers["Link"]
        path = f"/api/tasks?limit=3&cursor={cursor}"
    assert pages == 3
    assert seen == ids[::-1]


async def test_cursor_pagination_through_a_batch_sharing_one_created_at(api: Api) -> None:
    _, body, _ = await api.post("/api/schedule/batch", {"command": "noop", "count": 7})
    _, everything, _ = await api.get("/api/tasks")
    seen: list[str] = []
    cursor = ""
    while True:
        _, page, headers = await api.get("/api/tasks", params={"limit": 2, "cursor": cursor})
        seen += [t["id"] for t in page]
        cursor = headers.get("X-Next-Cursor", "")
        if not cursor:
            break
    assert seen == [t["id"] for t in everything]  # ties broken by id: none lost or repeated
    assert sorted(seen) == sorted(body["ids"])


async def test_cursor_pagination_keeps_the_status_filter(api: Api) -> None:
    ids = await _create(api, 6)
    for i in (0, 2, 4):
        await api.post(f"/api/tasks/{ids[i]}/cancel")
    _, first, headers = await api.get("/api/tasks?status=cancelled&limit=2")
    nxt = headers["Link"].split(";")[0].strip("<>")
    async with api.http.get(api.url + nxt) as resp:
        second = await resp.json()
    assert [t["id"] for t in first + second] == [ids[4], ids[2], ids[0]]


@pytest.mark.parametrize(("query", "field"), [
    ("status=nope", "status"), ("cursor=not-a-cursor", "cursor"), ("cursor=%FF%FE", "cursor")])
async def test_bad_listing_queries_name_the_parameter(api: Api, query: str, field: str) -> None:
    status, err, _ = await api.get(f"/api/tasks?{query}")
    assert 400 <= status < 500
    assert err["field"] == field and err["error"]


# ---- GET /api/tasks/{id} ----

async def test_get_task_has_its_attempts(api: Api) -> None:
    [tid] = await _create(api, 1)
    status, task, _ = await api.get(f"/api/tasks/{tid}")
    assert status == 200
    assert task["id"] == tid and task["status"] == "pending"
    assert task["attempts"] == [{"attempt": 1, "worker_id": None, "status": "pending",
                                 "assigned_at": None, "started_at": None, "error": None}]


@pytest.mark.parametrize("tid", [str(uuid.uuid4()), "not-a-uuid", "1234"])
async def test_unknown_or_malformed_task_id_is_404(api: Api, tid: str) -> None:
    for method, path in (("GET", f"/api/tasks/{tid}"), ("POST", f"/api/tasks/{tid}/cancel")):
        status, err, _ = await api.call(method, path)
        assert (status, err["field"]) == (404, "id"), (method, err)
        assert err["error"]


# ---- POST /api/tasks/{id}/cancel ----

async def test_cancel_pending_then_again(api: Api) -> None:
    [tid] = await _create(api, 1)
    status, task, _ = await api.post(f"/api/tasks/{tid}/cancel")
    assert status == 200
    assert (task["id"], task["status"]) == (tid, "cancelled")
    assert task["cancelled_at"] is not None
    status, err, _ = await api.post(f"/api/tasks/{tid}/cancel")
    assert (status, err["field"]) == (409, "id")
    assert "cancelled" in err["error"]


async def test_cancel_completed_is_a_conflict(api: Api, store: Store) -> None:
    [tid] = await _create(api, 1)
    await store.upsert_worker(worker_id="wk", name="wk", host="h", pid=1, capacity=1,
                              commands=["noop"])
    [d] = await store.assign(["wk"])
    await store.apply_reports([("wk", Report(task_id=d.task_id, attempt=1, state="completed",
                                             result_json='{"ok": 1}'))], retry_base=0.1, retry_max=1)
    status, err, _ = await api.post(f"/api/tasks/{tid}/cancel")
    assert (status, err["field"]) == (409, "id")
    assert "completed" in err["error"]
    _, task, _ = await api.get(f"/api/tasks/{tid}")
    assert (task["status"], task["result"], task["cancel_requested"]) == ("completed", {"ok": 1},
                                                                          False)


async def test_cancel_running_flags_the_task(api: Api, store: Store) -> None:
    [tid] = await _create(api, 1)
    await store.upsert_worker(worker_id="wk", name="wk", host="h", pid=1, capacity=1,
                              commands=["noop"])
    await store.assign(["wk"])
    status, task, _ = await api.post(f"/api/tasks/{tid}/cancel")
    assert status == 200
    assert (task["status"], task["cancel_requested"]) == ("assigned", True)


# ---- GET /api/workers ----

async def test_workers_list_with_current_task(api: Api, store: Store) -> None:
    status, none, _ = await api.get("/api/workers")
    assert (status, none) == (200, [])
    [tid] = await _create(api, 1)
    await store.upsert_worker(worker_id="id-1", name="alpha", host="box", pid=42, capacity=2,
                              commands=["noop"])
    await store.upsert_worker(worker_id="id-2", name="beta", host="box", pid=43, capacity=1,
                              commands=["noop"])
    await store.assign(["id-1"])
    _, workers, _ = await api.get("/api/workers")
    assert [w["name"] for w in workers] == ["alpha", "beta"]
    alpha, beta = workers
    assert (alpha["id"], alpha["host"], alpha["pid"], alpha["status"], alpha["capacity"]) == (
        "id-1", "box", 42, "online", 2)
    assert (alpha["current_task_id"], alpha["current_task_ids"]) == (tid, [tid])
    assert (beta["current_task_id"], beta["current_task_ids"]) == (None, [])
    for w in workers:
        assert w["tasks_completed"] == 0 and w["tasks_failed"] == 0
        assert w["registered_at"] and w["last_heartbeat"]

    await store.workers_offline(["id-2"], "test")
    _, workers, _ = await api.get("/api/workers")
    assert {w["name"]: w["status"] for w in workers} == {"alpha": "online", "beta": "offline"}


# ---- health ----

async def test_health_and_readiness(api: Api) -> None:
    assert (await api.get("/healthz"))[:2] == (200, {"status": "ok"})
    status, body, _ = await api.get("/readyz")
    assert (status, body["status"], body["database"]) == (200, "ready", "ok")


async def test_unknown_path_and_wrong_method_answer_json(api: Api) -> None:
    status, err, _ = await api.get("/api/nope")
    assert status == 404 and "error" in err
    status, err, _ = await api.get("/api/schedule")
    assert status == 405 and "error" in err


# ---- bad input changes nothing ----

OVERSIZED_BODY = {"command": "noop", "payload": {"blob": "x" * (MAX_BODY + 10)}}
OVERSIZED_PAYLOAD = {"command": "noop", "payload": {"blob": "x" * (MAX_PAYLOAD + 10)}}

BAD_INPUT: list[tuple[str, str, Any, int, str | None]] = [
    # (id, path, raw body or JSON-able value, status, field)
    ("malformed-json", "/api/schedule", b'{"command": "noop",', 400, "body"),
    ("not-an-object", "/api/schedule", b'["noop"]', 400, "body"),
    ("a-string", "/api/schedule/batch", b'"noop"', 400, "body"),
    ("empty-body", "/api/schedule", b"", 400, "body"),
    ("blank-body", "/api/schedule/batch", b"  \n", 400, "body"),
    ("not-utf8", "/api/schedule", b"\xff\xfe{}", 400, "body"),
    ("missing-command", "/api/schedule", {"payload": {}}, 422, "command"),
    ("command-not-a-string", "/api/schedule", {"command": 5}, 422, "command"),
    ("command-empty", "/api/schedule", {"command": " "}, 422, "command"),
    ("unknown-command", "/api/schedule", {"command": "rm-rf"}, 422, "command"),
    ("unknown-command-batch", "/api/schedule/batch", {"command": "rm-rf", "count": 2}, 422,
     "command"),
    ("unknown-field", "/api/schedule", {"command": "noop", "colour": "red"}, 422, "colour"),
    ("count-in-single", "/api/schedule", {"command": "noop", "count": 2}, 422, "count"),
    ("key-in-batch", "/api/schedule/batch", {"command": "noop", "count": 2,
                                             "idempotency_key": "k"}, 422, "idempotency_key"),
    ("count-missing", "/api/schedule/batch", {"command": "noop"}, 422, "count"),
    ("count-null", "/api/schedule/batch", {"command": "noop", "count": None}, 422, "count"),
    ("count-string", "/api/schedule/batch", {"command": "noop", "count": "50"}, 422, "count"),
    ("count-true", "/api/schedule/batch", {"command": "noop", "count": True}, 422, "count"),
    ("count-fraction", "/api/schedule/batch", {"command": "noop", "count": 2.5}, 422, "count"),
    ("count-zero", "/api/schedule/batch", {"command": "noop", "count": 0}, 422, "count"),
    ("count-negative", "/api/schedule/batch", {"command": "noop", "count": -1}, 422, "count"),
    ("count-over-cap", "/api/schedule/batch", {"command": "noop", "count": MAX_BATCH + 1}, 422,
     "count"),
    ("count-huge", "/api/schedule/batch", {"command": "noop", "count": 10**30}, 422, "count"),
    ("count-nan", "/api/schedule/batch", b'{"command": "noop", "count": NaN}', 422, "count"),
    ("delay-string", "/api/schedule/batch", {"command": "noop", "count": 1, "delay_seconds": "x"},
     422, "delay_seconds"),
    ("delay-negative", "/api/schedule", {"command": "noop", "delay_seconds": -1}, 422,
     "delay_seconds"),
    ("delay-bool", "/api/schedule", {"command": "noop", "delay_seconds": False}, 422,
     "delay_seconds"),
    ("delay-nan", "/api/schedule", b'{"command": "noop", "delay_seconds": NaN}', 422,
     "delay_seconds"),
    ("delay-infinity", "/api/schedule/batch",
     b'{"command": "noop", "count": 1, "delay_seconds": Infinity}', 422, "delay_seconds"),
    ("delay-overflow", "/api/schedule", b'{"command": "noop", "delay_seconds": 1e999}', 422,
     "delay_seconds"),
    ("delay-nan-string", "/api/schedule", {"command": "noop", "delay_seconds": "NaN"}, 422,
     "delay_seconds"),
    ("delay-too-far", "/api/schedule", {"command": "noop", "delay_seconds": 10**12}, 422,
     "delay_seconds"),
    ("priority-string", "/api/schedule", {"command": "noop", "priority": "high"}, 422,
     "priority"),
    ("priority-nan", "/api/schedule", b'{"command": "noop", "priority": -Infinity}', 422,
     "priority"),
    ("max-attempts-zero", "/api/schedule", {"command": "noop", "max_attempts": 0}, 422,
     "max_attempts"),
    ("max-attempts-101", "/api/schedule/batch", {"command": "noop", "count": 1,
                                                 "max_attempts": 101}, 422, "max_attempts"),
    ("timeout-zero", "/api/schedule", {"command": "noop", "timeout_seconds": 0}, 422,
     "timeout_seconds"),
    ("timeout-list", "/api/schedule", {"command": "noop", "timeout_seconds": [1]}, 422,
     "timeout_seconds"),
    ("key-number", "/api/schedule", {"command": "noop", "idempotency_key": 5}, 422,
     "idempotency_key"),
    ("key-empty", "/api/schedule", {"command": "noop", "idempotency_key": ""}, 422,
     "idempotency_key"),
    ("key-too-long", "/api/schedule", {"command": "noop", "idempotency_key": "k" * 201}, 422,
     "idempotency_key"),
    ("payload-nan", "/api/schedule", b'{"command": "noop", "payload": {"x": NaN}}', 422,
     "payload"),
    ("payload-nan-batch", "/api/schedule/batch",
     b'{"command": "noop", "count": 3, "payload": [Infinity]}', 422, "payload"),
    ("payload-oversized", "/api/schedule", OVERSIZED_PAYLOAD, 413, "payload"),
    ("payload-oversized-batch", "/api/schedule/batch", {**OVERSIZED_PAYLOAD, "count": 2}, 413,
     "payload"),
    ("body-oversized", "/api/schedule", OVERSIZED_BODY, 413, "body"),
    ("body-oversized-batch", "/api/schedule/batch", {**OVERSIZED_BODY, "count": 2}, 413, "body"),
]


async def test_bad_input_is_refused_and_changes_nothing(
    api: Api, subtests: pytest.Subtests
) -> None:
    await api.post("/api/schedule/batch", {"command": "noop", "count": 2})  # not an empty table
    before = (await count_rows(api.database_url), await count_rows(api.database_url, "events"))
    assert before[0] == 2
    for case, path, body, status, field in BAD_INPUT:
        with subtests.test(msg=case):
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            async with api.http.post(api.url + path, data=raw,
                                     headers={"Content-Type": "application/json"}) as resp:
                assert resp.content_type == "application/json"
                answer = await resp.json()
                got = resp.status
            assert (got, answer.get("field")) == (status, field), answer
            assert isinstance(answer["error"], str) and answer["error"]
            after = (await count_rows(api.database_url),
                     await count_rows(api.database_url, "events"))
            assert after == before


async def test_bad_idempotency_header_is_refused(api: Api) -> None:
    status, err, _ = await api.post("/api/schedule", {"command": "noop"},
                                    headers={"Idempotency-Key": "k" * 201})
    assert (status, err["field"]) == (422, "idempotency_key")
    assert await count_rows(api.database_url) == 0


async def test_unknown_command_message_lists_the_known_ones(api: Api) -> None:
    status, err, _ = await api.post("/api/schedule", {"command": "nope"})
    assert status == 422
    for builtin in ("demo-job", "noop", "sleep", "fail", "flaky", "cpu"):
        assert builtin in err["error"]
