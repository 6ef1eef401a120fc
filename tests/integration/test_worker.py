"""The worker: user handlers from a --tasks module, progress, cancellation reaching a running
handler, timeouts and draining, against a real coordinator, scheduler and PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from taskmaster.config import Settings
from taskmaster.model import Delivery, TaskStatus
from taskmaster.store import NewTask, Store
from taskmaster.worker import handlers
from taskmaster.worker.handlers import TaskContext, load_modules, task
from taskmaster.worker.runtime import Worker
from tests.helpers import fast_settings, run_workers, serve_coordinator, serve_scheduler, wait_for
from tests.integration import sample_tasks

MODULE = "tests.integration.sample_tasks"


# ---- registering handlers ----

@pytest.fixture
def registry() -> Any:
    """The handler registry, restored after the test."""
    saved = dict(handlers.registry)
    yield handlers.registry
    handlers.registry.clear()
    handlers.registry.update(saved)


def test_the_decorator_registers_under_a_name(registry: dict[str, Any]) -> None:
    @task
    async def resize_image(ctx: TaskContext) -> None:
        """A user handler named after the function."""

    @task("thumbnail")
    def make_thumb(ctx: TaskContext) -> None:
        """A user handler with an explicit name."""

    @task()
    async def send_mail(ctx: TaskContext) -> None:
        """Empty parentheses work too."""

    assert registry["resize-image"] is resize_image
    assert registry["thumbnail"] is make_thumb
    assert registry["send-mail"] is send_mail
    assert "make_thumb" not in registry and "make-thumb" not in registry


def test_the_builtins_are_registered() -> None:
    assert set(handlers.BUILTINS) == {"demo-job", "noop", "sleep", "fail", "flaky", "cpu"}


def test_load_modules_imports_the_tasks_modules() -> None:
    commands = load_modules(f" {MODULE} , taskmaster.worker.handlers,")
    assert {"count-calls", "progress-steps", "wait-for-cancel", "noop"} <= set(commands)
    assert commands == sorted(commands)
    assert load_modules("") == sorted(handlers.registry)


def test_a_missing_tasks_module_is_a_clear_error() -> None:
    with pytest.raises(SystemExit) as info:
        load_modules("tests.no_such_module")
    assert "tests.no_such_module" in str(info.value) and "--tasks" in str(info.value)


# ---- running them ----

@pytest.fixture
def settings() -> Settings:
    """Quick retries, a long poll."""
    return fast_settings()


@pytest.fixture
async def stack(settings: Settings, database_url: str
                ) -> AsyncIterator[tuple[str, aiohttp.ClientSession, Any]]:
    """Scheduler and coordinator; (API URL, HTTP session, coordinator server)."""
    async with serve_coordinator(settings, database_url) as coordinator, \
            serve_scheduler(settings, database_url) as (url, _), aiohttp.ClientSession() as http:
        yield url, http, coordinator


async def create(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> uuid.UUID:
    """POST /api/schedule; the new id."""
    async with http.post(url + "/api/schedule", json=body) as resp:
        assert resp.status == 201, await resp.text()
        return uuid.UUID((await resp.json())["id"])


async def status_is(store: Store, task_id: uuid.UUID, *statuses: str) -> bool:
    """True when the task is in one of these statuses."""
    t = await store.get_task(task_id)
    return t is not None and t.status.value in statuses


async def test_progress_reports_reach_postgresql_and_the_feed(
    settings: Settings, stack: Any, store: Store
) -> None:
    url, http, coordinator = stack
    async with run_workers(settings, coordinator.port, 1):
        tid = await create(http, url, {"command": "progress-steps"})

        async def at_50() -> bool:
            t = await store.get_task(tid)
            return t is not None and t.progress == 50 and t.status is TaskStatus.RUNNING

        await wait_for(at_50, message="progress 50")
        sample_tasks.gate(str(tid)).set()
        await wait_for(lambda: status_is(store, tid, "completed"), message="completion")
    done = await store.get_task(tid)
    assert done is not None
    assert (done.progress, done.result) == (100, "stepped")
    rows = await store.pool.fetch(
        "SELECT data FROM events WHERE task_id = $1 AND event = 'task_progress' ORDER BY id", tid)
    reported = [r["data"]["progress"] for r in rows]
    assert reported and reported[-1] == 50 and set(reported) <= {25, 50}


@pytest.mark.parametrize("command", ["wait-for-cancel", "sync-until-cancelled"])
async def test_cancelling_a_running_task_reaches_its_handler(
    settings: Settings, stack: Any, store: Store, command: str
) -> None:
    url, http, coordinator = stack
    async with run_workers(settings, coordinator.port, 1) as pool:
        tid = await create(http, url, {"command": command})
        await wait_for(lambda: status_is(store, tid, "running"), message="the task to run")
        async with http.post(f"{url}/api/tasks/{tid}/cancel") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert (body["status"], body["cancel_requested"]) == ("running", True)
        await wait_for(lambda: status_is(store, tid, "cancelled"), message="the cancellation")
        assert str(tid) in sample_tasks.CANCELLED
        # the slot is free again
        after = await create(http, url, {"command": "noop"})
        await wait_for(lambda: status_is(store, after, "completed"), message="the next task")
        assert not pool.workers[0].running
    cancelled = await store.get_task(tid)
    assert cancelled is not None
    assert cancelled.cancelled_at is not None and cancelled.completed_at is None
    rows = await store.pool.fetch("SELECT event FROM events WHERE task_id = $1 ORDER BY id", tid)
    assert [r["event"] for r in rows][-1] == "task_cancelled"


async def test_a_handler_past_its_timeout_fails(
    settings: Settings, stack: Any, store: Store
) -> None:
    url, http, coordinator = stack
    async with run_workers(settings, coordinator.port, 1):
        tid = await create(http, url, {"command": "sleep", "payload": {"seconds": 30},
                                       "timeout_seconds": 0.2, "max_attempts": 1})
        await wait_for(lambda: status_is(store, tid, "failed"), message="the timeout")
    failed = await store.get_task(tid)
    assert failed is not None
    assert failed.error is not None and "timed out" in failed.error


async def test_a_draining_worker_finishes_its_task_and_leaves(
    settings: Settings, database_url: str, store: Store
) -> None:
    async with serve_coordinator(settings, database_url) as coordinator, \
            run_workers(settings, coordinator.port, 1) as pool:
        [worker] = pool.workers
        task, _ = await store.create_task(NewTask(command="sleep", payload={"seconds": 0.3}))
        await wait_for(lambda: status_is(store, task.id, "running"), message="the task to run")
        worker.drain()
        late, _ = await store.create_task(NewTask(command="noop"))
        await wait_for(lambda: pool.runs[0].done(), message="the worker to leave")
        assert pool.runs[0].result() == 0
        assert await status_is(store, task.id, "completed")
        assert await status_is(store, late.id, "pending")  # a draining worker takes nothing
    [gone] = await store.list_workers()
    assert gone.status.value == "offline"


async def test_a_finished_tasks_objects_are_freed_without_the_garbage_collector() -> None:
    """A task leaves no reference cycle behind (its context's progress reporter once held
    its Running, which held the context): on a busy worker every cycle is work for the
    garbage collector, which had taken a tenth of a worker's CPU."""
    worker = Worker(fast_settings(), concurrency=1, coordinator="127.0.0.1:1")
    gc.collect()
    gc.disable()
    try:
        worker._accept(Delivery(task_id=uuid.uuid4(), attempt=1, command="noop",
                                payload_json="", timeout_seconds=30.0))
        (rt,) = worker.running.values()
        ref, ctx = weakref.ref(rt), weakref.ref(rt.ctx)
        assert rt.task is not None
        await rt.task
        del rt
        await asyncio.sleep(0)
        assert not worker.running and ref() is None and ctx() is None, \
            "the finished task's Running or context is only freed by the garbage collector"
    finally:
        gc.enable()
