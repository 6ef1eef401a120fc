"""`taskmaster demo`: the stack plus JupyterLab on the notebooks, ready for the interview."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from taskmaster.config import Settings

log = logging.getLogger(__name__)


def find_notebooks(given: str | None) -> Path:
    """The notebooks folder: the one given, ./notebooks, or the source checkout's."""
    candidates = [Path(given)] if given else [
        Path.cwd() / "notebooks", Path(__file__).resolve().parents[2] / "notebooks"]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    raise SystemExit(f"no notebooks folder found (looked in {', '.join(map(str, candidates))}); "
                     "pass --notebooks DIR")


async def run_demo(settings: Settings, *, workers: int, notebooks: Path, lab_port: int,
                   open_browser: bool) -> int:
    """Start the stack, then JupyterLab with TASKMASTER_URL pointing at it; stop both on exit."""
    from taskmaster.cluster.local import LocalCluster

    cluster = LocalCluster(settings, workers=workers)
    print(f"starting TaskMaster ({workers} workers) ...", flush=True)
    await cluster.start()
    env = dict(os.environ)
    env.update({"TASKMASTER_URL": cluster.url, "TASKMASTER_HOME": str(cluster.home)})
    if settings.api_token:
        env["TASKMASTER_API_TOKEN"] = settings.api_token
    args = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={notebooks}",
            f"--ServerApp.port={lab_port}", "--ServerApp.ip=127.0.0.1"]
    if not open_browser:
        args.append("--no-browser")
    if os.geteuid() == 0:
        args.append("--allow-root")
    print(f"TaskMaster API: {cluster.url}   JupyterLab: http://127.0.0.1:{lab_port}/lab "
          "(the login link with its token follows)", flush=True)
    lab = await asyncio.create_subprocess_exec(*args, env=env)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(lab.wait())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    print("stopping JupyterLab and the stack ...", flush=True)
    if lab.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            lab.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(lab.wait(), 10)
        except TimeoutError:
            lab.kill()
    stopper.cancel()
    await cluster.stop()
    print("stopped.", flush=True)
    return 0
