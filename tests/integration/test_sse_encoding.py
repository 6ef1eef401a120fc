"""The SSE feed's fast encoding (details spliced in as PostgreSQL's JSON text) says the
same as the model's: every event type and odd worker names; details that are not an
object are left out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from taskmaster.model import Event, EventType, Report
from taskmaster.scheduler.sse import encode_feed
from taskmaster.store import FeedEvent, NewTask, Store


def expected(event: Event) -> tuple[str, object]:
    """What the message of a model Event says: its id and its JSON."""
    return f"id: {event.id}", event.to_json()


def parsed(message: bytes) -> tuple[str, object]:
    """(id line, decoded data) of one SSE message."""
    id_line, data_line, *rest = message.decode().split("\n")
    assert rest == ["", ""] and data_line.startswith("data: ")
    return id_line, json.loads(data_line[6:])


async def test_every_event_encodes_as_the_model_does(store: Store) -> None:
    name = 'w "quoted" é'
    await store.upsert_worker(worker_id=name, name=name, host="h", pid=1, capacity=4,
                              commands=["noop"])
    await store.create_task(NewTask(command="noop", payload={"x": "ü\n"}))
    await store.create_batch(NewTask(command="noop", max_attempts=2), 3)
    first, second, third, fourth = await store.assign([name] * 4)
    now = datetime.now(UTC)
    await store.apply_reports([
        (name, Report(task_id=first.task_id, attempt=1, state="progress", progress=40,
                      started_at=now)),
        (name, Report(task_id=second.task_id, attempt=1, state="completed", result_json='{"r": 1}',
                      started_at=now, finished_at=now)),
        (name, Report(task_id=third.task_id, attempt=1, state="failed", error="boom\t\"x\"",
                      started_at=now, finished_at=now)),
    ], retry_base=0.01, retry_max=0.01)
    await store.cancel_task(fourth.task_id)
    await store.workers_offline([name], "gone \\ away")

    events = await store.events_after(0, 1000)
    feed = await store.feed_after(0, 1000)
    assert [e.id for e in feed] == [e.id for e in events]
    kinds = {e.event for e in events}
    assert {"worker_online", "task_scheduled", "task_assigned", "task_running", "task_progress",
            "task_completed", "task_retrying", "task_reassigned", "worker_offline"} <= kinds
    for model, fast in zip(events, feed, strict=True):
        assert parsed(encode_feed(fast)) == expected(model), model.event
    assert [e.id for e in feed] == await store.event_ids_after(0, 1000)


def test_details_that_are_not_an_object_are_left_out() -> None:
    ts = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    fast = FeedEvent(7, "task_progress", ts, None, None, "[1, 2]")
    assert parsed(encode_feed(fast)) == ("id: 7", {"event": "task_progress",
                                                   "timestamp": ts.isoformat()})
    model = Event(id=7, event=EventType.WORKER_ONLINE, timestamp=ts, task_id=None,
                  worker_id="w", data={})
    empty = FeedEvent(7, "worker_online", ts, None, "w", "{}")
    assert parsed(encode_feed(empty)) == expected(model)
