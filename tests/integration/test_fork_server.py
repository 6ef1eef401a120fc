"""The fork server: a local stack's workers are forked from a process that has imported
them. A forked worker is a real worker (its own session, environment and log), the stack
signals and waits for it as for a process it started itself, bad requests are refused, and
a stack whose fork server died goes on starting workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskmaster.cluster import forked
from taskmaster.cluster.forked import ForkServer, ForkServerError
from taskmaster.cluster.local import LocalCluster
from taskmaster.config import Settings
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ForkServer]:
    forks = ForkServer(tmp_path / "fork-server.log")
    await forks.start(_env())
    try:
        yield forks
    finally:
        for child in list(forks.children.values()):
            child.send_signal(signal.SIGKILL)
            await asyncio.wait_for(child.wait(), 10)
        await forks.stop()


async def _worker(forks: ForkServer, tmp_path: Path, name: str, **env: str) -> forked.ForkedProcess:
    """A forked worker dialling a port nobody listens on: it retries until stopped."""
    return await forks.spawn(
        ["worker", "--name", name, "--coordinator", f"127.0.0.1:{_closed_port()}"],
        _env(TASKMASTER_HOME=str(tmp_path), **env), tmp_path / f"{name}.log", str(tmp_path))


def _proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(kv.split("=", 1) for kv in raw.decode().split("\0") if "=" in kv)


async def test_a_forked_worker_runs_in_its_own_session_with_its_own_log(
        server: ForkServer, tmp_path: Path) -> None:
    child = await _worker(server, tmp_path, "w1", TASKMASTER_LOG_LEVEL="DEBUG")
    log = tmp_path / "w1.log"
    await wait_for(lambda: log.exists() and "coordinator at" in log.read_text(), 15)
    assert child.returncode is None
    assert os.getsid(child.pid) == child.pid, "a forked worker leads a session of its own"
    assert os.getsid(child.pid) != os.getsid(0)
    # its working directory is the one asked for, its argv the worker's
    assert Path(f"/proc/{child.pid}/cwd").resolve() == tmp_path.resolve()
    child.send_signal(signal.SIGTERM)  # drains: nothing running, it leaves at once
    assert await asyncio.wait_for(child.wait(), 15) == 0
    assert "stopped (0 tasks completed)" in log.read_text()


async def test_a_killed_worker_reports_the_signal_as_asyncio_does(
        server: ForkServer, tmp_path: Path) -> None:
    child = await _worker(server, tmp_path, "w2")
    child.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL
    assert child.returncode == -signal.SIGKILL
    child.send_signal(signal.SIGKILL)  # exited: not sent (its pid may be another's now)


async def test_bad_arguments_end_the_child_with_the_usage_error_in_its_log(
        server: ForkServer, tmp_path: Path) -> None:
    child = await server.spawn(["worker", "--concurrency", "many"], _env(),
                               tmp_path / "bad.log", str(tmp_path))
    assert await asyncio.wait_for(child.wait(), 10) == 2
    assert "--concurrency" in (tmp_path / "bad.log").read_text()


async def test_the_server_refuses_a_malformed_request_and_goes_on(
        server: ForkServer, tmp_path: Path) -> None:
    assert server.proc is not None and server.proc.stdin is not None
    async with server._lock:  # as spawn does: one request at a time
        server.proc.stdin.write(b"{not json\n")
        server.proc.stdin.write(json.dumps({"args": "worker", "env": {}}).encode() + b"\n")
        first = await asyncio.wait_for(server._replies.get(), 10)
        second = await asyncio.wait_for(server._replies.get(), 10)
    assert "bad request" in first["error"] and "args (a list)" in second["error"]
    child = await _worker(server, tmp_path, "w3")  # still serving
    child.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL


async def test_when_the_server_dies_its_workers_are_still_watched(
        server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forked, "ORPHAN_POLL", 0.02)
    child = await _worker(server, tmp_path, "w4")
    assert server.proc is not None
    server.proc.kill()
    await wait_for(lambda: not server.alive, 10)
    with pytest.raises(ForkServerError, match="not running"):
        await _worker(server, tmp_path, "w5")
    assert child.returncode is None
    os.kill(child.pid, signal.SIGKILL)
    assert await asyncio.wait_for(child.wait(), 10) == forked.UNKNOWN_EXIT


async def test_a_server_that_cannot_start_says_so(tmp_path: Path) -> None:
    forks = ForkServer(tmp_path / "fork-server.log")
    with pytest.raises(ForkServerError, match="did not start"):
        await forks.start(_env(PYTHONPATH=str(tmp_path / "nowhere"), PYTHONSAFEPATH="1",
                               PYTHONNOUSERSITE="1", PYTHONHOME=str(tmp_path / "no-python")))
    assert not forks.alive


# ---- in a local stack ----

@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[LocalCluster]:
    settings = Settings(database_url=database_url, home=tmp_path / "home", metrics_port=0,
                        heartbeat_interval=0.5, cluster_token="fork-test-token")
    cluster = LocalCluster(settings, workers=2, scheduler_port=0, coordinator_port=0,
                           control=False, stack_file=False, extra_env={"PYTHONPATH": str(ROOT)})
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop(grace=5.0)


async def test_a_stacks_workers_are_forked_and_hold_only_a_workers_secrets(
        stack: LocalCluster) -> None:
    forks = await stack._fork_server()
    assert forks is not None and forks.proc is not None
    for m in stack.workers():
        assert isinstance(m.proc, forked.ForkedProcess)
        assert os.getppid() != m.pid and m.pid in forks.children
        # what `ps e` shows of it is the fork server's environment: a worker's
        environ = _proc_environ(m.pid)
        assert "TASKMASTER_DATABASE_URL" not in environ
        assert environ.get("TASKMASTER_CLUSTER_TOKEN") == "fork-test-token"
    assert "TASKMASTER_DATABASE_URL" not in _proc_environ(forks.proc.pid)


async def test_a_stack_whose_fork_server_died_still_starts_and_kills_workers(
        stack: LocalCluster) -> None:
    forks = await stack._fork_server()
    assert forks is not None and forks.proc is not None
    forks.proc.kill()
    await wait_for(lambda: not forks.alive, 10)
    await stack.scale(3)  # the third as a new process; the server starts again meanwhile
    await stack.wait_workers(3)
    third = stack.members["worker-3"]
    assert third.proc is not None and not isinstance(third.proc, forked.ForkedProcess)
    again = await stack._fork_server()
    assert again is not None and again is not forks and again.alive
    await stack.scale(4)
    await stack.wait_workers(4)
    fourth = stack.members["worker-4"]
    assert isinstance(fourth.proc, forked.ForkedProcess)
    # a worker of the dead server is still the stack's to kill
    first = stack.members["worker-1"]
    info = await stack.kill_worker("worker-1")
    assert info["state"] == f"exited({forked.UNKNOWN_EXIT})" and first.state != "running"
    await stack.kill_worker("worker-4")
    assert stack.members["worker-4"].state == f"exited({-signal.SIGKILL})"


async def test_exec_starts_each_worker_as_a_new_interpreter(database_url: str,
                                                            tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, home=tmp_path / "home", metrics_port=0,
                        worker_start="exec")
    cluster = LocalCluster(settings, workers=1, scheduler_port=0, coordinator_port=0,
                           control=False, stack_file=False, extra_env={"PYTHONPATH": str(ROOT)})
    try:
        await cluster.start()
        (m,) = cluster.workers()
        assert not isinstance(m.proc, forked.ForkedProcess)
        assert await cluster._fork_server() is None
        cmdline = Path(f"/proc/{m.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:4] == [b"-m", b"taskmaster", b"worker"]
    finally:
        await cluster.stop(grace=5.0)


def test_worker_start_is_fork_or_exec() -> None:
    with pytest.raises(ValueError, match="TASKMASTER_WORKER_START='spawn' must be one of fork, exec"):
        Settings(worker_start="spawn")


def _fd_targets(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


def test_under_uvloop_the_server_is_seen_to_exit_while_its_workers_run(tmp_path: Path) -> None:
    """uvloop hands a subprocess copies of its own pipes beyond 0, 1 and 2: a forked worker
    that kept them held the server's stdout open, so the stack never saw the server exit
    and waited 10 s for every worker it asked for after."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        forks = ForkServer(tmp_path / "fork-server.log")
        await forks.start(_env())
        assert forks.proc is not None
        pipes = {t for t in _fd_targets(forks.proc.pid) if t.startswith(("pipe:", "socket:"))}
        child = await _worker(forks, tmp_path, "w6")
        try:
            await wait_for(lambda: (tmp_path / "w6.log").exists()
                           and "coordinator at" in (tmp_path / "w6.log").read_text(), 15)
            assert not pipes & _fd_targets(child.pid), "a worker holds the server's pipes"
            forks.proc.terminate()
            await wait_for(lambda: not forks.alive, 10)
            with pytest.raises(ForkServerError, match="not running"):
                await _worker(forks, tmp_path, "w7")
        finally:
            child.send_signal(signal.SIGKILL)
            await asyncio.wait_for(child.wait(), 10)
            await forks.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_a_server_that_does_not_answer_is_stopped(server: ForkServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forked, "REPLY_TIMEOUT", 0.5)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)  # hung
    try:
        with pytest.raises(ForkServerError, match="did not answer"):
            await _worker(server, tmp_path, "w8")
        assert not server.alive
        assert await asyncio.wait_for(server.proc.wait(), 10) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.proc.send_signal(signal.SIGCONT)
