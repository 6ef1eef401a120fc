"""The waits the components' loops are built on stop when their task is cancelled, even
when the cancellation and the event arrive in the same turn of the event loop."""

from __future__ import annotations

import asyncio

from taskmaster.aio import wait_event, wait_future


async def _waiting(task: asyncio.Task[object], event: asyncio.Event) -> None:
    """Until the task waits on the event."""
    async with asyncio.timeout(5):
        while not event._waiters:  # type: ignore[attr-defined]
            await asyncio.sleep(0)
    assert not task.done()


async def test_a_cancel_in_the_same_turn_as_the_event_stops_the_wait() -> None:
    event = asyncio.Event()

    async def loop() -> None:
        while True:  # as the coordinator's assigner: wait, work, wait again
            await wait_event(event, 60)
            event.clear()

    task = asyncio.create_task(loop())
    await _waiting(task, event)
    event.set()
    task.cancel()  # same turn: asyncio.wait_for (3.11) would return and wait 60 s more
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled(), "the loop outlived its cancellation"


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 5) is True


async def test_wait_future_leaves_the_future_alone_on_timeout() -> None:
    fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    assert await wait_future(fut, 0.01) is False
    assert not fut.cancelled()  # still the caller's to resolve
    fut.set_result(1)
    assert await wait_future(fut, 5) is True
