"""The lab bench without a stack: its wall, its lazy exports, the strategies it accepts,
and the kill at interpreter exit."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import taskmaster.lab
from taskmaster.cluster.local import LocalCluster, Member
from taskmaster.config import ASSIGN_STRATEGIES, Settings
from taskmaster.coordinator.assignment import STRATEGIES as COORDINATOR_STRATEGIES
from taskmaster.lab.stack import Stack


def test_the_lab_knows_the_coordinators_strategies() -> None:
    assert ASSIGN_STRATEGIES == tuple(COORDINATOR_STRATEGIES)


async def test_an_unknown_strategy_is_refused_before_anything_happens() -> None:
    stack = Stack(client=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="round-robin, least-loaded, random"):
        await stack.use_strategy("fastest")
    with pytest.raises(RuntimeError, match=r"connect\(own=True\)"):
        await stack.use_strategy("random")


def test_exports_are_loaded_on_first_use() -> None:
    assert set(taskmaster.lab.__all__) <= set(dir(taskmaster.lab))
    for name in taskmaster.lab.__all__:
        assert getattr(taskmaster.lab, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = taskmaster.lab.nothing  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_the_watchdog_starts_light() -> None:
    # it runs beside every notebook's stack: no pandas, widgets or database driver
    code = ("import sys, taskmaster.lab.watchdog\n"
            "print(sorted(m for m in ('pandas', 'ipywidgets', 'asyncpg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_kill_now_sigkills_every_live_member_at_once(tmp_path: Path) -> None:
    cluster = LocalCluster(Settings(home=tmp_path), control=False, stack_file=False)
    for name in ("coordinator", "worker-1"):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
        cluster.members[name] = Member(name, "worker", [], proc=proc)
    done = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await done.wait()
    cluster.members["worker-2"] = Member("worker-2", "worker", [], proc=done)
    cluster.kill_now()  # returns at once; nothing awaited
    codes = [await asyncio.wait_for(m.proc.wait(), 10) for m in cluster.members.values()
             if m.proc is not None]
    assert codes == [-signal.SIGKILL, -signal.SIGKILL, 0]
