"""pgqueuer in one process, as the peer of the `peers` scenario (run as a child process).

    python -m benchmarks.pgq_peer DSN [--batch-size N] [--max-concurrent N]

Runs a no-op entrypoint in pgqueuer's drain mode until the queue is empty, then prints one
JSON line: jobs run, the wall-clock time of the first and the last completion, and the
process's own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

ENTRYPOINT = "noop"


async def _install(dsn: str, jobs: int) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        left = jobs
        while left > 0:  # enqueue in chunks: one statement per chunk
            n = min(left, 5000)
            await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
            left -= n
    finally:
        await conn.close()


async def _drain(dsn: str, batch_size: int, max_concurrent: int | None) -> dict[str, Any]:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(dsn)
    stamps = {"n": 0, "first": 0.0, "last": 0.0}
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        now = time.time()
        if not stamps["n"]:
            stamps["first"] = now
        stamps["n"] += 1
        stamps["last"] = now

    kwargs: dict[str, Any] = {"batch_size": batch_size, "mode": QueueExecutionMode.drain}
    if max_concurrent is not None:
        kwargs["max_concurrent_tasks"] = max_concurrent
    try:
        await qm.run(**kwargs)
    finally:
        await conn.close()
    t = os.times()
    return {**stamps, "cpu_s": t.user + t.system}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pgq_peer")
    p.add_argument("dsn")
    p.add_argument("--install", type=int, metavar="JOBS",
                   help="install pgqueuer's schema and enqueue JOBS no-op jobs, then exit")
    p.add_argument("--batch-size", type=int, default=10, help="pgqueuer's default: 10")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="max_concurrent_tasks [default: pgqueuer's, unbounded]")
    args = p.parse_args()
    if args.install is not None:
        asyncio.run(_install(args.dsn, args.install))
        return 0
    out = asyncio.run(_drain(args.dsn, args.batch_size, args.max_concurrent))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
