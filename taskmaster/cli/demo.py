"""`taskmaster demo`: the stack plus JupyterLab on working copies of the notebooks, ready for
the interview."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
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


COPIES = "notebooks"  # the working copies' folder, under the stack's home
MANIFEST = ".taskmaster-copies.json"  # which source each working copy was made from


def _cells_digest(path: Path) -> str:
    """What a person edits in a notebook: its cells' types and sources (not the outputs,
    execution counts or widget ids that running it changes)."""
    try:
        cells = json.loads(path.read_text()).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return ""
    text = json.dumps([[c.get("cell_type"), "".join(c.get("source", ""))] for c in cells])
    return hashlib.sha256(text.encode()).hexdigest()


def working_copies(source: Path, home: Path) -> tuple[Path, list[str]]:
    """Copies of the notebooks under home/notebooks, which JupyterLab opens and autosaves,
    so that running the demo never changes the committed notebooks (their recorded outputs
    are what nbval compares and what readers browse). A copy whose cells someone edited is
    kept; one that was only run is refreshed. Returns the folder and what was kept."""
    target = home / COPIES
    target.mkdir(parents=True, exist_ok=True)
    manifest_path = target / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    kept = []
    for nb in sorted(source.glob("*.ipynb")):
        copy, digest = target / nb.name, _cells_digest(nb)
        ours = _cells_digest(copy) if copy.exists() else None
        # missing, only run (same cells as the source), or not edited since copied
        if ours is None or ours in (digest, manifest.get(nb.name)):
            shutil.copyfile(nb, copy)
            manifest[nb.name] = digest
        elif digest != manifest.get(nb.name):
            kept.append(nb.name)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    # the shipped recordings, which 13_replay opens (the Record button saves beside them)
    if (source / "recordings").is_dir():
        shutil.copytree(source / "recordings", target / "recordings", dirs_exist_ok=True)
    return target, kept


async def run_demo(settings: Settings, *, workers: int, notebooks: Path, lab_port: int,
                   open_browser: bool) -> int:
    """Start the stack, then JupyterLab on working copies of the notebooks with
    TASKMASTER_URL pointing at the stack; stop both on exit."""
    from taskmaster.cluster.local import LocalCluster
    from taskmaster.cluster.preflight import StackConflict, free_port_near, port_taken

    cluster = LocalCluster(settings, workers=workers)
    print(f"starting TaskMaster ({workers} workers) ...", flush=True)
    try:
        await cluster.start()
    except StackConflict as exc:
        await cluster.stop(grace=2.0)  # whatever it started itself; never the other's
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except BaseException:
        await cluster.stop(grace=2.0)
        raise
    folder, kept = working_copies(notebooks, cluster.home)
    print(f"notebooks: working copies in {folder} (the ones in {notebooks} stay as committed)",
          flush=True)
    for name in kept:
        print(f"  kept your edited {name}; delete it there to get the repository's version",
              flush=True)
    if port_taken("127.0.0.1", lab_port):  # another JupyterLab: take the next free port
        taken, lab_port = lab_port, free_port_near("127.0.0.1", lab_port - 9, set())
        print(f"port {taken} is taken (another JupyterLab?): JupyterLab uses {lab_port}",
              flush=True)
    env = dict(os.environ)
    env.update({"TASKMASTER_URL": cluster.url, "TASKMASTER_HOME": str(cluster.home)})
    if settings.api_token:
        env["TASKMASTER_API_TOKEN"] = settings.api_token
    args = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
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
