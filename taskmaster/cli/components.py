"""`taskmaster scheduler | coordinator | worker | db migrate`: one component each (what
compose runs)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from taskmaster.cli.options import run, settings_from, until_signal
from taskmaster.config import Settings
from taskmaster.errors import EXIT_CANNOT_LISTEN, CannotListen

log = logging.getLogger("taskmaster")


def _database_url(settings: Settings) -> tuple[str, Any]:
    from taskmaster.store.embedded import resolve_database

    return resolve_database(settings.database_url, Path(settings.home))


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
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise CannotListen("scheduler", f"{settings.host}:{settings.scheduler_port}",
                               exc.strerror or str(exc)) from None
        log.info("scheduler listening on http://%s:%d", settings.host, settings.scheduler_port)
        try:
            await until_signal()
        finally:
            await runner.cleanup()

    return _listening(main)


def _listening(main: Any) -> int:
    """Run a component's main; one that cannot bind its port says why and exits with
    EXIT_CANNOT_LISTEN, which a supervisor does not restart forever."""
    try:
        return run(main)
    except CannotListen as exc:
        log.error("%s; another process listens there (another TaskMaster stack? "
                  "`taskmaster status` tells), or choose another port", exc)
        return EXIT_CANNOT_LISTEN


def cmd_coordinator(args: argparse.Namespace) -> int:
    """Run the gRPC coordinator."""
    settings = settings_from(args)
    url, _db = _database_url(settings)

    async def main() -> None:
        from taskmaster.coordinator.server import CoordinatorServer

        server = CoordinatorServer(settings, url)
        await server.start()
        try:
            await until_signal()
        finally:
            await server.stop(grace=2.0)

    return _listening(main)


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

    return run(main)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create the database if missing and apply pending migrations."""
    settings = settings_from(args)
    url, _db = _database_url(settings)

    async def main() -> None:
        from taskmaster.store import prepare

        applied = await prepare(url)
        print(f"applied migrations: {applied}" if applied else "schema is up to date")

    return run(main)
