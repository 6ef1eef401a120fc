"""The schema snapshot and the migrations build the same database; migrate() is safe to rerun."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from taskmaster.store.db import MIGRATIONS_TABLE, migrate, migrations, snapshot_sql

MakeDb = Callable[[], Awaitable[str]]

# Each query returns rows that describe one kind of schema object in the public schema,
# leaving out the bookkeeping table that only migrate() creates.
CATALOG: dict[str, str] = {
    "columns": f"""
        SELECT table_name, ordinal_position, column_name, data_type, udt_name,
               character_maximum_length, numeric_precision, column_default, is_nullable,
               is_identity, is_generated
        FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name <> '{MIGRATIONS_TABLE}'
        ORDER BY table_name, ordinal_position""",
    "tables": f"""
        SELECT c.relname, c.relkind, c.relpersistence
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND c.relname <> '{MIGRATIONS_TABLE}'
        ORDER BY c.relname""",
    "indexes": f"""
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> '{MIGRATIONS_TABLE}'
        ORDER BY tablename, indexname""",
    "constraints": f"""
        SELECT cl.relname, co.conname, co.contype, pg_get_constraintdef(co.oid) AS def
        FROM pg_constraint co
        JOIN pg_class cl ON cl.oid = co.conrelid
        JOIN pg_namespace n ON n.oid = co.connamespace
        WHERE n.nspname = 'public' AND cl.relname <> '{MIGRATIONS_TABLE}'
        ORDER BY cl.relname, co.conname""",
    "triggers": """
        SELECT cl.relname, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid) AS def
        FROM pg_trigger t
        JOIN pg_class cl ON cl.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal
        ORDER BY cl.relname, t.tgname""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
               pg_get_functiondef(p.oid) AS def
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'
        ORDER BY p.proname, args""",
    "sequences": """
        SELECT sequence_name, data_type, start_value, minimum_value, maximum_value, increment
        FROM information_schema.sequences
        WHERE sequence_schema = 'public'
        ORDER BY sequence_name""",
    "extensions": "SELECT extname FROM pg_extension ORDER BY extname",
}


async def describe(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every catalog query's rows for the database at url."""
    conn = await asyncpg.connect(url)
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)] for name, sql in CATALOG.items()}
    finally:
        await conn.close()


async def from_snapshot(empty_database: MakeDb) -> str:
    """A database built by running schema.sql."""
    url = await empty_database()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(snapshot_sql())
    finally:
        await conn.close()
    return url


async def from_migrations(empty_database: MakeDb) -> str:
    """A database built by migrate()."""
    url = await empty_database()
    conn = await asyncpg.connect(url)
    try:
        assert await migrate(conn) == [v for v, _, _ in migrations()]
    finally:
        await conn.close()
    return url


def schema_diff(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]]) -> dict:
    """{kind: (only in a, only in b)} for every kind of object that differs."""
    out = {}
    for kind in CATALOG:
        left, right = set(a[kind]), set(b[kind])
        if left != right or a[kind] != b[kind]:
            out[kind] = (sorted(left - right, key=repr), sorted(right - left, key=repr))
    return out


async def test_snapshot_equals_migrations(empty_database: MakeDb) -> None:
    snap = await describe(await from_snapshot(empty_database))
    migr = await describe(await from_migrations(empty_database))
    assert snap["columns"], "the snapshot created no table"
    for kind in ("indexes", "constraints", "triggers", "functions", "sequences"):
        assert snap[kind], f"no {kind} found: the catalog query is wrong"
    assert schema_diff(snap, migr) == {}


async def test_the_comparison_notices_a_difference(empty_database: MakeDb) -> None:
    snap_url = await from_snapshot(empty_database)
    migr = await describe(await from_migrations(empty_database))
    conn = await asyncpg.connect(snap_url)
    try:
        await conn.execute("""
            ALTER TABLE tasks ALTER COLUMN priority SET DEFAULT 1;
            CREATE INDEX tasks_extra_idx ON tasks (command);
            ALTER TABLE workers ADD CONSTRAINT pid_positive CHECK (pid >= 0);
            CREATE OR REPLACE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RETURN NULL; END $$;
            DROP TRIGGER tasks_counted_delete ON tasks;
        """)
    finally:
        await conn.close()
    diff = schema_diff(await describe(snap_url), migr)
    assert set(diff) == {"columns", "indexes", "constraints", "functions", "triggers"}


async def test_migrations_are_numbered_without_gaps() -> None:
    versions = [v for v, _, _ in migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert all(sql.strip() for _, _, sql in migrations())


async def test_migrate_twice_is_a_no_op(empty_database: MakeDb) -> None:
    url = await from_migrations(empty_database)
    before = await describe(url)
    conn = await asyncpg.connect(url)
    try:
        recorded = await conn.fetch(f"SELECT version, applied_at FROM {MIGRATIONS_TABLE}")
        assert await migrate(conn) == []
        assert await conn.fetch(f"SELECT version, applied_at FROM {MIGRATIONS_TABLE}") == recorded
        builtin = await conn.fetchval("SELECT count(*) FROM commands")
    finally:
        await conn.close()
    assert [r["version"] for r in recorded] == [v for v, _, _ in migrations()]
    assert builtin > 0
    assert await describe(url) == before


async def test_concurrent_migrate_is_safe(empty_database: MakeDb) -> None:
    url = await empty_database()
    conns = [await asyncpg.connect(url) for _ in range(3)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*(migrate(c) for c in conns)), 30)
        versions = await conns[0].fetch(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY 1")
        # the advisory lock is released: a later migrator does not wait
        assert await asyncio.wait_for(migrate(conns[1]), 5) == []
    finally:
        for c in conns:
            await c.close()
    expected = [v for v, _, _ in migrations()]
    assert sorted(v for r in results for v in r) == expected
    assert sum(1 for r in results if r) == 1
    assert [r["version"] for r in versions] == expected
    snap = await describe(await from_snapshot(empty_database))
    assert schema_diff(snap, await describe(url)) == {}


async def test_a_failed_migration_leaves_nothing_behind(empty_database: MakeDb) -> None:
    url = await empty_database()
    conn = await asyncpg.connect(url)
    try:
        # a table in the way makes the first migration fail half way through
        await conn.execute("CREATE TABLE events (x int)")
        try:
            await migrate(conn)
        except asyncpg.DuplicateTableError:
            pass
        else:
            raise AssertionError("migrate() over a conflicting table should fail")
        assert await conn.fetchval(f"SELECT count(*) FROM {MIGRATIONS_TABLE}") == 0
        assert await conn.fetchval("SELECT to_regclass('tasks')") is None
        # and the lock was released
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        )
        assert held == 0
    finally:
        await conn.close()
