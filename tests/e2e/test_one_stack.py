"""One stack per address, and the CLI from anywhere: what a presenter meets off-script.

A `taskmaster up` runs (the fixture of test_cluster_cli). A second `taskmaster up` on its
ports, or in its home, is refused at once, names the running stack and how to start a
second one, and changes nothing of the first. The control commands work from any folder
through the scheduler's address. Worker names stay one row each across scaling; a worker
can be killed by its id. A component that cannot bind its port fails loudly instead of
being restarted forever.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskmaster.cluster import local
from taskmaster.cluster.local import LocalCluster, free_port
from taskmaster.cluster.preflight import StackConflict
from taskmaster.errors import EXIT_CANNOT_LISTEN
from taskmaster.tokens import POOL_TOKEN_HEADER, find_pool_token
from tests.e2e.conftest import CHILD_ENV, stack_settings
from tests.e2e.up import Stack, run_cli, stack_env
from tests.helpers import wait_for

REFUSAL_DEADLINE = 10.0  # seconds a refused `taskmaster up` may take, imports included


def _ports(stack: Stack) -> tuple[str, str]:
    return stack.url.rsplit(":", 1)[1], str(stack.info["coordinator"]).rsplit(":", 1)[1]


async def _up(env: dict[str, str], *args: str, cwd: Path | None = None) -> tuple[int, str]:
    """`taskmaster up ARGS` expected to be refused: its exit code and output, within the
    deadline (a hang fails the test)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "up", "--workers", "2", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), REFUSAL_DEADLINE)
    except TimeoutError:
        proc.send_signal(signal.SIGINT)
        out, _ = await proc.communicate()
        pytest.fail(f"a second `taskmaster up` was not refused within {REFUSAL_DEADLINE:g}s:\n"
                    f"{out.decode()}")
    return proc.returncode or 0, out.decode()


async def test_a_second_up_is_refused_and_the_first_stack_keeps_working(
        stack: Stack, tmp_path: Path) -> None:
    sched_port, coord_port = _ports(stack)
    file_before = (stack.home / "stack.json").read_text()
    rows_before = len(await stack.get("/api/workers?history=true"))

    # another folder, the same ports: the README's tour beside a running demo
    other = tmp_path / "other"
    other.mkdir()
    code, out = await _up(stack_env(other / ".taskmaster", stack.database_url),
                          "--scheduler-port", sched_port, "--coordinator-port", coord_port,
                          cwd=other)
    assert code != 0, out
    assert f"127.0.0.1:{sched_port} (the scheduler's)" in out
    assert str(stack.home) in out and stack.url in out  # which stack is there
    assert "taskmaster ps" in out and "--scheduler-port" in out  # how to reach it, or start beside
    assert "TaskMaster is up" not in out
    assert not (other / ".taskmaster" / "stack.json").exists()

    # the same home, free ports: its home names a live stack
    code, out = await _up(stack.env, "--scheduler-port", "0", "--coordinator-port", "0")
    assert code != 0, out
    assert f"{stack.home} is the home of a running stack" in out and "--home" in out

    # nothing of the first stack was touched, and it works as before
    assert (stack.home / "stack.json").read_text() == file_before
    assert len(await stack.get("/api/workers?history=true")) == rows_before
    members = await stack.members()
    assert [n for n, m in members.items() if m["state"] == "running"] == [
        "coordinator", "scheduler", "worker-1", "worker-2", "worker-3"]
    created = await stack.post("/api/schedule/batch", {"command": "noop", "count": 30})
    await wait_for(lambda: _completed_at_least(stack, 30), 20, message="30 tasks done")
    assert created["created"] == 30
    _, out = await stack.cli("scale", "2")
    assert "workers online: 2/2" in out


async def _completed_at_least(stack: Stack, n: int) -> bool:
    return await stack.completed() >= n


def _elsewhere(stack: Stack, folder: Path) -> dict[str, str]:
    """The environment of a terminal in another folder: no TASKMASTER_HOME, only the
    scheduler's address."""
    env = {k: v for k, v in stack.env.items() if k != "TASKMASTER_HOME"}
    env["TASKMASTER_URL"] = stack.url
    return env


async def _cli_in(folder: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", *args, env=env, cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, out.decode()


async def test_ps_scale_and_kill_work_from_another_folder(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = _elsewhere(stack, folder)
    code, out = await _cli_in(folder, env, "ps")
    assert code == 0, out
    assert "worker-3" in out and f"scheduler {stack.url}" in out

    code, out = await _cli_in(folder, env, "scale", "1")
    assert code == 0 and "workers online: 1/1" in out, out
    code, out = await _cli_in(folder, env, "scale", "3")
    assert code == 0 and "workers online: 3/3" in out, out
    code, out = await _cli_in(folder, env, "kill", "worker-2")
    assert code == 0 and "worker-2: exited(-9)" in out, out
    code, out = await _cli_in(folder, env, "coordinator-restart")
    assert code == 0 and "coordinator back" in out, out
    assert not (folder / ".taskmaster").exists()  # it looked, it left nothing

    # with nothing to find, it says what it tried and what to do
    lost = {k: v for k, v in env.items() if k != "TASKMASTER_URL"}
    lost["TASKMASTER_SCHEDULER_PORT"] = str(free_port())
    code, out = await _cli_in(folder, lost, "ps")
    assert code == 1
    assert "no running stack found: nothing answers at" in out and "TASKMASTER_URL" in out


async def test_worker_names_stay_one_row_each_across_scaling(stack: Stack) -> None:
    for n in (1, 3, 1, 3):
        _, out = await stack.cli("scale", str(n))
        assert f"workers online: {n}/{n}" in out
    rows = await stack.get("/api/workers")
    names = [w["name"] for w in rows]
    assert names == ["worker-1", "worker-2", "worker-3"]  # once each, in order
    assert all(w["status"] == "online" for w in rows)
    history = await stack.get("/api/workers?history=true")
    assert len(history) > 3  # the earlier incarnations are there, behind the parameter
    assert {w["name"] for w in history} == set(names)
    # `taskmaster status` shows the same one row per name
    _, out = await stack.cli("status")
    assert sum(line.startswith("worker-2 ") for line in out.splitlines()) == 1


async def test_kill_by_the_id_the_api_shows(stack: Stack) -> None:
    worker = next(w for w in await stack.get("/api/workers") if w["name"] == "worker-3")
    _, out = await stack.cli("kill", worker["id"])
    assert "worker-3: exited(-9)" in out
    assert await stack.online() == {"worker-1", "worker-2"}
    # the pool API takes an id too
    worker = next(w for w in await stack.get("/api/workers") if w["name"] == "worker-2")
    answer = await stack.post(f"/api/pool/workers/{worker['id']}/kill", {"graceful": True})
    assert answer["member"]["name"] == "worker-2"
    assert await stack.online() == {"worker-1"}
    # an unknown name or id is a 404 naming the field
    token = {POOL_TOKEN_HEADER: find_pool_token(stack.url)}
    async with aiohttp.ClientSession() as http, \
            http.post(stack.url + "/api/pool/workers/no-such-worker/kill", json={},
                      headers=token) as resp:
        assert resp.status == 404
        assert (await resp.json())["field"] == "name"


# ---- a component that cannot listen ----

@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port someone else listens on."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("component", ["scheduler", "coordinator"])
async def test_a_component_on_a_taken_port_exits_saying_why(
        component: str, taken_port: int, database_url: str, tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home", database_url)
    code, out = await run_cli(env, component, "--port", str(taken_port), check=False)
    assert code == EXIT_CANNOT_LISTEN, out
    assert f"the {component} cannot listen on 127.0.0.1:{taken_port}" in out


async def test_a_start_whose_port_is_taken_meanwhile_fails_loudly(
        taken_port: int, database_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks before the start are skipped (as when another stack takes the port between
    them and the bind): the scheduler cannot listen, and the start fails at once, saying so,
    instead of restarting it forever."""
    async def no_checks(*_args: Any, **_kw: Any) -> None:
        return None

    monkeypatch.setattr(local, "claim", no_checks)
    cluster = LocalCluster(stack_settings(database_url, tmp_path / "home"), workers=1,
                           scheduler_port=taken_port, coordinator_port=0, extra_env=CHILD_ENV)
    try:
        # StackConflict at once, not a TimeoutError after waiting for readiness
        with pytest.raises(StackConflict, match=f"cannot listen on 127.0.0.1:{taken_port}"):
            await cluster.start()
        assert cluster.members["scheduler"].state == f"exited({EXIT_CANNOT_LISTEN}): port in use"
    finally:
        await cluster.stop(grace=2.0)


async def test_the_supervisor_gives_up_on_a_member_whose_port_is_taken(
        database_url: str, tmp_path: Path) -> None:
    cluster = LocalCluster(stack_settings(database_url, tmp_path / "home"), workers=0,
                           scheduler_port=0, coordinator_port=0, extra_env=CHILD_ENV)
    await cluster.start()
    try:
        sched = cluster.members["scheduler"]
        assert sched.proc is not None
        port = cluster.scheduler_port
        thief = socket.socket()
        thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(sched.proc.pid, signal.SIGKILL)
        await sched.proc.wait()
        thief.bind(("127.0.0.1", port))  # taken before the supervisor restarts it
        thief.listen()
        try:
            await wait_for(lambda: not sched.wanted, 30,
                           message="the supervisor to give up on the scheduler")
            assert sched.state == f"exited({EXIT_CANNOT_LISTEN}): port in use"
            assert sched.restarts == local.LISTEN_TRIES
            assert "cannot listen on" in cluster.log_tail("scheduler")
            info = json.loads((tmp_path / "home" / "stack.json").read_text())
            assert next(m for m in info["members"] if m["name"] == "scheduler")["state"] == (
                sched.state)
        finally:
            thief.close()
    finally:
        await cluster.stop(grace=2.0)


# ---- reset and steady load from a terminal ----

async def test_reset_and_load_from_another_folder(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = _elsewhere(stack, folder)

    code, out = await _cli_in(folder, env, "load", "--rate", "20", "--seconds", "2",
                              "--command", "sleep", "--payload", '{"seconds": 0.3}')
    assert code == 0, out
    assert "creating sleep tasks at 20/s" in out
    assert "done: created 40 sleep tasks in" in out  # the schedule's count, exactly
    assert (await stack.get("/api/stats"))["total"] == 40

    # no confirmation, no reset (stdin is not a terminal here)
    code, out = await _cli_in(folder, env, "reset")
    assert code == 1 and "pass --yes" in out
    assert (await stack.get("/api/stats"))["total"] == 40

    code, out = await _cli_in(folder, env, "reset", "--yes")
    assert code == 0, out
    assert out.startswith("reset: 40 tasks deleted (")
    s = await stack.get("/api/stats")
    assert (s["total"], s["completed"], s["workers_online"]) == (0, 0, 3)

    # bad input says what was wrong, and creates nothing
    code, out = await _cli_in(folder, env, "load", "--rate", "5", "--payload", "{nope")
    assert code == 2 and "--payload is not JSON" in out
    code, out = await _cli_in(folder, env, "load", "--rate", "0")
    assert code == 2 and "rate must be above 0" in out
    code, out = await _cli_in(folder, env, "load", "--rate", "5", "--command", "nope")
    assert code == 1 and "unknown command 'nope'" in out
    assert (await stack.get("/api/stats"))["total"] == 0


async def test_load_runs_until_ctrl_c(stack: Stack) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "load", "--rate", "50", "--command", "noop",
        env={**stack.env, "TASKMASTER_URL": stack.url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)

    async def some_created() -> bool:
        return (await stack.get("/api/stats"))["total"] >= 50
    try:
        await wait_for(some_created, 30, message="the load to create tasks")
    finally:
        proc.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, text
    created = int(text.split("done: created ", 1)[1].split(" ", 1)[0].replace(",", ""))
    total = (await stack.get("/api/stats"))["total"]
    assert created == total >= 50  # what it says it created is what the stack has
