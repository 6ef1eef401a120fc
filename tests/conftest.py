"""Shared fixtures: a clean environment and per-test PostgreSQL databases.

Every test that needs PostgreSQL gets its own database, cloned from a template that is
created and migrated once per session, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import secrets
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from taskmaster.cluster.base import pid_alive
from taskmaster.store import Store, create_pool, migrate
from taskmaster.store.db import with_database

# Read before the autouse fixture below clears every TASKMASTER_* variable.
ADMIN_URL = os.environ.get(
    "TASKMASTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# The pool-token files of the stacks the tests start (and kill) go to a folder of this run,
# not the user's ~/.config (taskmaster.tokens reads XDG_CONFIG_HOME); every process the
# tests start, kernels included, inherits it.
if "TASKMASTER_TEST_KEEP_CONFIG_HOME" not in os.environ:
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="taskmaster-test-config-")

# tm_<kind>_<pid>_<hex>, as made by unique_name()
LEFTOVER = re.compile(r"^tm_(?:tpl|test|empty)_(\d+)_[0-9a-f]{8}$")

HOW_TO_START = (
    "The integration tests need a PostgreSQL server where they may create databases.\n"
    "Start the machine's server (`pg_ctlcluster 15 main start`, or `service postgresql start`),\n"
    "or run one with `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`,\n"
    "or point TASKMASTER_TEST_DATABASE_URL at one (default "
    "postgresql://postgres@127.0.0.1:5432/postgres)."
)


def unique_name(prefix: str) -> str:
    """A database name no other test run uses."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


async def admin_connect() -> asyncpg.Connection:
    """A connection to the admin database of the test server."""
    return await asyncpg.connect(ADMIN_URL, timeout=10)


async def drop_database(name: str) -> None:
    """Drop a test database, closing whatever is still connected to it."""
    conn = await admin_connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def create_database(name: str, template: str = "template0") -> str:
    """Create a database (a clone of template) and return its URL."""
    conn = await admin_connect()
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return with_database(ADMIN_URL, name)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test depends on the TASKMASTER_* variables of whoever runs it."""
    for name in list(os.environ):
        if name.startswith("TASKMASTER_"):
            monkeypatch.delenv(name)


def dump_asyncio_tasks(out: object = None) -> None:
    """Print the stack of every unfinished asyncio task (of any loop) to stderr."""
    stream = out or sys.stderr
    tasks = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]
    print(f"\n==== {len(tasks)} unfinished asyncio tasks ====", file=stream)
    for task in tasks:
        print(f"---- {task.get_name()}: {task.get_coro()!r}", file=stream)
        with contextlib.suppress(Exception):
            task.print_stack(file=stream)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _hang_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test still running shortly before pytest-timeout stops it prints where every
    asyncio task waits (the timeout itself shows only threads)."""
    limit = float(request.config.getini("timeout") or 0)
    marker = request.node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        limit = float(marker.args[0])
    if limit <= 30:
        yield
        return
    timer = threading.Timer(limit - 15, dump_asyncio_tasks)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.fixture(scope="session")
def admin_url() -> str:
    """The URL of the test server's admin database, checked to be reachable."""

    async def check() -> None:
        conn = await admin_connect()
        await conn.close()
        await drop_leftovers()

    try:
        asyncio.run(check())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        problem = f"PostgreSQL is not reachable at {ADMIN_URL}: {exc!r}"
    else:
        return ADMIN_URL
    pytest.fail(f"{problem}\n{HOW_TO_START}", pytrace=False)


async def drop_leftovers() -> None:
    """Drop the test databases of test runs on this machine that died before cleaning up."""
    if urlsplit(ADMIN_URL).hostname not in (None, "", "127.0.0.1", "localhost", "::1"):
        return  # a shared server: the pids in the names may be another machine's
    conn = await admin_connect()
    try:
        names = [r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")]
    finally:
        await conn.close()
    for name in names:
        m = LEFTOVER.match(name)
        if m and not pid_alive(int(m.group(1))):
            with contextlib.suppress(asyncpg.PostgresError):  # not ours to drop, or gone
                await drop_database(name)


@pytest.fixture(scope="session")
def template_database(admin_url: str) -> Iterator[str]:
    """A database migrated once per session; every test database is a clone of it."""
    name = unique_name("tm_tpl")

    async def build() -> None:
        url = await create_database(name)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    try:
        yield name
    finally:
        asyncio.run(drop_database(name))


@pytest.fixture
async def database_url(template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own (dropped after)."""
    name = unique_name("tm_test")
    url = await create_database(name, template_database)
    try:
        yield url
    finally:
        await drop_database(name)


@pytest.fixture
async def empty_database(admin_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """A factory of empty (unmigrated) databases, all dropped after the test."""
    names: list[str] = []

    async def make() -> str:
        name = unique_name("tm_empty")
        names.append(name)
        return await create_database(name)

    try:
        yield make
    finally:
        for name in names:
            await drop_database(name)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool (with the store's codecs) on this test's database."""
    p = await create_pool(database_url, min_size=1, max_size=10)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def store(pool: asyncpg.Pool) -> Store:
    """A Store on this test's database."""
    return Store(pool)
