"""Worker-pool management over HTTP: /api/pool, forwarded to the stack's supervisor.

The scheduler does not run processes itself. When a `LocalCluster` (`taskmaster up`) starts
it, TASKMASTER_POOL_URL names the supervisor's control API and these endpoints forward to
it. Without one (a plain compose stack) they answer 501 with the docker compose command to
run instead. They are refused (403) unless TASKMASTER_ENABLE_POOL_API is set, and POSTs
need the API token when one is set (the auth middleware of app.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from taskmaster.config import Settings
from taskmaster.errors import InvalidInput
from taskmaster.pool import (
    compose_command,
    member_name,
    validate_action,
    validate_flag,
    validate_workers,
)
from taskmaster.scheduler.context import STORE
from taskmaster.web import Handler, error, pool_token_refusal, read_object

log = logging.getLogger(__name__)

POOL_SETTINGS = web.AppKey("pool_settings", Settings)
POOL_HTTP = web.AppKey("pool_http", aiohttp.ClientSession)


def _refused() -> web.Response:
    return error(403, "pool management is disabled on this scheduler: set "
                  "TASKMASTER_ENABLE_POOL_API=1 to let it scale and kill workers "
                  "(`taskmaster up` enables it for the stack it runs)")


def _no_manager(command: str) -> web.Response:
    return error(501, "no pool manager: this scheduler has no TASKMASTER_POOL_URL (it was not "
                  "started by `taskmaster up`); on a docker compose stack run the command "
                  "instead", command=command)


async def _forward(request: web.Request, method: str, path: str,
                   body: dict[str, Any] | None = None) -> web.Response:
    """Send the (validated) request to the supervisor and pass its answer back."""
    settings = request.app[POOL_SETTINGS]
    url = settings.pool_url.rstrip("/") + path
    # the supervisor's own secret, never the caller's headers: a request the scheduler let
    # through reaches the supervisor as the scheduler's, nothing of the caller's with it
    headers = ({"Authorization": f"Bearer {settings.control_token}"} if settings.control_token
               else {})
    try:
        async with request.app[POOL_HTTP].request(method, url, json=body,
                                                  headers=headers) as resp:
            raw = await resp.read()
            try:
                data = json.loads(raw) if raw else {}
            except ValueError:
                data = {"error": raw.decode(errors="replace")[:500], "field": None}
            return web.json_response(data, status=resp.status)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("pool manager at %s unreachable: %s", settings.pool_url, exc)
        return error(502, f"the pool manager at {settings.pool_url} is unreachable "
                      f"({type(exc).__name__}: {exc}); is `taskmaster up` still running?")


async def get_pool(request: web.Request) -> web.Response:
    """GET /api/pool: the members the pool manager runs."""
    settings = request.app[POOL_SETTINGS]
    if not settings.enable_pool_api:
        return _refused()
    if not settings.pool_url:
        return _no_manager(compose_command("status"))
    return await _forward(request, "GET", "/api/pool")


async def scale(request: web.Request) -> web.Response:
    """POST /api/pool/scale {"workers": N}."""
    settings = request.app[POOL_SETTINGS]
    if not settings.enable_pool_api:
        return _refused()
    body = await read_object(request, empty={})
    if "workers" not in body:
        raise InvalidInput(422, "workers is required", "workers")
    n = validate_workers(body["workers"], settings.max_workers)
    if not settings.pool_url:
        return _no_manager(compose_command("scale", n))
    return await _forward(request, "POST", "/api/pool/scale", {"workers": n})


async def kill_worker(request: web.Request) -> web.Response:
    """POST /api/pool/workers/{name}/kill {"graceful": bool}."""
    settings = request.app[POOL_SETTINGS]
    if not settings.enable_pool_api:
        return _refused()
    name = request.match_info["name"]
    graceful = validate_flag(await read_object(request, empty={}), "graceful", False)
    if not settings.pool_url:
        return await _compose_kill(request, name, graceful)
    return await _forward(request, "POST", f"/api/pool/workers/{quote(name, safe='')}/kill",
                          {"graceful": graceful})


async def _compose_kill(request: web.Request, name: str, graceful: bool) -> web.Response:
    # In a container the worker's host is its hostname, which docker sets to the container id.
    known = [w for w in await request.app[STORE].list_workers(60.0) if name in (w.name, w.id)]
    if not known:
        return error(404, f"no worker with the name or id {name!r} (GET /api/workers lists "
                     "them)", "name")
    # the latest incarnation of that name (they are listed in the order they registered)
    return _no_manager(compose_command("kill_worker", known[-1].host, graceful=graceful))


async def coordinator(request: web.Request) -> web.Response:
    """POST /api/pool/coordinator/{kill|stop|start|restart} {"restart": bool}."""
    settings = request.app[POOL_SETTINGS]
    if not settings.enable_pool_api:
        return _refused()
    action = validate_action(request.match_info["action"])
    body = await read_object(request, empty={})
    restart = validate_flag(body, "restart", True)
    name = member_name(body)
    if not settings.pool_url:
        return _no_manager(compose_command("coordinator", action, restart=restart))
    return await _forward(request, "POST", f"/api/pool/coordinator/{action}",
                          {"restart": restart, **({"name": name} if name else {})})


async def autoscale(request: web.Request) -> web.Response:
    """GET /api/pool/autoscale: the autoscaler's settings and last decisions; PUT changes
    them (on/off, min/max, target, ...). The supervisor checks the fields."""
    settings = request.app[POOL_SETTINGS]
    if not settings.enable_pool_api:
        return _refused()
    body = None if request.method == "GET" else await read_object(request)
    if not settings.pool_url:
        return error(501, "no pool manager: this scheduler has no TASKMASTER_POOL_URL (it was "
                     "not started by `taskmaster up`); the autoscaler runs in the supervisor of "
                     "`taskmaster up --autoscale MIN:MAX`, or on Kubernetes "
                     "(deploy/kubernetes/autoscaling)",
                     command="taskmaster up --autoscale 1:6")
    return await _forward(request, request.method, "/api/pool/autoscale", body)


def _errors(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except InvalidInput as exc:
            return web.json_response(exc.to_json(), status=exc.status)

    wrapped.__doc__ = handler.__doc__
    return wrapped


# every path that can stop, start or kill processes, or clear the stack: the pool token
# guards them all, today's routes and any added later under these prefixes
POOL_PATHS = ("/api/pool", "/api/reset")


@web.middleware
async def pool_token_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 for a pool path without the stack's pool token (when it has one)."""
    if request.path.startswith(POOL_PATHS):
        refused = pool_token_refusal(request, request.app[POOL_SETTINGS].pool_token)
        if refused is not None:
            return refused
    return await handler(request)


def setup_pool(app: web.Application, settings: Settings) -> None:
    """Add the /api/pool routes, the pool token's guard and the HTTP session that forwards
    them."""
    app[POOL_SETTINGS] = settings
    app.middlewares.append(pool_token_middleware)  # innermost: after the browser and API checks
    app.cleanup_ctx.append(_http_session)
    app.router.add_get("/api/pool", _errors(get_pool))
    app.router.add_post("/api/pool/scale", _errors(scale))
    app.router.add_post("/api/pool/workers/{name}/kill", _errors(kill_worker))
    app.router.add_post("/api/pool/coordinator/{action}", _errors(coordinator))
    app.router.add_get("/api/pool/autoscale", _errors(autoscale))
    app.router.add_put("/api/pool/autoscale", _errors(autoscale))


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    # scaling down waits for workers to drain: allow the drain grace and then some
    timeout = aiohttp.ClientTimeout(total=app[POOL_SETTINGS].drain_grace + 30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[POOL_HTTP] = session
        yield
