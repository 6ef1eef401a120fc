"""One connected worker: its session, and what goes to it through its outbox."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from taskmaster.coordinator.admission import MAX_WRITES_IN_FLIGHT, ReportBudget
from taskmaster.model import Delivery, TaskRef

log = logging.getLogger(__name__)


# ---- what goes to a worker: the outbox of its session ----

class Ack(NamedTuple):
    """The answer to one report: its seq, and why it was refused ("" when accepted)."""

    seq: int
    accepted: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Assign:
    """Tasks for the worker."""

    deliveries: list[Delivery]


@dataclass(frozen=True, slots=True)
class Acks:
    """Answers to the worker's reports."""

    acks: list[Ack]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop these deliveries (cancelled by a user, or timed out)."""

    refs: list[TaskRef]


@dataclass(frozen=True, slots=True)
class Close:
    """End the worker's stream."""

    reason: str


OutItem = Assign | Acks | Cancel | Close


# runs of a worker's tasks (or of a command's) seen before they may count as short
PREFETCH_AFTER_RUNS = 3
# commands whose run times a coordinator keeps (the least recently run is forgotten)
SHORT_COMMANDS_KEPT = 1000
# a worker's queue is kept short enough for it to run through it in this long at its
# recent pace: deep for many slots of short tasks, shallow for one slot of tasks that
# take milliseconds (past the time a worker keeps a queued delivery while no slot frees,
# 0.1 s at the defaults, the queue is given back: only long tasks hold it so long)
PREFETCH_QUEUE_SECONDS = 0.1
# until its pace is known, a slot is taken to finish no more than one task in this long
# (what a task costs beside its run)
PREFETCH_MIN_CYCLE = 0.003


def _moving_mean(mean: float, runs: int, seconds: float) -> float:
    return seconds if not runs else 0.8 * mean + 0.2 * seconds


class ShortCommands:
    """The recent run time of each command, over every worker of this coordinator.

    Only tasks of a command that ran short lately are prefetched (queued on a worker
    behind busy slots), and only while every task within reach of the claim is one: so a
    long task after many short ones is never queued behind a busy slot, where it would be
    given back after TASKMASTER_PREFETCH_BELOW x 5 and show as a task_rejected event.
    """

    def __init__(self, short_below: float) -> None:
        self.short_below = short_below
        self._runs: OrderedDict[str, tuple[float, int]] = OrderedDict()  # mean s, runs

    def ran(self, command: str, seconds: float) -> None:
        """A task of this command ran this long."""
        mean, runs = self._runs.pop(command, (0.0, 0))
        self._runs[command] = (_moving_mean(mean, runs, seconds), runs + 1)
        while len(self._runs) > SHORT_COMMANDS_KEPT:
            self._runs.popitem(last=False)

    def names(self) -> list[str]:
        """The commands whose tasks ran short lately."""
        return [c for c, (mean, runs) in self._runs.items()
                if runs >= PREFETCH_AFTER_RUNS and mean < self.short_below]


@dataclass(eq=False)
class Session:
    """One connected worker."""

    worker_id: str
    name: str
    host: str
    pid: int
    capacity: int
    commands: tuple[str, ...]
    outbox: asyncio.Queue[OutItem]
    held: dict[uuid.UUID, int] = field(default_factory=dict)  # task id -> attempt
    draining: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    beat: bool = False  # a heartbeat arrived since the last flush
    closed: bool = False
    # deliveries still running at its latest draining heartbeat (None: not draining)
    draining_holds: set[tuple[uuid.UUID, int]] | None = None
    # what bounds its reports: status messages being written, updates per second
    writes: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_WRITES_IN_FLIGHT))
    budget: ReportBudget | None = None
    # its stream is not being read (reports over a bound wait): alive, whatever last_seen says
    held_back: bool = False
    # deliveries it queues beyond its slots (as it registered, capped), sent while its tasks
    # are short: a slot that frees starts the next task at once, not after a round trip
    prefetch: int = 0
    run_mean: float = 0.0  # its tasks' recent run time, seconds (moving average)
    runs: int = 0
    short_tasks: bool = False
    queue_depth: int = 0  # of its prefetch, what it is sent now (0 unless its tasks are short)
    # seconds between two of its tasks finishing while it is busy (moving mean; 0: unknown)
    pace: float = 0.0

    @property
    def free(self) -> int:
        """Deliveries this worker can take now: free slots, plus its queue while its tasks
        are short."""
        if self.draining or self.closed:
            return 0
        return max(0, self.capacity + self.queue_depth - len(self.held))

    @property
    def free_slots(self) -> int:
        """Of free, the slots that would start a delivery at once (the rest queue)."""
        return min(self.free, max(0, self.capacity - len(self.held)))

    def gave_back(self) -> None:
        """It gave a delivery back (full, or one queued behind a long task): no prefetch
        until its tasks prove short again."""
        self.runs = 0
        self.short_tasks = False
        self.queue_depth = 0

    def ran(self, seconds: float, short_below: float) -> None:
        """One of its tasks ran this long: are its tasks short (worth prefetching)?"""
        self.run_mean = _moving_mean(self.run_mean, self.runs, seconds)
        self.runs += 1
        self.short_tasks = self.runs >= PREFETCH_AFTER_RUNS and self.run_mean < short_below
        self._size_queue()

    def finished(self, times: list[float]) -> None:
        """Its tasks of one status message finished at these times (its clock, unix
        seconds): a worker sends what finished while it was busy, so their spread over
        their number is its pace (the time between two messages may be idle)."""
        if len(times) >= 2:
            gap = (max(times) - min(times)) / (len(times) - 1)
            self.pace = gap if not self.pace else 0.8 * self.pace + 0.2 * gap
            self._size_queue()

    def _size_queue(self) -> None:
        if not self.short_tasks:
            self.queue_depth = 0
            return
        # what it finishes in PREFETCH_QUEUE_SECONDS: at its pace as measured, but never
        # faster than its slots run its tasks (slots that finish together, in one message,
        # look faster than they are)
        floor = self.run_mean / self.capacity
        if self.pace:
            depth = PREFETCH_QUEUE_SECONDS / max(self.pace, floor, 1e-5)
        else:
            depth = PREFETCH_QUEUE_SECONDS / max(floor, PREFETCH_MIN_CYCLE / self.capacity)
        # and no deeper than the tasks it has run (since its queue last had to be given
        # back): a queue grows as the worker proves itself, so the first worker found
        # short does not take a whole burst of short tasks from the others
        self.queue_depth = min(self.prefetch, int(depth), self.runs)

    def send(self, item: OutItem) -> bool:
        """Queue a message; False (and the session closed) when the worker is not reading."""
        try:
            self.outbox.put_nowait(item)
            return True
        except asyncio.QueueFull:
            log.warning("worker %s is not reading its stream; dropping it", self.name,
                        extra={"worker_id": self.worker_id})
            self.closed = True
            return False


@dataclass(frozen=True, slots=True)
class Joined:
    """A worker admitted: its session, deliveries it must drop, and the secret issued to it
    ("" for a worker coming back with its own)."""

    session: Session
    revoked: list[tuple[uuid.UUID, int]]
    secret: str = ""
