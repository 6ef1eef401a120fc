"""Operations around the scheduler's API: request ids, access log, rate limit, metrics, OpenAPI.

`setup_ops(app)` puts two middlewares in front of the application's own (so they see every
answer, errors included) and adds GET /metrics and GET /api/openapi.json.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.process_collector import ProcessCollector

from taskmaster.logs import REQUEST_ID
from taskmaster.model import TaskStatus
from taskmaster.scheduler.context import CREATES, HUB, SETTINGS, STORE, TASKS_CREATED
from taskmaster.store import UNAVAILABLE, DatabaseError
from taskmaster.web import Handler, error

log = logging.getLogger(__name__)
# The access log has its own name, like aiohttp.access, so it can be switched on alone.
access_log = logging.getLogger("taskmaster.access")

REQUEST_ID_HEADER = "X-Request-ID"
_GOOD_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# probes and scrapes are never rate limited: an orchestrator must always see the truth
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_TRACKED_CLIENTS = 10_000  # token buckets kept; the least recently seen go first
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})



class SchedulerMetrics:
    """The scheduler's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        self.tasks_created = Counter(
            "taskmaster_tasks_created_total", "Tasks created through the HTTP API.", ["command"],
            registry=r)
        self.http_requests = Counter(
            "taskmaster_http_requests_total", "HTTP requests answered, by route and status.",
            ["method", "route", "status"], registry=r)
        self.http_duration = Histogram(
            "taskmaster_http_request_duration_seconds",
            "Time to answer an HTTP request (an SSE stream counts until it closes).",
            ["method", "route"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.rate_limited = Counter(
            "taskmaster_http_rate_limited_total", "Requests refused with 429 by the rate limit.",
            registry=r)
        self.sse_clients = Gauge(
            "taskmaster_sse_clients", "Connected SSE subscribers of /api/logs/stream.", registry=r)
        self.tasks = Gauge("taskmaster_tasks", "Tasks by status (at scrape time).", ["status"],
                           registry=r)
        self.queue_depth = Gauge("taskmaster_queue_depth", "Pending tasks (at scrape time).",
                                 registry=r)
        self.running = Gauge("taskmaster_tasks_running", "Tasks assigned or running.", registry=r)
        self.workers_online = Gauge("taskmaster_workers_online", "Workers online.", registry=r)
        self.workers_draining = Gauge("taskmaster_workers_draining", "Workers draining.",
                                      registry=r)
        self.database_up = Gauge(
            "taskmaster_database_up", "1 when the last scrape could read PostgreSQL.", registry=r)
        self.create_statements = Counter(
            "taskmaster_create_statements_total",
            "Statements that inserted POST /api/schedule creates without a key "
            "(creates per statement: how many shared a commit).", registry=r)
        self.creates_waiting = Gauge(
            "taskmaster_creates_waiting",
            "POST /api/schedule creates waiting for a shared statement (at scrape time).",
            registry=r)
        self._statements_seen = 0

    async def refresh(self, app: web.Application) -> None:
        """Read the gauges that live in PostgreSQL and the event hub."""
        hub = app.get(HUB)
        self.sse_clients.set(len(hub.subscribers) if hub is not None else 0)
        creates = app.get(CREATES)
        if creates is not None:
            self.create_statements.inc(creates.statements_run - self._statements_seen)
            self._statements_seen = creates.statements_run
            self.creates_waiting.set(creates.waiting)
        try:
            stats = await asyncio.wait_for(app[STORE].stats(), 5)
        except (*UNAVAILABLE, DatabaseError) as exc:
            log.warning("metrics: cannot read stats (%s)", exc)
            self.database_up.set(0)
            return
        self.database_up.set(1)
        for status in TaskStatus:
            self.tasks.labels(status.value).set(stats[status])
        self.queue_depth.set(stats["queue_depth"])
        self.running.set(stats["assigned"] + stats["running"])
        self.workers_online.set(stats["workers_online"])
        self.workers_draining.set(stats["workers_draining"])

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)


class RateLimiter:
    """A token bucket per client: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int = 0, max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst if burst > 0 else max(1, math.ceil(2 * rate)))
        self.max_clients = max_clients
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, client: str) -> float:
        """0 when the request may pass, else the seconds until it would."""
        now = self.clock()
        tokens, at = self.buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self.buckets[client] = (tokens, now)
        while len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)  # a forgotten client starts with a full bucket
        return wait


METRICS = web.AppKey("metrics", SchedulerMetrics)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
LIMITER = web.AppKey("rate_limiter", RateLimiter)
OPENAPI = web.AppKey("openapi", bytes)


def _route_label(request: web.Request) -> str:
    """The route template (bounded label values), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _method_label(request: web.Request) -> str:
    """The method, or "other": clients may send any token as a method."""
    return request.method if request.method in KNOWN_METHODS else "other"


def request_id_of(request: web.Request) -> str:
    """The request id: the client's X-Request-ID when it is sane, else a new one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _GOOD_ID.fullmatch(given) else uuid.uuid4().hex


@web.middleware
async def ops_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id (header in and out, in every log line), metrics and the access log."""
    rid = request_id_of(request)
    request[REQUEST_ID_KEY] = rid
    token = REQUEST_ID.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away first (nginx's convention)
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return error(500, f"internal server error (request id {rid} in the server's log)")
    finally:
        elapsed = time.perf_counter() - started
        route = _route_label(request)
        metrics = request.app[METRICS]
        metrics.observe(_method_label(request), route, status, elapsed)
        created = request.get(TASKS_CREATED)
        if created is not None and status < 300:
            metrics.tasks_created.labels(created[0]).inc(created[1])
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d %.1fms", request.method, request.path_qs, status, elapsed * 1000,
                extra={"request_id": rid, "method": request.method, "path": request.path,
                       "route": route, "status": status,
                       "duration_ms": round(elapsed * 1000, 3), "remote": request.remote})
        REQUEST_ID.reset(token)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """429 with Retry-After when a client is over TASKMASTER_RATE_LIMIT."""
    limiter = request.app.get(LIMITER)
    if limiter is None or request.path in UNLIMITED_PATHS:
        return await handler(request)
    wait = limiter.take(request.remote or "unknown")
    if wait > 0:
        request.app[METRICS].rate_limited.inc()
        settings = request.app[SETTINGS]
        resp = error(429, f"too many requests: at most {settings.rate_limit:g} per second per "
                     f"client (TASKMASTER_RATE_LIMIT); retry after {wait:.2f}s")
        resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return resp
    return await handler(request)


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # on_response_prepare also reaches streams (SSE) and errors raised as exceptions
    rid = request.get(REQUEST_ID_KEY)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


async def metrics_handler(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    metrics = request.app[METRICS]
    await metrics.refresh(request.app)
    return web.Response(body=generate_latest(metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def openapi_handler(request: web.Request) -> web.Response:
    """GET /api/openapi.json: the OpenAPI 3.1 document of this API."""
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document kept beside this module."""
    return dict(json.loads(_openapi_bytes()))


def _openapi_bytes() -> bytes:
    return resources.files("taskmaster.scheduler").joinpath("openapi.json").read_bytes()


def setup_ops(app: web.Application) -> None:
    """Request ids, access log, metrics and rate limit on a scheduler app, plus their routes."""
    settings = app[SETTINGS]
    app[METRICS] = SchedulerMetrics()
    if settings.rate_limit > 0:
        app[LIMITER] = RateLimiter(settings.rate_limit, settings.rate_limit_burst)
    app[OPENAPI] = _openapi_bytes()
    # outermost first: every answer, a 401 or a 429 included, is counted and logged
    app.middlewares[0:0] = [ops_middleware, rate_limit_middleware]
    app.on_response_prepare.append(_add_request_id)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/api/openapi.json", openapi_handler)
