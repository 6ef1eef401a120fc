"""The HTTP edge shared by the scheduler's API and the local stack's control API: JSON
bodies, JSON errors and bearer tokens, written once."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from taskmaster.errors import InvalidInput
from taskmaster.tokens import POOL_TOKEN_HEADER, token_dir

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


# ---- keeping browsers out ----
# A web page the operator opens can send requests to 127.0.0.1. Programs (curl, the CLI,
# the notebooks' Python client) send no Origin and no Sec-Fetch-* headers, and send JSON
# as JSON; a browser names the page's site, and a cross-site form can only send text/plain,
# form data or no type at all. DNS rebinding (a page whose name now points at 127.0.0.1)
# is refused by the Host check: such a request carries the attacker's name in Host.

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# names no outside party can own, so none can rebind: a single label (`scheduler`, a compose
# or Kubernetes service) and the suffixes reserved for private use (Kubernetes' cluster.local)
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")
UNCHECKED_HOST_PATHS = frozenset({"/healthz", "/readyz"})  # probes by any name learn nothing


@dataclass(frozen=True, slots=True)
class BrowserPolicy:
    """Which Host names and which Origins a server accepts (see browser_guard)."""

    hosts: frozenset[str] = frozenset()  # extra names (lower case); "*" accepts any
    origins: frozenset[str] = frozenset()  # extra origins ("http://host:port"); "*" any
    # what to do about a refusal (the control API names no setting: nothing widens it)
    host_fix: str = "use its address, or add the name to TASKMASTER_ALLOWED_HOSTS"
    origin_fix: str = ("call the API from a program, or add the page's origin to "
                       "TASKMASTER_ALLOWED_ORIGINS")

    @classmethod
    def parse(cls, hosts: str = "", origins: str = "") -> BrowserPolicy:
        """From comma-separated lists (the settings' values)."""
        return cls(frozenset(h.strip().lower().rstrip(".") for h in hosts.split(",") if h.strip()),
                   frozenset(o.strip().lower().rstrip("/") for o in origins.split(",")
                             if o.strip()))

    def host_ok(self, host: str) -> bool:
        """A Host header (name[:port]) this server answers to: an IP address, a name no
        outside party can own (one label, or under a private-use suffix), this machine's
        name, or one of the configured names."""
        if "*" in self.hosts:
            return True
        name = host_name(host)
        if not name:
            return False
        if "." not in name:
            return True  # one label (localhost, a service) or an IPv6 address
        if _is_address(name):
            return True  # an address is never a rebound name
        return name.endswith(PRIVATE_SUFFIXES) or name in self.hosts or name in _machine_names()

    def origin_ok(self, origin: str, host: str) -> bool:
        """The page's own origin is the server's (same origin), or is configured."""
        origin = origin.strip().lower().rstrip("/")
        if "*" in self.origins or origin in self.origins:
            return True
        return bool(host) and origin in (f"http://{host.lower()}", f"https://{host.lower()}")


def host_name(host: str) -> str:
    """The name of a Host header without its port ([::1]:8081 -> ::1), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


@functools.lru_cache(maxsize=256)  # the few names a server is called by, parsed once
def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@functools.cache
def _machine_names() -> frozenset[str]:
    name = socket.gethostname().lower()
    return frozenset({name, name.split(".", 1)[0]})


def is_json(content_type: str) -> bool:
    """application/json, or a +json type such as application/merge-patch+json."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


def refusal(request: web.Request, policy: BrowserPolicy) -> web.Response | None:
    """Why a request is refused as coming from a web page (or a rebound name), else None."""
    host = request.headers.get("Host", "")
    if request.path not in UNCHECKED_HOST_PATHS and host and not policy.host_ok(host):
        return error(421, f"this server does not answer to the name {host_name(host)[:100]!r} "
                     f"(Host header); {policy.host_fix}", "Host")
    origin = request.headers.get("Origin")
    allowed_origin = origin is not None and policy.origin_ok(origin, host)
    if origin is not None and not allowed_origin:
        return error(403, f"requests from web pages are refused (Origin {origin[:100]!r}); "
                     f"{policy.origin_fix}", "Origin")
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in ("cross-site", "same-site") and not allowed_origin:
        return error(403, f"requests from other web sites are refused (Sec-Fetch-Site: {site}); "
                     f"{policy.origin_fix}", "Sec-Fetch-Site")
    # a body must say it is JSON; an empty one has nothing to mistake (aiohttp's client
    # and curl -X POST send one with application/octet-stream or no type at all)
    if request.method not in SAFE_METHODS and request.body_exists:
        given = request.headers.get("Content-Type")
        if not is_json(given or ""):
            return error(415, f"send the body as JSON with Content-Type: application/json "
                         f"(got {given[:100] if given else 'no Content-Type'!s})",
                         "Content-Type")
    return None


def browser_guard(policy: BrowserPolicy) -> Any:
    """A middleware refusing what refusal() refuses, before any handler runs."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = refusal(request, policy)
        if refused is not None:
            return refused
        return await handler(request)

    return guard


def pool_token_refusal(request: web.Request, token: str) -> web.Response | None:
    """401 unless the request carries the stack's pool token (none needed when it has none)."""
    if not token:
        return None
    given = request.headers.get(POOL_TOKEN_HEADER, "")
    if hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode()):
        return None
    return error(401, f"missing or wrong pool token ({POOL_TOKEN_HEADER} header): scaling, "
                 "killing and resetting need the token `taskmaster up` left for its user in "
                 f"{token_dir()}/<local-PORT> (the CLI and taskmaster.client send it by "
                 "themselves), or TASKMASTER_POOL_TOKEN", POOL_TOKEN_HEADER)
