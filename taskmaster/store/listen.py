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
    """A dedicated connection LISTENing on some channels until it is lost or closed.

        async with Listener(url, {"taskmaster_tasks": on_task}) as listener:
            await listener.lost()     # returns when the connection drops
    """

    def __init__(self, url: str, channels: Mapping[str, Callback]) -> None:
        self.url = url
        self.channels = dict(channels)
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()

    async def __aenter__(self) -> Listener:
        conn = await asyncpg.connect(self.url)
        try:
            conn.add_termination_listener(lambda _c: self._lost.set())
            for channel, callback in self.channels.items():
                await conn.add_listener(channel, _adapt(callback))
        except BaseException:
            await _close(conn)
            raise
        self._conn = conn
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await _close(conn)

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


async def _close(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        await conn.close(timeout=1)
