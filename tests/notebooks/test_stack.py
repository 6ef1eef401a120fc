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
import nbformat
import pytest
from nbclient import NotebookClient

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
        assert dash.controls.toast_text == "Scaled to 2 workers: 1 started, all online"
        await own.wait_workers(2)
        dash.controls.kill_worker("worker-2")
        await dash.controls.wait()
        assert dash.controls.toast_text == (
            "Killed worker-2 (SIGKILL): its tasks go back to the queue")
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


ROOT = Path(__file__).resolve().parents[2]


async def run_notebook(path: Path, workdir: Path) -> nbformat.NotebookNode:
    """Execute a notebook in a fresh kernel (as JupyterLab's run-all does); the executed
    notebook, or CellExecutionError naming the failing cell."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=150, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    await client.async_execute()
    return nb


async def test_a_notebook_runs_on_the_demo_stack_after_arbitrary_kills(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Off the script: workers killed and scaled from the dashboard before 05_resilience
    runs. connect(workers=3) restores three online workers by starting or stopping them;
    the notebook depends on no worker's name."""
    demo = await connect(workers=3, own=True)
    try:
        pool = demo.client
        await pool.kill_worker("worker-2")  # the name the notebook used to depend on
        await pool.scale(5)                 # brings worker-2 back, starts 4 and 5
        await demo.wait_workers(5)
        for name in ("worker-2", "worker-1"):
            await pool.kill_worker(name)
        await demo.wait_workers(3)
        # left over from the last demo: tasks still running
        await pool.schedule_batch("sleep", 2, payload={"seconds": 60})
        monkeypatch.setenv("TASKMASTER_URL", demo.url)
        monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout
        nb = await run_notebook(ROOT / "notebooks" / "05_resilience.ipynb", tmp_path)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "error"]
        assert not errors
        printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                          for o in c.outputs)
        assert "50 tasks: 50 completed exactly once, 0 lost" in printed
        assert len(await demo.online_workers()) == 3  # the notebook scaled back to 3
        names = [w["name"] for w in await pool.workers()]
        assert len(names) == len(set(names))  # one row per name, whatever happened
    finally:
        await demo.close()


async def test_connect_can_reset_the_demo_stack_first(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = await connect(workers=2, own=True)
    try:
        await demo.client.schedule_batch("sleep", 5, payload={"seconds": 30})
        await demo.client.wait_until(lambda s: s["running"] == 2)
        await demo.client.kill_worker("worker-1")
        monkeypatch.setenv("TASKMASTER_URL", demo.url)
        notebook = await connect(workers=2, reset=True)  # what a notebook would run
        try:
            stats = await notebook.client.stats()
            assert (stats["total"], stats["pending"], stats["running"]) == (0, 0, 0)
            assert stats["workers_online"] == 2
            assert [w["name"] for w in await notebook.client.workers()] == [
                "worker-1", "worker-2"]
        finally:
            await notebook.close()
    finally:
        await demo.close()
