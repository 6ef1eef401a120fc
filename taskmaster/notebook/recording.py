"""Record what the panels consume, and replay it into them with no stack running.

A recording is one JSON-lines file:

    {"kind": "header", "format": "taskmaster-recording", "version": 1, "started": "...", ...}
    {"kind": "event", "t": 0.412, "event": {"id": 17, "event": "task_running", ...}}
    {"kind": "stats", "t": 1.003, "stats": {...GET /api/stats...}, "workers": [...]}
    {"kind": "end", "t": 30.0, "events": 1234, "reason": "30 s recorded"}

`t` is seconds since the recording started. `Replay(path)` is a read-only client of that
file: `events()` yields the events at their pace (times `speed`), `stats()` and `workers()`
answer what was polled at the replay's current time, so a Feed, a Dashboard or
`live(replay, TaskStream())` show the run again exactly as it was seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from taskmaster.client import ApiError

FORMAT = "taskmaster-recording"
VERSION = 1
MAX_BYTES = 50_000_000  # the default bound of one recording file
YIELD_EVERY = 256  # events replayed before the replay lets the panels' tick run


class RecordingTooLarge(Exception):
    """The recording reached its byte bound; the file holds what fit and ends cleanly."""


class RecordingError(ValueError):
    """A file that is not a recording, or a broken line in one (says which line and why)."""


class Recorder:
    """Writes a recording; at most max_bytes (RecordingTooLarge past it, the file closed)."""

    def __init__(self, path: str | Path, *, max_bytes: int = MAX_BYTES, source: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 1024:
            raise ValueError(f"max_bytes={max_bytes}: a recording needs at least 1024 bytes")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.clock = clock
        self.started = clock()
        self.bytes = 0
        self.events = 0
        self.snapshots = 0
        self.closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = self.path.open("w", encoding="utf-8")
        self._write({"kind": "header", "format": FORMAT, "version": VERSION,
                     "started": datetime.now(UTC).isoformat(), "source": source,
                     "max_bytes": max_bytes})

    def elapsed(self) -> float:
        """Seconds since the recording started."""
        return round(self.clock() - self.started, 3)

    def _write(self, line: Mapping[str, Any]) -> None:
        if self.closed:
            raise RuntimeError(f"the recording {self.path} is closed")
        text = json.dumps(line, separators=(",", ":"), default=str) + "\n"
        size = len(text.encode())
        # keep room for the closing line, so a full recording still ends cleanly
        if self.bytes + size > self.max_bytes - 200 and line.get("kind") != "end":
            self.close(reason=f"size bound of {self.max_bytes} bytes reached")
            raise RecordingTooLarge(
                f"the recording {self.path} reached its bound of {self.max_bytes} bytes after "
                f"{self.events} events; record fewer seconds, or raise the bound "
                "(--max-bytes, Recorder(max_bytes=...))")
        self._file.write(text)
        self.bytes += size

    def event(self, event: Mapping[str, Any]) -> None:
        """Append one feed event (as the client gave it: with its id and timestamp)."""
        self._write({"kind": "event", "t": self.elapsed(), "event": dict(event)})
        self.events += 1

    __call__ = event  # a recorder is also a feed listener

    def snapshot(self, stats: Mapping[str, Any], workers: Iterable[Mapping[str, Any]] = ()
                 ) -> None:
        """Append one poll: GET /api/stats and GET /api/workers answers."""
        self._write({"kind": "stats", "t": self.elapsed(), "stats": dict(stats),
                     "workers": [dict(w) for w in workers]})
        self.snapshots += 1

    def close(self, reason: str = "stopped") -> None:
        """Write the closing line and close the file (idempotent)."""
        if self.closed:
            return
        self._write({"kind": "end", "t": self.elapsed(), "events": self.events,
                     "reason": reason})
        self.closed = True
        self._file.close()

    def __repr__(self) -> str:
        return f"Recorder({self.path.name}: {self.events} events, {self.snapshots} polls)"


async def record(client: Any, path: str | Path, seconds: float, *,
                 stats_interval: float = 1.0, max_bytes: int = MAX_BYTES,
                 last_event_id: int | str | None = None) -> Recorder:
    """Record a stack's feed and polls for `seconds`; RecordingTooLarge past max_bytes
    (the file then holds what fit)."""
    if seconds <= 0 or stats_interval <= 0:
        raise ValueError("record needs seconds > 0 and stats_interval > 0")
    recorder = Recorder(path, max_bytes=max_bytes, source=str(getattr(client, "base_url", "")))

    async def events() -> None:
        async for event in client.events(last_event_id=last_event_id):
            recorder.event(event)

    async def polls() -> None:
        while True:
            try:
                recorder.snapshot(await client.stats(), await client.workers())
            except (ApiError, OSError, TimeoutError) as exc:  # the scheduler may restart
                recorder.snapshot({"error": str(exc)})
            await asyncio.sleep(stats_interval)

    try:
        async with asyncio.timeout(seconds):
            async with asyncio.TaskGroup() as group:
                group.create_task(events())
                group.create_task(polls())
    except TimeoutError:
        pass
    except BaseExceptionGroup as group_error:
        too_large = group_error.subgroup(RecordingTooLarge)
        if too_large is not None:
            raise too_large.exceptions[0] from None
        raise
    finally:
        if not recorder.closed:
            await _final_poll(client, recorder)
            recorder.close(reason=f"{seconds:g} s recorded")
    return recorder


async def _final_poll(client: Any, recorder: Recorder) -> None:
    try:
        recorder.snapshot(await client.stats(), await client.workers())
    except (ApiError, OSError, TimeoutError, RecordingTooLarge):
        pass


@dataclass(slots=True)
class Recording:
    """A recording read into memory."""

    header: dict[str, Any]
    lines: list[dict[str, Any]]  # events and polls, in order of t
    end: dict[str, Any] = field(default_factory=dict)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The feed's events, in order."""
        return [line["event"] for line in self.lines if line["kind"] == "event"]

    @property
    def polls(self) -> list[dict[str, Any]]:
        """The stats polls, in order."""
        return [line for line in self.lines if line["kind"] == "stats"]

    @property
    def duration(self) -> float:
        """Seconds the recording lasts."""
        last = self.lines[-1]["t"] if self.lines else 0.0
        return float(self.end.get("t", last))

    @property
    def final_stats(self) -> dict[str, Any]:
        """The last stats poll that answered."""
        good = [p["stats"] for p in self.polls if "error" not in p["stats"]]
        return good[-1] if good else {}

    def __repr__(self) -> str:
        return (f"Recording({len(self.events)} events, {len(self.polls)} polls, "
                f"{self.duration:.1f} s)")


def load(path: str | Path) -> Recording:
    """Read a recording; RecordingError names the line and what is wrong with it."""
    path = Path(path)
    header: dict[str, Any] | None = None
    lines: list[dict[str, Any]] = []
    end: dict[str, Any] = {}
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError as exc:
                raise RecordingError(f"{path}, line {number}: not JSON ({exc})") from None
            kind = line.get("kind") if isinstance(line, dict) else None
            if header is None:
                if kind != "header" or line.get("format") != FORMAT:
                    raise RecordingError(f"{path} is not a TaskMaster recording: its first line "
                                         f"must be a header of format {FORMAT!r}; make one with "
                                         "`taskmaster record`")
                if line.get("version") != VERSION:
                    raise RecordingError(f"{path}: recording version {line.get('version')!r}, "
                                         f"this TaskMaster reads version {VERSION}")
                header = line
            elif kind == "end":
                end = line
            elif kind in ("event", "stats") and isinstance(line.get("t"), int | float):
                lines.append(line)
            else:
                raise RecordingError(f"{path}, line {number}: expected an event or stats line "
                                     "with a number `t`")
    if header is None:
        raise RecordingError(f"{path} is empty: not a TaskMaster recording")
    return Recording(header, lines, end)


class Replay:
    """A read-only client over a recording, for the panels: `Dashboard(Replay(path))`.

    `speed` 1 replays at the recorded pace, 10 ten times faster, 0 as fast as it can.
    """

    base_url = "replay"

    def __init__(self, recording: str | Path | Recording, *, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError(f"speed={speed}: use 1 for the recorded pace, more for faster, "
                             "0 for as fast as possible")
        self.recording = recording if isinstance(recording, Recording) else load(recording)
        self.speed = speed
        self.clock = 0.0  # the recording's time replayed so far
        self.finished = False
        self._poll = 0  # index of the next poll not yet reached
        self._polls = self.recording.polls
        self._current: dict[str, Any] = {}

    # what the feed reads
    async def events(self, last_event_id: int | str | None = None, *, reconnect: bool = True,
                     on_status: Callable[[str], Any] | None = None
                     ) -> AsyncIterator[dict[str, Any]]:
        """The recorded events at their pace (after last_event_id when given)."""
        if on_status is not None:
            on_status("connected")
        loop = asyncio.get_running_loop()
        began = loop.time() - (self.clock / self.speed if self.speed else 0.0)
        after = int(str(last_event_id)) if str(last_event_id or "").isdigit() else None
        n = 0
        for line in self.recording.lines:
            t = float(line["t"])
            if self.speed:
                delay = began + t / self.speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self.clock = max(self.clock, t)
            if line["kind"] != "event":
                continue
            event = line["event"]
            if after is not None and isinstance(event.get("id"), int) and event["id"] <= after:
                continue
            yield event
            n += 1
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        self.clock = max(self.clock, self.recording.duration)
        self.finished = True  # the status stays "connected": the panels show the end state
        if reconnect:  # a feed reconnects when its stream ends: stay open, silent
            await asyncio.Event().wait()

    def _latest(self) -> dict[str, Any]:
        while self._poll < len(self._polls) and self._polls[self._poll]["t"] <= self.clock:
            if "error" not in self._polls[self._poll]["stats"]:
                self._current = self._polls[self._poll]
            self._poll += 1
        return self._current

    async def stats(self) -> dict[str, Any]:
        """The stats polled at or before the replay's time."""
        return dict(self._latest().get("stats") or {})

    async def workers(self, history: bool = False) -> list[dict[str, Any]]:
        """The workers polled at or before the replay's time."""
        return [dict(w) for w in self._latest().get("workers") or []]

    async def tasks(self, **_params: Any) -> tuple[list[dict[str, Any]], None]:
        """No task pages were recorded: the monitor fills from the events."""
        return [], None

    async def commands(self) -> list[str]:
        """The commands the recording's tasks ran."""
        return sorted({str(e["command"]) for e in self.recording.events if e.get("command")})

    async def readyz(self) -> bool:
        """A recording is always ready."""
        return True

    async def close(self) -> None:
        """Nothing to close."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def refused(*_args: Any, **_kwargs: Any) -> Any:
            raise ApiError(405, f"{name}() acts on a stack, and this is a recording being "
                                "replayed: connect to a running stack to do that")

        return refused

    def __repr__(self) -> str:
        return f"Replay({self.recording!r}, speed={self.speed:g})"
