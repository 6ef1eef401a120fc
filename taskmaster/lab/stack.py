"""connect(): the stack a notebook drives, the one `taskmaster demo` runs or its own.

    stack = await connect(workers=3)     # TASKMASTER_URL if it answers, else a new stack
    dash = await stack.dashboard()       # every panel, fed by the event stream
    ...
    await stack.close()                  # or let the kernel exit

A stack of its own runs as child processes of the kernel (LocalCluster: coordinator,
scheduler, workers, free ports) on an embedded PostgreSQL in a temporary folder, or on a
uniquely named database of the server TASKMASTER_DATABASE_URL names (dropped at close).
A small watchdog process (`python -m taskmaster.lab.watchdog`) stops all of it when the
kernel dies without closing it (a kernel killed by nbval or by a restart), so nothing
outlives the notebook.

Either way the panels speak only HTTP and SSE to the stack: their worker controls are the
Client's /api/pool methods, which the scheduler of a stack started here forwards to the
LocalCluster supervising it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pandas as pd

from taskmaster.client import ApiError, Client
from taskmaster.cluster.local import LocalCluster
from taskmaster.config import ASSIGN_STRATEGIES, Settings
from taskmaster.lab.measure import CpuMeter
from taskmaster.model import EventType, WorkerStatus
from taskmaster.notebook.dashboard import Dashboard
from taskmaster.notebook.recording import Replay
from taskmaster.store import (
    Store,
    database_name,
    drop_database,
    prepare,
    start_embedded_again,
    stop_embedded,
    with_database,
    write_activity,
)

log = logging.getLogger(__name__)

URL_VARIABLE = "TASKMASTER_URL"


async def connect(
    workers: int | None = 3,
    *,
    url: str | None = None,
    own: bool | None = None,
    reset: bool = False,
    concurrency: int | None = None,
    timeout: float = 60.0,
    recording: str | Path | None = None,
    speed: float = 1.0,
    embedded: bool = False,
    coordinators: int = 1,
    **settings: Any,
) -> Stack:
    """The stack at TASKMASTER_URL (or `url`) if it answers, else a new one in this kernel.

    `workers`: how many workers are online when it returns (None: as they are), whatever
    happened before (workers killed, scaled): the pool is scaled to that number, which
    starts or stops workers; no notebook needs to know their names.
    `reset=True` first clears the stack's tasks, events and counts (POST /api/reset), so
    the notebook starts from a known state; a new stack starts empty anyway.
    `recording=PATH` starts nothing and connects to nothing: the panels replay that
    recording (`taskmaster record`, or a dashboard's Record button) at `speed` times its pace.
    `own=True` always starts a new stack; so do Settings fields given as keywords
    (e.g. `assign_strategy="random"`, `heartbeat_interval=0.5`), which only a new stack
    can honour.
    `embedded=True` starts a new stack on an embedded PostgreSQL of its own even when
    TASKMASTER_DATABASE_URL names a server (a notebook that stops its database).
    `coordinators=2`: a stack with at least that many coordinators (the demo's, if it runs
    that many; else a new one).
    """
    if recording is not None:  # no stack at all: the recorded run, replayed
        return Stack(cast(Client, Replay(recording, speed=speed)))
    url = url or os.environ.get(URL_VARIABLE, "")
    if own is None:
        own = bool(settings) or embedded or not url
    if not own:
        client = Client(url, token=os.environ.get("TASKMASTER_API_TOKEN") or None, timeout=10)
        if await client.readyz() and await _coordinators(client) >= coordinators:
            stack = Stack(client)
            if reset:
                await stack.reset()
            if workers is not None:
                await stack.ensure_workers(workers, timeout)
            return stack
        await client.close()
        log.info("no stack answers at %s; starting one in this kernel", url)
    return await Stack.start(workers or 0, concurrency=concurrency, timeout=timeout,
                             embedded=embedded, coordinators=coordinators, **settings)


async def _coordinators(client: Client) -> int:
    """How many coordinators the stack runs, as its pool manager says (1 when it cannot)."""
    try:
        return max(1, len((await client.pool()).get("coordinators") or {}))
    except (ApiError, OSError, ValueError):
        return 1


class Stack:
    """A running stack: its API client and, when started here, its cluster."""

    def __init__(self, client: Client, cluster: LocalCluster | None = None, *,
                 home: Path | None = None, database_url: str = "", own_database: bool = False,
                 watchdog: subprocess.Popen[bytes] | None = None) -> None:
        self.client = client
        self.cluster = cluster
        self.home = home
        self.database_url = database_url
        self._own_database = own_database  # a database of its own on a server: dropped at close
        self._watchdog = watchdog
        self._dashboards: list[Dashboard] = []
        self.closed = False

    # ---- starting ----

    @classmethod
    async def start(cls, workers: int = 3, *, concurrency: int | None = None,
                    timeout: float = 60.0, embedded: bool = False, coordinators: int = 1,
                    **overrides: Any) -> Stack:
        """A new stack of local processes, in a temporary home, on free ports (on an
        embedded PostgreSQL unless TASKMASTER_DATABASE_URL names a server and not
        `embedded`)."""
        home = Path(tempfile.mkdtemp(prefix="taskmaster-notebook-")).resolve()
        # the embedded server's runtime files: not in home, which close() removes
        os.environ.setdefault("XDG_RUNTIME_DIR", str(_runtime_dir()))
        server = "" if embedded else os.environ.get("TASKMASTER_DATABASE_URL", "")
        database_url = ""
        if server:  # a database of our own on that server, dropped at close
            database_url = with_database(server, f"tm_nb_{os.getpid()}_{secrets.token_hex(4)}")
        overrides.setdefault("metrics_port", 0)  # 9090 may be taken by another stack
        settings = Settings.from_env(home=home, database_url=database_url, **overrides)
        watchdog = _start_watchdog(home, database_url)
        # its scheduler's /api/pool is on and forwards to the cluster (LocalCluster's default)
        cluster = LocalCluster(settings, workers=workers, concurrency=concurrency,
                               scheduler_port=0, coordinator_port=0, coordinators=coordinators)
        stack = cls(Client(cluster.url), cluster, home=home, database_url=database_url,
                    own_database=bool(server), watchdog=watchdog)
        try:
            await cluster.start()
            # the port is known once started; a pool action may wait for workers to drain
            token = settings.api_token or settings.api_read_token or None
            stack.client = Client(cluster.url, token=token,
                                  pool_timeout=settings.drain_grace + 60,
                                  pool_token=cluster.settings.pool_token)
            stack.database_url = cluster.database_url
            atexit.register(cluster.kill_now)  # the watchdog does the rest
            await stack.wait_workers(workers, timeout)
        except BaseException:
            await stack.close()
            raise
        return stack

    async def reset(self) -> dict[str, Any]:
        """Clear every task, event and count of the stack (POST /api/reset; the online
        workers stay); what was cleared."""
        return await self.client.reset()

    async def ensure_workers(self, n: int, timeout: float = 60.0) -> None:
        """Scale the pool to n workers if it has another number online (the pool starts or
        stops workers, bringing killed ones back), and wait for them. An autoscaler left on
        (by notebook 09, the Autoscale panel or `taskmaster autoscale`) is turned off first:
        it would resize the pool under the notebook."""
        with contextlib.suppress(ApiError):  # no supervisor, or its pool API refused
            if (await self.client.autoscale()).get("enabled"):
                await self.client.set_autoscale(enabled=False)
        online = await self.online_workers()
        if len(online) != n:
            try:
                await self.client.scale(n)
            except ApiError as exc:  # no pool manager: say what to run instead
                raise RuntimeError(
                    f"the stack has {len(online)} workers online, the notebook wants {n}, and "
                    f"it cannot scale it: {exc.error}"
                    + (f"; run: {exc.command}" if exc.command else "")
                ) from exc
        await self.wait_workers(n, timeout)

    # ---- reading ----

    @property
    def pool(self) -> Client:
        """What the WorkerControlPanel drives: the Client's /api/pool methods (the scheduler
        of a stack started here forwards them to its supervisor)."""
        return self.client

    @property
    def url(self) -> str:
        """The scheduler's base URL."""
        return self.client.base_url

    @property
    def owned(self) -> bool:
        """True when this kernel started the stack (and close() stops it)."""
        return self.cluster is not None

    async def online_workers(self) -> list[dict[str, Any]]:
        """GET /api/workers, the online ones, by name."""
        workers = await self.client.workers()
        return sorted((w for w in workers if w.get("status") == WorkerStatus.ONLINE),
                      key=lambda w: str(w.get("name")))

    async def members(self) -> pd.DataFrame:
        """The stack's processes: component, role, address and state (no pids)."""
        rows = []
        if self.cluster is not None:
            database = "external server" if self._own_database else "embedded, Unix socket"
            rows.append(("postgresql", "database", database, "running"))
            addresses = {"coordinator": f"gRPC {self.cluster.coordinator_address}",
                         "scheduler": f"HTTP {self.cluster.url}"}
            for m in self.cluster.status():
                role = str(m["role"])
                where = addresses.get(role, f"dials {self.cluster.coordinator_address}")
                rows.append((str(m["name"]), role, where, str(m["state"])))
        else:
            try:
                pool = await self.client.pool()
                rows += [(str(m.get("name")), str(m.get("role")), "", str(m.get("state")))
                         for m in pool.get("members", [])]
            except ApiError:  # no pool manager: what the API tells
                rows.append(("scheduler", "scheduler", f"HTTP {self.url}", "running"))
                rows += [(str(w.get("name")), "worker", str(w.get("host")), str(w.get("status")))
                         for w in await self.client.workers()]
        return pd.DataFrame(rows, columns=["member", "role", "address", "state"])

    async def worker(self, name: str) -> dict[str, Any]:
        """The online worker with this name (KeyError when there is none)."""
        for w in await self.online_workers():
            if w.get("name") == name:
                return w
        raise KeyError(f"no online worker named {name!r}")

    async def wait_workers(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until exactly n workers are online; return them."""
        deadline = time.monotonic() + timeout
        while True:
            online = await self.online_workers()
            if len(online) == n:
                return online
            if time.monotonic() > deadline:
                names = ", ".join(str(w.get("name")) for w in online) or "none"
                raise TimeoutError(f"{n} workers not online within {timeout}s; online: {names}")
            await asyncio.sleep(0.1)

    async def wait_idle(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until nothing is pending, assigned or running; return the stats."""
        return await self.client.wait_until(
            lambda s: s["pending"] == s["assigned"] == s["running"] == 0, timeout
        )

    # ---- panels ----

    async def dashboard(self, **options: Any) -> Dashboard:
        """Every panel in one layout, started and connected to the event stream."""
        online = await self.online_workers()
        options.setdefault("workers", len(online))
        if "coordinators" not in options and await _coordinators(self.client) > 1:
            # several: a row of buttons each in the Worker Control panel
            options["coordinators"] = list((await self.client.pool())["coordinators"])
        dash = Dashboard(self.client, **options)
        self._dashboards.append(dash)
        dash.start()
        await dash.ready()
        return dash

    # ---- what only a stack of our own can do ----

    def _own(self, what: str) -> LocalCluster:
        if self.cluster is None:
            raise RuntimeError(f"{what} needs a stack started by this notebook: "
                               "connect(own=True)")
        return self.cluster

    async def use_strategy(self, strategy: str, timeout: float = 30.0) -> None:
        """Restart the coordinator with TASKMASTER_ASSIGN_STRATEGY=strategy; wait for the workers."""
        if strategy not in ASSIGN_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(ASSIGN_STRATEGIES)}")
        cluster = self._own("changing the assignment strategy")
        current = cluster.extra_env.get("TASKMASTER_ASSIGN_STRATEGY",
                                        cluster.settings.assign_strategy)
        if strategy == current:
            return
        cluster.extra_env["TASKMASTER_ASSIGN_STRATEGY"] = strategy
        n = len(await self.online_workers())
        await self.after_events(
            lambda: cluster.coordinator("restart"),
            lambda e: e.get("event") == EventType.WORKER_ONLINE, n, timeout,
        )

    async def after_events(self, action: Callable[[], Any],
                           predicate: Callable[[dict[str, Any]], bool], count: int = 1,
                           timeout: float = 30.0) -> list[dict[str, Any]]:
        """Run action() once the event stream is open; return the first `count` events
        after it that satisfy predicate (TimeoutError otherwise)."""
        connected = asyncio.Event()
        found: list[dict[str, Any]] = []

        def status(text: str) -> None:
            if text == "connected":
                connected.set()

        async def collect() -> None:
            async for event in self.client.events(on_status=status):
                if predicate(event):
                    found.append(event)
                    if len(found) >= count:
                        return

        reader = asyncio.create_task(collect())
        try:
            await asyncio.wait_for(connected.wait(), timeout)
            await _maybe_await(action())
            await asyncio.wait_for(asyncio.shield(reader), timeout)
        except TimeoutError:
            raise TimeoutError(f"{count} matching events not seen within {timeout}s "
                               f"(saw {len(found)})") from None
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return found

    async def restart(self, *, graceful: bool = True, timeout: float = 60.0) -> dict[str, float]:
        """Stop every process of the stack and start them again on the same database, with
        the same ports and as many workers as were online; seconds {"stop", "start"}.

        graceful: SIGTERM, and each worker finishes the tasks it holds (or hands back, never
        started, what reached it while draining) within TASKMASTER_DRAIN_GRACE, then the
        coordinator and the scheduler stop. Otherwise every process is SIGKILLed at once, as
        a power cut would; what they held stays assigned in PostgreSQL until the new
        coordinator finds its holders gone. Either way the database is stopped cleanly
        (an embedded one) and started again.
        """
        old = self._own("restarting the stack")
        n = len(await self.online_workers())
        started = time.monotonic()
        if not graceful:
            for member in old.members.values():
                member.wanted = False  # its supervisor must not bring them back meanwhile
            old.kill_now()
        await old.stop(grace=None if graceful else 0.0)
        atexit.unregister(old.kill_now)
        stopped = time.monotonic()
        cluster = LocalCluster(old.settings, workers=n, concurrency=old.concurrency,
                               scheduler_port=old.scheduler_port,
                               coordinator_port=old.coordinator_port,
                               extra_env=dict(old.extra_env))
        self.cluster = cluster
        await cluster.start()
        atexit.register(cluster.kill_now)
        self.database_url = cluster.database_url
        await self.wait_workers(n, timeout)
        return {"stop": stopped - started, "start": time.monotonic() - stopped}

    def cpu_meter(self) -> CpuMeter:
        """A CpuMeter over this stack's processes and its database's backends (started)."""
        cluster = self._own("measuring CPU per process")
        members = {m.name: (m.role, m.pid) for m in cluster.members.values()}
        return CpuMeter(members, database_name(self.database_url)).start()

    async def write_activity(self) -> dict[str, int]:
        """The database's WAL position (bytes) and its rows of tasks and events."""
        return await write_activity(self.database_url)

    def _embedded_server(self) -> Any:
        server = getattr(self._own("stopping the database"), "_db_handle", None)
        if server is None:
            raise RuntimeError("only an embedded PostgreSQL of a stack started here can be "
                               "stopped: connect(own=True, embedded=True)")
        return server

    async def stop_database(self) -> None:
        """Stop the stack's embedded PostgreSQL now (every connection cut), data kept."""
        await asyncio.to_thread(stop_embedded, self._embedded_server())

    async def start_database(self) -> None:
        """Start the embedded PostgreSQL stopped by stop_database() again."""
        await asyncio.to_thread(start_embedded_again, self._embedded_server())

    @contextlib.asynccontextmanager
    async def scratch_store(self) -> AsyncIterator[Store]:
        """A Store on a new, migrated database of the stack's server, dropped afterwards.

        No coordinator or worker touches it: a notebook plays their parts step by step.
        """
        self._own("a scratch database")
        url = with_database(self.database_url, f"tm_scratch_{secrets.token_hex(4)}")
        await prepare(url)
        try:
            store = await Store.open(url, min_size=1, max_size=2)
            try:
                yield store
            finally:
                await store.close()
        finally:
            await drop_database(url)

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a member's log (coordinator, scheduler, worker-1, ...)."""
        return self._own("reading member logs").log_tail(name, lines)

    # ---- stopping ----

    async def close(self) -> None:
        """Stop the panels' feeds; stop the stack if this kernel started it."""
        if self.closed:
            return
        self.closed = True
        for dash in self._dashboards:
            await dash.stop()
        await self.client.close()
        if self.cluster is None:
            return
        atexit.unregister(self.cluster.kill_now)
        try:
            await self.cluster.stop(grace=5.0)
            if self._own_database and self.database_url:
                await drop_database(self.database_url)
        finally:
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)
            if self._watchdog is not None:
                self._watchdog.terminate()
                await asyncio.to_thread(self._watchdog.wait)

    def __repr__(self) -> str:
        where = "started here" if self.owned else "connected"
        return f"Stack({where})"


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


def _runtime_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"taskmaster-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _start_watchdog(home: Path, database_url: str) -> subprocess.Popen[bytes]:
    """A process that cleans up after this kernel if it dies without close()."""
    args = [sys.executable, "-m", "taskmaster.lab.watchdog", "--pid", str(os.getpid()),
            "--home", str(home)]
    if database_url:
        args += ["--drop-database", database_url]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
