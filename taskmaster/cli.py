"""The `taskmaster` command: run the stack or one component, and look at it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from taskmaster.config import Settings, help_for
from taskmaster.logs import configure_logging

log = logging.getLogger("taskmaster")

_FIELD_TYPES = {f.name: type(f.default) for f in fields(Settings)}


def option(parser: argparse.ArgumentParser, name: str, *flags: str, **kw: Any) -> None:
    """Add --name for a setting: typed, defaulting from TASKMASTER_NAME, help naming it."""
    kind = _FIELD_TYPES[name]
    flag_names = flags or (f"--{name.replace('_', '-')}",)
    if kind is bool:
        parser.add_argument(*flag_names, dest=name, action="store_true", default=None,
                            help=help_for(name))
        return
    parser.add_argument(*flag_names, dest=name, type=kind, default=None, help=help_for(name),
                        metavar=kw.pop("metavar", name.upper()), **kw)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    overrides = {name: getattr(args, name) for name in _FIELD_TYPES if hasattr(args, name)}
    return Settings.from_env(**overrides)


def _common(parser: argparse.ArgumentParser) -> None:
    option(parser, "log_level")
    option(parser, "log_format")
    option(parser, "home")


def _run(coro_fn: Callable[[], Any]) -> int:
    try:
        import uvloop

        return int(uvloop.run(coro_fn()) or 0)
    except ImportError:
        return int(asyncio.run(coro_fn()) or 0)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


def _database_url(settings: Settings) -> tuple[str, Any]:
    from taskmaster.store.embedded import resolve_database

    return resolve_database(settings.database_url, Path(settings.home))


# ---- components ----

def cmd_scheduler(args: argparse.Namespace) -> int:
    """Run the HTTP API and SSE feed."""
    settings = settings_from(args)
    url, _db = _database_url(settings)

    async def main() -> None:
        from aiohttp import web

        from taskmaster.scheduler.app import make_app

        runner = web.AppRunner(make_app(settings, url), handle_signals=False,
                               shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.scheduler_port, reuse_address=True)
        await site.start()
        log.info("scheduler listening on http://%s:%d", settings.host, settings.scheduler_port)
        try:
            await _until_signal()
        finally:
            await runner.cleanup()

    return _run(main)


def cmd_coordinator(args: argparse.Namespace) -> int:
    """Run the gRPC coordinator."""
    settings = settings_from(args)
    url, _db = _database_url(settings)

    async def main() -> None:
        from taskmaster.coordinator.server import CoordinatorServer

        server = CoordinatorServer(settings, url)
        await server.start()
        try:
            await _until_signal()
        finally:
            await server.stop(grace=2.0)

    return _run(main)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker that dials the coordinator."""
    settings = settings_from(args)
    from taskmaster.worker.handlers import load_modules

    commands = load_modules(settings.tasks)

    async def main() -> int:
        from taskmaster.worker.runtime import Worker

        worker = Worker(settings)
        log.info("worker %s dialing %s with %d slots; commands: %s", worker.name, worker.target,
                 worker.capacity, ", ".join(commands))
        return await worker.run()

    return _run(main)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create the database if missing and apply pending migrations."""
    settings = settings_from(args)
    url, _db = _database_url(settings)

    async def main() -> None:
        import asyncpg

        from taskmaster.store.db import ensure_database, migrate

        await ensure_database(url)
        conn = await asyncpg.connect(url)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        print(f"applied migrations: {applied}" if applied else "schema is up to date")

    return _run(main)


# ---- the whole stack ----

def cmd_up(args: argparse.Namespace) -> int:
    """Run the whole stack in the foreground until Ctrl-C."""
    settings = settings_from(args)

    async def main() -> None:
        from taskmaster.cluster.commands import table
        from taskmaster.cluster.local import LocalCluster

        cluster = LocalCluster(settings, workers=args.workers, concurrency=settings.concurrency,
                               pool_api=not args.no_pool_api,
                               coordinator_host=args.coordinator_host)
        print(f"starting TaskMaster: database, coordinator, scheduler, {args.workers} workers ...",
              flush=True)
        try:
            await cluster.start()
        except BaseException:
            await cluster.stop(grace=2.0)
            raise
        db = "embedded PostgreSQL" if not settings.database_url else settings.database_url
        print(f"TaskMaster is up: API {cluster.url}  coordinator {cluster.coordinator_address}  "
              f"database {db}", flush=True)
        print(table(cluster.status()), flush=True)
        print(f"control API {cluster.control_url} (taskmaster ps | scale N | kill WORKER | "
              "coordinator-crash)", flush=True)
        print(f"try: curl {cluster.url}/api/stats    (Ctrl-C stops everything)", flush=True)
        try:
            await _until_signal()
        finally:
            print("stopping ... (Ctrl-C again: workers leave at once)", flush=True)
            with _hurry_on_signal(cluster):
                await cluster.stop()
            print("stopped.", flush=True)

    return _run(main)


@contextlib.contextmanager
def _hurry_on_signal(cluster: Any) -> Iterator[None]:
    """While the stack stops, another Ctrl-C hurries its workers instead of leaving the
    stack's processes (each in a session of its own) running behind us."""
    loop = asyncio.get_running_loop()

    def hurry() -> None:
        print("stopping at once ...", flush=True)
        for m in cluster.workers():  # a worker's second signal: leave now
            with contextlib.suppress(ProcessLookupError):
                m.proc.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, hurry)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the stack and JupyterLab on the notebooks until Ctrl-C."""
    from taskmaster.demo import find_notebooks, run_demo

    settings = settings_from(args)
    notebooks = find_notebooks(args.notebooks)
    return _run(lambda: run_demo(settings, workers=args.workers, notebooks=notebooks,
                                 lab_port=args.lab_port, open_browser=not args.no_browser))


def _stack_file(settings: Settings) -> Path:
    from taskmaster.cluster.control import stack_path

    return stack_path(settings.home)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(r.get(c, "") if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the workers and the stats of a running stack."""
    settings = settings_from(args)
    url = args.url or _default_url(settings)

    async def main() -> int:
        from taskmaster.client import ApiError, Client

        try:
            async with Client(url, token=settings.api_read_token or settings.api_token) as c:
                workers, stats = await c.workers(), await c.stats()
        except (OSError, ApiError) as exc:
            print(f"cannot reach the scheduler at {url}: {exc}\n"
                  "start the stack with `taskmaster up`, or pass --url", file=sys.stderr)
            return 1
        print(_table(workers, ["name", "status", "current_task_id", "tasks_completed", "capacity"]))
        print()
        keys = ["total", "pending", "assigned", "running", "completed", "failed", "cancelled",
                "queue_depth", "workers_online", "throughput"]
        print(_table([{k: stats.get(k) for k in keys}], keys))
        return 0

    return _run(main)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks of a source checkout (the same as `python -m benchmarks`)."""
    if Path("benchmarks", "__init__.py").is_file():
        sys.path.insert(0, str(Path.cwd()))
    try:
        from benchmarks.cli import main as bench_main
    except ImportError:
        print("taskmaster bench runs the benchmarks/ folder of a source checkout: run it from "
              "the checkout's root", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(logging.WARNING)  # the stacks it starts would chatter
    return bench_main(args.bench_args)


def _default_url(settings: Settings) -> str:
    path = _stack_file(settings)
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads(path.read_text())["url"])
    return f"http://127.0.0.1:{settings.scheduler_port}"


# ---- parser ----

def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="taskmaster", description="A distributed task scheduler on PostgreSQL and gRPC.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="run the whole stack (embedded PostgreSQL unless configured)")
    p.add_argument("--workers", type=int, default=3, help="workers to start [default 3]")
    p.add_argument("--no-pool-api", action="store_true",
                   help="refuse the scheduler's /api/pool endpoints (enabled by default here)")
    p.add_argument("--coordinator-host", default=None, metavar="ADDRESS",
                   help="address the coordinator binds; 0.0.0.0 lets workers on other hosts "
                   "join [default 127.0.0.1]")
    for name in ("database_url", "concurrency", "scheduler_port", "coordinator_port",
                 "api_token", "cluster_token"):
        option(p, name)
    _common(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("demo", help="the stack plus JupyterLab on the notebooks (the main job)")
    p.add_argument("--workers", type=int, default=3, help="workers to start [default 3]")
    p.add_argument("--notebooks", default=None, help="notebooks folder [default ./notebooks]")
    p.add_argument("--lab-port", type=int, default=8888, help="JupyterLab port [default 8888]")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    for name in ("database_url", "concurrency", "scheduler_port", "coordinator_port", "api_token"):
        option(p, name)
    _common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("scheduler", help="run the HTTP API and SSE feed")
    option(p, "host")
    option(p, "scheduler_port", "--port")
    option(p, "database_url")
    option(p, "api_token")
    _common(p)
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("coordinator", help="run the gRPC coordinator")
    option(p, "host")
    option(p, "coordinator_port", "--port")
    option(p, "database_url")
    for name in ("heartbeat_interval", "heartbeat_misses", "assign_strategy", "cluster_token"):
        option(p, name)
    _common(p)
    p.set_defaults(func=cmd_coordinator)

    p = sub.add_parser("worker", help="run a worker that dials the coordinator")
    option(p, "coordinator", metavar="HOST:PORT")
    option(p, "concurrency")
    option(p, "worker_name", "--name")
    option(p, "tasks", metavar="MODULE[,MODULE]")
    for name in ("heartbeat_interval", "drain_grace", "cluster_token"):
        option(p, name)
    _common(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    m = dbsub.add_parser("migrate", help="create the database if missing, apply migrations")
    option(m, "database_url")
    _common(m)
    m.set_defaults(func=cmd_migrate)

    p = sub.add_parser("status", help="workers and stats of a running stack")
    p.add_argument("--url", default=None, help="scheduler URL [default: the running `up`, "
                   "else http://127.0.0.1:TASKMASTER_SCHEDULER_PORT]")
    for name in ("scheduler_port", "api_token", "api_read_token"):
        option(p, name)
    _common(p)
    p.set_defaults(func=cmd_status)

    # every argument goes to the benchmarks' own parser, --help included
    p = sub.add_parser("bench", help="run the benchmarks (python -m benchmarks --help)",
                       add_help=False, prefix_chars="\0")
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    from taskmaster.cluster.commands import add_commands

    add_commands(sub, option)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `taskmaster` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    configure_logging(settings.log_level, settings.log_format)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
