"""How much a run wrote: the WAL position and the rows of the tasks and events tables.

`pg_current_wal_lsn()` moves with every byte of write-ahead log, at once (the statistics
views are flushed with a delay), so the difference of two readings is exactly what the
database wrote in between, for every database of its server.
"""

from __future__ import annotations

import asyncpg


async def write_activity(url: str) -> dict[str, int]:
    """{"wal_bytes": position of the WAL, "tasks": rows, "events": rows} of the database."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS wal_bytes,"
            " (SELECT count(*) FROM tasks) AS tasks, (SELECT count(*) FROM events) AS events")
    finally:
        await conn.close()
    assert row is not None
    return {"wal_bytes": int(row["wal_bytes"]), "tasks": int(row["tasks"]),
            "events": int(row["events"])}
