"""What the scheduler's modules find on its aiohttp application: typed keys, and the cache
of the commands a task may name."""

from __future__ import annotations

import time

from aiohttp import web

from taskmaster.config import Settings
from taskmaster.scheduler.creates import CreateQueue
from taskmaster.scheduler.sse import EventHub
from taskmaster.store import Store


class CommandCache:
    """Known commands, re-read from PostgreSQL at most once a second on a miss."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.names: set[str] = set()
        self.loaded = 0.0

    async def get(self, wanted: object = None) -> set[str]:
        """The known commands, refreshed if `wanted` is not among them."""
        if not isinstance(wanted, str):  # a body's "command" may be any JSON value
            wanted = None
        stale = time.monotonic() - self.loaded > 1.0
        if not self.names or (wanted not in self.names and stale):
            self.names = await self.store.known_commands()
            self.loaded = time.monotonic()
        return self.names


SETTINGS = web.AppKey("settings", Settings)
DATABASE_URL = web.AppKey("database_url", str)
STORE = web.AppKey("store", Store)
HUB = web.AppKey("hub", EventHub)
CREATES = web.AppKey("creates", CreateQueue)
COMMANDS = web.AppKey("commands", CommandCache)
# (command, how many) a request created, for the tasks-created counter (scheduler/ops.py)
TASKS_CREATED = web.RequestKey("tasks_created", tuple)
