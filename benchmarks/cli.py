"""Command line of the benchmarks: pick scenarios, run them on a fresh stack, report."""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import taskmaster
from benchmarks import report
from benchmarks.scenarios import SCENARIOS, Options
from benchmarks.stack import MemorySampler, Server

log = logging.getLogger(__name__)

QUICK = Options(tasks=2000, batch=500, throughput_workers=(1, 2, 4), latency_tasks=200,
                creates=500, scaling_workers=(1, 2, 4, 8), scaling_tasks_per_slot=5,
                failover_rounds=1, partition_rounds=0, read_rows=100_000, read_requests=100,
                sse_events=5000, load_seconds=5.0, half_rate=500, backlog_tasks=50_000,
                soak_seconds=30.0, soak_retention=10.0, peer_rounds=1, peer_scale=0.1)


def _ints(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in raw.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Start a TaskMaster stack per scenario and measure it. Prints one table "
                    "and writes JSON to benchmarks/results/.")
    p.add_argument("--quick", action="store_true", help="small figures: a smoke run in ~1 min")
    p.add_argument("--only", action="append", choices=sorted(SCENARIOS), metavar="SCENARIO",
                   help=f"run only these scenarios (repeatable): {', '.join(SCENARIOS)}")
    p.add_argument("--database-url", default="",
                   help="a PostgreSQL server to create the scenario databases on "
                        "[default: an embedded PostgreSQL]")
    p.add_argument("--tasks", type=int, help="no-op tasks per throughput run [default 20000]")
    p.add_argument("--batch", type=int, help="tasks per POST /api/schedule/batch [default 1000]")
    p.add_argument("--concurrency", type=int, help="slots per worker in the throughput runs "
                   "[default 64]")
    p.add_argument("--workers", type=_ints, help="worker counts of the throughput runs "
                   "[default 1,2,4]")
    p.add_argument("--in-flight", type=int, help="requests one client keeps in flight in the "
                   "overlapped creates [default 16]")
    p.add_argument("--read-rows", type=int, help="tasks stored for the read path [default 1000000]")
    p.add_argument("--load-rates", type=_ints, help="tasks/s of the steady-load runs "
                   "[default 50,200,500]")
    p.add_argument("--load-seconds", type=float, help="seconds of each steady-load run "
                   "[default 20]")
    p.add_argument("--half-rate", type=int, help="tasks/s of the steady-load run that "
                   "measures create-to-start under load, about half of the end-to-end maximum "
                   "[default 2000; 0 = none]")
    p.add_argument("--backlog-tasks", type=int, help="pending tasks of the big-backlog drain "
                   "[default 1000000]")
    p.add_argument("--soak-seconds", type=float, help="seconds of the long load with retention "
                   "[default 300; the issue's hour: 3600]")
    p.add_argument("--soak-rate", type=int, help="tasks/s of the long load [default 500]")
    p.add_argument("--soak-retention", type=float, help="seconds finished tasks and events are "
                   "kept in the long load (TASKMASTER_TASK_RETENTION, _EVENT_RETENTION) "
                   "[default 60]")
    p.add_argument("--peers", choices=["pgqueuer"], action="append",
                   help="compare with a peer queue on the same PostgreSQL (pgqueuer: "
                        "pip install -e '.[bench]'); alone, runs only that comparison")
    p.add_argument("--peer-rounds", type=int, help="interleaved rounds of the peer comparison "
                   "[default 3]")
    p.add_argument("--peer-scale", type=float, help="fraction of the peer comparison's task "
                   "counts, 20,000 and 5,000 [default 1]")
    p.add_argument("--output", type=Path, default=report.RESULTS,
                   help="folder of the results files [default benchmarks/results]")
    p.add_argument("--no-save", action="store_true", help="print only, write no files")
    p.add_argument("--json", action="store_true", help="print the JSON too")
    return p


def options_from(args: argparse.Namespace) -> Options:
    """The scenario options the flags ask for."""
    opts = QUICK if args.quick else Options()
    # every flag is named after its option, but --workers (the throughput runs' counts)
    names = {"throughput_workers": "workers"}
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(Options):
        value = getattr(args, names.get(f.name, f.name), None)
        if value is not None:
            changes[f.name] = value
    return dataclasses.replace(opts, **changes)


async def run(opts: Options, only: Sequence[str] = (), database_url: str = "") -> dict[str, Any]:
    """Run the chosen scenarios (all by default); the results as one dict."""
    names = [n for n in SCENARIOS if not only or n in only]
    # SIGTERM stops the run the way Ctrl-C does: the scenario's stack is stopped and its
    # database dropped, no process is left behind
    main = asyncio.current_task()
    if main is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    # the stacks start many processes: each would compile TaskMaster's sources again where
    # PYTHONDONTWRITEBYTECODE is set (an editable install has no bytecode of its own, a
    # peer installed from PyPI has)
    compileall.compile_dir(os.path.dirname(taskmaster.__file__), quiet=1)
    server = Server(database_url)
    await server.start()
    results: dict[str, Any] = {"machine": {**report.machine(), "postgres": server.version,
                                           "database": "given" if database_url else "embedded"},
                               "options": dataclasses.asdict(opts), "seconds": {}}
    memory: dict[str, float] = {}
    try:
        for name in names:
            sampler = MemorySampler()
            t0 = time.perf_counter()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            try:
                results[name] = await SCENARIOS[name](server, opts, sampler)
            except Exception as exc:  # one broken scenario does not lose the others' figures
                log.exception("scenario %s failed", name)
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            results["seconds"][name] = round(time.perf_counter() - t0, 1)
            results[name]["memory_mb"] = sampler.by_role()
            for role, mb in sampler.by_role().items():
                memory[role] = max(memory.get(role, 0.0), mb)
    finally:
        await server.stop()
    results["memory_mb"] = memory
    results["targets"] = report.targets(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m benchmarks` and `taskmaster bench`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    opts = options_from(args)
    only = list(args.only or ())
    if args.peers and "peers" not in only:
        only.append("peers")
    coro = run(opts, only, args.database_url)
    try:
        try:
            import uvloop

            results = uvloop.run(coro)
        except ImportError:
            results = asyncio.run(coro)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("stopped: the stack of the scenario that ran was stopped, its database dropped",
              file=sys.stderr)
        return 130
    print(report.table(results))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    if not args.no_save:
        path = report.write(results, args.output, latest=not only)
        if only:
            print(f"\nwritten to {path} (latest.json, which the notebooks read, is left to a "
                  "run of every scenario)")
        else:
            print(f"\nwritten to {path} and {path.parent / 'latest.json'}")
    return 0
