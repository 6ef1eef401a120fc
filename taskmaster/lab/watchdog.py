"""Cleans up after a notebook kernel that died with a stack of its own still running.

`python -m taskmaster.lab.watchdog --pid KERNEL --home DIR [--drop-database URL]`

Started by taskmaster.lab.connect(). It waits for the kernel process to end; if the
stack's home folder is still there then (the kernel was killed: nbval's kernel shutdown,
a kernel restart, a crash), it kills every process whose environment names that home
(the stack's members), stops the embedded PostgreSQL under it, drops the stack's database
on an external server and deletes the folder. A normal `stack.close()` terminates it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from taskmaster.cluster.base import pid_alive


def members(home: Path) -> list[int]:
    """Pids of processes started with TASKMASTER_HOME=home (Linux /proc; [] elsewhere)."""
    marker = f"TASKMASTER_HOME={home}".encode()
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def stop(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL whatever is left after the grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


def postmaster(home: Path) -> list[int]:
    """The embedded PostgreSQL server's pid, if it runs under home/pgdata."""
    pidfile = home / "pgdata" / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        return [int(pidfile.read_text().splitlines()[0])]
    return []


def clean(home: Path, database_url: str = "") -> None:
    """Stop the stack living under home and remove its traces."""
    stop(members(home))
    stop(postmaster(home), grace=5.0)  # SIGTERM: PostgreSQL's smart shutdown, then kill
    if database_url:
        # imported here: a watchdog that never has to clean up never loads the database driver
        from taskmaster.store import drop_database

        with contextlib.suppress(Exception):
            asyncio.run(drop_database(database_url))
    shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Wait for the kernel to end, then clean up if it did not."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pid", type=int, required=True, help="the kernel's process id")
    parser.add_argument("--home", type=Path, required=True, help="the stack's home folder")
    parser.add_argument("--drop-database", default="", help="database URL to drop")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between checks")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # close() is done: nothing to do
    while pid_alive(args.pid):
        time.sleep(args.interval)
    if args.home.exists():
        clean(args.home.resolve(), args.drop_database)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
