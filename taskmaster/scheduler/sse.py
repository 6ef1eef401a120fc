"""The event feed: what PostgreSQL committed, fanned out to SSE subscribers.

One hub per scheduler LISTENs on `taskmaster_events`, reads new rows of `events` in
batches and hands each subscriber the same pre-encoded bytes. Every subscriber has a
bounded buffer; one that falls behind is cut off and replays from PostgreSQL when it
reconnects with Last-Event-ID, so a slow client never grows the server's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque

from taskmaster.aio import wait_event
from taskmaster.store import UNAVAILABLE, DatabaseError, FeedEvent, Store

log = logging.getLogger(__name__)

FETCH = 2000  # events read per query
# A burst of commits notifies many times: read at most this often (seconds), so each read
# takes many events. The first event after a quiet spell is read at once.
READ_INTERVAL = 0.005
# With nobody subscribed the hub only keeps up with the ids, this often; the first
# subscriber makes it catch up before it starts.
IDLE_READ_INTERVAL = 0.5
GAP_WAIT = 0.5  # seconds to wait for a transaction holding a lower id to commit
HORIZON_WAIT = 2.0  # at start, seconds to wait for transactions that may hold lower ids


def encode_feed(e: FeedEvent) -> bytes:
    """One SSE message in the demo guide's format (`data: {"event", "task_id", "timestamp",
    ...}`) with an id for resuming, as Event.to_json() would give, its details spliced in
    from PostgreSQL's JSON text without decoding them."""
    data = e.data_json if e.data_json.startswith("{") else "{}"  # details are an object
    out = ['id: ', str(e.id), '\ndata: {"event":', json.dumps(e.event)]
    if e.task_id is not None:
        out += [',"task_id":"', e.task_id, '"']
    out += [',"timestamp":"', e.timestamp.isoformat(), '"']
    if e.worker_id is not None:
        out += [',"worker_id":', json.dumps(e.worker_id)]
    if len(data) > 2:  # later keys win, as in Event.to_json; jsonb text has no raw newline
        out += [",", data[1:]]
    else:
        out.append("}")
    out.append("\n\n")
    return "".join(out).encode()


class Subscriber:
    """One SSE client's bounded buffer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[tuple[int, bytes]] = deque()  # (last id in chunk, bytes)
        self.count = 0
        self.ready = asyncio.Event()
        self.overflowed = False
        self.closed = False  # the server is shutting down
        self.last_id = 0

    def push(self, last_id: int, chunk: bytes, n: int) -> None:
        """Queue a chunk of n events; past the limit the subscriber is cut off."""
        if self.overflowed:
            return
        if self.count + n > self.limit:
            self.overflowed = True
            self.chunks.clear()
        else:
            self.chunks.append((last_id, chunk))
            self.count += n
        self.ready.set()

    def close(self) -> None:
        """End the stream (server shutdown): wake the handler so it returns."""
        self.closed = True
        self.ready.set()

    async def next(self, timeout: float) -> bytes | None:
        """The queued bytes (coalesced), or None after timeout."""
        if not self.chunks and not self.overflowed and not self.closed:
            self.ready.clear()
            await wait_event(self.ready, timeout)
        if not self.chunks:
            return None
        out = b"".join(chunk for _, chunk in self.chunks)
        self.last_id = self.chunks[-1][0]
        self.chunks.clear()
        self.count = 0
        return out


class EventHub:
    """Reads committed events in id order and broadcasts them."""

    def __init__(self, store: Store, *, poll: float = 1.0) -> None:
        self.store = store
        self.poll = poll
        self.subscribers: set[Subscriber] = set()
        self.clients = 0  # streams admitted (subscribed, or about to be)
        self.last_id = 0
        self.delivered = 0
        self.reads = 0  # queries of the events table
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._reading = asyncio.Lock()
        self._gap_since: float | None = None

    def admit(self, limit: int) -> bool:
        """Take one of `limit` places for a stream, at once (no await between the check and
        the taking); False when all are taken. leave() gives it back."""
        if self.clients >= limit:
            return False
        self.clients += 1
        return True

    def leave(self) -> None:
        """Give back a place taken by admit()."""
        self.clients -= 1

    async def subscribe(self, limit: int) -> Subscriber:
        """A new live subscriber, from the newest committed event (replay before it is the
        caller's job, up to its last_id)."""
        async with self._reading:
            if not self.subscribers:
                await self._drain()  # idle, the hub was reading only now and then
            sub = Subscriber(limit)
            sub.last_id = self.last_id
            self.subscribers.add(sub)
        self._subscribed.set()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a subscriber."""
        self.subscribers.discard(sub)

    def close(self) -> None:
        """End every subscriber's stream (the server is shutting down)."""
        for sub in list(self.subscribers):
            sub.close()

    async def run(self) -> None:
        """Forever: (re)connect, listen, read and broadcast; survives database outages."""
        delay = 0.1
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except (*UNAVAILABLE, DatabaseError, ConnectionError) as exc:
                log.warning("event feed: database unavailable (%s); retrying in %.1fs", exc, delay)
            self.ready.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _run_once(self) -> None:
        async with self.store.listen({"taskmaster_events": self._on_notify}) as listener:
            if self.last_id == 0:
                self.last_id = await self._horizon()
            self.ready.set()
            while not listener.is_lost:
                read_at = time.monotonic()
                async with self._reading:
                    await self._drain()
                timeout = GAP_WAIT / 10 if self._gap_since is not None else self.poll
                self._wake.clear()
                await wait_event(self._wake, timeout)
                if self.subscribers:
                    pause = READ_INTERVAL - (time.monotonic() - read_at)
                    if pause > 0:
                        await asyncio.sleep(pause)
                else:  # until the interval has passed or someone subscribes
                    self._subscribed.clear()
                    await wait_event(self._subscribed,
                                     IDLE_READ_INTERVAL - (time.monotonic() - read_at))
            await listener.lost()

    def _on_notify(self, _payload: str) -> None:
        self._wake.set()

    async def _horizon(self) -> int:
        """Where a fresh hub starts: the newest event id, once nothing lower can still appear.

        Transactions running when it was read may commit lower ids later; starting past
        them would hide those events from replay, so wait (bounded) for them to end.
        """
        newest, running = await self.store.event_horizon()
        deadline = time.monotonic() + HORIZON_WAIT
        while running and time.monotonic() < deadline:
            if not await self.store.still_running(running):
                break
            await asyncio.sleep(0.01)
        return newest

    async def _drain(self) -> None:
        """Read and broadcast what was committed; called holding _reading (subscribe() takes
        it too, so nobody joins in the middle)."""
        while True:
            self.reads += 1
            if self.subscribers:
                events = await self.store.feed_after(self.last_id, FETCH)
                ids = [e.id for e in events]
            else:  # nobody to send them to: only keep up with the ids
                ids = await self.store.event_ids_after(self.last_id, FETCH)
                events = []
            n = self._contiguous(ids)
            if n and events:
                self._broadcast(events[:n])
            if n < FETCH:
                return

    def _contiguous(self, ids: list[int]) -> int:
        """How many ids run without a gap; a gap older than GAP_WAIT is skipped."""
        n = 0
        expected = self.last_id + 1
        for i in ids:
            if i != expected:
                now = time.monotonic()
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < GAP_WAIT:
                    break  # a lower id may still commit: wait for it
                self._gap_since = None  # rolled back: skip the hole
            n += 1
            expected = i + 1
        else:
            self._gap_since = None
        if n:
            self.last_id = ids[n - 1]
        return n

    def _broadcast(self, events: list[FeedEvent]) -> None:
        chunk = b"".join(map(encode_feed, events))
        last = events[-1].id
        for sub in list(self.subscribers):
            sub.push(last, chunk, len(events))
        self.delivered += len(events) * len(self.subscribers)
