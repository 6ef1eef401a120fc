"""The control API of a running local stack, its client, and the stack file that finds it.

The process that runs a `LocalCluster` (`taskmaster up`, `taskmaster demo`, a notebook)
serves this small aiohttp API on 127.0.0.1. The CLI (`taskmaster scale`, `kill`, `ps`,
`coordinator-*`) and the scheduler's /api/pool endpoints drive the stack through it. Its
paths are those of the scheduler's /api/pool, so one client speaks to both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from taskmaster.cluster.base import Supervisor, UnknownWorker, pid_alive
from taskmaster.errors import InvalidInput
from taskmaster.pool import member_name, validate_action, validate_flag, validate_workers
from taskmaster.tokens import POOL_TOKEN_HEADER, find_pool_token
from taskmaster.web import (
    BrowserPolicy,
    Handler,
    bearer_ok,
    browser_guard,
    error,
    pool_token_refusal,
    read_object,
)

log = logging.getLogger(__name__)

STACK_FILE = "stack.json"
CLUSTER = web.AppKey("cluster", Supervisor)


# ---- the stack file ----

def stack_path(home: Path | str) -> Path:
    """Where a running stack records its addresses: $TASKMASTER_HOME/stack.json."""
    return Path(home) / STACK_FILE


def write_stack_file(path: Path, info: dict[str, Any]) -> None:
    """Write the stack file atomically (readers never see half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(path)


def remove_stack_file(path: Path) -> None:
    """Remove the stack file if it is ours (another stack may have replaced it)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


class NoStack(Exception):
    """No running stack could be found or reached."""


def find_control_url(home: Path | str, given: str = "") -> str:
    """The control URL: the one given, else the stack file's; NoStack explains what is wrong."""
    if given:
        return given.rstrip("/")
    path = stack_path(home)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise NoStack(f"no running stack: {path} does not exist. Start one with "
                      "`taskmaster up` (same TASKMASTER_HOME), or pass --control-url") from None
    except (OSError, ValueError) as exc:
        raise NoStack(f"cannot read {path}: {exc}") from None
    url = info.get("control_url")
    if not url:
        raise NoStack(f"{path} names no control URL (was the stack started with an older "
                      "version, or without a control API?)")
    pid = info.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        raise NoStack(f"no running stack: {path} was left by process {pid}, which is gone. "
                      "Start one with `taskmaster up`")
    return str(url).rstrip("/")


# ---- the server ----

@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if "Origin" in request.headers:
        # only programs call this API; a web page must not reach it through a browser
        return error(403, "requests from web pages are refused", "Origin")
    if request.path != "/healthz" and (refused := _refusal(request)) is not None:
        return refused
    try:
        return await handler(request)
    except InvalidInput as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except UnknownWorker as exc:
        return error(404, str(exc), "name")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason)


def _refusal(request: web.Request) -> web.Response | None:
    """The scheduler shows the supervisor's secret; a program of the stack's user shows the
    pool token; a stack without either (opted out) takes the API token when one is set."""
    settings = request.app[CLUSTER].settings
    if settings.control_token and bearer_ok(request, settings.control_token):
        return None
    if settings.pool_token:
        return pool_token_refusal(request, settings.pool_token)
    if settings.api_token and not bearer_ok(request, settings.api_token):
        return error(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                     "Authorization")
    return None


def _cluster(request: web.Request) -> Supervisor:
    return request.app[CLUSTER]


async def _pool(request: web.Request) -> web.Response:
    return web.json_response(_cluster(request).describe())


async def _scale(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    body = await read_object(request, empty={})
    if "workers" not in body:
        raise InvalidInput(422, "workers is required", "workers")
    n = validate_workers(body["workers"], cluster.settings.max_workers)
    members = await cluster.scale(n)
    return web.json_response({"workers": n, "members": members})


async def _kill(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    graceful = validate_flag(await read_object(request, empty={}), "graceful", False)
    member = await cluster.kill_worker(request.match_info["name"], graceful=graceful)
    return web.json_response({"member": member, "members": cluster.status()})


async def _coordinator(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    action = validate_action(request.match_info["action"])
    body = await read_object(request, empty={})
    restart = validate_flag(body, "restart", True)
    member = await cluster.coordinator(action, restart=restart, name=member_name(body))
    return web.json_response({"member": member, "members": cluster.status()})


async def _autoscale(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    if request.method == "GET":
        return web.json_response(cluster.autoscale_status())
    return web.json_response(await cluster.configure_autoscale(await read_object(request)))


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_control_app(cluster: Supervisor) -> web.Application:
    """The control API of one supervisor (a LocalCluster) (same paths as the scheduler's /api/pool)."""
    # no setting widens it: only the programs of this machine call it
    only_programs = "the control API answers programs on this machine only"
    policy = BrowserPolicy(host_fix=only_programs, origin_fix=only_programs)
    app = web.Application(middlewares=[browser_guard(policy), _middleware],
                          client_max_size=64 * 1024)
    app[CLUSTER] = cluster
    app.router.add_get("/api/pool", _pool)
    app.router.add_post("/api/pool/scale", _scale)
    app.router.add_post("/api/pool/workers/{name}/kill", _kill)
    app.router.add_post("/api/pool/coordinator/{action}", _coordinator)
    app.router.add_get("/api/pool/autoscale", _autoscale)
    app.router.add_put("/api/pool/autoscale", _autoscale)
    app.router.add_get("/healthz", _healthz)
    return app


class ControlServer:
    """The control API listening on 127.0.0.1 (port 0: any free port)."""

    def __init__(self, cluster: Supervisor, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cluster = cluster
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Listen; returns the URL."""
        self._runner = web.AppRunner(make_control_app(self.cluster), handle_signals=False,
                                     access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        log.info("control API listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


# ---- the client ----

class ControlError(Exception):
    """An error answer of a control API (or of the scheduler's /api/pool)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {"error": str(body)}
        super().__init__(f"{status}: {self.body.get('error', body)}")

    @property
    def command(self) -> str | None:
        """The docker compose command suggested instead (a 501 of the scheduler)."""
        value = self.body.get("command")
        return str(value) if value else None


class ControlClient:
    """Client of a control API: pool(), scale(n), kill_worker(name), coordinator(action)."""

    def __init__(self, url: str, token: str = "", timeout: float = 120.0,
                 pool_token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        # None: the one the stack at url left for this user (see taskmaster.tokens)
        self.pool_token = find_pool_token(self.url) if pool_token is None else pool_token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            if self.pool_token:
                headers[POOL_TOKEN_HEADER] = self.pool_token
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout))
        async with self._session.request(method, self.url + path, json=body) as resp:
            raw = await resp.read()
            try:
                data = json.loads(raw) if raw else {}
            except ValueError:
                data = {"error": raw.decode(errors="replace")[:500]}
            if resp.status >= 400:
                raise ControlError(resp.status, data)
            return dict(data)

    async def pool(self) -> dict[str, Any]:
        """What the pool manager runs: {"manager", "members", "workers", "scheduler", ...}."""
        return await self._call("GET", "/api/pool")

    async def scale(self, n: int) -> dict[str, Any]:
        """Run exactly n workers."""
        return await self._call("POST", "/api/pool/scale", {"workers": n})

    async def kill_worker(self, name: str, graceful: bool = False) -> dict[str, Any]:
        """SIGKILL a worker, or SIGTERM it (drain) when graceful."""
        return await self._call("POST", f"/api/pool/workers/{quote(name, safe='')}/kill",
                                {"graceful": graceful})

    async def coordinator(self, action: str, restart: bool = True,
                          name: str | None = None) -> dict[str, Any]:
        """kill (restarted unless restart=False), stop, start or restart a coordinator (by
        name; the first when None)."""
        body: dict[str, Any] = {"restart": restart}
        if name:
            body["name"] = name
        return await self._call("POST", f"/api/pool/coordinator/{quote(action, safe='')}",
                                body)

    async def autoscale(self, **changes: Any) -> dict[str, Any]:
        """The autoscaler's settings and last decisions; with changes, PUT them first."""
        if changes:
            return await self._call("PUT", "/api/pool/autoscale", changes)
        return await self._call("GET", "/api/pool/autoscale")
