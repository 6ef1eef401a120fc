"""Group commit for POST /api/schedule: concurrent single creates share one statement.

A create that finds a free statement slot and nobody waiting runs at once, alone, in its
own request's task: no timer, no added wait, so one client sending one request at a time
sees the latency of one insert. Creates that arrive while the slots are busy wait
together and go in the next statement (at most `max_rows` each), one transaction and one
durable commit for all of them. Every request is answered only after its own row is
committed, as before.

A row PostgreSQL refuses (it should not pass validation, but a data error must not fail
the others) sends that statement's creates one by one, so only the bad one fails.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque

from taskmaster.model import Task
from taskmaster.store import ROW_ERRORS, NewTask, Store

log = logging.getLogger(__name__)



class CreateQueueFull(Exception):
    """More creates are waiting for a statement than the queue holds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"{limit} creates are already waiting")


class CreateQueue:
    """Batches concurrent task creates (without idempotency keys) into shared statements."""

    def __init__(self, store: Store, *, max_rows: int = 500, max_waiting: int = 10_000,
                 statements: int = 2) -> None:
        if max_rows < 1 or max_waiting < 1 or statements < 1:
            raise ValueError("max_rows, max_waiting and statements must be at least 1")
        self.store = store
        self.max_rows = max_rows
        self.max_waiting = max_waiting
        self.statements = statements  # statements in flight at once
        self._waiting: deque[tuple[NewTask, asyncio.Future[Task]]] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        self._busy = 0  # statement slots taken: creates running alone, and flushers
        self.statements_run = 0  # for tests and metrics: statements sent
        self.rows_written = 0

    @property
    def waiting(self) -> int:
        """Creates queued for the next statement."""
        return len(self._waiting)

    async def create(self, new: NewTask) -> Task:
        """Insert one task (sharing a statement with concurrent creates); the new task."""
        if new.idempotency_key is not None:
            raise ValueError("keyed creates go through Store.create_task")
        if self._busy < self.statements and not self._waiting:
            # a free slot and nobody waiting: this create runs now, alone, in its own task
            self._busy += 1
            try:
                return (await self._insert([new]))[0]
            finally:
                self._busy -= 1
                self._start_flushers()  # for the creates that queued meanwhile
        if len(self._waiting) >= self.max_waiting:
            raise CreateQueueFull(self.max_waiting)
        fut: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._waiting.append((new, fut))
        self._start_flushers()
        return await fut

    def _start_flushers(self) -> None:
        while self._waiting and self._busy < self.statements:
            self._busy += 1
            # a context of its own: not the request id of whichever request started it
            flusher = asyncio.create_task(self._flush(), name="create-queue",
                                          context=contextvars.Context())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)

    async def close(self, timeout: float = 10.0) -> None:
        """Let the statements in flight finish (at most `timeout` s), then cancel the rest."""
        if self._flushers:
            await asyncio.wait(set(self._flushers), timeout=timeout)
        for flusher in list(self._flushers):
            flusher.cancel()
        while self._waiting:
            self._waiting.popleft()[1].cancel()

    def _take(self) -> list[tuple[NewTask, asyncio.Future[Task]]]:
        batch: list[tuple[NewTask, asyncio.Future[Task]]] = []
        while self._waiting and len(batch) < self.max_rows:
            new, fut = self._waiting.popleft()
            if not fut.done():  # a request cancelled while waiting is not inserted
                batch.append((new, fut))
        return batch

    async def _flush(self) -> None:
        try:
            await self._flush_waiting()
        finally:
            self._busy -= 1

    async def _flush_waiting(self) -> None:
        while batch := self._take():
            try:
                tasks = await self._insert([new for new, _ in batch])
            except ROW_ERRORS as exc:
                if len(batch) == 1:
                    _fail(batch[0][1], exc)
                    continue
                log.warning("a shared create statement of %d rows was refused (%s); "
                            "creating them one by one", len(batch), exc)
                for new, fut in batch:
                    try:
                        _resolve(fut, (await self._insert([new]))[0])
                    except Exception as one:
                        _fail(fut, one)
                continue
            except asyncio.CancelledError as exc:  # shutting down (close)
                for _, fut in batch:
                    _fail(fut, exc)
                raise
            except Exception as exc:  # the database is gone, say: each request answers 503
                for _, fut in batch:
                    _fail(fut, exc)
                continue
            for (_, fut), task in zip(batch, tasks, strict=True):
                _resolve(fut, task)

    async def _insert(self, news: list[NewTask]) -> list[Task]:
        self.statements_run += 1
        if len(news) == 1:
            task, _ = await self.store.create_task(news[0])
            tasks = [task]
        else:
            tasks = await self.store.create_tasks(news)
        self.rows_written += len(tasks)
        return tasks


def _resolve(fut: asyncio.Future[Task], task: Task) -> None:
    if not fut.done():
        fut.set_result(task)


def _fail(fut: asyncio.Future[Task], exc: BaseException) -> None:
    if fut.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        fut.cancel()
    else:
        fut.set_exception(exc)
