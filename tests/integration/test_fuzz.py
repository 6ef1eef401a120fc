"""Hypothesis throws bodies at the create endpoints of a live scheduler: never a 5xx.

Bodies are near-valid (known commands, every field, values of every JSON type, strings
PostgreSQL cannot store), arbitrary JSON, or raw bytes. Whatever comes back is a JSON
answer, and the tasks in PostgreSQL are exactly those the 2xx answers announced.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import hypothesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st

from tests.helpers import count_rows, fast_settings, serve_scheduler

SETTINGS = fast_settings(max_batch_count=20, max_payload_bytes=2000, max_body_bytes=20_000)
EXAMPLES = 150

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.sampled_from(["", "\x00", "a\x00b", "\ud800", "\udfff x", "é", "😀"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
deep = (st.sampled_from([10, 900, 999, 1000, 1001, 2000, 4000]) | st.integers(1, 4000)).map(
    lambda n: "[" * n + "]" * n)
nasty = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "\ud83d"]) | st.text(
    st.sampled_from(["\x00", "\ud800", "a", "é"]), min_size=1, max_size=5)
commands = st.sampled_from(["noop", "demo-job", "sleep", "fail"]) | st.text(max_size=12)
numbers = (st.integers(-10, 200) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0, 1, 1.0, 1.5, -0.0, 10**20, True, "3", None]))

known = st.sampled_from(["noop", "demo-job", "sleep", "fail"])
VALID: dict[str, Any] = {  # values the API accepts
    "payload": st.none() | st.dictionaries(st.text(max_size=8), st.integers() | st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8), max_size=3),
    "delay_seconds": st.floats(0, 31622400),
    "priority": st.integers(-1000, 1000),
    "max_attempts": st.integers(1, 100),
    "timeout_seconds": st.floats(0.001, 604800),
    "idempotency_key": st.text("abcdef", min_size=1, max_size=8),
    "count": st.integers(1, 20),
}
FUZZY: dict[str, Any] = {  # anything at all
    "payload": json_values,
    "delay_seconds": numbers | json_values,
    "priority": numbers | json_values,
    "max_attempts": numbers | json_values,
    "timeout_seconds": numbers | json_values,
    "idempotency_key": st.text(max_size=210) | json_values,
    "count": numbers | json_values,
}


def encoded(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


def near_valid(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with a command and some of the endpoint's fields; most values are valid, so
    that a good share of requests get through."""
    batch = path.endswith("/batch")
    fields = {k: VALID[k] | VALID[k] | VALID[k] | FUZZY[k] for k in VALID
              if k != ("idempotency_key" if batch else "count")}
    required = {"command": known | known | known | known | commands | json_values}
    if batch:
        required["count"] = fields.pop("count")
    return st.fixed_dictionaries(required, optional=fields)


def bodies(path: str) -> st.SearchStrategy[bytes]:
    """Request bodies for one endpoint, from nearly right to garbage."""
    good = near_valid(path)
    stranger = st.tuples(good, st.text(max_size=8), json_values).map(
        lambda t: {**t[0], t[1]: t[2]})
    wrong_field = st.tuples(good, st.sampled_from(list(FUZZY)), json_values).map(
        lambda t: {**t[0], t[1]: t[2]})
    # strings PostgreSQL cannot store, anywhere in a valid body
    unstorable = st.tuples(good, st.sampled_from(["payload", "idempotency_key", "x"]),
                           nasty, st.booleans()).map(
        lambda t: {**t[0], t[1]: {"in": [t[2]]} if t[3] and t[1] == "payload" else t[2]})
    return st.one_of(
        good.map(encoded), good.map(encoded), good.map(encoded),
        stranger.map(encoded), wrong_field.map(encoded), unstorable.map(encoded),
        json_values.map(encoded),
        st.dictionaries(st.text(max_size=8), json_values, max_size=5).map(encoded),
        deep.map(lambda d: f'{{"command": "noop", "payload": {d}}}'.encode()),
        st.binary(max_size=64),
    )


def post(url: str, path: str, body: bytes, key: str | None) -> tuple[int, str, bytes]:
    """One POST over a plain socket; (status, content type, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def fuzz(url: str, path: str) -> int:
    """Run the examples; how many tasks the 2xx answers said were created."""
    created = 0
    seen: dict[int, list[str]] = {}

    @given(body=bodies(path), key=st.none() | st.text(st.characters(codec="latin-1",
                                                               exclude_categories=["Cc"]),
                                                min_size=1, max_size=20))
    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                         phases=[Phase.generate], derandomize=True,
                         suppress_health_check=list(HealthCheck))
    def check(body: bytes, key: str | None) -> None:
        nonlocal created
        status, ctype, raw = post(url, path, body, key if path == "/api/schedule" else None)
        assert status < 500, (status, body[:300], raw[:300])
        assert ctype.startswith("application/json"), (status, ctype, raw[:200])
        answer = json.loads(raw)
        seen.setdefault(status, []).append(answer.get("error", "") if status >= 400 else "")
        if status >= 400:
            assert isinstance(answer["error"], str) and "field" in answer, answer
        elif status == 201:
            created += 1 if path == "/api/schedule" else answer["created"]

    check()
    assert {201, 400, 422} <= set(seen), seen  # it reached every branch
    return created


async def test_create_endpoints_never_answer_5xx(database_url: str) -> None:
    async with serve_scheduler(SETTINGS, database_url) as (url, _app):
        created = 0
        for path in ("/api/schedule", "/api/schedule/batch"):
            created += await asyncio.to_thread(fuzz, url, path)
    assert await count_rows(database_url) == created


async def test_every_post_route_survives_hostile_bodies(database_url: str) -> None:
    """Every POST route, the pool's included (enabled, no manager: 501 is its answer)."""
    hostile = [
        b"[" * 5000 + b"]" * 5000, b'{"a": ' * 3000 + b"1" + b"}" * 3000,
        b'{"command": "noop", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"command": "noop", "count": 1, "payload": ' + b"[" * 500 + b"]" * 500 + b"}",
        b'{"command": "noop", "payload": "\\u0000"}',
        b'{"command": "noop", "count": 1, "payload": {"k": ["\\ud800"]}}',
        b'{"command": "noop", "idempotency_key": "a\\u0000"}',
        b'{"command": {"a": 1}, "count": 1}', b'{"command": ["noop"]}',
        b'{"command": "noop", "payload": NaN}', b'{"workers": Infinity, "graceful": 1e999}',
        b"\xff\xfe\x00", b'{"x": "\\u0000\\ud800"}', b"NaN", b"{" * 10, b'"' * 7,
    ]
    settings = SETTINGS.with_(enable_pool_api=True)
    async with serve_scheduler(settings, database_url) as (url, app):
        posts = sorted({r.resource.canonical for r in app.router.routes()
                        if r.method == "POST" and r.resource is not None})
        assert len(posts) >= 6

        def run() -> None:
            for path in posts:
                target = path.replace("{id}", str(uuid.uuid4())).replace(
                    "{name}", "w1").replace("{action}", "restart")
                for body in hostile:
                    status, ctype, _raw = post(url, target, body, None)
                    assert status < 500 or status == 501, (path, body[:20], status)
                    assert ctype.startswith("application/json"), (path, status)

        await asyncio.to_thread(run)
    assert await count_rows(database_url) == 1  # the 500-deep payload is fine: one task
