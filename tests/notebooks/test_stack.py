"""The lab bench's connect(): a stack of the notebook's own, the demo's stack over HTTP,
and no leftovers.

Real processes, real PostgreSQL, real sockets: the same paths the notebooks take.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import asyncpg
import pytest

from taskmaster.cluster.base import pid_alive as alive
from taskmaster.lab import connect
from taskmaster.store import database_name
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


async def database_exists(admin_url: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def scratch_databases(admin_url: str) -> set[str]:
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'tm_scratch_%'")
        return {r["datname"] for r in rows}
    finally:
        await conn.close()


async def test_own_stack_and_the_demo_stack_through_its_url(
    admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on a database server: the stack gets a database of its own, dropped at close
    monkeypatch.setenv("TASKMASTER_DATABASE_URL", admin_url)
    monkeypatch.setenv("TASKMASTER_URL", "http://127.0.0.1:1")  # nobody answers there
    # with an API token, which the panels' client must present for every call
    monkeypatch.setenv("TASKMASTER_API_TOKEN", "notebook-secret")
    own = await connect(workers=1)
    pids: list[int | None] = []
    try:
        assert own.owned and own.home is not None and own.home.is_dir()
        name = database_name(own.database_url)
        assert name.startswith("tm_nb_") and await database_exists(admin_url, name)
        members = await own.members()
        assert list(members["role"]) == ["database", "coordinator", "scheduler", "worker"]
        assert own.cluster is not None

        # the panels drive even a stack started here over HTTP: its scheduler's /api/pool
        assert own.pool is own.client
        dash = await own.dashboard()
        assert dash.controls.pool is own.client
        dash.controls.slider.value = 2
        dash.controls.scale_button.click()
        await dash.controls.wait()
        assert dash.controls.toast_text == "Scaling to 2 workers"
        await own.wait_workers(2)
        dash.controls.kill_worker("worker-2")
        await dash.controls.wait()
        assert dash.controls.toast_text == "Killed (SIGKILL) worker-2"
        await own.wait_workers(1)
        states = {m["name"]: m["state"] for m in (await own.client.pool())["members"]}
        assert states["worker-2"] == "exited(-9)" and states["worker-1"] == "running"
        await dash.stop()

        # a scratch database of the same server: migrated, then dropped
        before = await scratch_databases(admin_url)
        async with own.scratch_store() as store:
            scratch = await scratch_databases(admin_url) - before
            assert len(scratch) == 1 and await store.get_task(uuid.uuid4()) is None
        assert not scratch & await scratch_databases(admin_url)

        # what a notebook does inside `taskmaster demo`: TASKMASTER_URL names a live stack
        monkeypatch.setenv("TASKMASTER_URL", own.url)
        demo = await connect(workers=2)  # scales the demo's pool through /api/pool
        assert not demo.owned and demo.pool is demo.client and demo.url == own.url
        assert [w["name"] for w in await own.online_workers()] == ["worker-1", "worker-2"]
        with pytest.raises(RuntimeError, match="connect\\(own=True\\)"):
            await demo.use_strategy("random")
        await demo.close()  # only its client: the stack goes on
        assert await own.client.readyz()
    finally:
        if own.cluster is not None:  # every process it ran, workers started later included
            pids += [m.pid for m in own.cluster.members.values()]
        await own.close()
    assert not own.home.exists()
    assert not any(alive(p) for p in pids if p is not None)
    assert not await database_exists(admin_url, name)
    assert own._watchdog is not None and own._watchdog.returncode is not None


KILLED_KERNEL = textwrap.dedent("""
    import asyncio, os
    from taskmaster.lab import connect

    async def main():
        stack = await connect(workers=1)
        pids = [m.pid for m in stack.cluster.members.values()]
        postmaster = (stack.home / "pgdata" / "postmaster.pid").read_text().split()[0]
        print(stack.home, postmaster, *pids, flush=True)
        os.kill(os.getpid(), 9)  # like nbval stopping a kernel: no close(), no atexit

    asyncio.run(main())
""")


async def test_a_killed_kernel_leaves_nothing_behind() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_KERNEL, stdout=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == -9, out
    home, postgres, *pids = out.decode().split()
    assert len(pids) == 3 and alive(int(postgres))
    await wait_for(lambda: not Path(home).exists(), 30, interval=0.1,
                   message="the watchdog to remove the home")
    await wait_for(lambda: not any(alive(int(p)) for p in [postgres, *pids]), 10, interval=0.1,
                   message="the members and the embedded PostgreSQL to end")
