"""LISTEN on PostgreSQL channels over a connection of its own, owned by the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from types import TracebackType

import asyncpg

# called with the notification's payload
Callback = Callable[[str], None]


class Listener:
    """A connection LISTENing on some channels until it is lost or closed: a dedicated one
    when given a URL, else one borrowed from the pool for as long as it listens.

        async with store.listen({"taskmaster_tasks": on_task}) as listener:
            await listener.lost()     # raises ConnectionError when the connection drops
    """

    def __init__(self, source: str | asyncpg.Pool, channels: Mapping[str, Callback]) -> None:
        self.source = source
        self.channels = {name: _adapt(callback) for name, callback in channels.items()}
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()

    async def __aenter__(self) -> Listener:
        if isinstance(self.source, str):
            conn = await asyncpg.connect(self.source)
        else:
            conn = await self.source.acquire()
        try:
            conn.add_termination_listener(self._on_lost)
            for channel, callback in self.channels.items():
                await conn.add_listener(channel, callback)
        except BaseException:
            await self._let_go(conn)
            raise
        self._conn = conn
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._let_go(conn)

    def _on_lost(self, _conn: object) -> None:
        self._lost.set()

    async def _let_go(self, conn: asyncpg.Connection) -> None:
        if isinstance(self.source, str):
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)
            return
        with contextlib.suppress(Exception):  # back to the pool listening to nothing
            conn.remove_termination_listener(self._on_lost)
            for channel, callback in self.channels.items():
                await conn.remove_listener(channel, callback)
        with contextlib.suppress(Exception):
            await self.source.release(conn, timeout=1)

    async def lost(self) -> None:
        """Wait until the connection is lost; then raise ConnectionError."""
        await self._lost.wait()
        raise ConnectionError("notification connection lost")

    @property
    def is_lost(self) -> bool:
        """True once the connection has dropped."""
        return self._lost.is_set()


def _adapt(callback: Callback) -> Callable[..., None]:
    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)
    return on_notify
