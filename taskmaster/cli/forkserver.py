"""The fork server of a local stack: a process that has imported the worker and forks one
for each request of its stack (`python -m taskmaster.cli.forkserver`).

A new interpreter spends ~0.15 s of CPU importing asyncio, grpc, protobuf and the worker
before it can dial its coordinator; four workers starting at once on two cores took a third
of a second. A forked worker starts with all of that imported: it is dialling within
milliseconds. The server imports but never starts anything (no thread, no event loop, no
gRPC channel), so that a fork of it is a clean start.

The stack (taskmaster.cluster.forked) speaks to it in JSON lines. Each request on stdin,
`{"args": [...], "env": {...}, "log": "<file>", "cwd": "<dir>"}`, is answered on stdout, in
order, with `{"pid": N}` or `{"error": "..."}`; as a child exits, `{"exited": N, "code": C}`
follows (C as asyncio reports it: negative for the signal that killed it). When its stack
closes stdin, the server leaves; its workers, each in a session of its own, stay until the
stack stops them, as exec'd workers do.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sys
import traceback
from typing import Any, BinaryIO

# a request line longer than this is refused (the stack sends a few kB)
MAX_REQUEST = 1 << 20
# file descriptors from here up are closed: in the server as it starts (a parent may pass
# more than its stdin, stdout and stderr: uvloop's subprocesses got copies of their own
# pipes), and in each child as it forks (the server's pipes), so that the stack sees the
# server's stdout close when the server exits, whatever its workers hold
FIRST_UNINHERITED = 3


def preload() -> None:
    """Import what a worker imports, so that its fork need not."""
    import taskmaster.cli.components
    import taskmaster.cli.parser
    import taskmaster.worker.handlers
    import taskmaster.worker.runtime  # noqa: F401

    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass


def run_child(request: dict[str, Any]) -> None:
    """In the forked child: become the worker the request describes; never returns."""
    code = 1
    try:
        os.setsid()  # as start_new_session: a signal to the stack's group does not reach it
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.closerange(FIRST_UNINHERITED, os.sysconf("SC_OPEN_MAX"))  # null's and the server's
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # as `python -m` run there would have it
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [sys.argv[0], *request["args"]]
        from taskmaster.cli import main

        code = main(request["args"])
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


class Server:
    """The request loop: forks on request, reports exits."""

    def __init__(self, requests: int, replies: BinaryIO) -> None:
        self.requests = requests
        self.replies = replies
        self._buf = b""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector = selectors.DefaultSelector()

    def send(self, message: dict[str, Any]) -> None:
        self.replies.write(json.dumps(message).encode() + b"\n")
        self.replies.flush()

    def serve(self) -> int:
        """Until stdin closes; the exit code."""
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through the pipe
        self.selector.register(self.requests, selectors.EVENT_READ, "requests")
        self.selector.register(self._wake_r, selectors.EVENT_READ, "signal")
        self.send({"ready": os.getpid()})
        while True:
            for key, _ in self.selector.select():
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 512):  # emptied; the reap follows
                            pass
                elif not self.read_requests():
                    return 0
            self.reap()

    def read_requests(self) -> bool:
        """Serve the complete request lines that have arrived; False once stdin closed."""
        data = os.read(self.requests, 1 << 16)
        if not data:
            return False
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self.fork(line)
        if len(self._buf) > MAX_REQUEST:
            self._buf = b""
            self.send({"error": f"request longer than {MAX_REQUEST} bytes"})
        return True

    def fork(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            if not (isinstance(request.get("args"), list) and isinstance(request.get("env"), dict)
                    and isinstance(request.get("log"), str)
                    and isinstance(request.get("cwd"), str)):
                raise ValueError("a request needs args (a list), env (an object), log and cwd")
        except (ValueError, AttributeError) as exc:
            self.send({"error": f"bad request: {exc}"})
            return
        try:
            pid = os.fork()
        except OSError as exc:
            self.send({"error": f"cannot fork: {exc}"})
            return
        if pid == 0:
            run_child(request)
        self.send({"pid": pid})

    def reap(self) -> None:
        """Report every child that has exited."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def main() -> int:
    """Preload, then serve the stack on stdin and stdout."""
    os.closerange(FIRST_UNINHERITED, os.sysconf("SC_OPEN_MAX"))
    preload()
    replies = os.fdopen(os.dup(1), "wb")
    # what the server or a module prints goes to its log (stderr), not into the replies
    os.dup2(2, 1)
    return Server(0, replies).serve()


if __name__ == "__main__":
    sys.exit(main())
