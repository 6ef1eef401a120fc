"""Task handlers: the built-in commands and the decorator users register theirs with."""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import inspect
import logging
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[["TaskContext"], Any]

# A plain-function handler that is stopped (timed out, cancelled, the worker stopping) first
# sees ctx.cancelled for STOP_GRACE seconds; then TaskCancelled is raised inside its thread,
# which stops any Python code; one blocked in C (a sleep, a read) stops when the call returns,
# and the worker waits THREAD_STOP_WAIT seconds for that before it moves on without it.
STOP_GRACE = 0.1
THREAD_STOP_WAIT = 2.0
# the `cpu` command's largest `ms`: one minute of work
MAX_CPU_MS = 60_000.0

registry: dict[str, Handler] = {}
_IS_ASYNC: dict[Handler, bool] = {}  # run_handler's memo of inspect.iscoroutinefunction


class TaskCancelled(Exception):
    """Raised inside a handler that checks for cancellation."""


class TaskFailed(Exception):
    """Raise from a handler to fail the task with a message."""


@dataclass(eq=False)
class TaskContext:
    """What a handler sees of its task."""

    task_id: uuid.UUID
    attempt: int
    command: str
    payload: Any
    report_progress: Callable[[int], Awaitable[None]] = field(repr=False)

    @property
    def cancel_event(self) -> asyncio.Event:
        """Set once the task should stop (see `cancelled`); a handler may wait on it. Made
        when first asked for: most tasks are never cancelled, nor asked whether they are."""
        event: asyncio.Event | None = self.__dict__.get("_cancel")
        if event is None:
            # setdefault: one Event, even if a handler's thread asks at the same moment
            event = self.__dict__.setdefault("_cancel", asyncio.Event())
        return event

    async def progress(self, percent: float) -> None:
        """Report progress (0-100); raises TaskCancelled if the task was cancelled."""
        self.check_cancelled()
        await self.report_progress(max(0, min(100, int(percent))))

    @property
    def cancelled(self) -> bool:
        """True once the task should stop: cancelled by a user, timed out, or the worker is
        stopping (a plain function running in its thread may look at it from there)."""
        event: asyncio.Event | None = self.__dict__.get("_cancel")
        return event is not None and event.is_set()

    def check_cancelled(self) -> None:
        """Raise TaskCancelled when the task should stop (see `cancelled`)."""
        if self.cancelled:
            raise TaskCancelled(f"task {self.task_id} cancelled")


def task(name: str | Callable[..., Any] | None = None) -> Any:
    """Register a handler: `@task` (named after the function) or `@task("name")`."""

    def register(fn: Handler, command: str) -> Handler:
        registry[command] = fn
        return fn

    if callable(name):
        return register(name, name.__name__.replace("_", "-"))
    return lambda fn: register(fn, name or fn.__name__.replace("_", "-"))


def load_modules(spec: str) -> list[str]:
    """Import the comma-separated modules of --tasks; return the commands now known."""
    for module in filter(None, (m.strip() for m in spec.split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SystemExit(f"cannot import task module {module!r} (--tasks): {exc}") from exc
    return sorted(registry)


async def run_handler(handler: Handler, ctx: TaskContext) -> Any:
    """Call a handler: coroutines in the loop, plain functions in a thread of their own that
    is stopped when the call is (see STOP_GRACE)."""
    is_async = _IS_ASYNC.get(handler)
    if is_async is None:
        if len(_IS_ASYNC) >= 10_000:  # handlers made on the fly: a bounded memo
            _IS_ASYNC.clear()
        is_async = _IS_ASYNC[handler] = inspect.iscoroutinefunction(handler)
    if is_async:
        return await handler(ctx)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    thread = _HandlerThread(handler, ctx, loop, done)
    thread.start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        ctx.cancel_event.set()  # ctx.cancelled: a handler that looks stops by itself
        await asyncio.wait({done}, timeout=STOP_GRACE)
        if not done.done() and thread.interrupt():
            await asyncio.wait({done}, timeout=THREAD_STOP_WAIT)
        if done.done():
            done.exception()  # seen: its TaskCancelled is ours
        else:
            log.warning("the thread of task %s did not stop within %gs (blocked outside "
                        "Python?); it goes on in the background", ctx.task_id,
                        STOP_GRACE + THREAD_STOP_WAIT, extra={"task_id": str(ctx.task_id)})
        raise


class _HandlerThread(threading.Thread):
    """A plain-function handler's own thread (no shared pool for a stuck one to exhaust),
    into which the worker can raise TaskCancelled to stop it."""

    def __init__(self, handler: Handler, ctx: TaskContext, loop: asyncio.AbstractEventLoop,
                 done: asyncio.Future[Any]) -> None:
        super().__init__(name=f"task-{ctx.task_id}", daemon=True)
        self.handler, self.ctx, self.loop, self.done = handler, ctx, loop, done
        self._lock = threading.Lock()
        self._inside = True  # running the handler: an interrupt may be raised in it
        self._interrupted = False

    def run(self) -> None:
        """Run the handler; hand its result or exception to the loop."""
        outcome: tuple[bool, Any] = (False, TaskCancelled("stopped"))
        try:
            try:
                outcome = (True, self.handler(self.ctx))
            except BaseException as exc:  # the handler's own, or our interrupt
                outcome = (False, exc)
            self._leave()
        except TaskCancelled:  # an interrupt sent as the handler returned landed here
            self._leave()
        self.loop.call_soon_threadsafe(self._settle, outcome)

    def _leave(self) -> None:
        with self._lock:
            self._inside = False
        _checkpoint()  # an interrupt still pending is raised here, inside run()'s try

    def _settle(self, outcome: tuple[bool, Any]) -> None:
        if not self.done.done():
            ok, value = outcome
            if ok:
                self.done.set_result(value)
            else:
                self.done.set_exception(value)

    def interrupt(self) -> bool:
        """Raise TaskCancelled in the thread (once, and only while it runs the handler)."""
        with self._lock:
            if not self._inside or self._interrupted or self.ident is None:
                return False
            self._interrupted = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident),
                                                       ctypes.py_object(TaskCancelled))
            return True


def _checkpoint() -> None:
    """Nothing: calling a Python function lets a pending asynchronous exception land."""


def _number(payload: Any, key: str, default: float) -> float:
    if isinstance(payload, dict) and isinstance(payload.get(key), int | float):
        return float(payload[key])
    return default


@task("demo-job")
async def demo_job(ctx: TaskContext) -> dict[str, Any]:
    """Like the demo guide's tasks: 0.5-0.8 s of work, reporting progress along the way."""
    seconds = random.uniform(0.5, 0.8)
    steps = 4
    for i in range(1, steps):
        await asyncio.sleep(seconds / steps)
        await ctx.progress(100 * i / steps)
    await asyncio.sleep(seconds / steps)
    return {"seconds": round(seconds, 3)}


@task("noop")
async def noop(ctx: TaskContext) -> None:
    """Does nothing (measures the scheduler, not the work)."""
    return None


@task("sleep")
async def sleep(ctx: TaskContext) -> dict[str, float]:
    """Sleeps payload.seconds (default 1)."""
    seconds = _number(ctx.payload, "seconds", 1.0)
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@task("fail")
async def fail(ctx: TaskContext) -> None:
    """Always fails (shows retries and the failed state)."""
    raise TaskFailed(str((ctx.payload or {}).get("message", "this task always fails"))
                     if isinstance(ctx.payload, dict) else "this task always fails")


@task("flaky")
async def flaky(ctx: TaskContext) -> dict[str, int]:
    """Fails with probability payload.p (default 0.5)."""
    if random.random() < _number(ctx.payload, "p", 0.5):
        raise TaskFailed(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@task("cpu")
def cpu(ctx: TaskContext) -> dict[str, int]:
    """Busy for payload.ms milliseconds (default 100, at most MAX_CPU_MS) in a thread of
    its own; stops when the task is cancelled or times out, or the worker stops."""
    ms = max(0.0, min(_number(ctx.payload, "ms", 100.0), MAX_CPU_MS))
    deadline = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < deadline:
        n += 1
        if n % 10_000 == 0 and ctx.cancelled:
            raise TaskCancelled("cancelled")
    return {"iterations": n}


BUILTINS = tuple(sorted(registry))
