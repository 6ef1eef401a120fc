"""The `taskmaster` command as users run it: --help everywhere naming the TASKMASTER_*
variables, and `taskmaster db migrate` creating and migrating a database."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
from collections.abc import AsyncIterator

import asyncpg
import pytest

from taskmaster.cli import build_parser
from taskmaster.config import Settings
from taskmaster.store.db import migrations, with_database
from tests.conftest import unique_name

SETTINGS = {f for f in Settings.__dataclass_fields__}


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                  ) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every runnable sub-command and its parser."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(leaf_commands(sub, (*prefix, name)))
    return out or {prefix: parser}


async def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60
              ) -> tuple[int, str, str]:
    """Run the installed `taskmaster` script; (exit code, stdout, stderr)."""
    script = shutil.which("taskmaster")
    assert script, "the taskmaster console script is not installed (pip install -e .)"
    proc = await asyncio.create_subprocess_exec(
        script, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_top_level_help_lists_the_commands() -> None:
    code, out, _ = await run("--help")
    assert code == 0
    for command in ("up", "scheduler", "coordinator", "worker", "db", "status"):
        assert command in out


CORE = [("up",), ("scheduler",), ("coordinator",), ("worker",), ("db", "migrate"), ("status",)]


def variables_of(parser: argparse.ArgumentParser) -> list[str]:
    """The TASKMASTER_* variables behind a command's options."""
    return [f"TASKMASTER_{a.dest.upper()}" for a in parser._actions
            if a.dest in SETTINGS and a.option_strings]


async def test_every_command_help_names_its_variables() -> None:
    commands = leaf_commands(build_parser())
    assert set(CORE) <= set(commands)
    # the core commands through the installed script, the others through the same parser
    results = await asyncio.gather(*(run(*path, "--help") for path in CORE))
    for path, (code, out, err) in zip(CORE, results, strict=True):
        assert code == 0, (path, err)
        assert variables_of(commands[path]), path
        for variable in variables_of(commands[path]):
            assert variable in out, (path, variable)
    for path, parser in commands.items():
        text = parser.format_help()
        for variable in variables_of(parser):
            assert variable in text, (path, variable)
    up_help = results[0][1]
    assert "TASKMASTER_DATABASE_URL" in up_help and "--workers" in up_help


async def test_no_command_is_a_usage_error() -> None:
    code, _, err = await run()
    assert code == 2 and "usage: taskmaster" in err


@pytest.fixture
async def fresh_database_url(admin_url: str) -> AsyncIterator[str]:
    """The URL of a database that does not exist yet (dropped after the test)."""
    name = unique_name("tm_cli")
    try:
        yield with_database(admin_url, name)
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def test_db_migrate_creates_the_database_then_has_nothing_to_do(
    fresh_database_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    env["TASKMASTER_DATABASE_URL"] = fresh_database_url
    code, out, err = await run("db", "migrate", env=env)
    assert code == 0, err
    every = [v for v, _, _ in migrations()]
    assert f"applied migrations: {every}" in out

    conn = await asyncpg.connect(fresh_database_url)
    try:
        applied = [r["version"] for r in
                   await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
        assert applied == every
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 0
    finally:
        await conn.close()

    code, out, err = await run("db", "migrate", "--database-url", fresh_database_url, env=env)
    assert code == 0, err
    assert "schema is up to date" in out
