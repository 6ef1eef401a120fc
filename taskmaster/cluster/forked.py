"""Workers forked by the stack's fork server (taskmaster.cli.forkserver), as processes the
stack can signal and wait for like those it starts itself.

The fork server has imported the worker once; each worker forked from it dials its
coordinator within milliseconds instead of importing for ~0.15 s of CPU first. It runs with
a worker's environment (never the database URL or an API token); each request carries the
worker's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # seconds for the server to import and say it is ready
REPLY_TIMEOUT = 10.0  # seconds for the pid of a forked worker
# once the server is gone, how often its workers still running are looked at
ORPHAN_POLL = 0.2
# the exit code of a worker whose exit the server could no longer report (it had died)
UNKNOWN_EXIT = 255
MAX_REPLY = 1 << 16  # bytes of one reply line


class ChildProcess(Protocol):
    """What the stack uses of a child: asyncio's Process, or a ForkedProcess."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class ForkServerError(Exception):
    """The fork server could not start a worker (the stack starts it as a new process)."""


class ForkedProcess:
    """A worker forked by the server: its pid, and its exit as the server reports it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()

    def exited(self, code: int) -> None:
        """Its exit code (negative: the signal that killed it)."""
        if self.returncode is None:
            self.returncode = code
            self._exited.set()

    async def wait(self) -> int:
        """Until it has exited; its exit code."""
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal it, unless it has exited (it is reaped, so its pid may be another's)."""
        if self.returncode is None:
            os.kill(self.pid, sig)


class ForkServer:
    """The client of one fork server process."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.children: dict[int, ForkedProcess] = {}
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=64)
        self._lock = asyncio.Lock()  # one request at a time: replies come in order
        self._reader: asyncio.Task[None] | None = None
        self._orphans: asyncio.Task[None] | None = None  # see _watch_orphans
        self._gone = False

    @property
    def alive(self) -> bool:
        """True while the server can fork."""
        return self.proc is not None and not self._gone

    async def start(self, env: dict[str, str]) -> None:
        """Start the server and wait until it has imported the worker."""
        with open(self.log_path, "ab") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "taskmaster.cli.forkserver", env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log_file, start_new_session=True, limit=MAX_REPLY)
        self._reader = asyncio.create_task(self._read(), name="fork-server")
        try:
            ready = await asyncio.wait_for(self._replies.get(), START_TIMEOUT)
        except TimeoutError:
            await self.stop()
            raise ForkServerError(f"the fork server did not start within {START_TIMEOUT:g}s "
                                  f"(its log: {self.log_path})") from None
        if "ready" not in ready:
            await self.stop()
            raise ForkServerError(f"the fork server did not start: {ready.get('error')} "
                                  f"(its log: {self.log_path})")

    async def spawn(self, args: list[str], env: dict[str, str], log_path: Path,
                    cwd: str) -> ForkedProcess:
        """Fork a worker running `taskmaster <args>` with this environment, its output
        appended to log_path; ForkServerError when the server cannot."""
        request = json.dumps({"args": args, "env": env, "log": str(log_path), "cwd": cwd})
        async with self._lock:
            if not self.alive or self.proc is None or self.proc.stdin is None:
                raise ForkServerError("the fork server is not running")
            try:
                self.proc.stdin.write(request.encode() + b"\n")
                await self.proc.stdin.drain()
                reply = await asyncio.wait_for(self._replies.get(), REPLY_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                # a server that does not answer is stopped: a reply arriving late would
                # answer the next request, and the stack starts another server
                self._gone = True
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                raise ForkServerError(f"the fork server did not answer: {exc!r}") from None
        if "pid" not in reply:
            raise ForkServerError(f"the fork server could not fork: {reply.get('error')}")
        child = ForkedProcess(int(reply["pid"]))
        self.children[child.pid] = child
        return child

    async def stop(self) -> None:
        """Stop the server (its workers are the stack's to stop)."""
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("fork server said %r", line[:200])
                    continue
                if "exited" in message:
                    child = self.children.pop(int(message["exited"]), None)
                    if child is not None:
                        child.exited(int(message["code"]))
                else:
                    await self._replies.put(message)
        except (OSError, ValueError) as exc:  # ValueError: a line over MAX_REPLY
            log.warning("lost the fork server: %s", exc)
        finally:
            self._gone = True
            with contextlib.suppress(asyncio.QueueFull):
                self._replies.put_nowait({"error": "the fork server exited"})
            if self.children:  # kept: the loop holds only a weak reference to a task
                self._orphans = asyncio.get_running_loop().create_task(self._watch_orphans())

    async def _watch_orphans(self) -> None:
        """The server is gone: its workers still running are watched by pid until each has
        exited (their exit codes are lost: UNKNOWN_EXIT)."""
        log.warning("the fork server exited with %d workers running; watching them by pid",
                    len(self.children))
        while self.children:
            for pid, child in list(self.children.items()):
                try:
                    os.kill(pid, 0)
                except (ProcessLookupError, PermissionError):  # gone (or the pid another's)
                    del self.children[pid]
                    child.exited(UNKNOWN_EXIT)
            await asyncio.sleep(ORPHAN_POLL)

