"""Small asyncio helpers shared by the components."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; whether it is set.

    Not `asyncio.wait_for`: on Python 3.11 it loses a cancellation that arrives in the same
    turn as the event, so a loop waiting in it outlives the `stop()` that cancelled it.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


async def wait_future(future: asyncio.Future[object], timeout: float) -> bool:
    """Wait until `future` is done or `timeout` seconds pass (see wait_event); whether it is."""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(future)
    except TimeoutError:
        pass
    return future.done()
