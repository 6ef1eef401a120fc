"""The compose stack on a real Docker engine: the engine, the images, one project per module.

The engine is started if it is installed but not running (deploy/engine.sh --no-install, as
root) and stopped again afterwards; with none to start, the tests are skipped saying why.
The images come from deploy/images.sh (from Debian's archive where no registry is
reachable). Each module gets a compose project of its own (its own name, ports and image
tag), removed afterwards with its volume and image whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskmaster.cluster.compose import ComposeCluster

ROOT = Path(__file__).resolve().parents[2]
DOCKERD_PID = ROOT / ".taskmaster" / "dockerd.pid"
HOW = ("`make compose-demo` (or deploy/engine.sh) installs and starts one: Debian's docker.io "
       "and docker-compose, as root")


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in the repository root; its output, or a test failure showing it."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"`{shlex.join(argv)}` exited with {done.returncode}:\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def engine_running() -> bool:
    """True when `docker info` reaches an engine."""
    if shutil.which("docker") is None:
        return False
    try:
        return run(["docker", "info"], timeout=60, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[list[str]]:
    """A running engine (started here if installed); the compose command to use."""
    started = False
    if not engine_running():
        if shutil.which("dockerd") is None or os.geteuid() != 0:
            pytest.skip(f"no Docker engine runs here and none can be started: {HOW}")
        before = pid_file()
        done = run(["deploy/engine.sh", "--no-install"], timeout=120, check=False)
        if done.returncode != 0:
            pytest.skip(f"the Docker engine did not start: {done.stderr.strip()[-500:]}")
        started = pid_file() not in (None, before)
    # the compose command (and, with docker-compose v1 only, the `docker compose` plugin)
    compose = run(["deploy/engine.sh", "--no-install"], timeout=120).stdout.split()
    try:
        yield compose
    finally:
        if started:
            stop_dockerd()


def pid_file() -> str | None:
    """What .taskmaster/dockerd.pid says (deploy/engine.sh writes it when it starts dockerd)."""
    try:
        return DOCKERD_PID.read_text().strip()
    except OSError:
        return None


def stop_dockerd() -> None:
    """Stop the dockerd that deploy/engine.sh started for these tests."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(DOCKERD_PID.read_text())
        os.kill(pid, 15)
        for _ in range(300):
            os.kill(pid, 0)  # OSError once it is gone
            time.sleep(0.1)
    with contextlib.suppress(OSError):
        DOCKERD_PID.unlink()


@pytest.fixture(scope="session")
def images(docker_engine: list[str]) -> dict[str, str]:
    """TASKMASTER_BASE_IMAGE and POSTGRES_IMAGE, made if missing (deploy/images.sh)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TASKMASTER_BASE_IMAGE", "POSTGRES_IMAGE")}
    done = run(["deploy/images.sh"], env=env, timeout=900)
    print(done.stderr, file=sys.stderr)
    return dict(line.split("=", 1) for line in done.stdout.split())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """A compose project of the tests, its API and the environment its commands need."""

    cluster: ComposeCluster
    url: str
    env: dict[str, str]
    project: str
    image: str
    created: int = 0  # tasks the tests created

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """An API request; (status, JSON body)."""
        async with aiohttp.ClientSession() as http, \
                http.request(method, self.url + path, json=body) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> Any:
        """GET a JSON document (200 expected)."""
        status, body = await self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    async def shell(self, command: str, timeout: float = 300) -> str:
        """Run a command line as a person would paste it, in the repository root, on this
        project (COMPOSE_PROJECT_NAME and the image variables are in the environment)."""
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command, cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        text = out.decode(errors="replace")
        assert proc.returncode == 0, f"`{command}` exited with {proc.returncode}:\n{text}"
        return text

    def hint(self, command: str) -> str:
        """A command of the API as it runs here: as written where `docker compose` exists,
        else with Debian's docker-compose (v1) in its place."""
        if command.startswith("docker compose ") and not self.has_compose_plugin():
            return "docker-compose " + command.removeprefix("docker compose ")
        return command

    def has_compose_plugin(self) -> bool:
        return run(["docker", "compose", "version"], env=self.env, timeout=60,
                   check=False).returncode == 0


def stack_env(project: str, image: str, images: dict[str, str]) -> dict[str, str]:
    """The environment of the project's docker commands: none of the caller's TaskMaster or
    PostgreSQL variables, this project's name, image, base images and ports."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TASKMASTER_", "POSTGRES_", "COMPOSE_"))}
    env.update(images)
    env.update({
        "COMPOSE_PROJECT_NAME": project,
        "TASKMASTER_IMAGE": image,
        "TASKMASTER_PUBLISH_API_PORT": str(free_port()),
        "TASKMASTER_PUBLISH_GRPC_PORT": str(free_port()),
        "TASKMASTER_PUBLISH_API_PORT_2": str(free_port()),
        "TASKMASTER_PUBLISH_GRPC_PORT_2": str(free_port()),
        # the classic builder: no buildx needed (docker-compose v1 builds with the CLI)
        "DOCKER_BUILDKIT": "0",
    })
    return env


def remove_project(compose: list[str], env: dict[str, str], image: str) -> None:
    """`down -v --remove-orphans`, the project's image and its build stages."""
    run([*compose, "down", "-v", "--remove-orphans", "-t", "5"], env=env, timeout=300,
        check=False)
    run(["docker", "image", "rm", image], timeout=120, check=False)
    run(["docker", "image", "prune", "-f", "--filter", "label=org.taskmaster.stage=build"],
        timeout=120, check=False)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, docker_engine: list[str],
          images: dict[str, str]) -> Iterator[Stack]:
    """A compose project up with 3 workers, built from this checkout; removed afterwards."""
    project = f"tmtest{secrets.token_hex(4)}"
    image = f"taskmaster:{project}"
    env = stack_env(project, image, images)
    compose = docker_engine
    cluster = ComposeCluster(workers=3, compose=compose, env=env, cwd=ROOT, timeout=300)
    failed_before = request.session.testsfailed
    try:
        run([*compose, "build", "--force-rm"], env=env, timeout=900)
        asyncio.run(cluster.start())
        yield Stack(cluster, f"http://127.0.0.1:{env['TASKMASTER_PUBLISH_API_PORT']}", env,
                    project, image)
    finally:
        if request.session.testsfailed > failed_before:
            logs = run([*compose, "logs", "--no-color", "--tail", "60"], env=env, timeout=120,
                       check=False)
            print(f"---- logs of compose project {project} ----\n{logs.stdout[-20000:]}",
                  file=sys.stderr)
        remove_project(compose, env, image)
