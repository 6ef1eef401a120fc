"""The scheduler: the demo guide's HTTP API and SSE log stream, over PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from taskmaster.aio import wait_event
from taskmaster.config import Settings
from taskmaster.errors import InvalidInput
from taskmaster.model import TaskStatus
from taskmaster.scheduler import validation as v
from taskmaster.scheduler.context import (
    COMMANDS,
    CREATES,
    DATABASE_URL,
    HUB,
    SETTINGS,
    STORE,
    TASKS_CREATED,
    CommandCache,
)
from taskmaster.scheduler.creates import CreateQueue, CreateQueueFull
from taskmaster.scheduler.ops import setup_ops
from taskmaster.scheduler.pool import setup_pool
from taskmaster.scheduler.reset import setup_reset
from taskmaster.scheduler.sse import EventHub, encode_feed
from taskmaster.store import UNAVAILABLE, BadCursor, DatabaseError, Store, prepare
from taskmaster.web import (
    BrowserPolicy,
    Handler,
    bearer_ok,
    browser_guard,
    error,
    read_object,
    unauthorised,
)

log = logging.getLogger(__name__)

OFFLINE_WINDOW = 60.0  # seconds an offline worker stays listed by GET /api/workers

@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON error; a database outage is a 503 with Retry-After."""
    try:
        return await handler(request)
    except InvalidInput as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        return error(413, f"request body is larger than {limit} bytes "
                     "(TASKMASTER_MAX_BODY_BYTES)", "body")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 405:
            return error(405, f"method {request.method} is not allowed on {request.path}")
        if exc.status == 404:
            return error(404, f"no such endpoint: {request.method} {request.path}")
        return error(exc.status, exc.reason)
    except CreateQueueFull as exc:
        resp = error(503, f"too many creates waiting ({exc.limit}, TASKMASTER_CREATE_QUEUE); "
                     "retry shortly")
        resp.headers["Retry-After"] = "1"
        return resp
    except UNAVAILABLE as exc:
        log.warning("database unavailable for %s %s: %s", request.method, request.path, exc)
        resp = error(503, "database unavailable; retry shortly")
        resp.headers["Retry-After"] = "2"
        return resp


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With any token set, every endpoint but /healthz and /readyz needs one: mutations
    TASKMASTER_API_TOKEN (the read token when only that is set), reads either token."""
    settings = request.app[SETTINGS]
    public = request.path in ("/healthz", "/readyz")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        # a read token alone closes the writes too: a stack whose reads need a token must
        # not leave its mutations open (they take the read token, there being no other)
        token = settings.api_token or settings.api_read_token
        if token and not bearer_ok(request, token):
            return unauthorised()
    elif settings.api_read_token and not public:
        ok = bearer_ok(request, settings.api_read_token) or (
            bool(settings.api_token) and bearer_ok(request, settings.api_token))
        if not ok:
            return unauthorised()
    return await handler(request)


async def _body(request: web.Request) -> dict[str, Any]:
    return v.storable(await read_object(request))


# ---- handlers ----

async def schedule(request: web.Request) -> web.Response:
    """POST /api/schedule: one task."""
    settings, store = request.app[SETTINGS], request.app[STORE]
    body = await _body(request)
    known = await request.app[COMMANDS].get(body.get("command"))
    new = v.new_task(body, settings, known, request.headers.get("Idempotency-Key"))
    if new.idempotency_key is None:  # concurrent creates share a statement and a commit
        task, created = await request.app[CREATES].create(new), True
    else:
        task, created = await store.create_task(new)
    request[TASKS_CREATED] = (new.command, 1 if created else 0)
    return web.json_response({"id": str(task.id), "task": task.to_json()},
                             status=201 if created else 200)


async def schedule_batch(request: web.Request) -> web.Response:
    """POST /api/schedule/batch: count identical tasks in one statement."""
    settings, store = request.app[SETTINGS], request.app[STORE]
    body = await _body(request)
    known = await request.app[COMMANDS].get(body.get("command"))
    new, count = v.new_batch(body, settings, known)
    ids = await store.create_batch(new, count)
    request[TASKS_CREATED] = (new.command, len(ids))
    return web.json_response(
        {"created": len(ids), "command": new.command, "ids": [str(i) for i in ids]}, status=201)


async def stats(request: web.Request) -> web.Response:
    """GET /api/stats."""
    figures = await request.app[STORE].stats()
    figures["task_retention_seconds"] = request.app[SETTINGS].task_retention
    return web.json_response(figures)


async def list_tasks(request: web.Request) -> web.Response:
    """GET /api/tasks: newest first, ?status=, ?limit=, ?cursor=."""
    settings = request.app[SETTINGS]
    raw_status = request.query.get("status")
    status = None
    if raw_status:
        try:
            status = TaskStatus(raw_status)
        except ValueError:
            raise InvalidInput(422, f"status must be one of {', '.join(s.value for s in TaskStatus)}",
                                 "status") from None
    limit = _query_int(request, "limit", 100, 1, settings.max_page_size)
    try:
        tasks, cursor = await request.app[STORE].list_tasks(
            status=status, limit=limit, cursor=request.query.get("cursor") or None)
    except BadCursor:
        raise InvalidInput(400, "cursor is not one this server issued", "cursor") from None
    resp = web.json_response([t.to_json() for t in tasks])
    if cursor:
        resp.headers["X-Next-Cursor"] = cursor
        nxt = request.rel_url.update_query(cursor=cursor)
        resp.headers["Link"] = f'<{nxt}>; rel="next"'
    return resp


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(422, f"{name} must be an integer", name) from None
    if not lo <= value <= hi:
        raise InvalidInput(422, f"{name} must be between {lo} and {hi}", name)
    return value


async def get_task(request: web.Request) -> web.Response:
    """GET /api/tasks/{id}: the task with its attempts."""
    task_id = v.task_id(request.match_info["id"])
    task = await request.app[STORE].get_task(task_id)
    if task is None:
        return error(404, f"no task {task_id}", "id")
    return web.json_response(task.to_json_detail())


async def cancel_task(request: web.Request) -> web.Response:
    """POST /api/tasks/{id}/cancel."""
    task_id = v.task_id(request.match_info["id"])
    store = request.app[STORE]
    task = await store.cancel_task(task_id)
    if task is not None:
        return web.json_response(task.to_json())
    existing = await store.get_task(task_id)
    if existing is None:
        return error(404, f"no task {task_id}", "id")
    return error(409, f"task {task_id} is already {existing.status.value}", "id")


async def commands(request: web.Request) -> web.Response:
    """GET /api/commands: the commands tasks may name."""
    cache = request.app[COMMANDS]
    cache.loaded = 0.0  # always fresh here: this is how a client learns of new handlers
    return web.json_response(sorted(await cache.get("")))


async def workers(request: web.Request) -> web.Response:
    """GET /api/workers: live workers, and those gone in the last minute; one row per name
    (its live or latest incarnation), every incarnation with ?history=true."""
    history = _query_bool(request, "history")
    found = await request.app[STORE].list_workers(OFFLINE_WINDOW, history=history)
    return web.json_response([w.to_json() for w in found])


def _query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise InvalidInput(422, f"{name} must be true or false", name)


async def logs_stream(request: web.Request) -> web.StreamResponse:
    """GET /api/logs/stream: SSE, resumable with Last-Event-ID."""
    settings, hub = request.app[SETTINGS], request.app[HUB]
    # a place is taken before the first await, so a burst cannot get past the limit
    if not hub.admit(settings.max_sse_clients):
        busy = error(503, f"too many SSE clients (TASKMASTER_MAX_SSE_CLIENTS="
                     f"{settings.max_sse_clients})")
        busy.headers["Retry-After"] = "5"
        return busy
    try:
        return await _stream(request, hub)
    finally:
        hub.leave()


async def _stream(request: web.Request, hub: EventHub) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    last = _last_event_id(request)
    if not await wait_event(hub.ready, 10):
        raise TimeoutError("the event feed is not connected to the database")
    sub = await hub.subscribe(settings.sse_queue)
    try:
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        await resp.write(b"retry: 1000\n\n")
        if last is not None:
            await _replay(request, resp, last, sub.last_id)
        # aiohttp does not cancel a handler whose client left: look at the connection at
        # least once a second, so a gone client frees its place (TASKMASTER_MAX_SSE_CLIENTS)
        tick = min(settings.sse_keepalive, 1.0)
        quiet_since = time.monotonic()
        while not sub.closed:
            chunk = await sub.next(tick)
            if sub.overflowed:
                await resp.write(b": too slow, buffer full; reconnect with Last-Event-ID\n\n")
                break
            if chunk is not None:
                await resp.write(chunk)
                quiet_since = time.monotonic()
            elif request.transport is None or request.transport.is_closing():
                break
            elif time.monotonic() - quiet_since >= settings.sse_keepalive:
                await resp.write(b": keepalive\n\n")
                quiet_since = time.monotonic()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(sub)
    return resp


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(400, "Last-Event-ID must be an event id (an integer)",
                             "Last-Event-ID") from None
    return max(0, value)


async def _replay(request: web.Request, resp: web.StreamResponse, last: int, upto: int) -> None:
    settings, store = request.app[SETTINGS], request.app[STORE]
    if upto - last > settings.sse_replay:
        skipped_to = upto - settings.sse_replay
        await resp.write(
            f'data: {{"event":"replay_truncated","missed_after":{last},"resumed_after":{skipped_to}}}'
            "\n\n".encode())
        last = skipped_to
    while last < upto:
        events = [e for e in await store.feed_after(last, 1000) if e.id <= upto]
        if not events:
            break
        await resp.write(b"".join(map(encode_feed, events)))
        last = events[-1].id


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers and the event feed runs."""
    try:
        await request.app[STORE].ping(timeout=2)
    except (*UNAVAILABLE, DatabaseError) as exc:
        # the details stay in the log: an unauthenticated probe learns nothing of the database
        log.warning("not ready: database unavailable: %s", exc)
        return web.json_response({"status": "unavailable", "database": "unavailable"},
                                 status=503)
    if not request.app[HUB].ready.is_set():
        return web.json_response({"status": "starting", "database": "ok"}, status=503)
    return web.json_response({"status": "ready", "database": "ok"})


# ---- the application ----

def make_app(settings: Settings, database_url: str) -> web.Application:
    """The scheduler application; resources live in cleanup contexts."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[errors_middleware,
                     browser_guard(BrowserPolicy.parse(settings.allowed_hosts,
                                                       settings.allowed_origins)),
                     auth_middleware],
    )
    app[SETTINGS] = settings
    app[DATABASE_URL] = database_url
    app.cleanup_ctx.append(_database)
    app.on_shutdown.append(_end_streams)
    app.router.add_post("/api/schedule", schedule)
    app.router.add_post("/api/schedule/batch", schedule_batch)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/api/tasks", list_tasks)
    app.router.add_get("/api/tasks/{id}", get_task)
    app.router.add_post("/api/tasks/{id}/cancel", cancel_task)
    app.router.add_get("/api/workers", workers)
    app.router.add_get("/api/commands", commands)
    app.router.add_get("/api/logs/stream", logs_stream)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    setup_ops(app)
    setup_pool(app, settings)
    setup_reset(app)
    return app


async def _end_streams(app: web.Application) -> None:
    # SSE handlers never end by themselves: end them so shutdown does not wait on them
    if HUB in app:
        app[HUB].close()


async def _database(app: web.Application) -> AsyncIterator[None]:
    url = app[DATABASE_URL]
    await prepare(url)
    store = await Store.open(url, min_size=2, max_size=10)
    app[STORE] = store
    app[COMMANDS] = CommandCache(store)
    settings = app[SETTINGS]
    creates = CreateQueue(store, max_rows=settings.create_batch,
                          max_waiting=settings.create_queue)
    app[CREATES] = creates
    hub = EventHub(store)
    app[HUB] = hub
    feed = asyncio.create_task(hub.run(), name="event-feed")
    await asyncio.wait_for(hub.ready.wait(), 30)
    yield
    feed.cancel()
    try:
        await feed
    except asyncio.CancelledError:
        pass
    await creates.close()
    await store.close()
