"""ComposeCluster runs the seed's docker commands; a fake `docker` on PATH records them.

Docker is not what these tests are about (there is no engine here): they show which command
lines each operation of the one cluster interface runs, and that both implementations fit it.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from taskmaster.cluster import Cluster, ComposeCluster, LocalCluster, compose_command
from taskmaster.cluster.base import UnknownWorker
from taskmaster.cluster.compose import ComposeError, parse_ps
from taskmaster.config import Settings
from taskmaster.errors import InvalidInput
from taskmaster.pool import CRASH_SNIPPET

PS = [
    {"Name": "taskmaster-postgres-1", "Service": "postgres", "State": "running",
     "Health": "healthy", "ID": "aaaaaaaaaaaa1111"},
    {"Name": "taskmaster-coordinator-1", "Service": "coordinator", "State": "running",
     "Health": "healthy", "ID": "bbbbbbbbbbbb2222"},
    {"Name": "taskmaster-worker-1", "Service": "worker", "State": "running", "Health": "",
     "ID": "cccccccccccc3333"},
    {"Name": "taskmaster-worker-2", "Service": "worker", "State": "running", "Health": "",
     "ID": "dddddddddddd4444"},
]

FAKE_DOCKER = """#!{python}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_DOCKER_FAIL") and "ps" not in sys.argv:
    print("Error response from daemon: no such container", file=sys.stderr)
    sys.exit(1)
if "ps" in sys.argv:
    for row in json.loads(os.environ["FAKE_DOCKER_PS"]):
        print(json.dumps(row))
"""


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `docker` first on PATH; returns the file where it records its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DOCKER_PS", json.dumps(PS))
    return log


def calls(log: Path) -> list[list[str]]:
    """The argv of each docker run, without those that only read the members."""
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in runs if "ps" not in r]


async def test_the_seeds_commands(docker: Path) -> None:
    cluster = ComposeCluster(workers=3)
    await cluster.start()
    members = await cluster.scale(1)
    await cluster.scale(5)
    await cluster.kill_worker("taskmaster-worker-2", graceful=True)
    await cluster.kill_worker("taskmaster-worker-1")
    await cluster.coordinator("kill", restart=False)
    await cluster.coordinator("start")
    await cluster.stop(volumes=True)
    assert calls(docker) == [
        ["compose", "up", "--scale", "worker=3", "-d", "--wait"],
        ["compose", "up", "--scale", "worker=1", "-d"],
        ["compose", "up", "--scale", "worker=5", "-d"],
        ["stop", "taskmaster-worker-2"],
        ["kill", "taskmaster-worker-1"],
        ["compose", "kill", "coordinator"],
        ["compose", "start", "coordinator"],
        ["compose", "down", "-v"],
    ]
    assert [m["name"] for m in members if m["role"] == "worker"] == [
        "taskmaster-worker-1", "taskmaster-worker-2"]


async def test_a_coordinator_crash_is_one_the_restart_policy_sees(docker: Path) -> None:
    # `docker kill` counts as a manual stop, which no restart policy undoes
    await ComposeCluster().coordinator("kill")
    await ComposeCluster().coordinator("restart")
    await ComposeCluster().coordinator("stop")
    assert calls(docker) == [
        ["compose", "exec", "-T", "coordinator", "python", "-c", CRASH_SNIPPET],
        ["compose", "restart", "coordinator"],
        ["compose", "stop", "coordinator"],
    ]


async def test_file_and_project_are_passed_to_every_compose_command(docker: Path) -> None:
    cluster = ComposeCluster("deploy/compose.yaml", project="demo")
    await cluster.scale(2)
    await cluster.stop()
    assert calls(docker) == [
        ["compose", "-f", "deploy/compose.yaml", "-p", "demo", "up", "--scale", "worker=2", "-d"],
        ["compose", "-f", "deploy/compose.yaml", "-p", "demo", "down"],
    ]
    assert cluster.compose_command("scale", 2) == (
        "docker compose -f deploy/compose.yaml -p demo up --scale worker=2 -d")


async def test_a_worker_is_found_by_container_name_or_by_its_hostname(docker: Path) -> None:
    # a worker in a container reports its hostname (the short container id) as its host
    member = await ComposeCluster().kill_worker("dddddddddddd")
    assert member["name"] == "taskmaster-worker-2"
    assert calls(docker) == [["kill", "taskmaster-worker-2"]]
    with pytest.raises(UnknownWorker, match="taskmaster-worker-1, taskmaster-worker-2"):
        await ComposeCluster().kill_worker("taskmaster-coordinator-1")


async def test_status_reads_compose_ps(docker: Path) -> None:
    rows = ComposeCluster().status()
    assert [(m["name"], m["role"], m["host"]) for m in rows][:2] == [
        ("taskmaster-postgres-1", "postgres", "aaaaaaaaaaaa"),
        ("taskmaster-coordinator-1", "coordinator", "bbbbbbbbbbbb")]
    assert rows[0]["state"] == "running (healthy)"
    assert rows == await ComposeCluster().members()
    assert json.loads(docker.read_text().splitlines()[0]) == [
        "compose", "ps", "--all", "--format", "json"]


def test_compose_ps_as_a_json_array_too() -> None:
    assert parse_ps(json.dumps(PS)) == parse_ps("\n".join(json.dumps(r) for r in PS))
    assert parse_ps("") == []


async def test_a_failing_docker_command_says_what_failed(
    docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "1")
    with pytest.raises(ComposeError, match="no such container") as info:
        await ComposeCluster().scale(2)
    assert info.value.argv[:2] == ["docker", "compose"]
    assert info.value.code == 1


async def test_no_docker_on_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match="not found on PATH"):
        await ComposeCluster(compose=[str(tmp_path / "no-docker"), "compose"]).scale(1)


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    (("start",), {}, "docker compose up --scale worker=3 -d --wait"),
    (("scale", 1), {}, "docker compose up --scale worker=1 -d"),
    (("scale", 5), {}, "docker compose up --scale worker=5 -d"),
    (("kill_worker", "taskmaster-worker-2"), {"graceful": True},
     "docker stop taskmaster-worker-2"),
    (("kill_worker", "taskmaster-worker-2"), {}, "docker kill taskmaster-worker-2"),
    (("coordinator", "kill"), {"restart": False}, "docker compose kill coordinator"),
    (("coordinator", "start"), {}, "docker compose start coordinator"),
    (("stop",), {}, "docker compose down"),
    (("reset",), {}, "docker compose down -v"),
    (("status",), {}, "docker compose ps --all"),
])
def test_compose_command(args: tuple[Any, ...], kwargs: dict[str, bool], expected: str) -> None:
    assert compose_command(*args, **kwargs) == expected


def test_compose_command_of_a_crash_is_one_shell_line() -> None:
    line = compose_command("coordinator", "kill")
    assert shlex.split(line) == ["docker", "compose", "exec", "-T", "coordinator", "python",
                                 "-c", CRASH_SNIPPET]


def test_compose_command_refuses_what_it_does_not_know() -> None:
    with pytest.raises(InvalidInput):
        compose_command("coordinator", "explode")
    with pytest.raises(ValueError, match="unknown action"):
        compose_command("teleport")


def test_both_implementations_fit_the_one_interface(tmp_path: Path) -> None:
    local = LocalCluster(Settings(home=tmp_path), workers=2)
    compose = ComposeCluster(workers=2)
    assert isinstance(local, Cluster) and isinstance(compose, Cluster)
    for cluster in (local, compose):
        assert cluster.compose_command("scale", 5) == "docker compose up --scale worker=5 -d"
        assert cluster.compose_command("start") == "docker compose up --scale worker=2 -d --wait"
    # what the notebook's worker control panel calls
    for method in ("scale", "kill_worker", "coordinator"):
        assert callable(getattr(local, method)) and callable(getattr(compose, method))


def test_typing_accepts_both_as_a_cluster() -> None:
    def takes(cluster: Cluster) -> Cluster:
        return cluster

    takes(ComposeCluster())
    takes(LocalCluster(Settings()))
