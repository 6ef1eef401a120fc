"""The coordinator's logic: registry, assignment, status writes, failure detection.

Transport-free: the gRPC adapter turns protobuf into these calls and Outbox items back
into protobuf. PostgreSQL is the truth; everything here is rebuilt from it plus the
workers' registrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from taskmaster.aio import wait_event
from taskmaster.config import Settings
from taskmaster.coordinator.admission import (
    IdentityRefused,
    RegistrationRefused,
    ReportBudget,
    TooManyWorkers,
    check_registration,
    issue_identity,
    secret_hash,
)
from taskmaster.coordinator.assignment import STRATEGIES, Candidate
from taskmaster.coordinator.reports import PendingWrite, ReportWriter, WriteFailed
from taskmaster.coordinator.session import (
    Ack,
    Acks,
    Assign,
    Cancel,
    Close,
    Joined,
    OutItem,
    Session,
)
from taskmaster.model import (
    Delivery,
    Report,
    ReportState,
    TaskRef,
    WorkerStatus,
)
from taskmaster.store import RETRYABLE, Applied, Moved, Store

log = logging.getLogger(__name__)

# the database is away, or a statement lost a lock race and rolled back whole: wait, and
# run it again
DB_ERRORS = RETRYABLE
# a lease renewal that failed, or that PostgreSQL did not answer in time (cut off)
RENEW_ERRORS: tuple[type[BaseException], ...] = (*RETRYABLE, TimeoutError)

# A live worker redials at least every 1.5 s (worker/runtime.py: backoff capped at 1 s,
# jitter up to x1.5); a restarted coordinator waits this much beyond a heartbeat timeout
# before it declares a worker it has not heard from gone.
REDIAL_GRACE = 2.0
# how long stop() waits for its cancelled loops before it gives up on them (and says so)
STOP_TIMEOUT = 5.0
# finished tasks deleted per statement by the retention (TASKMASTER_TASK_RETENTION), and the
# most statements per housekeeping round (the rest wait for the next round)
PRUNE_BATCH = 10_000
PRUNE_ROUNDS = 20
# heartbeat intervals without an answer from PostgreSQL after which a coordinator sends its
# workers elsewhere (cut off: it cannot write their reports, and their leases will lapse)
CUT_OFF_AFTER = 1.5
# seconds between two looks at the tables' dead rows (TASKMASTER_VACUUM_DEAD_ROWS)
VACUUM_EVERY = 10.0
# seconds the row of a coordinator whose lease lapsed is kept (then housekeeping deletes it)
COORDINATOR_ROWS_KEPT = 3600.0

__all__ = ["Ack", "Acks", "Assign", "Cancel", "Close", "Coordinator", "CutOff", "IdentityRefused",
           "Joined",
           "OutItem", "RegistrationRefused", "Session", "TooManyWorkers", "WriteFailed"]


class Observer:
    """What the coordinator did, for metrics (taskmaster.coordinator.metrics); no-ops here."""

    def assigned(self, deliveries: list[Delivery]) -> None:
        """Tasks went out to workers."""

    def applied(self, applied: list[Applied]) -> None:
        """Reports were accepted and written."""

    def moved(self, moved: Moved) -> None:
        """Held tasks were taken back from workers (requeued, or failed for good)."""


class CutOff(RegistrationRefused):
    """This coordinator cannot reach PostgreSQL: a worker should dial another one."""


class Coordinator:
    """Worker registry, assignment and status writes over a Store.

    Any number of coordinators may run on one database, all active. Each holds a lease row
    of its own and the leases of the workers connected to it, renewed in one statement
    every heartbeat interval; a worker whose lease lapsed while its holder's did too is put
    back by whichever coordinator sees it first.
    """

    def __init__(self, store: Store, settings: Settings, *, name: str = "",
                 address: str = "") -> None:
        self.store = store
        self.settings = settings
        # a new id per process: a restarted coordinator holds nothing of its former self
        self.coordinator_id = str(uuid.uuid4())
        self.name = name or settings.coordinator_name or f"coordinator-{os.getpid()}"
        self.address = address
        # PostgreSQL has not answered a lease renewal for a while: the workers were told to
        # go to another coordinator, and none may join until it answers again
        self.cut_off = False
        self._renewed = time.monotonic()
        self.sessions: dict[str, Session] = {}
        self.strategy = STRATEGIES[settings.assign_strategy]
        self._cursor = 0
        self._wake = asyncio.Event()
        self._writes: asyncio.Queue[PendingWrite] = asyncio.Queue(maxsize=10_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._offlines: set[asyncio.Task[None]] = set()  # see disconnected()
        self._started = time.monotonic()
        self.stopping = False
        self._reset_seen = False  # a reset committed: stop the deliveries whose tasks went
        self.outbox_limit = 10_000
        self.observer = Observer()
        # what only the coordinator sees; exported by coordinator/metrics.py
        self.counters: dict[str, int] = {"reports": 0, "refused": 0, "joins_refused": 0,
                                         "unstorable": 0, "throttled": 0, "tasks_pruned": 0,
                                         "vacuums": 0}
        self._joining = 0  # registrations under way (they count against the session limit)
        self.writer = ReportWriter(store, settings, self.counters)

    # ---- lifecycle ----

    async def start(self) -> None:
        """Start the background loops."""
        self._started = time.monotonic()
        for loop in (self._assign_loop, self._write_loop, self._reap_loop, self._listen_loop,
                     self._heartbeat_loop, self._vacuum_loop):
            self._tasks.append(asyncio.create_task(self._forever(loop), name=loop.__name__))
        self.wake()

    async def stop(self) -> None:
        """Stop the loops; workers are not marked offline (they move to another coordinator,
        or come back to the next one started here, and keep their tasks)."""
        self.stopping = True
        tasks = [*self._tasks, *self._offlines]
        for t in tasks:
            t.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for t in stuck:
                log.error("%s did not stop within %gs of being cancelled", t.get_name(),
                          STOP_TIMEOUT)
        for s in self.sessions.values():
            s.send(Close("coordinator stopping"))
        with contextlib.suppress(*DB_ERRORS, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.store.drop_coordinator(self.coordinator_id)

    async def _forever(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop; on a database outage wait and run it again."""
        delay = 0.1
        while not self.stopping:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except DB_ERRORS as exc:
                log.warning("%s: database unavailable (%s); retrying in %.1fs",
                            loop.__name__, exc, delay)
            except Exception:
                log.exception("%s crashed; restarting it in %.1fs", loop.__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def wake(self) -> None:
        """Ask the assigner to look for work."""
        self._wake.set()

    # ---- registry ----

    async def register(
        self, *, worker_id: str, secret: str = "", name: str, host: str, pid: int,
        capacity: int, commands: Iterable[str], in_flight: dict[uuid.UUID, int],
        peer: str = "",
    ) -> Joined:
        """Admit a worker: a new one (no id: it is issued an id and a secret) or one coming
        back with its id and secret. RegistrationRefused (or its kinds IdentityRefused,
        TooManyWorkers) says why not; a refused worker changes nothing."""
        given, offered = check_registration(self.settings, name=name, host=host,
                                            capacity=capacity, commands=list(commands))
        if self.cut_off:
            raise CutOff(f"coordinator {self.name} cannot reach PostgreSQL; dial another")
        if given < capacity:
            log.warning("worker %s offers %d slots; it is given %d "
                        "(TASKMASTER_MAX_WORKER_CAPACITY)", name or worker_id, capacity, given)
            capacity = given
        limit = self.settings.max_worker_sessions
        if worker_id not in self.sessions and len(self.sessions) + self._joining >= limit:
            raise TooManyWorkers(f"{limit} workers are connected already "
                                 "(TASKMASTER_MAX_WORKER_SESSIONS)")
        self._joining += 1  # counted before the first await: a burst cannot pass the limit
        try:
            issued = ""
            if not worker_id:
                worker_id, issued = issue_identity()
                secret = issued
            admitted = bool(secret) and await self.store.join_worker(
                worker_id=worker_id, secret_hash=secret_hash(secret), new=bool(issued),
                name=name or worker_id, host=host, pid=pid, capacity=capacity, commands=offered,
                holder=self.coordinator_id, lease=self.settings.heartbeat_timeout)
            if not admitted:
                self.counters["joins_refused"] += 1
                log.warning("refused a worker claiming id %s from %s: unknown id, or a wrong or "
                            "missing secret", worker_id[:64], peer or "an unknown peer",
                            extra={"worker_id": worker_id[:64]})
                raise IdentityRefused("unknown worker id, or a wrong or missing secret: "
                                      "register as a new worker (no id)")
            return await self._admit(worker_id, issued, name=name or worker_id, host=host,
                                     pid=pid, capacity=capacity, commands=offered,
                                     in_flight=in_flight)
        finally:
            self._joining -= 1

    async def _admit(self, worker_id: str, issued: str, *, name: str, host: str, pid: int,
                     capacity: int, commands: list[str], in_flight: dict[uuid.UUID, int]
                     ) -> Joined:
        """The session of a worker whose identity is proven (and recorded online)."""
        old = self.sessions.pop(worker_id, None)
        if old is not None:  # the same worker on a new connection: the old one is dead
            old.closed = True
            old.send(Close("replaced by a new connection"))
        db_held = await self.store.held_tasks(worker_id)
        # held in PostgreSQL but unknown to the worker: the delivery was lost on the way
        lost = [(t, a) for t, a in db_held.items() if in_flight.get(t) != a]
        if lost:
            self.observer.moved(
                await self.store.requeue(lost, f"delivery lost on the way to {name}"))
        # held by the worker but no longer its delivery: stop it, drop its result
        revoked = [(t, a) for t, a in in_flight.items() if db_held.get(t) != a]
        session = Session(
            worker_id=worker_id, name=name, host=host, pid=pid, capacity=capacity,
            commands=tuple(commands), outbox=asyncio.Queue(maxsize=self.outbox_limit),
            held={t: a for t, a in in_flight.items() if db_held.get(t) == a},
            budget=ReportBudget(self.settings.worker_report_rate),
        )
        self.sessions[worker_id] = session
        log.info("worker %s online (capacity %d, %d in flight, %d revoked)", name, capacity,
                 len(session.held), len(revoked), extra={"worker_id": worker_id})
        cancels = await self.store.cancel_requests([worker_id])
        if cancels:
            session.send(Cancel([TaskRef(t, a) for t, a, _ in cancels]))
        self.wake()
        return Joined(session, revoked, issued)

    def heartbeat(self, session: Session, *, draining: bool,
                  in_flight: Iterable[tuple[uuid.UUID, int]] | None = None) -> None:
        """A sign of life; draining workers get no new tasks.

        A draining worker starts nothing new, so what its draining heartbeat does not list
        as in flight (and it still holds when it leaves) never started on it.
        """
        session.last_seen = time.monotonic()
        session.beat = True
        if draining and not session.draining:
            log.info("worker %s draining", session.name, extra={"worker_id": session.worker_id})
        session.draining = draining
        if draining and in_flight is not None:
            session.draining_holds = set(in_flight)

    async def disconnected(self, session: Session, reason: str) -> None:
        """The worker's stream ended: put its tasks back at once (unless we are stopping)."""
        session.closed = True
        if self.stopping or self.sessions.get(session.worker_id) is not session:
            return
        del self.sessions[session.worker_id]
        # A vanished peer usually cancels the RPC that calls us: the write must not go
        # with it, or the worker's tasks wait for the reaper (a whole heartbeat timeout).
        write = asyncio.create_task(self._left(session, reason)
                                    if session.draining_holds is not None
                                    else self._offline([session.worker_id], reason))
        self._offlines.add(write)
        write.add_done_callback(self._offlines.discard)
        if self.cut_off:  # the write waits for PostgreSQL; the stream must end now
            return
        await asyncio.shield(write)

    async def _left(self, session: Session, reason: str) -> None:
        """A draining worker left (drained, or died draining).

        Deliveries it still holds that its last draining heartbeat did not list as in
        flight crossed its drain on the way: it never started them, so they go back as
        refused deliveries, without using up an attempt. The rest go back as for any lost
        worker (attempt + 1).
        """
        running = session.draining_holds or set()
        with contextlib.suppress(*DB_ERRORS):  # else _offline requeues them (attempt used)
            held = await self.store.held_tasks(session.worker_id)
            unstarted = [(t, a) for t, a in held.items() if (t, a) not in running]
            if unstarted:
                error = f"{reason} before starting it"
                self.observer.applied(await self.store.apply_reports(
                    [(session.worker_id, Report(task_id=t, attempt=a, state=ReportState.REJECTED,
                                                error=error)) for t, a in unstarted],
                    retry_base=self.settings.retry_base, retry_max=self.settings.retry_max))
        await self._offline([session.worker_id], reason)

    async def _offline(self, worker_ids: list[str], reason: str) -> None:
        for attempt in range(50):
            try:
                moved = await self.store.workers_offline(worker_ids, reason,
                                                         holder=self.coordinator_id)
                break
            except DB_ERRORS:
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        else:  # pragma: no cover - the reaper finds them later
            return
        self.observer.moved(moved)
        if moved.workers or moved.total:
            log.warning("workers %s offline (%s): %d tasks put back", worker_ids, reason,
                        moved.total)
        self.wake()

    # ---- status reports ----

    async def admit(self, session: Session, updates: int) -> None:
        """Wait until a status message of this many updates may be written: at most
        MAX_WRITES_IN_FLIGHT messages of one worker at once, and its updates within
        TASKMASTER_WORKER_REPORT_RATE. Its stream is not read meanwhile (gRPC's flow control
        slows the worker down); report() gives the place back."""
        wait = session.budget.take(updates) if session.budget is not None else 0.0
        if wait <= 0 and not session.writes.locked():
            await session.writes.acquire()  # at once: a place is free
            return
        self.counters["throttled"] += 1
        session.held_back = True
        try:
            if wait > 0:
                await asyncio.sleep(wait)
            await session.writes.acquire()
        finally:
            session.held_back = False
            session.last_seen = time.monotonic()

    async def report(self, session: Session, reports: list[Report]) -> list[Ack]:
        """Write reports (group-committed with other workers'); an Ack for each. Gives back
        the place admit() took."""
        try:
            session.last_seen = time.monotonic()
            if not reports:
                return []
            done: asyncio.Future[list[Ack]] = asyncio.get_running_loop().create_future()
            await self._writes.put(PendingWrite(session, reports, done))
            return await done
        finally:
            session.writes.release()

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._writes.get()]
            size = len(batch[0].reports)
            while size < self.settings.status_batch and not self._writes.empty():
                item = self._writes.get_nowait()
                batch.append(item)
                size += len(item.reports)
            try:
                applied, freed = await self.writer.write(batch)
                self.observer.applied(applied)
                if freed:
                    self.wake()
            except Exception as exc:  # a fault of ours, not of a row: never wedge the senders
                log.exception("could not write %d reports; their workers will send them again",
                              size)
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(WriteFailed(str(exc)))

    # ---- assignment ----

    async def _assign_loop(self) -> None:
        short = True
        claimed_at = time.time()  # when the last claim began
        while True:
            timeout = self.settings.poll_interval
            # Only a round that left free slots empty has run out of due tasks: only then
            # can a delayed task be next, and only then is it cheap to find (the pending
            # index holds no backlog to walk). Full slots wake us when they free up. A task
            # that fell due after the claim began, and so was not in it, is next at once.
            if short:
                due = await self.store.next_due(datetime.fromtimestamp(claimed_at, UTC))
                if due is not None:
                    timeout = min(timeout, max(0.0, due.timestamp() - time.time()) + 0.001)
            await wait_event(self._wake, timeout)
            self._wake.clear()
            if self._reset_seen:
                # between two rounds: every delivery claimed before the reset is in a
                # session's held by now, so none escapes
                self._reset_seen = False
                await self.revoke_deleted()
            while True:
                free = min(sum(s.free for s in self.sessions.values()), self.settings.assign_batch)
                claimed_at = time.time()
                sent = await self.assign_once()
                if sent < self.settings.assign_batch:
                    break
            short = sent < free

    async def assign_once(self) -> int:
        """One round: claim tasks for the free slots and send them; how many went out."""
        if not any(s.free > 0 for s in self.sessions.values()):
            return 0
        # every session, busy ones with 0 free, so the cursor keeps indexing the same workers
        candidates = [Candidate(s.worker_id, s.free_slots, len(s.held))
                      for s in self.sessions.values()]
        start = self._cursor
        limit = self.settings.assign_batch
        slots, self._cursor = self.strategy(candidates, start, limit)
        # then the deliveries to queue behind busy slots (prefetch), after every free slot
        short = self.writer.short_commands.names()
        queued: list[str] = []
        if short and len(slots) < limit:
            spare = [Candidate(s.worker_id, s.free - s.free_slots, len(s.held))
                     for s in self.sessions.values()]
            queued, _ = self.strategy(spare, self._cursor, limit - len(slots))
        deliveries = await self.store.assign(slots + queued, holder=self.coordinator_id,
                                             queue_from=len(slots), short=short)
        if len(deliveries) < len(slots):
            # fewer tasks than slots: the turn moves past the last worker served, not past
            # every slot offered (else the first worker would get every trickling task)
            _, self._cursor = self.strategy(candidates, start, len(deliveries))
        self.observer.assigned(deliveries)
        by_worker: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_worker.setdefault(d.worker_id, []).append(d)
        lost: list[str] = []
        unsent: list[tuple[str, Report]] = []
        for worker_id, batch in by_worker.items():
            session = self.sessions.get(worker_id)
            if session is not None and not session.closed:
                for d in batch:
                    session.held[d.task_id] = d.attempt
                if session.send(Assign(batch)):
                    continue
                for d in batch:
                    session.held.pop(d.task_id, None)
            # went away while we claimed: these deliveries never left, so they go back
            # without using an attempt; then the worker is put offline as usual
            lost.append(worker_id)
            unsent += [(worker_id, Report(task_id=d.task_id, attempt=d.attempt, state=ReportState.REJECTED,
                                          error="worker gone before the delivery was sent"))
                       for d in batch]
        if lost:
            await self.store.apply_reports(
                unsent, retry_base=self.settings.retry_base, retry_max=self.settings.retry_max)
            for worker_id in lost:
                self.sessions.pop(worker_id, None)
            await self._offline(lost, "worker gone during assignment")
        return len(deliveries)

    async def revoke_deleted(self) -> int:
        """Tell workers to stop the deliveries whose tasks no longer exist (a reset deleted
        them); how many. Their reports then find no row and are refused, which frees the
        slots; nothing they do can bring a task or a count back."""
        held = {t for s in self.sessions.values() for t in s.held}
        if not held:
            return 0
        existing = await self.store.existing_tasks(held)
        stopped = 0
        for s in list(self.sessions.values()):
            refs = [TaskRef(t, a) for t, a in s.held.items() if t not in existing]
            if refs:
                s.send(Cancel(refs))
                stopped += len(refs)
        if stopped:
            log.info("reset: told workers to stop %d deliveries of deleted tasks", stopped)
        return stopped

    def _on_reset(self, _payload: str) -> None:
        self._reset_seen = True
        self.wake()

    # ---- failure detection and housekeeping ----

    async def _reap_loop(self) -> None:
        tick = max(0.05, self.settings.heartbeat_interval / 2)
        last_housekeeping = 0.0
        while True:
            await asyncio.sleep(tick)
            await self.reap()
            now = time.monotonic()
            if now - last_housekeeping > 10:
                last_housekeeping = now
                await self.store.compact_counts(60.0)
                await self.store.prune_events(self.settings.event_retention)
                await self.prune()
                # rows of coordinators that died long ago (a stopping one removes its own)
                await self.store.drop_coordinator("", COORDINATOR_ROWS_KEPT)

    async def _vacuum_loop(self) -> None:
        """Every VACUUM_EVERY seconds, VACUUM the tables that need it (Store.vacuum_dead):
        in a loop of its own, as a long one must not hold up failure detection."""
        if not self.settings.vacuum_dead_rows:
            return
        while True:
            await asyncio.sleep(VACUUM_EVERY)
            t0 = time.monotonic()
            done = await self.store.vacuum_dead(self.settings.vacuum_dead_rows)
            if done:
                self.counters["vacuums"] += len(done)
                log.debug("vacuumed %s in %.2fs", ", ".join(done), time.monotonic() - t0)

    async def prune(self) -> int:
        """Delete finished tasks older than TASKMASTER_TASK_RETENTION (in batches, at most
        PRUNE_ROUNDS of them now), and workers offline that long that hold nothing; how many
        tasks went."""
        retention = self.settings.task_retention
        if not retention:
            return 0
        pruned = 0
        for _ in range(PRUNE_ROUNDS):
            n = await self.store.prune_tasks(retention, PRUNE_BATCH)
            pruned += n
            if n < PRUNE_BATCH:
                break
        self.counters["tasks_pruned"] += pruned
        workers = await self.store.prune_workers(retention)
        if pruned or workers:
            log.info("retention: deleted %d finished tasks and %d offline workers older than "
                     "%gs (TASKMASTER_TASK_RETENTION)", pruned, workers, retention)
        return pruned

    async def reap(self) -> None:
        """Drop silent workers, requeue for workers that never came back, time out tasks."""
        now = time.monotonic()
        timeout = self.settings.heartbeat_timeout
        silent = [s for s in self.sessions.values()
                  if (now - s.last_seen > timeout and not s.held_back) or s.closed]
        for s in silent:
            self.sessions.pop(s.worker_id, None)
            s.closed = True
            s.send(Close("missed heartbeats"))
        if silent:
            await self._offline([s.worker_id for s in silent], f"missed heartbeats for {timeout:g}s")
        # after a restart, give every live worker one timeout (and the longest pause between
        # two of its dials) to come back first
        if now - self._started > timeout + REDIAL_GRACE:
            stale = await self.store.stale_workers(timeout, list(self.sessions),
                                                   self.coordinator_id)
            orphans = [w for w in await self.store.orphan_holders() if w not in self.sessions]
            gone = sorted(set(stale) | set(orphans))
            if gone:
                await self._offline(gone, "worker did not come back")
        expired = await self.store.timed_out()
        if expired:
            reports = []
            for task_id, attempt, worker_id in expired:
                session = self.sessions.get(worker_id)
                if session is not None:
                    session.send(Cancel([TaskRef(task_id, attempt)]))
                reports.append((worker_id, Report(task_id=task_id, attempt=attempt,
                                                  state=ReportState.FAILED, error="timed out")))
            self.observer.applied(await self.store.apply_reports(
                reports, retry_base=self.settings.retry_base, retry_max=self.settings.retry_max
            ))
            for worker_id, r in reports:
                holder = self.sessions.get(worker_id)
                if holder is not None:
                    holder.held.pop(r.task_id, None)
            self.wake()

    async def _heartbeat_loop(self) -> None:
        """Renew this coordinator's lease and those of its workers, every heartbeat interval.

        A worker whose lease was not renewed is no longer ours (it joined another
        coordinator, or was declared gone): its stream is closed, so it registers again. When
        PostgreSQL has not answered for CUT_OFF_AFTER intervals, every stream is closed, so
        that the workers move to a coordinator that can still write their reports.
        """
        interval = self.settings.heartbeat_interval
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self.renew()
            except RENEW_ERRORS as exc:
                silent = time.monotonic() - self._renewed
                if silent > CUT_OFF_AFTER * interval and not self.cut_off:
                    self.cut_off = True
                    log.error("coordinator %s: PostgreSQL has not answered for %.1fs (%s); "
                              "sending its %d workers to another coordinator", self.name,
                              silent, exc or type(exc).__name__, len(self.sessions))
                    # dropped here, not put offline: they keep their tasks where they go (one
                    # that goes nowhere has its lease lapse, and any coordinator puts them back)
                    for s in list(self.sessions.values()):
                        s.closed = True
                        s.send(Close("this coordinator cannot reach PostgreSQL"))
                    self.sessions.clear()
            await asyncio.sleep(interval)

    async def renew(self) -> None:
        """One lease renewal: this coordinator's, then its workers' in one statement."""
        lease = self.settings.heartbeat_timeout
        await self.store.renew_coordinator(self.coordinator_id, name=self.name,
                                           address=self.address, lease=lease)
        sessions = {s.worker_id: s for s in self.sessions.values() if not s.closed}
        beats = {w: WorkerStatus.DRAINING if s.draining else WorkerStatus.ONLINE
                 for w, s in sessions.items()}
        for s in sessions.values():
            s.beat = False
        renewed = await self.store.heartbeat(beats, holder=self.coordinator_id, lease=lease)
        self._renewed = time.monotonic()
        if self.cut_off:
            self.cut_off = False
            log.warning("coordinator %s reaches PostgreSQL again; workers may join", self.name)
        for worker_id in set(beats) - renewed:
            s = sessions[worker_id]
            if self.sessions.get(worker_id) is s:
                log.warning("worker %s is no longer held by this coordinator; closing its "
                            "stream", s.name, extra={"worker_id": worker_id})
                del self.sessions[worker_id]  # its tasks are not ours to put back
                s.closed = True
                s.send(Close("the worker's lease is held elsewhere"))

    async def _listen_loop(self) -> None:
        """LISTEN for new tasks and cancellations; reconnect when the connection drops."""
        async with self.store.listen({"taskmaster_tasks": lambda _payload: self.wake(),
                                      "taskmaster_cancel": self._on_cancel,
                                      "taskmaster_reset": self._on_reset}) as listener:
            self._reset_seen = True  # a reset may have come while we were not listening
            self.wake()  # anything that arrived while we were not listening
            await listener.lost()

    def _on_cancel(self, payload: str) -> None:
        task_id, attempt, worker_id = payload.split(":", 2)
        session = self.sessions.get(worker_id)
        if session is not None:
            session.send(Cancel([TaskRef(uuid.UUID(task_id), int(attempt))]))
