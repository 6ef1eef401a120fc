"""A worker on "another host": its own network namespace, joined to ours by a veth pair.

The namespace has its own network stack (its own loopback: 127.0.0.1 there is not ours), and
its only link is a private /30 to the host end of the veth, where the coordinator listens.
The worker dials `--coordinator <host veth address>:<port>` as it would from another machine,
shows up in GET /api/workers under its name, and does all the work.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskmaster.cluster.local import LocalCluster
from taskmaster.config import Settings
from tests.helpers import wait_for

NEEDS = ("this test runs a worker in a network namespace: it needs `ip` (iproute2), "
         "`ip netns` and veth pairs, that is root or CAP_NET_ADMIN + CAP_SYS_ADMIN "
         "(CI runs as root)")


def ip(*args: str) -> str:
    """Run `ip ARGS`; a failure is a test failure that says what is missing."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except FileNotFoundError:
        pytest.fail(f"`ip` is not installed: {NEEDS}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}\n{NEEDS}",
                    pytrace=False)
    return done.stdout


@dataclass
class Host:
    """The namespace and both ends of its link."""

    namespace: str
    host_ip: str
    inner_ip: str


def _free_subnet() -> ipaddress.IPv4Network:
    used = ip("-4", "-o", "addr", "show")
    for _ in range(100):
        net = ipaddress.IPv4Network(
            f"10.201.{secrets.randbelow(256)}.{secrets.randbelow(64) * 4}/30")
        if not any(f" {h}/" in used for h in net):
            return net
    pytest.fail("no free 10.201.x.y/30 for the veth pair", pytrace=False)


@pytest.fixture
def other_host() -> Iterator[Host]:
    """A network namespace with a veth pair on a private /30; removed afterwards."""
    tag = secrets.token_hex(3)
    namespace, outer, inner = f"tmcluster-{tag}", f"tcl{tag}h", f"tcl{tag}n"
    first, second = (str(a) for a in _free_subnet().hosts())
    ip("netns", "add", namespace)
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", namespace)
        ip("addr", "add", f"{first}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("-n", namespace, "addr", "add", f"{second}/30", "dev", inner)
        ip("-n", namespace, "link", "set", inner, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        yield Host(namespace, first, second)
    finally:
        # deleting the namespace deletes its veth end, and with it the host end
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", outer], capture_output=True, check=False)


@pytest.fixture
async def stack(database_url: str, tmp_path: Path, other_host: Host
                ) -> AsyncIterator[LocalCluster]:
    """A local stack with no local workers; its coordinator listens on the veth's host end."""
    settings = Settings(database_url=database_url, home=tmp_path / "home", metrics_port=0,
                        heartbeat_interval=0.5)
    cluster = LocalCluster(settings, workers=0, scheduler_port=0, coordinator_port=0,
                           coordinator_host=other_host.host_ip)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop(grace=5.0)


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_a_worker_in_another_network_namespace_joins_and_works(
    stack: LocalCluster, other_host: Host, tmp_path: Path
) -> None:
    port = stack.coordinator_port
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    env["TASKMASTER_HEARTBEAT_INTERVAL"] = "0.5"
    in_ns = ["ip", "netns", "exec", other_host.namespace, sys.executable]

    # really another network stack: our 127.0.0.1 is not reachable from there
    probe = await asyncio.create_subprocess_exec(
        *in_ns, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 2)",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await probe.communicate()
    assert probe.returncode != 0 and b"ConnectionRefused" in err, err.decode()

    log = (tmp_path / "far-worker.log").open("wb")
    worker = await asyncio.create_subprocess_exec(
        *in_ns, "-m", "taskmaster", "worker", "--coordinator", f"{other_host.host_ip}:{port}",
        "--name", "far-worker", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        async def joined() -> dict[str, Any] | None:
            assert worker.returncode is None, (tmp_path / "far-worker.log").read_text()
            return next((w for w in await get(stack.url + "/api/workers")
                         if w["name"] == "far-worker" and w["status"] == "online"), None)

        far = await wait_for(joined, 20, message="far-worker to join")
        assert far["pid"] == worker.pid  # `ip netns exec` execs the worker in its place

        async with aiohttp.ClientSession() as http:
            async with http.post(stack.url + "/api/schedule/batch", json={
                    "command": "sleep", "count": 10, "payload": {"seconds": 0.05}}) as resp:
                assert resp.status == 201, await resp.text()

        async def all_done() -> list[dict[str, Any]] | None:
            tasks = await get(stack.url + "/api/tasks?limit=100")
            return tasks if all(t["status"] == "completed" for t in tasks) else None

        tasks = await wait_for(all_done, 20, message="the ten tasks to complete")
        assert len(tasks) == 10
        assert {t["worker_id"] for t in tasks} == {far["id"]}
        assert (await get(stack.url + "/api/stats"))["workers_online"] == 1
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.wait(), 15)
            except TimeoutError:
                worker.kill()
                await worker.wait()
        log.close()
    assert worker.returncode == 0, (tmp_path / "far-worker.log").read_text()
