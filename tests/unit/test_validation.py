"""Request bodies checked field by field: each refusal names its field and says why."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from taskmaster.config import Settings
from taskmaster.errors import InvalidInput
from taskmaster.scheduler import validation as v
from taskmaster.store import NewTask
from taskmaster.web import parse_object

SETTINGS = Settings(max_batch_count=500, max_payload_bytes=100, default_max_attempts=4,
                    default_timeout=60.0)
KNOWN = {"noop", "demo-job", "sleep"}


def refused(fn: Any, *args: Any) -> InvalidInput:
    """The InvalidInput fn raises."""
    with pytest.raises(InvalidInput) as info:
        fn(*args)
    return info.value


# ---- request bodies (taskmaster.web, shared by the scheduler and the control API) ----

def test_parse_object_accepts_an_object() -> None:
    assert parse_object(b'{"command": "noop"}') == {"command": "noop"}


def test_parse_object_takes_an_empty_body_as_the_default_given() -> None:
    assert parse_object(b"  ", empty={}) == {}
    assert parse_object(b'{"graceful": true}', empty={}) == {"graceful": True}


@pytest.mark.parametrize(("raw", "words"), [
    (b"", "empty"), (b"   ", "empty"), (b"{", "not valid JSON"), (b"\xff", "not valid JSON"),
    (b"[]", "JSON object, not list"), (b"3", "JSON object, not int"),
    (b"null", "JSON object, not NoneType"), (b'"x"', "JSON object, not str"),
])
def test_parse_object_refuses_what_is_not_an_object(raw: bytes, words: str) -> None:
    err = refused(parse_object, raw)
    assert err.status == 400
    assert err.field == "body"
    assert words in err.message
    assert err.to_json() == {"error": err.message, "field": "body"}


# ---- one task ----

def test_new_task_defaults() -> None:
    assert v.new_task({"command": "noop"}, SETTINGS, KNOWN) == NewTask(
        command="noop", payload=None, priority=0, delay_seconds=0.0, max_attempts=4,
        timeout_seconds=60.0, idempotency_key=None)


def test_new_task_every_field() -> None:
    body = {"command": "sleep", "payload": [1, "two"], "delay_seconds": 2, "priority": -5,
            "max_attempts": 100, "timeout_seconds": 0.5, "idempotency_key": "k"}
    new = v.new_task(body, SETTINGS, KNOWN)
    assert new == NewTask(command="sleep", payload=[1, "two"], priority=-5, delay_seconds=2.0,
                          max_attempts=100, timeout_seconds=0.5, idempotency_key="k")
    assert isinstance(new.delay_seconds, float)


def test_null_fields_take_their_defaults() -> None:
    body = {"command": "noop", "delay_seconds": None, "priority": None, "max_attempts": None,
            "timeout_seconds": None, "payload": None}
    assert v.new_task(body, SETTINGS, KNOWN) == v.new_task({"command": "noop"}, SETTINGS, KNOWN)


def test_whole_floats_count_as_integers() -> None:
    assert v.new_task({"command": "noop", "priority": 3.0}, SETTINGS, KNOWN).priority == 3


def test_idempotency_key_from_header_or_body() -> None:
    assert v.new_task({"command": "noop"}, SETTINGS, KNOWN, "h").idempotency_key == "h"
    assert v.new_task({"command": "noop", "idempotency_key": "b"}, SETTINGS, KNOWN,
                      "h").idempotency_key == "b"


@pytest.mark.parametrize(("body", "field", "words"), [
    ({}, "command", "command is required"),
    ({"command": None}, "command", "non-empty string"),
    ({"command": ""}, "command", "non-empty string"),
    ({"command": ["noop"]}, "command", "non-empty string"),
    ({"command": "nope"}, "command", "unknown command 'nope'; known commands: demo-job, noop"),
    ({"command": "noop", "delay_seconds": "x"}, "delay_seconds", 'must be a number, got "x"'),
    ({"command": "noop", "delay_seconds": True}, "delay_seconds", "must be a number"),
    ({"command": "noop", "delay_seconds": float("nan")}, "delay_seconds", "must be a number"),
    ({"command": "noop", "delay_seconds": float("inf")}, "delay_seconds", "must be a number"),
    ({"command": "noop", "delay_seconds": -0.001}, "delay_seconds", "at least 0"),
    ({"command": "noop", "delay_seconds": v.MAX_DELAY + 1}, "delay_seconds", "at most"),
    ({"command": "noop", "priority": "1"}, "priority", "must be an integer"),
    ({"command": "noop", "priority": 1.5}, "priority", "must be an integer, got 1.5"),
    ({"command": "noop", "priority": 1001}, "priority", "between -1000 and 1000, got 1001"),
    ({"command": "noop", "max_attempts": 0}, "max_attempts", "between 1 and 100, got 0"),
    ({"command": "noop", "max_attempts": False}, "max_attempts", "must be an integer"),
    ({"command": "noop", "timeout_seconds": 0}, "timeout_seconds", "greater than 0"),
    ({"command": "noop", "timeout_seconds": -1}, "timeout_seconds", "greater than 0"),
    ({"command": "noop", "timeout_seconds": {}}, "timeout_seconds", "must be a number"),
    ({"command": "noop", "idempotency_key": 1}, "idempotency_key", "1 to 200 characters"),
    ({"command": "noop", "idempotency_key": ""}, "idempotency_key", "1 to 200 characters"),
    ({"command": "noop", "idempotency_key": "k" * 201}, "idempotency_key", "1 to 200"),
    ({"command": "noop", "count": 3}, "count", "unknown field 'count'"),
    ({"command": "noop", "Command": "noop"}, "Command", "unknown field 'Command'"),
    ({"command": "noop", "payload": {"x": float("nan")}}, "payload", "payload"),
])
def test_new_task_refusals_name_the_field(body: dict[str, Any], field: str, words: str) -> None:
    err = refused(v.new_task, body, SETTINGS, KNOWN)
    assert (err.status, err.field) == (422, field)
    assert words in err.message


def test_payload_over_the_limit_is_413() -> None:
    err = refused(v.new_task, {"command": "noop", "payload": "x" * 100}, SETTINGS, KNOWN)
    assert (err.status, err.field) == (413, "payload")
    assert "TASKMASTER_MAX_PAYLOAD_BYTES" in err.message
    v.new_task({"command": "noop", "payload": "x" * 90}, SETTINGS, KNOWN)


def test_unknown_fields_are_reported_before_bad_values() -> None:
    err = refused(v.new_task, {"command": 5, "extra": 1}, SETTINGS, KNOWN)
    assert err.field == "extra"


# ---- a batch ----

def test_new_batch() -> None:
    new, count = v.new_batch({"command": "demo-job", "count": 50, "delay_seconds": 0},
                             SETTINGS, KNOWN)
    assert count == 50
    assert new == NewTask(command="demo-job", payload=None, delay_seconds=0.0, max_attempts=4,
                          timeout_seconds=60.0)


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"command": "noop"}, "count", "count is required"),
    ({"command": "noop", "count": "50"}, "count", 'count must be an integer, got "50"'),
    ({"command": "noop", "count": True}, "count", "count must be an integer, got true"),
    ({"command": "noop", "count": None}, "count", "count is required"),
    ({"command": "noop", "count": 0}, "count", "between 1 and 500, got 0"),
    ({"command": "noop", "count": -1}, "count", "between 1 and 500, got -1"),
    ({"command": "noop", "count": 501}, "count", "between 1 and 500, got 501"),
    ({"command": "noop", "count": 2.5}, "count", "must be an integer"),
    ({"command": "noop", "count": float("nan")}, "count", "must be an integer"),
    ({"command": "nope", "count": 1}, "command", "unknown command"),
    ({"command": "noop", "count": 1, "idempotency_key": "k"}, "idempotency_key", "unknown field"),
    ({"command": "noop", "count": 1, "delay_seconds": -5}, "delay_seconds", "at least 0"),
])
def test_new_batch_refusals_name_the_field(body: dict[str, Any], field: str, words: str) -> None:
    err = refused(v.new_batch, body, SETTINGS, KNOWN)
    assert (err.status, err.field) == (422, field)
    assert words in err.message


def test_batch_cap_comes_from_settings() -> None:
    assert v.new_batch({"command": "noop", "count": 500}, SETTINGS, KNOWN)[1] == 500
    bigger = SETTINGS.with_(max_batch_count=1000)
    assert v.new_batch({"command": "noop", "count": 1000}, bigger, KNOWN)[1] == 1000


# ---- ids ----

def test_task_id() -> None:
    tid = uuid.uuid4()
    assert v.task_id(str(tid)) == tid
    err = refused(v.task_id, "12")
    assert (err.status, err.field) == (404, "id")
    assert "'12'" in err.message
