"""`taskmaster up | demo | status | bench`: the whole stack in the foreground, and a look at it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taskmaster.cli.options import run, settings_from, until_signal
from taskmaster.cli.tables import table
from taskmaster.config import Settings, redact
from taskmaster.tokens import token_path


def cmd_up(args: argparse.Namespace) -> int:
    """Run the whole stack in the foreground until Ctrl-C."""
    settings = settings_from(args)

    from taskmaster.autoscale import from_settings
    from taskmaster.errors import InvalidInput

    try:
        autoscale = from_settings(settings)
    except InvalidInput as exc:
        where = {"autoscale": "--autoscale", "target": "--autoscale-target"}.get(
            exc.field or "autoscale", f"TASKMASTER_AUTOSCALE_{str(exc.field).upper()}")
        print(f"error: {where}: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        from taskmaster.cluster.local import LocalCluster
        from taskmaster.cluster.preflight import StackConflict

        cluster = LocalCluster(settings, workers=args.workers, concurrency=settings.concurrency,
                               pool_api=not args.no_pool_api,
                               coordinator_host=args.coordinator_host, autoscale=autoscale,
                               coordinators=args.coordinators, schedulers=args.schedulers)
        print(f"starting TaskMaster: database, {args.coordinators} coordinator(s), "
              f"{args.schedulers} scheduler(s), {args.workers} workers ...", flush=True)
        try:
            await cluster.start()
        except StackConflict as exc:
            await cluster.stop(grace=2.0)  # whatever it started itself; never the other's
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        except BaseException:
            await cluster.stop(grace=2.0)
            raise
        db = "embedded PostgreSQL" if not settings.database_url else redact(settings.database_url)
        print(f"TaskMaster is up: API {cluster.url}  coordinator {cluster.coordinator_address}  "
              f"database {db}", flush=True)
        print(table(cluster.status()), flush=True)
        print(f"control API {cluster.control_url} (taskmaster ps | scale N | kill WORKER | "
              "coordinator-crash)", flush=True)
        if cluster.settings.pool_token:
            print(f"pool token (scale, kill, reset) in {token_path(cluster.url)}, for this user "
                  "only; the CLI and the notebooks find it", flush=True)
        if autoscale.enabled:
            print(f"autoscale {autoscale.min}:{autoscale.max} workers, target "
                  f"{autoscale.target_text} (taskmaster autoscale ... changes it)", flush=True)
        print(f"try: curl {cluster.url}/api/stats    (Ctrl-C stops everything)", flush=True)
        try:
            await until_signal()
        finally:
            print("stopping ... (Ctrl-C again: workers leave at once)", flush=True)
            with _hurry_on_signal(cluster):
                await cluster.stop()
            print("stopped.", flush=True)
        return 0

    return run(main)


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
    from taskmaster.cli.demo import find_notebooks, run_demo

    settings = settings_from(args)
    notebooks = find_notebooks(args.notebooks)
    return run(lambda: run_demo(settings, workers=args.workers, notebooks=notebooks,
                                 lab_port=args.lab_port, open_browser=not args.no_browser))


def cmd_status(args: argparse.Namespace) -> int:
    """Print the workers and the stats of a running stack."""
    settings = settings_from(args)
    url = scheduler_url(settings)

    async def main() -> int:
        from taskmaster.client import ApiError, Client

        try:
            async with Client(url, token=settings.api_read_token or settings.api_token) as c:
                workers, stats = await c.workers(), await c.stats()
        except (OSError, ApiError) as exc:
            print(f"cannot reach the scheduler at {url}: {exc}\n"
                  "start the stack with `taskmaster up`, or pass --url", file=sys.stderr)
            return 1
        print(table(workers, ["name", "status", "current_task_id", "tasks_completed", "capacity"]))
        print()
        keys = ["total", "pending", "assigned", "running", "completed", "failed", "cancelled",
                "queue_depth", "workers_online", "throughput"]
        print(table([{k: stats.get(k) for k in keys}], keys))
        return 0

    return run(main)


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


def scheduler_url(settings: Settings) -> str:
    """The scheduler to talk to: TASKMASTER_URL (--url), else the one the stack file of the
    home names (a live stack), else http://127.0.0.1:<TASKMASTER_SCHEDULER_PORT>."""
    from taskmaster.cluster.base import pid_alive
    from taskmaster.cluster.control import stack_path

    if settings.url:
        return settings.url.rstrip("/")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        info = json.loads(stack_path(settings.home).read_text())
        if pid_alive(int(info["pid"])):
            return str(info["url"])
    return f"http://127.0.0.1:{settings.scheduler_port}"
