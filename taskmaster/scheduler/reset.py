"""POST /api/reset: the stack back to a known state between two demos.

Every task (pending ones cancelled, running ones stopped and handed back), every event and
every count go; offline worker rows go; live workers stay, their counters zeroed. One
transaction, which creates, claims and reports wait for: nothing is half done. Event ids
keep rising, so an SSE client's Last-Event-ID stays valid, and the feed announces the
reset with a stack_reset event. Guarded like the pool API: refused (403) unless
TASKMASTER_ENABLE_POOL_API, and it needs the pool token (scheduler/pool.py guards it) and
the API token when they are set.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from taskmaster.errors import InvalidInput
from taskmaster.scheduler.context import SETTINGS, STORE
from taskmaster.store import RETRYABLE, UNAVAILABLE
from taskmaster.web import error, read_object

log = logging.getLogger(__name__)

ATTEMPTS = 3  # a reset that loses a lock race (a deadlock) is run again, this often


async def reset(request: web.Request) -> web.Response:
    """POST /api/reset (an empty body or {})."""
    settings = request.app[SETTINGS]
    if not settings.enable_pool_api:
        return error(403, "reset is disabled on this scheduler: set TASKMASTER_ENABLE_POOL_API=1 "
                     "to allow it (`taskmaster up` and `taskmaster demo` enable it)")
    body = await read_object(request, empty={})
    for name in body:
        raise InvalidInput(422, f"unknown field {name!r}: POST /api/reset takes no fields", name)
    store = request.app[STORE]
    for attempt in range(1, ATTEMPTS + 1):
        try:
            outcome = await store.reset()
            break
        except UNAVAILABLE:
            raise  # the errors middleware answers 503 with Retry-After
        except RETRYABLE as exc:
            if attempt == ATTEMPTS:
                raise
            log.info("reset lost a lock race (%s); running it again", exc)
            await asyncio.sleep(0.05 * attempt)
    log.warning("stack reset: %d tasks deleted (%d pending, %d running), %d offline workers "
                "dropped", outcome.tasks, outcome.pending, outcome.running,
                outcome.workers_dropped)
    return web.json_response(outcome.to_json())


def setup_reset(app: web.Application) -> None:
    """Add POST /api/reset."""
    app.router.add_post("/api/reset", reset)
