"""The HTTP edge shared by the scheduler's API and the local stack's control API: JSON
bodies, JSON errors and bearer tokens, written once."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from taskmaster.errors import InvalidInput

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, field: str | None = None, **extra: Any) -> web.Response:
    """A JSON error answer: {"error": message, "field": field, ...extra}."""
    return web.json_response({"error": message, "field": field, **extra}, status=status)


def parse_object(raw: bytes, *, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request body as a JSON object; an empty body is `empty` when given, else refused."""
    if not raw.strip():
        if empty is not None:
            return dict(empty)
        raise InvalidInput(400, "request body is empty; send a JSON object", "body")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise InvalidInput(400, "request body is nested too deeply", "body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(400, f"request body is not valid JSON: {exc}", "body") from None
    if not isinstance(body, dict):
        raise InvalidInput(400, f"request body must be a JSON object, not {type(body).__name__}",
                           "body")
    return body


async def read_object(request: web.Request, *, empty: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """The request's body as a JSON object (see parse_object)."""
    return parse_object(await request.read(), empty=empty)


def bearer_ok(request: web.Request, token: str) -> bool:
    """True when the request carries `Authorization: Bearer <token>` (compared in constant
    time; a header that is not UTF-8 is a wrong token, not a crash)."""
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode())


def unauthorised() -> web.Response:
    """401 naming the header to send."""
    resp = error(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                 "Authorization")
    resp.headers["WWW-Authenticate"] = "Bearer"
    return resp
