"""A coordinator cut off from PostgreSQL while its workers can still reach it: it cannot
commit, so it sends them away, and they move to a coordinator that can. The cut-off one
runs in a network namespace of its own; PostgreSQL is cut by a blackhole route inside it,
which leaves the workers' streams to it untouched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmaster.cluster.local import free_port
from tests.chaos.harness import (
    CHILD_ENV,
    FAST,
    ROOT,
    Feed,
    Postgres,
    StackFactory,
    assert_exactly_once,
)
from tests.chaos.netns import Namespace, ip
from tests.helpers import wait_for

pytestmark = pytest.mark.chaos


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    ns = Namespace.create()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def reachable_postgres(namespace: Namespace) -> Iterator[tuple[Postgres, str]]:
    """A PostgreSQL of this test's own, reached from the namespace at an address of the host
    (its own /32 on the host's end of the veth, routed in the namespace): (server, address)."""
    address = f"10.201.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    ip("addr", "add", f"{address}/32", "dev", namespace.host)
    namespace.run("ip", "route", "add", f"{address}/32", "via", namespace.host_ip)
    folder = Path(tempfile.mkdtemp(prefix="tm-chaos-pg-"))
    pg = Postgres(folder, free_port())
    try:
        pg.init()
        pg.allow(address, namespace.inner_ip)
        pg.start()
        yield pg, address
    finally:
        if pg.running():
            with contextlib.suppress(AssertionError):
                pg.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


def env_of(database_url: str, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    env.update({f"TASKMASTER_{k.upper()}": str(v) for k, v in FAST.items()})
    env.update(CHILD_ENV)
    env.update({"TASKMASTER_DATABASE_URL": database_url, "TASKMASTER_COORDINATOR_NAME": name,
                "PYTHONUNBUFFERED": "1"})
    return env


async def test_a_coordinator_cut_off_from_postgres_sends_its_workers_to_another(
    stack: StackFactory, namespace: Namespace, reachable_postgres: tuple[Postgres, str],
    tmp_path: Path,
) -> None:
    pg, pg_address = reachable_postgres
    s = await stack(database=pg.url, workers=0)
    port = free_port()
    far_url = pg.url.replace("127.0.0.1", pg_address)
    log = (tmp_path / "cut-off.log").open("wb")
    far = await asyncio.create_subprocess_exec(
        *namespace.prefix(), sys.executable, "-m", "taskmaster", "coordinator",
        "--host", namespace.inner_ip, "--port", str(port),
        env=env_of(far_url, "cut-off"), stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=ROOT)
    workers: list[asyncio.subprocess.Process] = []
    try:
        async def far_is_up() -> bool:
            assert far.returncode is None, (tmp_path / "cut-off.log").read_text()
            rows = await s.fetch("SELECT 1 FROM coordinators WHERE name = 'cut-off'")
            return bool(rows)

        await wait_for(far_is_up, 30, message="the coordinator in the namespace")
        # the workers know both coordinators; with the other one stopped, all join the far one
        await s.cluster.coordinator("stop")
        targets = f"{namespace.inner_ip}:{port},{s.cluster.coordinator_address}"
        for i in range(3):
            workers.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "taskmaster", "worker", "--coordinator", targets,
                "--name", f"mover-{i + 1}", "--concurrency", "2",
                env=env_of(pg.url, ""), stdout=log, stderr=asyncio.subprocess.STDOUT))
        await wait_for(lambda: _held_by(s, "cut-off", 3), 30, message="3 workers on the far one")
        await s.cluster.coordinator("start")
        await wait_for(lambda: _coordinators(s, 2), 30, message="both coordinators up")

        async with Feed(s.url) as feed:
            await wait_for(lambda: feed.connects, 10, message="the SSE feed")
            ids = await s.batch("chaos-sleep", 150, {"seconds": 0.2})
            await wait_for(lambda: _running(s, 3), 20, message="tasks running on the movers")

            # PostgreSQL goes dark for the far coordinator only
            namespace.run("ip", "route", "replace", "blackhole", f"{pg_address}/32")
            await wait_for(lambda: _held_by(s, "coordinator", 3), 30,
                           message="the workers to move to the coordinator that can commit")
            await s.wait_completed(ids, timeout=90)
            attempts = await assert_exactly_once(s, feed, ids)
        assert max(attempts.values()) <= 3
        text = (tmp_path / "cut-off.log").read_text()
        assert "PostgreSQL has not answered" in text, text[-3000:]
    finally:
        for p in [*workers, far]:
            if p.returncode is None:
                p.send_signal(signal.SIGKILL)
                await p.wait()
        log.close()


async def _held_by(s: object, name: str, n: int) -> bool:
    rows = await s.fetch(  # type: ignore[attr-defined]
        "SELECT count(*) AS n FROM workers w JOIN coordinators c ON c.id = w.coordinator_id "
        "WHERE w.status = 'online' AND c.name = $1 AND w.name LIKE 'mover-%'", name)
    return int(rows[0]["n"]) == n


async def _coordinators(s: object, n: int) -> bool:
    rows = await s.fetch(  # type: ignore[attr-defined]
        "SELECT count(*) AS n FROM coordinators WHERE lease_expires_at > now()")
    return int(rows[0]["n"]) >= n


async def _running(s: object, n: int) -> bool:
    rows = await s.fetch(  # type: ignore[attr-defined]
        "SELECT count(*) AS n FROM tasks WHERE status = 'running'")
    return int(rows[0]["n"]) >= n
