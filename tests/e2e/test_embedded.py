"""The zero-setup default: with no TASKMASTER_DATABASE_URL, `taskmaster up` starts its own
PostgreSQL under TASKMASTER_HOME, completes tasks, and stops everything on Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import CHILD_ENV, workers_online
from tests.helpers import wait_for


def alive(pid: int) -> bool:
    """True while a process of that id exists (and is not a zombie of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


@pytest.mark.slow
async def test_up_without_a_database_url_runs_on_an_embedded_postgresql(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    env.update(CHILD_ENV, TASKMASTER_HOME=str(home), TASKMASTER_METRICS_PORT="0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "up", "--workers", "2",
        "--scheduler-port", "0", "--coordinator-port", "0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    output: list[str] = []
    try:
        url = ""
        while not url:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, "taskmaster up exited early:\n" + "".join(output)
            output.append(line)
            found = re.search(r"TaskMaster is up: API (http://\S+)", line)
            url = found.group(1) if found else ""
        assert "embedded PostgreSQL" in output[-1]
        await workers_online(url, 2)

        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/api/schedule/batch",
                                 json={"command": "noop", "count": 5}) as resp:
                assert resp.status == 201

            async def all_done() -> bool:
                async with http.get(url + "/api/stats") as resp:
                    return (await resp.json())["completed"] == 5

            await wait_for(all_done, 30, message="5 tasks on the embedded database")

        stack = json.loads((home / "stack.json").read_text())
        pids = [m["pid"] for m in stack["members"] if m["pid"]]
        assert len(pids) == 4  # coordinator, scheduler, 2 workers
        assert (home / "pgdata" / "PG_VERSION").exists()
        assert (home / "pgdata" / "postmaster.pid").exists()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest = await asyncio.wait_for(proc.stdout.read(), 60)
        output.append(rest.decode())
        await asyncio.wait_for(proc.wait(), 30)

    text = "".join(output)
    assert proc.returncode == 0, text
    assert "stopped." in text
    assert not [p for p in pids if alive(p)], "children outlived `taskmaster up`"
    await wait_for(lambda: not (home / "pgdata" / "postmaster.pid").exists(), 30,
                   message="the embedded PostgreSQL to stop")
    assert not (home / "stack.json").exists()
