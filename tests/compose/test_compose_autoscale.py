"""The local stack's autoscaling policy on the compose stack, on a real Docker engine: each
resize is `docker compose up --scale worker=N -d` (ComposeCluster.autoscaler); the pool
shrinks to its minimum when idle, grows under a backlog and drains back, and every task is
completed once, on its first attempt (scaling down reassigned nothing)."""

from __future__ import annotations

import pytest

from taskmaster.autoscale import Policy
from taskmaster.client import Client
from tests.compose.conftest import Stack
from tests.compose.test_compose_stack import all_done, create, online, until_online
from tests.helpers import wait_for

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(900)]

POLICY = Policy(enabled=True, min=1, max=4, target_kind="backlog", target=1.0,
                cooldown_up=2.0, cooldown_down=5.0, step_down=3)


async def test_the_policy_drives_up_scale(stack: Stack) -> None:
    await until_online(stack, 3)
    async with Client(stack.url) as client:
        scaler = stack.cluster.autoscaler(POLICY, client.stats)
        scaler.start()
        try:
            await until_online(stack, 1, timeout=120)  # idle: down to the minimum
            ids = await create(stack, 120, payload={"seconds": 0.3})

            async def grown() -> bool:
                return len(await online(stack)) >= 4

            await wait_for(grown, 120, interval=0.5, message="4 workers online")
            tasks = await all_done(stack, ids, timeout=180)
            await until_online(stack, 1, timeout=120)
            # the drained containers stop, then `up --scale worker=1` returns
            await wait_for(lambda: stack.cluster.workers_wanted == 1, 120, interval=0.5,
                           message="`up --scale worker=1` to return")
        finally:
            await scaler.stop()
    assert {t["attempt"] for t in tasks} == {1}, "a task was handed on"
    assert stack.cluster.workers_wanted == 1
    changes = scaler.scaler.last_changed
    assert changes is not None and changes.to == 1
    members = await stack.cluster.members()
    assert len([m for m in members if m["role"] == "worker" and m["state"] == "running"]) == 1
