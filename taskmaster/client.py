"""Client of the scheduler's HTTP API and of its SSE event feed (aiohttp only)."""

from __future__ import annotations

import asyncio
import codecs
import inspect
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from taskmaster import __version__
from taskmaster.pool import validate_action
from taskmaster.tokens import POOL_TOKEN_HEADER, find_pool_token

# the paths that need the stack's pool token (the scheduler's /api/pool/* and /api/reset)
POOL_PATHS = ("/api/pool", "/api/reset")

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8081"
# statuses worth retrying on the event stream: the scheduler is restarting or overloaded
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_LINE_END = re.compile(r"\r\n|\r|\n")


class ApiError(Exception):
    """An HTTP error answer of the scheduler, carrying its JSON body."""

    def __init__(
        self, status: int, error: str, field: str | None = None, body: Any = None
    ) -> None:
        self.status = status
        self.error = error
        self.field = field
        self.body = body
        super().__init__(f"{status}: {error}" + (f" (field {field})" if field else ""))

    @property
    def command(self) -> str | None:
        """The shell command the scheduler suggests instead (501 from the pool API)."""
        return self.body.get("command") if isinstance(self.body, dict) else None

    @classmethod
    def from_body(cls, status: int, body: Any) -> ApiError:
        """Build from a decoded error body (JSON object or plain text)."""
        if isinstance(body, dict):
            error = str(body.get("error") or f"HTTP {status}")
            return cls(status, error, body.get("field"), body)
        text = body.strip() if isinstance(body, str) and body.strip() else f"HTTP {status}"
        return cls(status, text[:500], None, body)


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched message; `id` is the id field given in its own block, if any."""

    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Incremental parser of a text/event-stream, as the HTML Living Standard defines it.

    Feed it raw byte chunks split anywhere (even inside a line ending or a UTF-8
    sequence); it returns the complete messages. `retry` holds the last reconnection
    delay the server asked for, in milliseconds.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Parse a chunk; return the messages it completed."""
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf:
            text = text.removeprefix("\n")
        buf = self._buf + text
        # a trailing CR ends a line now; a LF arriving next is the same line ending
        self._skip_lf = buf.endswith("\r")
        lines = _LINE_END.split(buf)
        self._buf = lines.pop()
        out = []
        for line in lines:
            msg = self._line(line)
            if msg is not None:
                out.append(msg)
        return out

    def _line(self, line: str) -> SSEMessage | None:
        if not line:
            data, event, msg_id = self._data, self._event, self._id
            self._data, self._event, self._id = [], "", None
            if not data:
                return None
            return SSEMessage("\n".join(data), event or "message", msg_id)
        if line.startswith(":"):
            return None  # comment, e.g. keepalive
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = self._id = value or None
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None


def _event_dict(msg: SSEMessage) -> dict[str, Any]:
    try:
        body = json.loads(msg.data)
    except ValueError:
        body = None
    event = dict(body) if isinstance(body, dict) else {"data": msg.data}
    if "event" not in event:
        event["event"] = msg.event
    if msg.id is not None:
        event["id"] = int(msg.id) if msg.id.isdigit() else msg.id
    return event


class Client:
    """Async client of one scheduler; use as `async with Client(url) as c: ...`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        sse_idle_timeout: float = 60.0,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        pool_timeout: float = 120.0,
        pool_token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        # None: the one the stack at base_url left for this user (looked up at each call,
        # so a restarted stack's new token is found)
        self.pool_token = pool_token
        self.timeout = timeout
        self.sse_idle_timeout = sse_idle_timeout
        # scaling down and graceful stops wait for workers to drain; the scheduler bounds
        # that wait by TASKMASTER_DRAIN_GRACE + 30 s, so a pool action gets its own limit
        self.pool_timeout = pool_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (the client can be used again afterwards)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": f"taskmaster-client/{__version__}"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    async def _call(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
        timeout: float | None = None, pool: bool = False,
    ) -> tuple[Any, Mapping[str, str]]:
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        session = self._open()
        # without a timeout of its own the request has the session's (self.timeout)
        limit = session.timeout if timeout is None else aiohttp.ClientTimeout(total=timeout)
        headers = None
        if pool or path.startswith(POOL_PATHS):
            token = self.pool_token if self.pool_token is not None else find_pool_token(
                self.base_url)
            headers = {POOL_TOKEN_HEADER: token} if token else None
        async with session.request(
            method, self.base_url + path, json=body, params=query or None, timeout=limit,
            headers=headers,
        ) as resp:
            data = _decode(await resp.read())
            if resp.status >= 400:
                raise ApiError.from_body(resp.status, data)
            return data, resp.headers

    async def _json(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        return (await self._call(method, path, body=body, params=params))[0]

    async def _pool_action(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        timeout = max(self.timeout, self.pool_timeout)
        return (await self._call("POST", path, body=body, timeout=timeout, pool=True))[0]

    # tasks
    async def schedule(
        self, command: str, payload: Any = None, delay_seconds: float = 0, **opts: Any
    ) -> dict[str, Any]:
        """Schedule one task; opts: priority, max_attempts, timeout_seconds, idempotency_key."""
        body = {"command": command, "delay_seconds": delay_seconds, **opts}
        if payload is not None:
            body["payload"] = payload
        return await self._json("POST", "/api/schedule", body)

    async def schedule_batch(
        self, command: str, count: int, delay_seconds: float = 0, payload: Any = None, **opts: Any
    ) -> dict[str, Any]:
        """Schedule `count` identical tasks in one request; returns {created, command, ids}."""
        body = {"command": command, "count": count, "delay_seconds": delay_seconds, **opts}
        if payload is not None:
            body["payload"] = payload
        return await self._json("POST", "/api/schedule/batch", body)

    async def stats(self) -> dict[str, Any]:
        """GET /api/stats."""
        return await self._json("GET", "/api/stats")

    async def tasks(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of tasks, newest first, and the cursor of the next page (or None)."""
        params = {"status": status, "limit": limit, "cursor": cursor}
        data, headers = await self._call("GET", "/api/tasks", params=params)
        return data, headers.get("X-Next-Cursor") or None

    async def iter_tasks(
        self, status: str | None = None, page_size: int | None = None, limit: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every task (or the first `limit`), newest first, following the cursors."""
        cursor, seen = None, 0
        while True:
            page, cursor = await self.tasks(status, page_size, cursor)
            for task in page:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield task
            if not cursor or not page:
                return

    async def task(self, task_id: str) -> dict[str, Any]:
        """One task with its attempts."""
        return await self._json("GET", f"/api/tasks/{quote(str(task_id), safe='')}")

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a task (ApiError 404 if unknown, 409 if already final)."""
        return await self._json("POST", f"/api/tasks/{quote(str(task_id), safe='')}/cancel")

    async def commands(self) -> list[str]:
        """Commands the scheduler accepts (GET /api/commands)."""
        data = await self._json("GET", "/api/commands")
        if isinstance(data, dict):
            data = data.get("commands", [])
        return [c["name"] if isinstance(c, dict) else str(c) for c in data]

    # workers and pool
    async def workers(self, history: bool = False) -> list[dict[str, Any]]:
        """GET /api/workers: one row per worker name (its live or latest incarnation), or
        every incarnation with history=True."""
        if history:
            return await self._json("GET", "/api/workers", history="true")
        return await self._json("GET", "/api/workers")

    async def reset(self) -> dict[str, Any]:
        """POST /api/reset: clear every task, event and count (see the README's Reset)."""
        return await self._pool_action("/api/reset", {})

    async def pool(self) -> dict[str, Any]:
        """GET /api/pool: what the pool manager runs."""
        return (await self._call("GET", "/api/pool", pool=True))[0]

    async def scale(self, n: int) -> dict[str, Any]:
        """Ask the pool manager for `n` workers (waits while the ones that leave drain)."""
        return await self._pool_action("/api/pool/scale", {"workers": n})

    async def kill_worker(self, name: str, graceful: bool = False) -> dict[str, Any]:
        """Stop one worker, by name or id: SIGKILL, or SIGTERM and drain when graceful."""
        path = f"/api/pool/workers/{quote(name, safe='')}/kill"
        return await self._pool_action(path, {"graceful": graceful})

    async def coordinator(self, action: str, restart: bool = True,
                          name: str | None = None) -> dict[str, Any]:
        """Kill (restarted by the supervisor unless restart=False), stop, start or restart it
        (one of several coordinators, by name: coordinator-2)."""
        validate_action(action)  # a ValueError naming the actions, before any request
        body: dict[str, Any] = {"restart": restart}
        if name:
            body["name"] = name
        return await self._pool_action(f"/api/pool/coordinator/{action}", body)

    async def autoscale(self) -> dict[str, Any]:
        """GET /api/pool/autoscale: the autoscaler's settings, workers and last decisions."""
        return await self._json("GET", "/api/pool/autoscale")

    async def set_autoscale(self, **changes: Any) -> dict[str, Any]:
        """PUT /api/pool/autoscale: e.g. enabled=True, min=1, max=6, target="wait=2"."""
        return await self._json("PUT", "/api/pool/autoscale", changes)

    # health
    async def healthz(self) -> bool:
        """True when the scheduler answers /healthz with 2xx."""
        return await self._probe("/healthz")

    async def readyz(self) -> bool:
        """True when the scheduler answers /readyz with 2xx (database reachable)."""
        return await self._probe("/readyz")

    async def _probe(self, path: str) -> bool:
        try:
            await self._call("GET", path)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError):
            return False
        return True

    async def wait_ready(self, timeout: float = 30.0, interval: float = 0.1) -> None:
        """Wait until /readyz answers 2xx; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not await self.readyz():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.base_url} not ready within {timeout}s")
            await asyncio.sleep(interval)

    async def wait_until(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 30.0,
        interval: float = 0.2,
    ) -> dict[str, Any]:
        """Poll stats until predicate(stats) holds and return them; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = await self.stats()
                if predicate(last):
                    return last
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"unreachable: {exc!r}"  # tolerated: the scheduler may be restarting
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s; last stats: {last}")
            await asyncio.sleep(interval)

    # events
    async def events(
        self,
        last_event_id: int | str | None = None,
        *,
        reconnect: bool = True,
        on_status: Callable[[str], Any] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event of GET /api/logs/stream, each a dict with its "id", in order.

        The connection is reopened after any drop with Last-Event-ID and a bounded
        exponential backoff; events replayed twice are dropped, so each is seen once.
        `on_status` is called with "connected" or "disconnected: <reason>".
        """
        last = None if last_event_id is None else str(last_event_id)
        delay = self.backoff_min
        while True:
            decoder = SSEDecoder()
            try:
                async for msg in self._stream(last, decoder, on_status):
                    if _is_replayed(msg.id, last):
                        continue
                    last = msg.id if msg.id is not None else last
                    delay = self.backoff_min
                    yield _event_dict(msg)
                reason = "stream ended"
            except ApiError as exc:
                if not reconnect or exc.status not in _RETRY_STATUSES:
                    raise
                reason = str(exc)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if not reconnect:
                    raise
                reason = repr(exc)
            if not reconnect:
                return
            _notify(on_status, f"disconnected: {reason}")
            if decoder.retry is not None:
                delay = max(delay, decoder.retry / 1000)
            log.info("event stream lost (%s), reconnecting in %.2fs", reason, delay,
                     extra={"last_event_id": last})
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff_max)

    async def _stream(
        self, last: str | None, decoder: SSEDecoder, on_status: Callable[[str], Any] | None
    ) -> AsyncIterator[SSEMessage]:
        """One connection to the stream; raises ApiError on an error answer."""
        # no total timeout on a stream; a silent socket (no keepalive) counts as dead
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=self.sse_idle_timeout
        )
        url = self.base_url + "/api/logs/stream"
        async with self._open().get(url, headers=_stream_headers(last), timeout=timeout) as resp:
            if resp.status != 200:
                raise ApiError.from_body(resp.status, _decode(await resp.read()))
            _notify(on_status, "connected")
            async for chunk in resp.content.iter_any():
                for msg in decoder.feed(chunk):
                    yield msg


def _decode(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _stream_headers(last: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last is not None:
        headers["Last-Event-ID"] = last
    return headers


def _is_replayed(msg_id: str | None, last: str | None) -> bool:
    """True for a numeric id not after the last one seen (a replay overlap)."""
    if msg_id is None or last is None or not (msg_id.isdigit() and last.isdigit()):
        return False
    return int(msg_id) <= int(last)


def _notify(callback: Callable[[str], Any] | None, status: str) -> None:
    if callback is not None:
        try:
            callback(status)
        except Exception:
            log.exception("on_status callback failed")


class SyncClient:
    """Blocking wrapper of Client for scripts; not for use inside a running event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = Client(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(attr(*args, **kwargs))

        return call

    def close(self) -> None:
        """Close the session and the private event loop."""
        self._runner.run(self._client.close())
        self._runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
