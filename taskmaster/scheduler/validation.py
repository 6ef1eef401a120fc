"""Request bodies checked field by field; errors name the field."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

from taskmaster.config import Settings
from taskmaster.errors import InvalidInput
from taskmaster.model import unstorable
from taskmaster.store import NewTask

MAX_DELAY = 366 * 86400.0
MAX_TIMEOUT = 7 * 86400.0
MAX_KEY = 200


def storable(body: dict[str, Any]) -> dict[str, Any]:
    """The body, once no field holds a value PostgreSQL cannot store (422 naming it)."""
    for name, value in body.items():
        why = unstorable(name) or unstorable(value)
        if why:
            where = why.replace(" at $", f" at {name}" if name.isprintable() else " at a key")
            raise InvalidInput(422, f"{name!r} contains {where}, which PostgreSQL cannot store",
                               name)
    return body


def _int(body: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidInput(422, f"{name} must be an integer, got {json.dumps(value)[:50]}", name)
    if not lo <= value <= hi:
        raise InvalidInput(422, f"{name} must be between {lo} and {hi}, got {value}", name)
    return value


def _number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float,
            *, lo_open: bool = False) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(422, f"{name} must be a number, got {json.dumps(value)[:50]}", name)
    if (value <= lo if lo_open else value < lo) or value > hi:
        low = f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
        raise InvalidInput(422, f"{name} must be {low} and at most {hi:g}, got {value}", name)
    return float(value)


def _command(body: Mapping[str, Any], known: set[str]) -> str:
    if "command" not in body:
        raise InvalidInput(422, "command is required", "command")
    command = body["command"]
    if not isinstance(command, str) or not command.strip():
        raise InvalidInput(422, "command must be a non-empty string", "command")
    if command not in known:
        raise InvalidInput(
            422, f"unknown command {command!r}; known commands: {', '.join(sorted(known))}",
            "command")
    return command


def _payload(body: Mapping[str, Any], settings: Settings) -> Any:
    payload = body.get("payload")
    if payload is None:
        return None
    try:
        # PostgreSQL's jsonb has no NaN or Infinity (Python's json module reads them)
        size = len(json.dumps(payload, allow_nan=False))
    except ValueError:
        raise InvalidInput(422, "payload must be JSON without NaN or Infinity", "payload") from None
    if size > settings.max_payload_bytes:
        raise InvalidInput(
            413, f"payload is larger than {settings.max_payload_bytes} bytes "
            "(TASKMASTER_MAX_PAYLOAD_BYTES)", "payload")
    return payload


def _check_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for name in body:
        if name not in allowed:
            raise InvalidInput(422, f"unknown field {name!r}; allowed: {', '.join(sorted(allowed))}",
                               name)


_COMMON = frozenset({"command", "payload", "delay_seconds", "priority", "max_attempts",
                     "timeout_seconds"})
SINGLE_FIELDS = _COMMON | {"idempotency_key"}
BATCH_FIELDS = _COMMON | {"count"}


def _common(body: Mapping[str, Any], settings: Settings, known: set[str]) -> dict[str, Any]:
    return {
        "command": _command(body, known),
        "payload": _payload(body, settings),
        "delay_seconds": _number(body, "delay_seconds", 0.0, 0.0, MAX_DELAY),
        "priority": _int(body, "priority", 0, -1000, 1000),
        "max_attempts": _int(body, "max_attempts", settings.default_max_attempts, 1, 100),
        "timeout_seconds": _number(body, "timeout_seconds", settings.default_timeout, 0.0,
                                   MAX_TIMEOUT, lo_open=True),
    }


def new_task(body: Mapping[str, Any], settings: Settings, known: set[str],
             header_key: str | None = None) -> NewTask:
    """POST /api/schedule's body as a NewTask."""
    _check_fields(body, SINGLE_FIELDS)
    key = body.get("idempotency_key", header_key)
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY
                            or unstorable(key)):
        raise InvalidInput(422, f"idempotency_key must be a string of 1 to {MAX_KEY} characters "
                           "(UTF-8, no NUL)", "idempotency_key")
    return NewTask(**_common(body, settings, known), idempotency_key=key)


def new_batch(body: Mapping[str, Any], settings: Settings, known: set[str]) -> tuple[NewTask, int]:
    """POST /api/schedule/batch's body as (NewTask, count)."""
    _check_fields(body, BATCH_FIELDS)
    if body.get("count") is None:  # null would take _int's default and create nothing
        raise InvalidInput(422, "count is required", "count")
    count = _int(body, "count", 0, 1, settings.max_batch_count)
    new = NewTask(**_common(body, settings, known))
    # each task stores its own copy of the payload: the request's cost is their product
    size = count * payload_bytes(new.payload)
    if size > settings.max_batch_bytes:
        raise InvalidInput(
            413, f"count x payload is {size} bytes, more than {settings.max_batch_bytes} "
            "(TASKMASTER_MAX_BATCH_BYTES); send fewer tasks or a smaller payload", "count")
    return new, count


def payload_bytes(payload: Any) -> int:
    """The bytes a payload takes as JSON (an absent one is stored as {})."""
    return 2 if payload is None else len(json.dumps(payload))  # ASCII: characters are bytes


def task_id(raw: str) -> uuid.UUID:
    """A task id from a path."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidInput(404, f"no task {raw!r}: task ids are UUIDs", "id") from None
