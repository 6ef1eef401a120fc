"""Fixtures of the chaos tier: stacks on the test's database, a throwaway PostgreSQL."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmaster.cluster.local import free_port
from tests.chaos.harness import Postgres, Stack, StackFactory, start_stack


@pytest.fixture
async def stack(request: pytest.FixtureRequest, database_url: str,
                tmp_path: Path) -> AsyncIterator[StackFactory]:
    """A factory of running stacks (on this test's database unless told), stopped after."""
    made: list[Stack] = []

    async def make(database: str | None = None, **options: Any) -> Stack:
        s = await start_stack(tmp_path, database or database_url, **options)
        made.append(s)
        return s

    yield make
    report = getattr(request.node, "rep_call", None)
    for s in made:
        if report is not None and report.failed:
            print(s.logs())  # shown with the failure
        await s.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can print logs after a failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def throwaway_postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster started for this test only (never the machine's shared server)."""
    folder = Path(tempfile.mkdtemp(prefix="tm-chaos-pg-"))
    pg = Postgres(folder, free_port())
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        if pg.running():
            with contextlib.suppress(AssertionError):
                pg.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
