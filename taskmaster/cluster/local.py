"""A whole stack as local processes: database, coordinators, schedulers and N workers.

What `taskmaster up` runs and what notebooks start. It supervises its children like a
compose restart policy: a crashed coordinator or scheduler comes back by itself, a killed
worker stays dead until the next scale (as in the demo guide).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from taskmaster.autoscale import Policy, from_settings
from taskmaster.client import ApiError, Client
from taskmaster.cluster.autoscaler import AutoscaleLoop
from taskmaster.cluster.base import MemberInfo, UnknownMember, UnknownWorker
from taskmaster.cluster.control import (
    ControlServer,
    remove_stack_file,
    stack_path,
    write_stack_file,
)
from taskmaster.cluster.forked import ChildProcess, ForkServer, ForkServerError
from taskmaster.cluster.preflight import HomeLock, StackConflict, claim
from taskmaster.config import ENV_PREFIX, SECRETS, Settings
from taskmaster.errors import EXIT_CANNOT_LISTEN
from taskmaster.pool import compose_command, validate_action, validate_workers
from taskmaster.store import Store, prepare
from taskmaster.store.embedded import resolve_database
from taskmaster.tokens import new_token, remove_pool_token, write_pool_token

log = logging.getLogger(__name__)

# a core member that exits this many times in a row because its port is taken stays down
LISTEN_TRIES = 3
# the secrets each role is given (taskmaster.config.SECRETS; the others it never sees)
ROLE_SECRETS: dict[str, tuple[str, ...]] = {
    "coordinator": ("database_url", "cluster_token"),
    "scheduler": ("database_url", "api_token", "api_read_token", "pool_token", "control_token"),
    "worker": ("cluster_token",),
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(eq=False)
class Member:
    """One child process of the stack."""

    name: str
    role: str  # coordinator | scheduler | worker
    args: list[str]
    proc: ChildProcess | None = None
    restarts: int = 0
    wanted: bool = True  # supervise: restart when it dies (coordinator, scheduler)
    started_at: float = field(default_factory=time.monotonic)
    exit_code: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of the stack's environment
    listen_failures: int = 0  # exits in a row because its port was taken

    @property
    def pid(self) -> int | None:
        """The live process id."""
        return self.proc.pid if self.proc is not None else None

    @property
    def state(self) -> str:
        """running, stopped or exited(code) (with the reason when it could not listen)."""
        if self.proc is None:
            return "stopped"
        if self.proc.returncode is None:
            return "running"
        if self.proc.returncode == EXIT_CANNOT_LISTEN:
            return f"exited({EXIT_CANNOT_LISTEN}): port in use"
        return f"exited({self.proc.returncode})"

    def to_json(self) -> MemberInfo:
        """A row of the members table."""
        return {"name": self.name, "role": self.role, "pid": self.pid, "state": self.state,
                "restarts": self.restarts, "host": socket.gethostname()}


class LocalCluster:
    """Start, scale, kill and stop a stack of local processes.

    It also serves the control API (`taskmaster.cluster.control`) that the CLI and the
    scheduler's /api/pool endpoints drive, records its addresses in $TASKMASTER_HOME/stack.json,
    and enables the pool API of the scheduler it starts (pool_api=False to refuse it).
    """

    def __init__(self, settings: Settings | None = None, *, workers: int = 3,
                 concurrency: int | None = None, scheduler_port: int | None = None,
                 coordinator_port: int | None = None, extra_env: dict[str, str] | None = None,
                 supervise: bool = True, control: bool = True, pool_api: bool = True,
                 stack_file: bool = True, coordinator_host: str | None = None,
                 autoscale: Policy | None = None, coordinators: int = 1,
                 schedulers: int = 1) -> None:
        settings = settings or Settings.from_env()
        # the pool API can stop and kill processes: it needs a token, unless opted out; the
        # scheduler reaches the control API with a secret of this run's own
        if pool_api and control and not settings.pool_token and not settings.no_pool_token:
            settings = settings.with_(pool_token=new_token())
        self.settings = settings.with_(control_token=new_token()) if control else settings
        if coordinators < 1 or schedulers < 1:
            raise ValueError("a stack needs at least one coordinator and one scheduler "
                             "(--coordinators, --schedulers)")
        self.n_coordinators = coordinators
        self.n_schedulers = schedulers
        # consecutive ports from the first (0: free ones, chosen at start)
        self.coordinator_ports: list[int] = []
        self.scheduler_ports: list[int] = []
        self.initial_workers = workers
        self.concurrency = concurrency or self.settings.concurrency
        self.scheduler_port = self.settings.scheduler_port if scheduler_port is None else scheduler_port
        self.coordinator_port = (self.settings.coordinator_port if coordinator_port is None
                                 else coordinator_port)
        self.coordinator_host = coordinator_host
        self.extra_env = extra_env or {}
        self.supervise = supervise
        self.pool_api = pool_api and control
        self.members: dict[str, Member] = {}
        self.database_url = ""
        self._db_handle: Any = None
        self._next_worker = 1
        self._watch: asyncio.Task[None] | None = None
        # the fork server workers are forked from (TASKMASTER_WORKER_START=fork), starting
        self._forks: asyncio.Task[ForkServer | None] | None = None
        self.home = Path(self.settings.home).resolve()
        self.logs = self.home / "logs"
        self.control = ControlServer(self) if control else None
        self.stack_file = stack_path(self.home) if stack_file else None
        self._lock = HomeLock(self.home)
        self._starting = False  # a core member that dies now fails the start
        # scale and kills one at a time; coordinator/scheduler (re)starts one at a time
        self._pool_lock = asyncio.Lock()
        self._core_lock = asyncio.Lock()
        # the autoscaler (on with autoscale=Policy(enabled=True, ...) or TASKMASTER_AUTOSCALE)
        self.autoscaler = AutoscaleLoop(
            autoscale or from_settings(self.settings), stats=self._stats,
            current=lambda: len(self.workers()), scale=self.scale, record=self._record_scaled,
            concurrency=self.concurrency, max_workers=self.settings.max_workers)
        self._api: Client | None = None
        self._store: Store | None = None

    # ---- addresses ----

    @property
    def url(self) -> str:
        """The (first) scheduler's base URL."""
        return f"http://127.0.0.1:{self.scheduler_port}"

    @property
    def urls(self) -> list[str]:
        """Every scheduler's base URL (they serve the same API)."""
        return [f"http://127.0.0.1:{p}" for p in self._ports(self.scheduler_port,
                                                              self.scheduler_ports,
                                                              self.n_schedulers)]

    @property
    def coordinator_address(self) -> str:
        """What workers dial: host:port, or every coordinator's, comma-separated."""
        host = self.coordinator_host
        if not host or host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return ",".join(f"{host}:{p}" for p in self._ports(
            self.coordinator_port, self.coordinator_ports, self.n_coordinators))

    @staticmethod
    def _ports(first: int, chosen: list[int], n: int) -> list[int]:
        return chosen or [first + i if first else 0 for i in range(n)]

    def coordinator_names(self) -> list[str]:
        """coordinator, or coordinator-1 ... coordinator-N when there are several."""
        return (["coordinator"] if self.n_coordinators == 1
                else [f"coordinator-{i + 1}" for i in range(self.n_coordinators)])

    def scheduler_names(self) -> list[str]:
        """scheduler, or scheduler-1 ... scheduler-M when there are several."""
        return (["scheduler"] if self.n_schedulers == 1
                else [f"scheduler-{i + 1}" for i in range(self.n_schedulers)])

    @property
    def control_url(self) -> str:
        """Base URL of the control API ("" when it is off)."""
        return self.control.url if self.control is not None else ""

    # ---- lifecycle ----

    async def start(self) -> LocalCluster:
        """Database, coordinator, scheduler, workers; returns when the API is ready.

        Before anything starts, the home and the ports are claimed: StackConflict (nothing
        started, nothing of the other stack touched) when another stack has them. A core
        member that dies during the start fails it with the reason from its log."""
        host = self.settings.host
        # the first of each keeps its role's name: the hint to start a second stack uses it
        ports = {("scheduler" if i == 0 else name): (host, port) for i, (name, port) in
                 enumerate(zip(self.scheduler_names(),
                               self._ports(self.scheduler_port, [], self.n_schedulers),
                               strict=True))}
        ports.update({("coordinator" if i == 0 else name): (self.coordinator_host or host, port)
                      for i, (name, port) in enumerate(zip(
                          self.coordinator_names(),
                          self._ports(self.coordinator_port, [], self.n_coordinators),
                          strict=True))})
        if self.settings.metrics_port:
            ports.update({f"{name} metrics": (self.coordinator_host or host,
                                              self.settings.metrics_port + i)
                          for i, name in enumerate(self.coordinator_names())})
        await claim(self.home, self._lock, stack_path(self.home),
                    {k: v for k, v in ports.items() if v[1]},
                    self.settings.api_read_token or self.settings.api_token)
        self._starting = True
        try:
            return await self._start()
        finally:
            self._starting = False

    async def _start(self) -> LocalCluster:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.database_url, self._db_handle = await asyncio.to_thread(
            resolve_database, self.settings.database_url, self.home)
        await prepare(self.database_url)
        self.scheduler_ports = [p or free_port() for p in self._ports(
            self.scheduler_port, [], self.n_schedulers)]
        self.coordinator_ports = [p or free_port() for p in self._ports(
            self.coordinator_port, [], self.n_coordinators)]
        self.scheduler_port, self.coordinator_port = (self.scheduler_ports[0],
                                                      self.coordinator_ports[0])
        if self.settings.worker_start == "fork" and hasattr(os, "fork"):
            # it imports while the coordinator and the scheduler start
            self._forks = asyncio.create_task(self._start_fork_server(), name="fork-server")
        if self.control is not None:
            await self.control.start()
        for i, (name, port) in enumerate(zip(self.coordinator_names(), self.coordinator_ports,
                                             strict=True)):
            coordinator_args = ["coordinator", "--port", str(port)]
            if self.coordinator_host:
                coordinator_args += ["--host", self.coordinator_host]
            env = {"TASKMASTER_COORDINATOR_NAME": name}
            if self.settings.metrics_port:  # one metrics port each, consecutive
                env["TASKMASTER_METRICS_PORT"] = str(self.settings.metrics_port + i)
            await self._spawn(Member(name, "coordinator", coordinator_args, env=env))
        scheduler_env = {}
        if self.control is not None:
            scheduler_env["TASKMASTER_POOL_URL"] = self.control_url
            scheduler_env["TASKMASTER_ENABLE_POOL_API"] = "1" if self.pool_api else "0"
        self._leave_pool_token()  # before the schedulers: whoever finds it, finds the token
        for name, port in zip(self.scheduler_names(), self.scheduler_ports, strict=True):
            await self._spawn(Member(name, "scheduler", [
                "scheduler", "--port", str(port)], env=scheduler_env))
        await self.wait_ready()
        async with self._pool_lock:
            await self._scale(self.initial_workers)
        if self.supervise:
            self._watch = asyncio.create_task(self._supervise(), name="supervise")
        self._publish()
        await self.wait_workers(self.initial_workers)
        self.autoscaler.start()
        return self

    async def wait_workers(self, n: int, timeout: float = 60.0) -> None:
        """Until n workers are online (registered with the coordinator)."""
        deadline = time.monotonic() + timeout
        online = -1
        async with aiohttp.ClientSession(headers=self._auth_headers(),
                                         timeout=aiohttp.ClientTimeout(total=5.0)) as http:
            while time.monotonic() < deadline:
                self._check_core()
                with contextlib.suppress(aiohttp.ClientError, OSError, ValueError, TimeoutError):
                    async with http.get(self.url + "/api/stats") as resp:
                        if resp.status == 200:
                            online = int((await resp.json())["workers_online"])
                            if online >= n:
                                return
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{online} of {n} workers online after {timeout:g}s; "
                           f"coordinator log:\n{self.log_tail('coordinator')}")

    def _check_core(self) -> None:
        """During the start, a coordinator or scheduler that has exited fails it, saying why
        (a port taken meanwhile: StackConflict)."""
        if not self._starting:
            return
        for m in self.members.values():
            if m.role == "worker" or m.proc is None or m.proc.returncode is None:
                continue
            why = self._last_error(m.name)
            if m.proc.returncode == EXIT_CANNOT_LISTEN:
                raise StackConflict(f"{why or f'the {m.name} cannot listen on its port'} "
                                    f"(its log: {self.logs / (m.name + '.log')})")
            raise RuntimeError(f"the {m.name} exited with {m.proc.returncode} while the stack "
                               f"was starting; its log:\n{self.log_tail(m.name)}")

    def _last_error(self, name: str) -> str:
        """The last ERROR line of a member's log (without its prefix), or ""."""
        for line in reversed(self.log_tail(name, 50).splitlines()):
            if "ERROR" in line:
                return line.split("ERROR", 1)[1].strip(" :]")
        return ""

    def _auth_headers(self) -> dict[str, str]:
        token = self.settings.api_read_token or self.settings.api_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def stop(self, grace: float | None = None) -> None:
        """Workers first (they drain within grace, default TASKMASTER_DRAIN_GRACE), then the rest."""
        grace = self.settings.drain_grace if grace is None else grace
        if self.stack_file is not None:
            remove_stack_file(self.stack_file)  # only if it is ours
        for url in self._token_urls():
            remove_pool_token(url, self.settings.pool_token)  # only if it is ours
        if self.control is not None:
            await self.control.stop()
        await self._stop_autoscaler()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        workers = [m for m in self.members.values() if m.role == "worker"]
        await asyncio.gather(*(self._terminate(m, grace) for m in workers))
        if self._forks is not None:
            forks, self._forks = await self._forks, None
            if forks is not None:
                await forks.stop()
        others = [m for m in self.members.values() if m.role != "worker"]
        await asyncio.gather(*(self._terminate(m, min(grace, 10.0)) for m in others))
        if self._db_handle is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._db_handle.cleanup)
            self._db_handle = None
        self._lock.release()

    # ---- the autoscaler (taskmaster.cluster.autoscaler) ----

    def autoscale_status(self) -> dict[str, Any]:
        """GET /api/pool/autoscale: its settings, the workers and its last decisions."""
        return self.autoscaler.status()

    async def configure_autoscale(self, changes: dict[str, Any]) -> dict[str, Any]:
        """PUT /api/pool/autoscale: change its settings (on/off, min/max, target, ...)."""
        return self.autoscaler.configure(changes)

    async def _stats(self) -> dict[str, Any]:
        if self._api is None:
            self._api = Client(self.url, token=self.settings.api_read_token
                               or self.settings.api_token, timeout=5.0)
        return await self._api.stats()

    async def _record_scaled(self, decision: dict[str, Any]) -> None:
        if self._store is None:
            self._store = await Store.open(self.database_url, min_size=1, max_size=1)
        await self._store.pool_scaled(decision)

    async def _stop_autoscaler(self) -> None:
        await self.autoscaler.stop()
        if self._api is not None:
            await self._api.close()
            self._api = None
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self._store.close()
            self._store = None

    def kill_now(self) -> None:
        """SIGKILL every live member at once, without waiting (e.g. at interpreter exit,
        when the event loop may be gone)."""
        for m in self.members.values():
            if m.proc is not None and m.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(m.proc.pid, signal.SIGKILL)

    async def __aenter__(self) -> LocalCluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until GET /readyz answers 200 (raises TimeoutError with the scheduler's log tail)."""
        deadline = time.monotonic() + timeout
        # one look at a time is bounded: whatever holds the port may accept and never answer
        probe = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=probe) as http:
            while time.monotonic() < deadline:
                self._check_core()  # before asking: whoever answers must be ours
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                sched = self.members.get(self.scheduler_names()[0])
                if sched and sched.proc and sched.proc.returncode is not None and not self.supervise:
                    break
                await asyncio.sleep(0.05)
        raise TimeoutError(f"scheduler not ready at {self.url}; its log:\n{self.log_tail('scheduler')}")

    # ---- pool management ----

    def workers(self) -> list[Member]:
        """Worker members that are running, in start order."""
        return [m for m in self.members.values() if m.role == "worker" and m.state == "running"]

    async def scale(self, n: int) -> list[MemberInfo]:
        """Run exactly n workers: start new ones or stop (gracefully) the newest."""
        validate_workers(n, self.settings.max_workers)
        async with self._pool_lock:
            await self._scale(n)
        self._publish()
        return self.status()

    async def _scale(self, n: int) -> None:
        live = self.workers()
        await asyncio.gather(*(self._terminate(m, self.settings.drain_grace) for m in live[n:]))
        # like `docker compose up --scale`: dead workers come back under their names first
        dead = [m for m in self.members.values() if m.role == "worker" and m.state != "running"]
        for _ in range(n - len(live)):
            if dead:
                m = dead.pop(0)
                m.restarts += 1
            else:
                name = f"worker-{self._next_worker}"
                self._next_worker += 1
                m = Member(name, "worker", [
                    "worker", "--name", name, "--coordinator", self.coordinator_address,
                    "--concurrency", str(self.concurrency)], wanted=False)
            await self._spawn(m)

    async def kill_worker(self, name: str, graceful: bool = False) -> MemberInfo:
        """SIGKILL a worker (or SIGTERM with graceful=True: it drains and leaves); `name` is
        its name or the id GET /api/workers shows."""
        m = self.members.get(name) or self.members.get(await self._name_of(name) or "")
        if m is None or m.role != "worker":
            names = ", ".join(w.name for w in self.members.values() if w.role == "worker")
            raise UnknownWorker(f"no worker with the name or id {name!r}; workers: "
                                f"{names or 'none'}")
        async with self._pool_lock:
            if graceful:
                await self._terminate(m, self.settings.drain_grace)
            else:
                await self._kill(m)
        self._publish()
        return m.to_json()

    async def _name_of(self, worker_id: str) -> str | None:
        """The name of the worker with this id, as the scheduler lists it (None if none)."""
        token = self.settings.api_read_token or self.settings.api_token or None
        try:
            async with Client(self.url, token=token, timeout=5) as client:
                workers = await client.workers(history=True)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError):
            return None
        return next((str(w["name"]) for w in workers if w.get("id") == worker_id), None)

    async def coordinator(self, action: str, restart: bool = True,
                          name: str | None = None) -> MemberInfo:
        """kill (SIGKILL: a crash, restarted by supervision unless restart=False), stop,
        start or restart one coordinator, by name (the first when None)."""
        validate_action(action)
        names = self.coordinator_names()
        m = self.members.get(name or names[0])
        if m is None or m.role != "coordinator":
            raise UnknownMember(f"no coordinator named {name!r}; coordinators: "
                                f"{', '.join(names)}")
        async with self._core_lock:
            if action == "kill":
                if not restart:
                    m.wanted = False
                await self._kill(m, keep_wanted=True)
            elif action == "stop":
                await self._terminate(m, 5.0)
            elif action == "start":
                m.wanted = True
                if m.state != "running":
                    await self._spawn(m)
            else:  # restart
                await self._terminate(m, 5.0)
                m.wanted = True
                await self._spawn(m)
        self._publish()
        return m.to_json()

    def status(self) -> list[MemberInfo]:
        """Every member with pid and state."""
        return [m.to_json() for m in self.members.values()]

    def describe(self) -> dict[str, Any]:
        """What GET /api/pool answers: manager, addresses, running workers, members."""
        return {"manager": "local", "scheduler": self.url, "schedulers": self.urls,
                "coordinator": self.coordinator_address,
                "coordinators": dict(zip(self.coordinator_names(),
                                         self.coordinator_address.split(","), strict=True)),
                "home": str(self.home), "pid": os.getpid(),
                "workers": len(self.workers()), "max_workers": self.settings.max_workers,
                "members": self.status()}

    def compose_command(self, action: str, arg: str | int | None = None, *,
                        graceful: bool = False, restart: bool = True) -> str:
        """The docker compose command doing on the compose stack what `action` does here."""
        return compose_command(action, arg, graceful=graceful, restart=restart,
                               workers=self.initial_workers)

    def _token_urls(self) -> list[str]:
        if not self.settings.pool_token or not self.scheduler_port:
            return []
        return [self.url] + ([self.control_url] if self.control_url else [])

    def _leave_pool_token(self) -> None:
        """The pool token, in the owner-only file the CLI and the notebooks of this user find
        by the scheduler's (or the control API's) address."""
        try:
            paths = [write_pool_token(url, self.settings.pool_token)
                     for url in self._token_urls()]
        except OSError as exc:  # the stack runs; its user passes the token another way
            log.warning("cannot leave the pool token for the CLI and the notebooks (%s): set "
                        "TASKMASTER_POOL_TOKEN for them, or XDG_CONFIG_HOME to a writable "
                        "folder", exc)
            return
        if paths:
            log.info("pool token in %s", ", ".join(map(str, paths)))

    def _publish(self) -> None:
        """Rewrite the stack file (the CLI finds the control API through it)."""
        if self.stack_file is None:
            return
        write_stack_file(self.stack_file, {
            "pid": os.getpid(), "url": self.url, "coordinator": self.coordinator_address,
            "control_url": self.control_url, "home": str(self.home),
            "database": "embedded" if self._db_handle is not None else "external",
            "members": self.status()})

    # ---- processes ----

    def _env(self, m: Member) -> dict[str, str]:
        """The member's environment: the stack's settings, and of the secrets only those its
        role needs (a worker gets the cluster token, never the database URL or an API token);
        secrets go in the environment, never on a command line (`ps` shows those)."""
        secret_vars = {ENV_PREFIX + name.upper() + suffix for name in SECRETS
                       for suffix in ("", "_FILE")}
        env = {k: v for k, v in os.environ.items() if k not in secret_vars}
        env.update({k: v for k, v in self.settings.env().items() if k not in secret_vars})
        needs = ROLE_SECRETS.get(m.role, ())
        env.update({ENV_PREFIX + name.upper(): str(getattr(self.settings, name))
                    for name in needs if getattr(self.settings, name)})
        if "database_url" in needs:
            env["TASKMASTER_DATABASE_URL"] = self.database_url
        env.update({
            "TASKMASTER_HOME": str(self.home),
            "TASKMASTER_COORDINATOR": self.coordinator_address,
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        env.update(m.env)
        return env

    async def _start_fork_server(self) -> ForkServer | None:
        """The fork server, with a worker's environment; None (each worker a new process)
        when it cannot start."""
        server = ForkServer(self.logs / "fork-server.log")
        try:
            await server.start(self._env(Member("fork-server", "worker", [])))
        except (ForkServerError, OSError) as exc:
            log.warning("%s; each worker starts as a new process", exc)
            return None
        return server

    async def _fork_server(self) -> ForkServer | None:
        """The running fork server, or None; one that died is started again for the next
        worker (this one starts as a new process)."""
        if self._forks is None:
            return None
        server = await self._forks
        if server is not None and not server.alive:
            log.warning("the fork server exited (its log: %s); starting it again",
                        server.log_path)
            self._forks = asyncio.create_task(self._start_fork_server(), name="fork-server")
            return None
        return server

    async def _spawn(self, m: Member) -> None:
        forks = await self._fork_server() if m.role == "worker" else None
        if forks is not None:
            try:
                m.proc = await forks.spawn(m.args, self._env(m), self.logs / f"{m.name}.log",
                                           os.getcwd())
            except ForkServerError as exc:
                log.warning("%s; %s starts as a new process", exc, m.name)
            else:
                self._started(m)
                return
        log_file = open(self.logs / f"{m.name}.log", "ab")
        try:
            m.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "taskmaster", *m.args,
                env=self._env(m), stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
        finally:
            log_file.close()
        self._started(m)

    def _started(self, m: Member) -> None:
        assert m.proc is not None
        m.started_at = time.monotonic()
        self.members[m.name] = m
        log.info("started %s (pid %d)", m.name, m.proc.pid)

    async def _kill(self, m: Member, keep_wanted: bool = False) -> None:
        if m.proc is None or m.proc.returncode is not None:
            return
        if not keep_wanted:
            m.wanted = False
        with contextlib.suppress(ProcessLookupError):
            m.proc.send_signal(signal.SIGKILL)
        await m.proc.wait()

    async def _terminate(self, m: Member, grace: float) -> None:
        m.wanted = False
        if m.proc is None or m.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            m.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(m.proc.wait(), grace + 5)
        except TimeoutError:
            log.warning("%s did not stop within %.0fs; killing it", m.name, grace + 5)
            await self._kill(m)

    async def _supervise(self) -> None:
        """Restart a coordinator or scheduler that died (restart: unless-stopped)."""
        while True:
            await asyncio.sleep(0.1)
            for m in list(self.members.values()):
                if m.role == "worker" or not m.wanted or m.proc is None:
                    continue
                if m.proc.returncode is not None:
                    backoff = min(0.1 * 2 ** min(m.restarts, 5), 2.0)
                    if time.monotonic() - m.started_at < backoff:
                        continue
                    async with self._core_lock:
                        if not m.wanted or m.proc is None or m.proc.returncode is None:
                            continue
                        if self._gives_up(m):
                            continue
                        m.restarts += 1
                        log.warning("%s exited with %s; restarting it", m.name,
                                    m.proc.returncode)
                        await self._spawn(m)
                    self._publish()

    def _gives_up(self, m: Member) -> bool:
        """A member that cannot listen on its port, again and again, is not restarted
        forever: after LISTEN_TRIES tries it stays down, and the log says why."""
        assert m.proc is not None
        if m.proc.returncode != EXIT_CANNOT_LISTEN:
            m.listen_failures = 0
            return False
        m.listen_failures += 1
        if m.listen_failures < LISTEN_TRIES:
            return False
        m.wanted = False
        log.error("%s: %s; gave up after %d tries: free the port, then restart the stack",
                  m.name, self._last_error(m.name) or "cannot listen", m.listen_failures)
        self._publish()
        return True

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a member's log."""
        path = self.logs / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
