"""The `taskmaster` command line: the parser and the entry point (main)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from taskmaster.cli import components, health, stack
from taskmaster.cli.options import common, option, settings_from
from taskmaster.config import redact
from taskmaster.logs import configure_logging

# What compose and `taskmaster up` start, often: they parse without importing the rest of
# the command line (its HTTP client alone costs a worker ~0.25 s of CPU at every start).
COMPONENTS = ("scheduler", "coordinator", "worker", "db")


def build_parser(components_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line (or only the commands of COMPONENTS)."""
    parser = argparse.ArgumentParser(
        prog="taskmaster", description="A distributed task scheduler on PostgreSQL and gRPC.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if not components_only:
        _add_stack_commands(sub)
    _add_component_commands(sub)
    if not components_only:
        _add_other_commands(sub)
    return parser


def _add_stack_commands(sub: Any) -> None:
    p = sub.add_parser("up", help="run the whole stack (embedded PostgreSQL unless configured)")
    p.add_argument("--workers", type=int, default=3, help="workers to start [default 3]")
    p.add_argument("--no-pool-api", action="store_true",
                   help="refuse the scheduler's /api/pool endpoints (enabled by default here)")
    p.add_argument("--coordinators", type=int, default=1, metavar="N",
                   help="coordinators, all active on one database, on consecutive ports from "
                   "--coordinator-port (their metrics ports likewise); workers dial them all "
                   "[default 1]")
    p.add_argument("--schedulers", type=int, default=1, metavar="M",
                   help="schedulers serving the same API, on consecutive ports from "
                   "--scheduler-port [default 1]")
    p.add_argument("--coordinator-host", default=None, metavar="ADDRESS",
                   help="address the coordinator binds; 0.0.0.0 lets workers on other hosts "
                   "join [default 127.0.0.1]")
    for name in ("database_url", "concurrency", "scheduler_port", "coordinator_port",
                 "api_token", "cluster_token", "no_pool_token"):
        option(p, name)
    option(p, "autoscale", metavar="MIN:MAX")
    option(p, "autoscale_target", metavar="wait=SECONDS|backlog=TASKS")
    common(p)
    p.set_defaults(func=stack.cmd_up)

    p = sub.add_parser("demo", help="the stack plus JupyterLab on the notebooks (the main job)")
    p.add_argument("--workers", type=int, default=3, help="workers to start [default 3]")
    p.add_argument("--notebooks", default=None, help="notebooks folder [default ./notebooks]")
    p.add_argument("--lab-port", type=int, default=8888, help="JupyterLab port [default 8888]")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    for name in ("database_url", "concurrency", "scheduler_port", "coordinator_port", "api_token",
                 "no_pool_token"):
        option(p, name)
    common(p)
    p.set_defaults(func=stack.cmd_demo)


def _add_component_commands(sub: Any) -> None:
    p = sub.add_parser("scheduler", help="run the HTTP API and SSE feed")
    option(p, "host")
    option(p, "scheduler_port", "--port")
    option(p, "database_url")
    option(p, "api_token")
    common(p)
    p.set_defaults(func=components.cmd_scheduler)

    p = sub.add_parser("coordinator", help="run the gRPC coordinator")
    option(p, "host")
    option(p, "coordinator_port", "--port")
    option(p, "database_url")
    for name in ("heartbeat_interval", "heartbeat_misses", "assign_strategy", "cluster_token"):
        option(p, name)
    common(p)
    p.set_defaults(func=components.cmd_coordinator)

    p = sub.add_parser("worker", help="run a worker that dials the coordinator")
    option(p, "coordinator", metavar="HOST:PORT")
    option(p, "concurrency")
    option(p, "worker_name", "--name")
    option(p, "tasks", metavar="MODULE[,MODULE]")
    for name in ("heartbeat_interval", "drain_grace", "cluster_token"):
        option(p, name)
    common(p)
    p.set_defaults(func=components.cmd_worker)

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    m = dbsub.add_parser("migrate", help="create the database if missing, apply migrations")
    option(m, "database_url")
    common(m)
    m.set_defaults(func=components.cmd_migrate)


def _add_other_commands(sub: Any) -> None:
    from taskmaster.cli import control, presenter, record

    p = sub.add_parser("status", help="workers and stats of a running stack")
    for name in ("url", "scheduler_port", "api_token", "api_read_token"):
        option(p, name)
    common(p)
    p.set_defaults(func=stack.cmd_status)

    # every argument goes to the benchmarks' own parser, --help included
    p = sub.add_parser("bench", help="run the benchmarks (python -m benchmarks --help)",
                       add_help=False, prefix_chars="\0")
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=stack.cmd_bench)

    control.add_commands(sub, option)
    presenter.add_commands(sub, option)
    health.add_commands(sub, option)
    record.add_commands(sub, option)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `taskmaster` script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(components_only=argv[:1] != [] and argv[0] in COMPONENTS)
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        parser.error(redact(str(exc)))
    configure_logging(settings.log_level, settings.log_format)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
