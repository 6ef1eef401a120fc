"""The OpenAPI document is the API: every route is in it, and a fuzzer finds no crash.

schemathesis generates requests from the document (valid ones and deliberately invalid
ones) against a live scheduler on a real socket and PostgreSQL, and checks every answer:
no 5xx, a documented status, content type, headers and body.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from taskmaster.scheduler.app import make_app
from taskmaster.scheduler.ops import openapi_document
from tests.helpers import fast_settings, serve_scheduler

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# the pool API on, without a pool manager: the compose case (501 with a command)
SETTINGS = fast_settings(api_token=TOKEN, enable_pool_api=True, max_batch_count=50)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}
STREAM = "/api/logs/stream"
# 501 is /api/pool's documented answer when no pool manager runs (it names the docker
# command to use instead); everywhere else, and for any other 5xx, a 5xx fails the run.
CONFIG = schemathesis.Config.from_dict({"operations": [{
    "include-path-regex": "^/api/pool",
    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "501"]}},
}]})


def load_schema() -> Any:
    """The repository's document, as schemathesis sees it."""
    return schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


def documented() -> set[tuple[str, str]]:
    doc = openapi_document()
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    app = make_app(SETTINGS, "postgresql://unused")
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # aiohttp adds HEAD to GET
    }
    assert routes == documented(), (
        f"in the app only: {sorted(routes - documented())}; "
        f"in the document only: {sorted(documented() - routes)}")


def test_every_operation_answers_errors_in_the_error_schema() -> None:
    doc = openapi_document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")) and "$ref" in answer:
                    ref = answer["$ref"].rsplit("/", 1)[-1]
                    answer = doc["components"]["responses"][ref]
                if not status.startswith(("4", "5")) or path == "/readyz":
                    continue
                schema = answer["content"]["application/json"]["schema"]["$ref"]
                assert schema.endswith(("/Error", "/PoolUnavailable")), (method, path, status)
                assert "X-Request-ID" in answer["headers"], (method, path, status)


async def test_served_document_is_the_one_in_the_repository(database_url: str) -> None:
    async with serve_scheduler(SETTINGS, database_url) as (url, _app), \
            aiohttp.ClientSession() as http:
        async with http.get(url + "/api/openapi.json") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            assert await resp.json() == openapi_document()


def _fuzz(url: str, operations: list[Any], examples: dict[GenerationMode, int],
          checks: list[Any]) -> tuple[list[str], dict[str, int]]:
    """Run schemathesis on each operation: the failures, as text, and the calls made."""
    failures: list[str] = []
    calls: dict[str, int] = {}
    for op in operations:
        label = f"{op.method.upper()} {op.path}"
        for mode, n in examples.items():

            @given(case=op.as_strategy(generation_mode=mode))
            @hypothesis.settings(max_examples=n, deadline=None, database=None,
                                 phases=[Phase.generate], derandomize=True,
                                 suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
                case.call_and_validate(base_url=url, headers=AUTH, checks=checks, timeout=10)

            try:
                check()
            except Exception as exc:  # collect them all: one report names every break
                failures.append(f"{label} ({mode.value}): {exc}")
    return failures, calls


async def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(
        database_url: str) -> None:
    operations = [r.ok() for r in load_schema().exclude(path=STREAM).get_all_operations()]
    assert len(operations) == len(documented()) - 1
    async with serve_scheduler(SETTINGS, database_url) as (url, _app):
        # a few real tasks so that reads have something to show
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.post(url + "/api/schedule/batch",
                                 json={"command": "noop", "count": 5}) as resp:
                assert resp.status == 201
        failures, calls = await asyncio.to_thread(_fuzz, url, operations, EXAMPLES, CHECKS)
    assert not failures, "\n\n".join(failures)
    assert len(calls) == len(operations) and min(calls.values()) >= 20, calls


async def test_invalid_bodies_are_refused(database_url: str) -> None:
    """Deliberately invalid requests to the create endpoints get a 4xx, never a success."""
    schema = load_schema()
    operations = [schema[path]["POST"] for path in ("/api/schedule", "/api/schedule/batch")]
    async with serve_scheduler(SETTINGS, database_url) as (url, _app):
        failures, calls = await asyncio.to_thread(
            _fuzz, url, operations, {GenerationMode.NEGATIVE: 60},
            [*CHECKS, negative_data_rejection])
    assert not failures, "\n\n".join(failures)
    assert min(calls.values()) >= 20, calls


async def test_success_answers_match_the_schema(database_url: str) -> None:
    """Requests that succeed (known commands, real ids) and what they answer, validated."""
    schema = load_schema()

    def run(url: str) -> None:
        def call(path: str, method: str, expect: int, **kw: Any) -> Any:
            case = schema[path][method].Case(**kw)
            resp = case.call_and_validate(base_url=url, headers=AUTH, checks=CHECKS, timeout=10)
            assert resp.status_code == expect, (method, path, resp.status_code, resp.text)
            # schemathesis' headers: lowercase names, lists of values
            return json.loads(resp.text) if "json" in resp.headers["content-type"][0] \
                else resp.text

        made = call("/api/schedule", "POST", 201,
                    body={"command": "noop", "payload": {"n": 1}, "priority": 5,
                          "idempotency_key": "k1", "delay_seconds": 60})
        again = call("/api/schedule", "POST", 200, body={"command": "noop"},
                     headers={"Idempotency-Key": "k1"})
        assert again["id"] == made["id"]
        batch = call("/api/schedule/batch", "POST", 201,
                     body={"command": "sleep", "count": 3, "payload": {"seconds": 1}})
        assert batch["created"] == 3
        page = call("/api/tasks", "GET", 200, query={"limit": 2})
        assert len(page) == 2
        call("/api/tasks", "GET", 200, query={"status": "pending"})
        call("/api/tasks/{id}", "GET", 200, path_parameters={"id": made["id"]})
        call("/api/tasks/{id}", "GET", 404, path_parameters={"id": str(uuid.uuid4())})
        call("/api/tasks/{id}/cancel", "POST", 200, path_parameters={"id": made["id"]})
        call("/api/tasks/{id}/cancel", "POST", 409, path_parameters={"id": made["id"]})
        call("/api/stats", "GET", 200)
        call("/api/workers", "GET", 200)
        call("/api/workers", "GET", 200, query={"history": "true"})
        call("/api/workers", "GET", 422, query={"history": "maybe"})
        assert "noop" in call("/api/commands", "GET", 200)
        call("/api/pool", "GET", 501)
        call("/api/pool/scale", "POST", 501, body={"workers": 2})
        call("/api/pool/coordinator/{action}", "POST", 501, path_parameters={"action": "restart"})
        call("/api/pool/workers/{name}/kill", "POST", 404, path_parameters={"name": "nobody"})
        cleared = call("/api/reset", "POST", 200, body={})
        assert cleared["tasks"] == 4 and cleared["pending"] == 3  # the cancelled one went too
        call("/api/reset", "POST", 422, body={"everything": True})
        assert call("/api/stats", "GET", 200)["total"] == 0
        call("/healthz", "GET", 200)
        call("/readyz", "GET", 200)
        assert "taskmaster_tasks_created_total" in call("/metrics", "GET", 200)
        call("/api/openapi.json", "GET", 200)

    async with serve_scheduler(SETTINGS, database_url) as (url, _app):
        await asyncio.to_thread(run, url)


async def test_event_stream_as_documented(database_url: str) -> None:
    """The SSE route, outside the fuzzer (it never ends): its type, and its 400."""
    schema = load_schema()
    async with serve_scheduler(SETTINGS, database_url) as (url, _app):
        async with aiohttp.ClientSession() as http:
            async with http.get(url + STREAM) as resp:
                assert resp.status == 200
                assert resp.content_type == "text/event-stream"
                assert resp.headers["X-Request-ID"]
                assert await resp.content.readline() == b"retry: 1000\n"

        def bad_last_id() -> None:
            case = schema[STREAM]["GET"].Case(headers={"Last-Event-ID": "nope"})
            resp = case.call_and_validate(base_url=url, checks=CHECKS, timeout=10)
            assert resp.status_code == 400

        await asyncio.to_thread(bad_last_id)
