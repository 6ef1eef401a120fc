"""A worker process: one long-lived gRPC stream to the coordinator, tasks in bounded slots.

The worker survives the coordinator: it keeps running its tasks, keeps every report that
was not acknowledged, reconnects with backoff, re-registers what it holds and sends the
reports again. Fencing on the coordinator makes a resent report harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from taskmaster.aio import wait_event
from taskmaster.config import Settings
from taskmaster.model import (
    Delivery,
    Report,
    ReportState,
    TaskRef,
    UnstorableValue,
    clean_error,
    storable_json,
)
from taskmaster.rpc import taskmaster_pb2 as pb
from taskmaster.rpc import taskmaster_pb2_grpc as pb_grpc
from taskmaster.rpc.convert import delivery_from_pb, refs_from_pb, refs_to_pb, report_to_pb
from taskmaster.worker.handlers import TaskCancelled, TaskContext, registry, run_handler

log = logging.getLogger(__name__)

SEEN_LIMIT = 100_000  # deliveries remembered for duplicate detection
UNACKED_LIMIT = 100_000  # reports kept for resending
LEAVE_GRACE = 2.0  # seconds a leaving worker waits for the coordinator to close the stream
# A task that ends sooner than this after it starts sends one report, not two: its final
# report carries the start time and the coordinator records the task_running event from it.
RUNNING_REPORT_DELAY = 0.02
# While deliveries wait in its queue, a worker's slots stay busy and the coordinator needs
# no news at once: a few reports are gathered for this long into one message (unless this
# many are ready). One message per task cost a 1-slot worker and its coordinator half their
# CPU; the 4 x 1-slot drain runs 1.5x faster for it.
REPORT_COALESCE = 0.003
COALESCE_BELOW = 16
# a prefetched delivery is given back once it has waited this many times
# TASKMASTER_PREFETCH_BELOW (at least 50 ms) and no slot has freed for as long: its
# slots are held by long tasks (a queue that moves is only slow, on busy cores)
PREFETCH_HOLD_FACTOR = 5


def _now() -> datetime:
    return datetime.now(UTC)


class Unauthorised(Exception):
    """The coordinator refused us for good (our cluster token, or our registration)."""


class UnstorableResult(Exception):
    """A handler's result that cannot be reported: its task fails with this message."""


@dataclass(eq=False)
class Running:
    """A delivery this worker is running."""

    ref: TaskRef
    ctx: TaskContext
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    timed_out: bool = False
    started_at: datetime = field(default_factory=_now)


class Worker:
    """The worker runtime."""

    def __init__(self, settings: Settings, *, name: str = "", concurrency: int | None = None,
                 coordinator: str | None = None) -> None:
        self.settings = settings
        # issued by the coordinator when we first register; the secret proves it is ours
        self.worker_id = ""
        self._secret = ""
        self.name = name or settings.worker_name or default_name()
        self.capacity = max(1, concurrency or settings.concurrency)
        # deliveries queued beyond the slots, started the moment a slot frees (the
        # coordinator sends them only while our tasks are short; see Session.free)
        self.prefetch = max(0, settings.prefetch)
        # in arrival order, each with the loop time it was queued at
        self.waiting: OrderedDict[TaskRef, tuple[Delivery, float]] = OrderedDict()
        # a delivery queued this long (a slot stayed busy: a long task after short ones) is
        # given back for another worker to take
        self.prefetch_hold = max(0.05, PREFETCH_HOLD_FACTOR * settings.prefetch_below)
        self._expiry: asyncio.TimerHandle | None = None
        self._last_freed = 0.0  # loop time a slot last freed
        # where to dial: one address, several (tried in turn, from a random one, so that
        # workers spread over them), or a dns:/// name that gRPC balances over
        self.targets = parse_targets(coordinator or settings.coordinator)
        self._turn = random.randrange(len(self.targets))
        self.target = self.targets[self._turn]
        self.host = socket.gethostname()
        self.running: dict[uuid.UUID, Running] = {}
        # deliveries received (task id and attempt as 24 bytes: a full cache of SEEN_LIMIT
        # takes ~15 MB, against ~26 MB as TaskRef keys holding UUID objects)
        self.seen: OrderedDict[bytes, None] = OrderedDict()
        self._pending: OrderedDict[TaskRef, Report] = OrderedDict()  # not sent yet
        self._unacked: OrderedDict[int, Report] = OrderedDict()  # sent, by seq
        self._seq = 0
        self._out: asyncio.Queue[pb.WorkerMessage | None] | None = None
        self._report_ready = asyncio.Event()
        self.draining = False
        self._stop = asyncio.Event()  # leave the connection loop
        self._goodbye = False  # we ended our stream (the coordinator should close its side)
        self.connected = asyncio.Event()
        self.completed = 0
        self.duplicates = 0

    # ---- reports ----

    def _queue_report(self, report: Report) -> None:
        """Queue a report; with an unsent one on the same delivery it goes as one."""
        prev = self._pending.get(report.ref)
        self._pending[report.ref] = report if prev is None else prev.then(report)
        self._report_ready.set()

    def _in_flight(self) -> list[TaskRef]:
        """Deliveries we still answer for: running, or finished with the report unacked."""
        refs = {r.ref for r in self.running.values()}
        refs |= set(self.waiting)
        refs |= {r.ref for r in self._unacked.values() if r.final}
        refs |= {r.ref for r in self._pending.values() if r.final}
        return sorted(refs)

    def _take_batch(self) -> list[tuple[int, Report]]:
        """The next reports to send, each with its number, kept until acknowledged; []
        when none."""
        batch: list[tuple[int, Report]] = []
        while self._pending and len(batch) < self.settings.status_batch:
            _, r = self._pending.popitem(last=False)
            self._seq += 1
            if r.state is not ReportState.PROGRESS:  # progress is not worth resending
                self._unacked[self._seq] = r
            batch.append((self._seq, r))
        while len(self._unacked) > UNACKED_LIMIT:
            self._unacked.popitem(last=False)
        return batch

    # ---- connection ----

    async def run(self) -> int:
        """Serve until drained or stopped; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.drain)
        backoff = 0.05
        failures = 0  # dials in a row that did not get us registered
        while not self._stop.is_set():
            try:
                await self._session_until_stopped()
                backoff = 0.05
            except Unauthorised as exc:
                log.error("%s", exc)
                return 2
            except (grpc.aio.AioRpcError, OSError) as exc:
                if self.connected.is_set():
                    log.warning("lost the coordinator at %s (%s); dialling %s", self.target,
                                _rpc_detail(exc), self._next_target())
                else:
                    log.info("coordinator at %s not reachable (%s); retrying", self.target,
                             _rpc_detail(exc))
            was_connected = self.connected.is_set()
            self.connected.clear()
            if self._stop.is_set():
                break
            if self.draining and not self.running and not self._unacked and not self._pending:
                break
            failures = 0 if was_connected else failures + 1
            self._turn = (self._turn + 1) % len(self.targets)
            self.target = self.targets[self._turn]
            # a session that ended after we registered: the next coordinator at once (a
            # failover); a dial that failed: the next one at once too, until each was tried
            if failures >= len(self.targets):
                await wait_event(self._stop, backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 1.0)  # the coordinator's REDIAL_GRACE relies on it
        await self._cancel_all()
        log.info("worker %s stopped (%d tasks completed)", self.name, self.completed)
        return 0

    async def _session_until_stopped(self) -> None:
        """One session; once we are leaving, hang up if the coordinator does not close it."""
        session = asyncio.create_task(self._session())
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({session, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not session.done() and self._goodbye:
                # we ended our stream: a healthy coordinator closes its side at once, but
                # a hung or cut-off one (or one stuck on its database) must not keep us
                await asyncio.wait({session}, timeout=LEAVE_GRACE)
        finally:
            stop.cancel()
            if not session.done():
                session.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await session
        if not session.cancelled():
            session.result()  # the session's error, if any

    async def _session(self) -> None:
        options: list[tuple[str, int | str]] = [
            ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)]
        metadata = (("x-taskmaster-token", self.settings.cluster_token),) \
            if self.settings.cluster_token else ()
        if self.target.startswith("dns:"):
            # every address the name resolves to; each new stream goes to the next ready one
            options.append(("grpc.service_config",
                            json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})))
        credentials = channel_credentials(self.settings)
        channel = (grpc.aio.insecure_channel(self.target, options=options) if credentials is None
                   else grpc.aio.secure_channel(self.target, credentials, options=options))
        async with channel:
            stub = pb_grpc.CoordinatorStub(channel)
            out: asyncio.Queue[pb.WorkerMessage | None] = asyncio.Queue()
            self._out = out
            call = stub.Connect(self._requests(out), metadata=metadata)
            helpers = [asyncio.create_task(self._flush_reports(out)),
                       asyncio.create_task(self._heartbeats(out))]
            try:
                async for msg in call:
                    await self._handle(msg)
                code = await call.code()
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    raise Unauthorised(f"coordinator refused this worker: {await call.details()}")
            except grpc.aio.AioRpcError as exc:
                self._refused(exc)
                raise
            finally:
                self._out = None
                for h in helpers:
                    h.cancel()
                for h in helpers:
                    with contextlib.suppress(asyncio.CancelledError):
                        await h

    def _next_target(self) -> str:
        return self.targets[(self._turn + 1) % len(self.targets)]

    def _refused(self, exc: grpc.aio.AioRpcError) -> None:
        """Raise Unauthorised when the coordinator's refusal is final; forget an identity
        it does not know (we register again as a new worker); else return (redial)."""
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise Unauthorised(
                f"coordinator at {self.target} refused this worker: {exc.details()} "
                "(set TASKMASTER_CLUSTER_TOKEN to the coordinator's token)") from None
        if code == grpc.StatusCode.INVALID_ARGUMENT and not self.connected.is_set():
            raise Unauthorised(f"coordinator at {self.target} refused this worker's "
                               f"registration: {exc.details()}") from None
        if code == grpc.StatusCode.PERMISSION_DENIED and self.worker_id:
            log.warning("coordinator at %s does not know us as %s (%s); registering as a new "
                        "worker", self.target, self.worker_id, exc.details(),
                        extra={"worker_id": self.worker_id})
            self.worker_id = self._secret = ""

    async def _requests(self, out: asyncio.Queue[pb.WorkerMessage | None]
                        ) -> AsyncIterator[pb.WorkerMessage]:
        yield pb.WorkerMessage(register=pb.Register(
            worker_id=self.worker_id, secret=self._secret, name=self.name, host=self.host,
            capacity=self.capacity, pid=os.getpid(), commands=sorted(registry),
            in_flight=refs_to_pb(self._in_flight()), prefetch=self.prefetch,
        ))
        if self._unacked:  # reports the last coordinator never acknowledged
            yield _status(self._unacked.items())
        while True:
            msg = await out.get()
            if msg is None:
                return
            yield msg

    async def _flush_reports(self, out: asyncio.Queue[pb.WorkerMessage | None]) -> None:
        while True:
            await self._report_ready.wait()
            if self.waiting and not self.draining and len(self._pending) < COALESCE_BELOW:
                await asyncio.sleep(REPORT_COALESCE)  # see REPORT_COALESCE
            self._report_ready.clear()
            while batch := self._take_batch():
                out.put_nowait(_status(batch))
            await asyncio.sleep(0)  # let more reports gather into the next batch

    async def _heartbeats(self, out: asyncio.Queue[pb.WorkerMessage | None]) -> None:
        # nothing before the coordinator admits us: a refusal then reaches us as such
        await self.connected.wait()
        seq = 0
        while True:
            seq += 1
            out.put_nowait(pb.WorkerMessage(heartbeat=pb.Heartbeat(
                seq=seq, in_flight=refs_to_pb(self._in_flight()), draining=self.draining)))
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _handle(self, msg: pb.CoordinatorMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "registered":
            if msg.registered.secret:  # new: the identity the coordinator issued us
                self.worker_id, self._secret = msg.registered.worker_id, msg.registered.secret
            self.connected.set()
            log.info("worker %s registered with the coordinator at %s", self.name, self.target)
            for ref in refs_from_pb(msg.registered.revoked):
                self._revoke(ref)
        elif kind == "assign":
            for a in msg.assign.tasks:
                self._accept(delivery_from_pb(a))
        elif kind == "ack":
            for ack in msg.ack.acks:
                update = self._unacked.pop(ack.seq, None)
                if not ack.accepted and update is not None:
                    log.warning("coordinator refused our report on task %s attempt %d: %s",
                                update.task_id, update.attempt, ack.reason,
                                extra={"task_id": str(update.task_id), "attempt": update.attempt})
            self._maybe_finish_drain()
        elif kind == "cancel":
            for ref in refs_from_pb(msg.cancel.tasks):
                self._cancel(ref)

    # ---- tasks ----

    def _accept(self, d: Delivery) -> None:
        key = d.task_id.bytes + d.attempt.to_bytes(8, "big", signed=True)
        if key in self.seen:
            self.duplicates += 1
            log.info("dropped a duplicate delivery of task %s attempt %d", d.task_id, d.attempt,
                     extra={"task_id": str(d.task_id), "attempt": d.attempt})
            return
        self.seen[key] = None
        if len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)
        if self.draining or (len(self.running) >= self.capacity
                             and len(self.waiting) >= self.prefetch):
            self._give_back(d, "worker draining" if self.draining else "worker full")
            return
        if len(self.running) >= self.capacity:
            loop = asyncio.get_running_loop()
            self.waiting[d.ref] = (d, loop.time())
            if self._expiry is None:
                self._expiry = loop.call_later(self.prefetch_hold, self._expire_waiting)
            return
        self._start(d)

    def _start(self, d: Delivery) -> None:
        ref = d.ref
        handler = registry.get(d.command)
        if handler is None:
            self._queue_report(Report(
                task_id=d.task_id, attempt=d.attempt, state=ReportState.FAILED,
                finished_at=_now(),
                error=f"worker {self.name} has no handler for command {d.command!r}"))
            return
        try:
            payload = json.loads(d.payload_json) if d.payload_json else None
        except ValueError:
            payload = d.payload_json
        started_at = _now()
        ctx = TaskContext(task_id=d.task_id, attempt=d.attempt, command=d.command,
                          payload=payload,
                          report_progress=self._progress_reporter(ref, started_at))
        rt = Running(ref=ref, ctx=ctx, started_at=started_at)
        self.running[d.task_id] = rt
        rt.task = asyncio.create_task(self._execute(rt, handler, d.timeout_seconds))

    def _report(self, rt: Running, state: ReportState, **fields: Any) -> Report:
        return Report(task_id=rt.ref.task_id, attempt=rt.ref.attempt, state=state,
                      started_at=rt.started_at, **fields)

    def _progress_reporter(self, ref: TaskRef, started_at: datetime) -> Any:
        # not holding the Running, which holds the context holding this: a task's objects
        # are freed as it ends, not left in a cycle for the garbage collector to find
        async def report(percent: int) -> None:
            self._queue_report(Report(task_id=ref.task_id, attempt=ref.attempt,
                                      state=ReportState.PROGRESS, started_at=started_at,
                                      progress=percent))
        return report

    async def _execute(self, rt: Running, handler: Any, timeout: float) -> None:
        # two timer handles, not asyncio.timeout(): this runs for every task, and a timer
        # costs a fraction of a context manager that reschedules and unwinds one
        loop = asyncio.get_running_loop()
        timer = loop.call_later(RUNNING_REPORT_DELAY, self._report_running, rt)
        deadline = loop.call_later(timeout, self._time_out, rt) if timeout else None
        fields: dict[str, Any] = {}
        try:
            result = await run_handler(handler, rt.ctx)
            # what cannot be stored fails the task here, not the stream that would carry it
            fields = {"progress": 100, "result_json": self._result_json(result)}
            state = ReportState.COMPLETED
            self.completed += 1
        except UnstorableResult as exc:
            state, fields["error"] = ReportState.FAILED, str(exc)
        except (TaskCancelled, asyncio.CancelledError) as exc:
            if rt.timed_out:
                state, fields["error"] = ReportState.FAILED, f"timed out after {timeout:g}s"
            elif rt.cancel_requested:
                state, fields["error"] = ReportState.CANCELLED, "cancelled"
            else:  # interrupted by our own shutdown: give it back without using an attempt
                state, fields["error"] = ReportState.REJECTED, str(exc) or "worker stopped"
        except Exception as exc:
            state, fields["error"] = ReportState.FAILED, clean_error(f"{type(exc).__name__}: {exc}")
        finally:
            timer.cancel()
            if deadline is not None:
                deadline.cancel()
            self.running.pop(rt.ref.task_id, None)
            self._last_freed = loop.time()
        self._queue_report(self._report(rt, state, finished_at=_now(), **fields))
        self._fill_slots()  # the slot is not idle for a round trip

    def _report_running(self, rt: Running) -> None:
        self._queue_report(self._report(rt, ReportState.RUNNING))

    def _time_out(self, rt: Running) -> None:
        """The task's timeout passed: stop it (it fails, saying so)."""
        if rt.task is not None and not rt.task.done():
            rt.timed_out = True
            rt.task.cancel()

    def _fill_slots(self) -> None:
        while self.waiting and not self.draining and len(self.running) < self.capacity:
            _, (d, _) = self.waiting.popitem(last=False)
            self._start(d)

    def _expire_waiting(self) -> None:
        """Give back the deliveries queued for prefetch_hold or longer while no slot has
        freed for as long; look again when that may next be so."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        while self.waiting:
            d, queued_at = next(iter(self.waiting.values()))
            since = max(queued_at, self._last_freed)  # the queue moves while slots free
            if loop.time() - since < self.prefetch_hold:
                self._expiry = loop.call_later(since + self.prefetch_hold - loop.time(),
                                               self._expire_waiting)
                return
            del self.waiting[d.ref]
            self._give_back(d, f"queued behind busy slots for {self.prefetch_hold:g}s")

    def _give_back(self, d: Delivery, why: str) -> None:
        """A delivery we will not run goes back to the queue, without using up an attempt."""
        self._queue_report(Report(task_id=d.task_id, attempt=d.attempt,
                                  state=ReportState.REJECTED, error=why, finished_at=_now()))

    def _give_back_waiting(self) -> None:
        while self.waiting:
            _, (d, _) = self.waiting.popitem(last=False)
            self._give_back(d, "worker draining")

    def _result_json(self, result: Any) -> str:
        """A handler's result as JSON text PostgreSQL stores, within TASKMASTER_MAX_RESULT_BYTES;
        UnstorableResult says what is wrong with it."""
        try:
            text = storable_json(result)
        except UnstorableValue as exc:
            raise UnstorableResult(
                f"result cannot be stored: {exc} (PostgreSQL's JSON has no NaN, Infinity or "
                "NUL character; return null or a string instead)") from None
        limit = self.settings.max_result_bytes
        if len(text) > limit:  # ASCII (json.dumps escapes the rest): characters are bytes
            raise UnstorableResult(f"result is {len(text)} bytes of JSON, more than {limit} "
                                   "(TASKMASTER_MAX_RESULT_BYTES)")
        return text

    def _cancel(self, ref: TaskRef) -> None:
        if self.waiting.pop(ref, None) is not None:  # queued: it never runs
            self._queue_report(Report(task_id=ref.task_id, attempt=ref.attempt,
                                      state=ReportState.CANCELLED, error="cancelled",
                                      finished_at=_now()))
            return
        rt = self.running.get(ref.task_id)
        if rt is None or rt.ref != ref:
            return
        log.info("cancelling task %s", ref.task_id,
                 extra={"task_id": str(ref.task_id), "attempt": ref.attempt})
        rt.cancel_requested = True
        rt.ctx.cancel_event.set()
        if rt.task is not None:
            rt.task.cancel()

    def _revoke(self, ref: TaskRef) -> None:
        """The coordinator gave this delivery to someone else: stop and forget it."""
        log.warning("task %s attempt %d was reassigned while we were away; dropping it",
                    ref.task_id, ref.attempt,
                    extra={"task_id": str(ref.task_id), "attempt": ref.attempt})
        rt = self.running.get(ref.task_id)
        if rt is not None and rt.ref == ref and rt.task is not None:
            rt.cancel_requested = True
            rt.task.cancel()
        self.waiting.pop(ref, None)
        self._pending.pop(ref, None)
        for seq in [s for s, r in self._unacked.items() if r.ref == ref]:
            del self._unacked[seq]

    async def _cancel_all(self) -> None:
        tasks = [rt.task for rt in self.running.values() if rt.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # ---- draining ----

    def drain(self) -> None:
        """Stop taking tasks, finish the running ones (bounded), report, leave. Twice: now."""
        if self.draining:
            log.warning("second stop signal: leaving now")
            self._stop.set()
            return
        self.draining = True
        log.info("worker %s draining: %d tasks to finish", self.name, len(self.running))
        self._give_back_waiting()
        if self._out is not None:
            self._out.put_nowait(pb.WorkerMessage(heartbeat=pb.Heartbeat(
                in_flight=refs_to_pb(self._in_flight()), draining=True)))
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.drain_grace
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.running:
            log.warning("drain grace of %gs over: giving back %d tasks",
                        self.settings.drain_grace, len(self.running))
            await self._cancel_all()
        # give the coordinator a moment to acknowledge the last reports
        ack_deadline = time.monotonic() + 5.0
        while (self._unacked or self._pending) and time.monotonic() < ack_deadline:
            await asyncio.sleep(0.02)
        self._maybe_finish_drain(force=True)

    def _maybe_finish_drain(self, force: bool = False) -> None:
        if not self.draining:
            return
        if force or (not self.running and not self._unacked and not self._pending):
            if self._out is not None:
                self._out.put_nowait(None)  # end our stream: the coordinator sees us leave
                self._goodbye = True
            self._stop.set()


def _status(numbered: Iterable[tuple[int, Report]]) -> pb.WorkerMessage:
    return pb.WorkerMessage(status=pb.StatusBatch(
        updates=[report_to_pb(r, seq) for seq, r in numbered]))


def parse_targets(value: str) -> list[str]:
    """The coordinators to dial, from `host:port`, `a:8080,b:8080` or `dns:///name:port`;
    ValueError naming TASKMASTER_COORDINATOR when there is none."""
    targets = [t.strip() for t in value.split(",") if t.strip()]
    if not targets:
        raise ValueError(f"no coordinator address in {value!r}: give host:port, a comma-"
                         "separated list of them, or dns:///name:port (TASKMASTER_COORDINATOR)")
    return targets


def default_name() -> str:
    """worker-<pid>; in a container its hostname, which `docker stop` accepts."""
    if os.getpid() == 1 or os.path.exists("/.dockerenv"):
        return socket.gethostname()
    return f"worker-{os.getpid()}"


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS to the coordinator when TASKMASTER_TLS_CA or _CERT is set: trust the CA (or, without
    one, the certificate itself, as in a stack sharing one self-signed certificate) and
    present the certificate and key as the client's; None means plain TCP."""
    if not settings.tls_ca and not settings.tls_cert:
        return None
    root = settings.tls_ca or settings.tls_cert
    client = bool(settings.tls_cert and settings.tls_key)
    return grpc.ssl_channel_credentials(
        root_certificates=Path(root).read_bytes(),
        private_key=Path(settings.tls_key).read_bytes() if client else None,
        certificate_chain=Path(settings.tls_cert).read_bytes() if client else None)


def _rpc_detail(exc: Exception) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)
