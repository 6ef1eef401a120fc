"""What the security and limits tests share: the row counts that must not move."""

from __future__ import annotations

import asyncpg

TABLES = ("tasks", "events", "workers", "task_counts", "commands")


async def table_counts(database_url: str) -> dict[str, int]:
    """Rows in every table that an API call could change."""
    conn = await asyncpg.connect(database_url)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
    finally:
        await conn.close()
