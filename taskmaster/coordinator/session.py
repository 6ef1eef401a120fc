"""One connected worker: its session, and what goes to it through its outbox."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
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


# runs of a worker's tasks seen before its tasks may count as short
PREFETCH_AFTER_RUNS = 3


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

    @property
    def free(self) -> int:
        """Deliveries this worker can take now: free slots, plus its prefetch while its
        tasks are short."""
        if self.draining or self.closed:
            return 0
        extra = self.prefetch if self.short_tasks else 0
        return max(0, self.capacity + extra - len(self.held))

    def ran(self, seconds: float, short_below: float) -> None:
        """One of its tasks ran this long: are its tasks short (worth prefetching)?"""
        self.run_mean = seconds if not self.runs else 0.8 * self.run_mean + 0.2 * seconds
        self.runs += 1
        self.short_tasks = self.runs >= PREFETCH_AFTER_RUNS and self.run_mean < short_below

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
