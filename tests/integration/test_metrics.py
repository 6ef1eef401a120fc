"""Prometheus metrics: /metrics parses, and its counters move as tasks are made and run.

The scheduler's metrics come from its own app; the coordinator's from its own port, with
real workers over real gRPC (and a raw-protocol worker for what a real one never does).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskmaster.cluster.local import free_port
from taskmaster.model import TaskStatus
from taskmaster.rpc import taskmaster_pb2 as pb
from taskmaster.store import NewTask, Store
from tests.helpers import fast_settings, run_workers, serve_coordinator, serve_scheduler, wait_for
from tests.integration.test_coordinator import FakeWorker

TOKEN = "metrics-token"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as Prometheus reads a missing counter)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await resp.text())


# ---- the scheduler ----

async def test_scheduler_metrics_move_with_requests(database_url: str) -> None:
    async with serve_scheduler(fast_settings(api_token=TOKEN), database_url) as (url, _app), \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        before = await scrape(http, url + "/metrics")
        assert value(before, "taskmaster_tasks_created_total", command="noop") == 0
        assert value(before, "taskmaster_database_up") == 1
        assert value(before, "process_resident_memory_bytes") > 0

        async with http.post(url + "/api/schedule", json={"command": "noop"}) as resp:
            assert resp.status == 201
        async with http.post(url + "/api/schedule", json={"command": "noop",
                                                          "idempotency_key": "k"}) as resp:
            assert resp.status == 201
        async with http.post(url + "/api/schedule", json={"command": "noop",
                                                          "idempotency_key": "k"}) as resp:
            assert resp.status == 200  # the same task again: nothing new
        async with http.post(url + "/api/schedule/batch",
                             json={"command": "sleep", "count": 5}) as resp:
            assert resp.status == 201
        async with http.post(url + "/api/schedule", json={"command": "nope"}) as resp:
            assert resp.status == 422
        async with http.post(url + "/api/schedule", json={"command": "noop"},
                             headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with http.get(url + "/no/such/page") as resp:
            assert resp.status == 404
        async with http.put(url + "/api/tasks/42") as resp:
            assert resp.status == 405
        stream = await http.get(url + "/api/logs/stream")
        try:
            after = await scrape(http, url + "/metrics")
        finally:
            stream.close()

    assert value(after, "taskmaster_tasks_created_total", command="noop") == 2
    assert value(after, "taskmaster_tasks_created_total", command="sleep") == 5
    assert value(after, "taskmaster_tasks_created_total", command="nope") == 0

    def requests(route: str, status: int, method: str = "POST") -> float:
        return value(after, "taskmaster_http_requests_total", method=method, route=route,
                     status=str(status))

    assert requests("/api/schedule", 201) == 2
    assert requests("/api/schedule", 200) == 1
    assert requests("/api/schedule", 422) == 1
    assert requests("/api/schedule", 401) == 1
    assert requests("/api/schedule/batch", 201) == 1
    assert requests("unmatched", 404, "GET") == 1  # raw paths never become labels
    assert requests("unmatched", 405, "PUT") == 1
    assert requests("/metrics", 200, "GET") == 1  # the first scrape
    assert value(after, "taskmaster_http_request_duration_seconds_count",
                 method="POST", route="/api/schedule") == 5
    # figures read from PostgreSQL and the event hub at scrape time
    assert value(after, "taskmaster_queue_depth") == 7
    assert value(after, "taskmaster_tasks", status="pending") == 7
    assert value(after, "taskmaster_tasks_running") == 0
    assert value(after, "taskmaster_workers_online") == 0
    assert value(after, "taskmaster_sse_clients") == 1
    # the keyless create went through the create queue (one statement); the keyed one not
    assert value(before, "taskmaster_create_statements_total") == 0
    assert value(after, "taskmaster_create_statements_total") == 1
    assert value(after, "taskmaster_creates_waiting") == 0


async def test_every_app_has_its_own_registry(database_url: str) -> None:
    async with serve_scheduler(fast_settings(), database_url) as (one, _a), \
            serve_scheduler(fast_settings(), database_url) as (two, _b), \
            aiohttp.ClientSession() as http:
        async with http.post(one + "/api/schedule", json={"command": "noop"}) as resp:
            assert resp.status == 201
        assert value(await scrape(http, two + "/metrics"),
                     "taskmaster_tasks_created_total", command="noop") == 0
        assert value(await scrape(http, one + "/metrics"),
                     "taskmaster_tasks_created_total", command="noop") == 1


# ---- the coordinator ----

async def all_final(store: Store) -> bool:
    rows = await store.pool.fetch("SELECT status FROM tasks")
    return bool(rows) and all(TaskStatus(r["status"]).final for r in rows)


async def test_coordinator_metrics_move_as_tasks_complete(database_url: str,
                                                          store: Store) -> None:
    settings = fast_settings(metrics_port=free_port())
    metrics_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    async with serve_coordinator(settings, database_url) as server, \
            aiohttp.ClientSession() as http:
        empty = await scrape(http, metrics_url)
        assert value(empty, "taskmaster_workers_online") == 0
        assert value(empty, "taskmaster_tasks_completed_total", command="noop") == 0
        async with run_workers(settings, server.port, 1, concurrency=4, prefix="m") as pool:
            for _ in range(4):
                await store.create_task(NewTask(command="noop"))
            for _ in range(2):
                await store.create_task(NewTask(command="fail", max_attempts=2))
            await wait_for(lambda: all_final(store), 20, message="every task to finish")
            await wait_for(lambda: not pool.workers[0]._unacked, 10, message="the last acks")
            during = await scrape(http, metrics_url)
        after = await scrape(http, metrics_url)

    assert value(during, "taskmaster_workers_online") == 1
    assert value(during, "taskmaster_worker_slots", worker="m1") == 4
    assert value(during, "taskmaster_worker_tasks_in_flight", worker="m1") == 0
    assert value(after, "taskmaster_workers_online") == 0  # drained and gone

    assert value(after, "taskmaster_tasks_assigned_total", command="noop") == 4
    assert value(after, "taskmaster_tasks_assigned_total", command="fail") == 4
    assert value(after, "taskmaster_tasks_completed_total", command="noop") == 4
    assert value(after, "taskmaster_tasks_retried_total", command="fail") == 2
    assert value(after, "taskmaster_tasks_failed_total", command="fail") == 2
    assert value(after, "taskmaster_tasks_failed_total", command="noop") == 0
    assert value(after, "taskmaster_reports_total") >= 8
    assert value(after, "taskmaster_reports_refused_total") == 0
    # one wait per start, one run time per finished attempt
    assert value(after, "taskmaster_task_queue_wait_seconds_count", command="noop") == 4
    assert value(after, "taskmaster_task_queue_wait_seconds_count", command="fail") == 4
    assert value(after, "taskmaster_task_run_seconds_count",
                 command="noop", outcome="completed") == 4
    assert value(after, "taskmaster_task_run_seconds_count",
                 command="fail", outcome="failed") == 4
    assert value(after, "taskmaster_task_run_seconds_bucket",
                 command="noop", outcome="completed", le="+Inf") == 4


async def test_reassignments_and_refused_reports_are_counted(database_url: str,
                                                             store: Store) -> None:
    async with serve_coordinator(fast_settings(), database_url) as server:
        metrics = server.metrics
        assert metrics is not None and server.metrics_server is None  # port 0: not served
        a, b = FakeWorker(server.port, "fake-a"), FakeWorker(server.port, "fake-b")
        try:
            await a.connect()
            task, _ = await store.create_task(NewTask(command="noop"))
            tid = str(task.id)
            await a.receive("assign")
            assert (await a.report(tid, 1, pb.RUNNING)).accepted
            await a.leave()  # lost while running: the task goes back
            await wait_for(lambda: _pending(store, task.id), message="the requeue")
            await b.connect()
            await b.receive("assign")
            await a.connect(in_flight=[(tid, 1)])
            assert not (await a.report(tid, 1, pb.COMPLETED)).accepted  # fenced off
            assert (await b.report(tid, 2, pb.COMPLETED)).accepted
        finally:
            for w in (a, b):
                await w.leave()
                await w.close()
        after = parse(metrics.exposition().decode())
    assert value(after, "taskmaster_tasks_reassigned_total", command="noop") == 1
    assert value(after, "taskmaster_reports_refused_total") == 1
    assert value(after, "taskmaster_tasks_completed_total", command="noop") == 1
    assert value(after, "taskmaster_tasks_assigned_total", command="noop") == 2


async def _pending(store: Store, task_id: Any) -> bool:
    task = await store.get_task(task_id)
    return task is not None and task.status is TaskStatus.PENDING


async def test_a_taken_metrics_port_is_logged_not_fatal(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = fast_settings(metrics_port=port)
        with caplog.at_level(logging.WARNING, "taskmaster.coordinator.metrics"):
            async with serve_coordinator(settings, database_url) as server:
                assert server.port > 0
                assert server.metrics_server is not None and server.metrics_server.port == 0
        assert any("TASKMASTER_METRICS_PORT" in r.getMessage() for r in caplog.records)
