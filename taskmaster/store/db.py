"""Connections, database creation and migrations."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb to Python values on every connection."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration, in order."""
    folder = resources.files("taskmaster.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001, 0002, ... without gaps: {versions}")
    return found


def snapshot_sql() -> str:
    """The schema snapshot (what all migrations add up to)."""
    return resources.files("taskmaster.store").joinpath("schema.sql").read_text()


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the migrations not yet applied, each in its own transaction; return them."""
    # one migrator at a time, whichever component starts first
    await conn.execute("SELECT pg_advisory_lock(7426001)")
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {MIGRATIONS_TABLE}")}
        applied = []
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)", version, name
                )
            log.info("applied migration %04d_%s", version, name)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(7426001)")


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def database_name(url: str) -> str:
    """The database a URL names (postgres when it names none)."""
    return urlsplit(url).path.lstrip("/") or "postgres"


async def ensure_database(url: str) -> None:
    """Create the database the URL names if the server does not have it yet."""
    name = database_name(url)
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        log.info("created database %s", name)
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await admin.close()


async def drop_database(url: str) -> None:
    """Drop the database the URL names, closing whatever is still connected to it."""
    admin = await asyncpg.connect(with_database(url, "postgres"), timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')
    finally:
        await admin.close()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset: no code sets session state on a pooled connection."""


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, custom_plans: bool = False, **kw: Any
) -> asyncpg.Pool:
    """An asyncpg pool with our codecs.

    custom_plans: for the pool that runs big batch statements (the coordinator's bulk
    pool, store.BULK_ROWS). asyncpg prepares every statement, and after five runs
    PostgreSQL may switch a prepared statement to a generic plan, made without the
    parameter values. For the report statement, whose parameters are arrays of hundreds
    of rows, that plan cost 5-8 times the PostgreSQL CPU of the plan made for the actual
    arrays (docs/performance.md). Planning each run costs ~0.5-1 ms a statement: nothing
    for a batch of hundreds, too much for a report of one task.
    """
    if custom_plans:
        kw["server_settings"] = {**kw.get("server_settings", {}),
                                 "plan_cache_mode": "force_custom_plan"}
    # asyncpg's default reset runs a query (UNLISTEN, RESET ALL, ...) on every release: a
    # second round trip for each statement we send
    kw.setdefault("reset", _keep_session)
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=init_connection, **kw
    )
    assert pool is not None
    return pool


async def close_pool(pool: asyncpg.Pool, timeout: float = 5.0) -> None:
    """Close a pool, waiting at most `timeout` for connections still checked out; past
    that they are terminated (a stopping process must not hang on a lost connection)."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        log.warning("connections still in use after %.0fs; terminated them", timeout)


async def prepare(url: str) -> list[int]:
    """Create the database if missing and bring its schema up to date; the migrations
    applied now."""
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
