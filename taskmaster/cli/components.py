"""`taskmaster scheduler | coordinator | worker | db migrate`: one component each (what
compose runs)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from taskmaster.cli.options import run, settings_from, until_signal
from taskmaster.config import Settings

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
        await site.start()
        log.info("scheduler listening on http://%s:%d", settings.host, settings.scheduler_port)
        try:
            await until_signal()
        finally:
            await runner.cleanup()

    return run(main)


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

    return run(main)


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
