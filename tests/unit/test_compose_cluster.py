"""ComposeCluster runs the demo guide's docker commands; a fake `docker` on PATH records them.

The fake keeps a little state (which containers run, exited or restarted), so each operation
of the one cluster interface is shown with the command lines it runs and what it then reads.
tests/compose runs the same commands on a real Docker engine.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskmaster.cluster import Cluster, ComposeCluster, LocalCluster, compose_command
from taskmaster.cluster.base import UnknownWorker
from taskmaster.cluster.compose import V1, V2, ComposeError, detect_compose, parse_inspect
from taskmaster.config import Settings
from taskmaster.errors import InvalidInput
from taskmaster.pool import CRASH_SNIPPET


def container(name: str, service: str, cid: str, *, number: int = 1, status: str = "running",
              health: str | None = None, restarts: int = 0, exit_code: int = 0) -> dict[str, Any]:
    """One container as `docker inspect` shows it (the fields ComposeCluster reads)."""
    state: dict[str, Any] = {"Status": status, "Pid": 0 if status == "exited" else 100 + number,
                             "ExitCode": exit_code}
    if health:
        state["Health"] = {"Status": health}
    return {"Id": cid * 4, "Name": f"/{name}", "RestartCount": restarts, "State": state,
            "Config": {"Hostname": cid, "Labels": {
                "com.docker.compose.project": "taskmaster",
                "com.docker.compose.service": service,
                "com.docker.compose.container-number": str(number)}}}


# in `docker compose ps` order, which is not role order
STACK = [
    container("taskmaster-worker-2", "worker", "dddddddddddd", number=2),
    container("taskmaster-postgres-1", "postgres", "aaaaaaaaaaaa", health="healthy"),
    container("taskmaster-coordinator-1", "coordinator", "bbbbbbbbbbbb", health="healthy"),
    container("taskmaster-scheduler-1", "scheduler", "eeeeeeeeeeee", health="healthy"),
    container("taskmaster-worker-1", "worker", "cccccccccccc"),
]

# A docker CLI in miniature: it records its argv and plays each command on a JSON list of
# containers (`up --scale worker=N`, `kill`/`stop` of a container, the coordinator's
# kill/stop/start/restart and crash, `down`), which `ps -q` and `inspect` then show.
FAKE_DOCKER = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:3] == ["compose", "version", "--short"]:
    print(os.environ.get("FAKE_COMPOSE_VERSION", "2.29.7"))
    sys.exit(0)
if os.environ.get("FAKE_DOCKER_FAIL") and "ps" not in args and args[:1] != ["inspect"]:
    print("Error response from daemon: no such container", file=sys.stderr)
    sys.exit(int(os.environ["FAKE_DOCKER_FAIL"]))
path = os.environ["FAKE_DOCKER_STATE"]
with open(path) as f:
    stack = json.load(f)

def worker(n):
    cid = "%012x" % (0xc0ffee000000 + n)
    return {{"Id": cid * 4, "Name": "/taskmaster-worker-%d" % n, "RestartCount": 0,
            "State": {{"Status": "running", "Pid": 200 + n, "ExitCode": 0}},
            "Config": {{"Hostname": cid, "Labels": {{"com.docker.compose.service": "worker",
                       "com.docker.compose.container-number": str(n)}}}}}}

def by_name(name):
    return next(c for c in stack if c["Name"] == "/" + name)

def service(name):
    return next(c for c in stack if c["Config"]["Labels"]["com.docker.compose.service"] == name)

def set_state(c, status, code=0, health=None):
    c["State"].update(Status=status, ExitCode=code, Pid=0 if status == "exited" else 999)
    c["State"].pop("Health", None)
    if health:
        c["State"]["Health"] = {{"Status": health}}

while args and args[0] in ("compose", "-f", "-p") or (args and args[0] == "docker-compose"):
    args = args[2:] if args[0] in ("-f", "-p") else args[1:]
if args[:1] == ["ps"]:
    print("\\n".join(c["Id"] for c in stack))
elif args[:1] == ["inspect"]:
    print(json.dumps([c for c in stack if c["Id"] in args[1:]]))
elif args[:1] == ["up"]:
    n = int(args[args.index("--scale") + 1].split("=")[1])
    others = [c for c in stack if c["Config"]["Labels"]["com.docker.compose.service"] != "worker"]
    workers = {{c["Config"]["Labels"]["com.docker.compose.container-number"]: c for c in stack
               if c["Config"]["Labels"]["com.docker.compose.service"] == "worker"}}
    stack = others + [workers.get(str(i)) or worker(i) for i in range(1, n + 1)]
    for c in stack:
        if c["State"]["Status"] == "exited":
            set_state(c, "running")
elif args[:1] in (["kill"], ["stop"]) and args[1:] != ["coordinator"]:
    set_state(by_name(args[1]), "exited", 137 if args[0] == "kill" else 0)
elif args[:2] == ["kill", "coordinator"]:
    set_state(service("coordinator"), "exited", 137, "unhealthy")
elif args[:2] == ["stop", "coordinator"]:
    set_state(service("coordinator"), "exited", 0, "unhealthy")
elif args[:2] in (["start", "coordinator"], ["restart", "coordinator"]):
    set_state(service("coordinator"), "running", 0, "healthy")
elif args[:1] == ["exec"]:
    c = service("coordinator")
    c["RestartCount"] += 1
    set_state(c, "running", 0, "healthy")
elif args[:1] == ["down"]:
    stack = []
with open(path, "w") as f:
    json.dump(stack, f)
"""


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `docker` first on PATH, running STACK; returns the file where it records its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "docker.log"
    log.touch()
    state = tmp_path / "containers.json"
    state.write_text(json.dumps(STACK))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    return log


def calls(log: Path) -> list[list[str]]:
    """The argv of each docker run, without those that only read."""
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in runs if "ps" not in r and r[:1] != ["inspect"] and "version" not in r]


def workers(members: list[Any]) -> list[tuple[str, str]]:
    return [(m["name"], m["state"]) for m in members if m["role"] == "worker"]


async def test_the_demo_guides_commands_and_what_they_leave(docker: Path) -> None:
    cluster = ComposeCluster(workers=3, timeout=10)
    await cluster.start()
    assert workers(await cluster.members()) == [
        (f"taskmaster-worker-{i}", "running") for i in (1, 2, 3)]
    assert workers(await cluster.scale(1)) == [("taskmaster-worker-1", "running")]
    assert len(workers(await cluster.scale(5))) == 5
    stopped = await cluster.kill_worker("taskmaster-worker-2", graceful=True)
    killed = await cluster.kill_worker("taskmaster-worker-1")
    assert (stopped["state"], killed["state"]) == ("exited(0)", "exited(137)")
    down = await cluster.coordinator("kill", restart=False)
    assert down["state"] == "exited(137)"
    back = await cluster.coordinator("start")
    assert back["state"] == "running (healthy)"
    await cluster.stop(volumes=True)
    assert await cluster.members() == []
    assert calls(docker) == [
        ["compose", "up", "--scale", "worker=3", "-d"],
        ["compose", "up", "--scale", "worker=1", "-d"],
        ["compose", "up", "--scale", "worker=5", "-d"],
        ["stop", "taskmaster-worker-2"],
        ["kill", "taskmaster-worker-1"],
        ["compose", "kill", "coordinator"],
        ["compose", "start", "coordinator"],
        ["compose", "down", "-v"],
    ]


async def test_a_coordinator_crash_is_one_the_restart_policy_sees(docker: Path) -> None:
    # `docker kill` counts as a manual stop, which no restart policy undoes: the crash
    # kills the process inside, and returns once docker has restarted the container
    crashed = await ComposeCluster(timeout=10).coordinator("kill")
    assert (crashed["restarts"], crashed["state"]) == (1, "running (healthy)")
    stopped = await ComposeCluster(timeout=10).coordinator("stop")
    assert stopped["state"] == "exited(0)"
    restarted = await ComposeCluster(timeout=10).coordinator("restart")
    assert restarted["state"] == "running (healthy)"
    assert calls(docker) == [
        ["compose", "exec", "-T", "coordinator", "python", "-c", CRASH_SNIPPET],
        ["compose", "stop", "coordinator"],
        ["compose", "restart", "coordinator"],
    ]


async def test_a_wait_that_never_ends_says_what_it_saw(docker: Path) -> None:
    cluster = ComposeCluster(timeout=10)
    with pytest.raises(ComposeError, match=r"the stack with 2 workers to be healthy.*"
                       r"taskmaster-worker-2: running"):
        await cluster.wait_for(lambda ms: False, "the stack with 2 workers to be healthy",
                               timeout=0.1)


async def test_file_and_project_are_passed_to_every_compose_command(docker: Path) -> None:
    cluster = ComposeCluster("deploy/compose.yaml", project="demo", compose=V2)
    await cluster.scale(2)
    await cluster.stop()
    assert calls(docker) == [
        ["compose", "-f", "deploy/compose.yaml", "-p", "demo", "up", "--scale", "worker=2", "-d"],
        ["compose", "-f", "deploy/compose.yaml", "-p", "demo", "down"],
    ]
    assert cluster.compose_command("scale", 2) == (
        "docker compose -f deploy/compose.yaml -p demo up --scale worker=2 -d")


async def test_a_worker_is_found_by_container_name_or_by_its_hostname(docker: Path) -> None:
    # a worker in a container reports its hostname (the short container id) as its name
    member = await ComposeCluster().kill_worker("dddddddddddd")
    assert member["name"] == "taskmaster-worker-2"
    assert calls(docker) == [["kill", "taskmaster-worker-2"]]
    with pytest.raises(UnknownWorker, match="taskmaster-worker-1, taskmaster-worker-2"):
        await ComposeCluster().kill_worker("taskmaster-coordinator-1")


async def test_status_reads_ps_and_inspect_in_role_order(docker: Path) -> None:
    rows = ComposeCluster().status()
    assert [(m["name"], m["role"], m["host"]) for m in rows] == [
        ("taskmaster-postgres-1", "postgres", "aaaaaaaaaaaa"),
        ("taskmaster-coordinator-1", "coordinator", "bbbbbbbbbbbb"),
        ("taskmaster-scheduler-1", "scheduler", "eeeeeeeeeeee"),
        ("taskmaster-worker-1", "worker", "cccccccccccc"),
        ("taskmaster-worker-2", "worker", "dddddddddddd")]
    assert rows[0]["state"] == "running (healthy)" and rows[3]["state"] == "running"
    assert rows == await ComposeCluster().members()
    reads = [json.loads(line) for line in docker.read_text().splitlines()]
    assert ["compose", "ps", "--all", "-q"] in reads
    assert ["inspect", *(c["Id"] for c in STACK)] in reads


def test_inspect_of_exited_and_restarted_containers() -> None:
    rows = parse_inspect(json.dumps([
        container("p-coordinator-1", "coordinator", "b" * 12, status="exited", exit_code=137,
                  health="unhealthy", restarts=2),
        container("p_worker_10", "worker", "f" * 12, number=10),
        container("p_worker_9", "worker", "e" * 12, number=9),
        container("p-secrets-1", "secrets", "a" * 12, status="exited", exit_code=0),
    ]))
    assert "secrets" not in {r["role"] for r in rows}  # the one-shot set-up is no member
    assert rows[0] == {"name": "p-coordinator-1", "role": "coordinator", "pid": None,
                       "host": "b" * 12, "state": "exited(137)", "restarts": 2}
    # v1 names (project_service_N) and numbers past 9 in order
    assert [r["name"] for r in rows[1:]] == ["p_worker_9", "p_worker_10"]
    assert rows[1]["pid"] == 109
    assert parse_inspect("") == [] and parse_inspect("not json") == []


async def test_a_failing_docker_command_says_what_failed(
    docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "1")
    with pytest.raises(ComposeError, match="no such container") as info:
        await ComposeCluster(compose=V2).scale(2)
    assert info.value.argv[:2] == ["docker", "compose"]
    assert info.value.code == 1


async def test_no_docker_on_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match="not found on PATH"):
        await ComposeCluster(compose=[str(tmp_path / "no-docker"), "compose"]).scale(1)


def test_detect_compose(docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # the fake docker alone
    assert detect_compose() == V2  # the fake answers 2.29.7
    # a `docker compose` plugin running docker-compose v1 underneath: call v1 directly
    monkeypatch.setenv("FAKE_COMPOSE_VERSION", "1.29.2")
    assert detect_compose() == V2  # ... unless there is no docker-compose
    v1 = tmp_path / "bin" / "docker-compose"
    v1.write_text("#!/bin/sh\n")
    v1.chmod(0o755)
    assert detect_compose() == V1
    assert ComposeCluster().compose_command("scale", 2) == "docker-compose up --scale worker=2 -d"
    assert ComposeCluster(compose=V2).compose_command("scale", 2) == (
        "docker compose up --scale worker=2 -d")


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    (("start",), {}, "docker compose up --scale worker=3 -d"),
    (("scale", 1), {}, "docker compose up --scale worker=1 -d"),
    (("scale", 5), {}, "docker compose up --scale worker=5 -d"),
    (("kill_worker", "3f2a1b9c0d12"), {"graceful": True}, "docker stop 3f2a1b9c0d12"),
    (("kill_worker", "3f2a1b9c0d12"), {}, "docker kill 3f2a1b9c0d12"),
    (("coordinator", "kill"), {"restart": False}, "docker compose kill coordinator"),
    (("coordinator", "start"), {}, "docker compose start coordinator"),
    (("stop",), {}, "docker compose down"),
    (("reset",), {}, "docker compose down -v"),
    (("status",), {}, "docker compose ps --all"),
])
def test_compose_command(args: tuple[Any, ...], kwargs: dict[str, bool], expected: str) -> None:
    assert compose_command(*args, **kwargs) == expected
    v1 = compose_command(*args, **kwargs, compose=V1)
    assert v1 == expected.replace("docker compose", "docker-compose")


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
    compose = ComposeCluster(workers=2, compose=V2)
    assert isinstance(local, Cluster) and isinstance(compose, Cluster)
    for cluster in (local, compose):
        assert cluster.compose_command("scale", 5) == "docker compose up --scale worker=5 -d"
        assert cluster.compose_command("start") == "docker compose up --scale worker=2 -d"
    # what the notebook's worker control panel calls
    for method in ("scale", "kill_worker", "coordinator"):
        assert callable(getattr(local, method)) and callable(getattr(compose, method))


def test_typing_accepts_both_as_a_cluster() -> None:
    def takes(cluster: Cluster) -> Cluster:
        return cluster

    takes(ComposeCluster(compose=V2))
    takes(LocalCluster(Settings()))


ROOT = Path(__file__).resolve().parents[2]


def test_the_v1_plugin_hands_docker_compose_its_arguments(tmp_path: Path) -> None:
    # deploy/engine.sh installs it as the `docker compose` plugin where only v1 exists
    log = tmp_path / "argv"
    fake = tmp_path / "docker-compose"
    fake.write_text(f'#!/bin/sh\n[ "$1 $2" = "version --short" ] && {{ echo 1.29.2; exit; }}\n'
                    f'printf "%s\\n" "$@" > {log}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    plugin = str(ROOT / "deploy" / "docker-compose-v1-plugin")
    meta = subprocess.run([plugin, "docker-cli-plugin-metadata"], capture_output=True,
                          text=True, env=env, check=True, timeout=30)
    assert json.loads(meta.stdout) == {
        "SchemaVersion": "0.1.0", "Vendor": "TaskMaster", "Version": "1.29.2",
        "ShortDescription": "Docker Compose, run by docker-compose (v1)"}
    # the docker CLI runs a plugin with its name first: `docker compose up ...`
    argv = shlex.split(compose_command("coordinator", "kill"))[1:]
    subprocess.run([plugin, *argv], env=env, check=True, timeout=30)
    assert log.read_text().splitlines() == argv[1:]


def test_the_deploy_scripts_parse() -> None:
    scripts = [*sorted((ROOT / "deploy").rglob("*.sh")), ROOT / "deploy" / "docker-compose-v1-plugin"]
    for script in scripts:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True,
                              check=False, timeout=30)
        assert done.returncode == 0, (script.name, done.stderr)
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


async def test_the_autoscaler_drives_up_scale(docker: Path) -> None:
    """The local stack's policy on a compose project: each resize is `up --scale worker=N`."""
    from taskmaster.autoscale import Policy

    figures: dict[str, Any] = {"queue_depth": 40, "running": 3}
    now = [0.0]

    async def stats() -> dict[str, Any]:
        return dict(figures)

    cluster = ComposeCluster(workers=3, timeout=10)
    scaler = cluster.autoscaler(Policy(enabled=True, min=1, max=6, target_kind="backlog",
                                       target=1.0, cooldown_down=10.0), stats,
                                clock=lambda: now[0])
    up = await scaler.step()
    assert (up.current, up.to) == (3, 6)
    figures.update(queue_depth=0, running=0)
    for t in (1.0, 5.0, 9.0):  # the down window: nothing yet
        now[0] = t
        assert not (await scaler.step()).changed
    now[0] = 11.0
    down = await scaler.step()
    assert (down.current, down.to) == (6, 4) and "demand below 6" in down.reason
    assert workers(await cluster.members()) == [
        (f"taskmaster-worker-{i}", "running") for i in (1, 2, 3, 4)]
    assert calls(docker) == [
        ["compose", "up", "--scale", "worker=6", "-d"],
        ["compose", "up", "--scale", "worker=4", "-d"],
    ]
