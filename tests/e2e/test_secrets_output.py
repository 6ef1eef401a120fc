"""`taskmaster up` with a database password: the password shows nowhere (the banner, every
member's log, any command line), and the worker's environment holds no database URL."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.e2e.up import stack_env
from tests.helpers import wait_for

PASSWORD = "hunter2-not-shown"


async def test_the_database_password_is_shown_nowhere(database_url: str, tmp_path: Path) -> None:
    # the test server trusts local connections: any password logs in, so it reaches every
    # place a URL is passed, printed or logged
    assert "://postgres@" in database_url
    url = database_url.replace("://postgres@", f"://postgres:{PASSWORD}@", 1)
    home = tmp_path / "home"
    env = stack_env(home, url)
    out = tmp_path / "up.log"
    with out.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "taskmaster", "up", "--workers", "1", "--scheduler-port", "0",
            "--coordinator-port", "0", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
    try:
        await wait_for(lambda: "TaskMaster is up" in out.read_text() or proc.returncode, 60,
                       message="the stack to be up")
        banner = out.read_text()
        assert proc.returncode is None, banner
        assert "postgres:***@" in banner and PASSWORD not in banner
        pids = [int(line.split()[2]) for line in banner.splitlines()
                if line.split()[:2] in (["coordinator", "coordinator"], ["scheduler", "scheduler"],
                                        ["worker-1", "worker"])]
        assert len(pids) == 3, banner
        for pid in [proc.pid, *pids]:
            assert PASSWORD not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        worker_env = Path(f"/proc/{pids[2]}/environ").read_bytes()
        assert PASSWORD.encode() not in worker_env and b"TASKMASTER_DATABASE_URL" not in worker_env
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 60)
    for member_log in (home / "logs").glob("*.log"):
        assert PASSWORD not in member_log.read_text(errors="replace"), member_log.name
    assert PASSWORD not in out.read_text()
