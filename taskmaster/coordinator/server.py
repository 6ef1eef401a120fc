"""The coordinator's gRPC face: protobuf in, Coordinator calls, protobuf out."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from taskmaster.config import Settings
from taskmaster.coordinator.metrics import CoordinatorMetrics, MetricsServer
from taskmaster.coordinator.service import (
    Ack,
    Acks,
    Assign,
    Cancel,
    Close,
    Coordinator,
    CutOff,
    IdentityRefused,
    OutItem,
    RegistrationRefused,
    Session,
    TooManyWorkers,
    WriteFailed,
)
from taskmaster.errors import CannotListen
from taskmaster.model import Report
from taskmaster.rpc import taskmaster_pb2 as pb
from taskmaster.rpc import taskmaster_pb2_grpc as pb_grpc
from taskmaster.rpc.convert import delivery_to_pb, refs_from_pb, refs_to_pb, report_from_pb
from taskmaster.store import Store, prepare

log = logging.getLogger(__name__)

SERVICE_NAME = "taskmaster.v1.Coordinator"

def out_to_pb(item: OutItem) -> pb.CoordinatorMessage:
    """An outbox item as a CoordinatorMessage."""
    if isinstance(item, Assign):
        return pb.CoordinatorMessage(assign=pb.AssignBatch(
            tasks=[delivery_to_pb(d) for d in item.deliveries]))
    if isinstance(item, Acks):
        return pb.CoordinatorMessage(ack=pb.AckBatch(acks=[
            pb.Ack(seq=a.seq, accepted=a.accepted, reason=a.reason) for a in item.acks]))
    if isinstance(item, Cancel):
        return pb.CoordinatorMessage(cancel=pb.CancelBatch(tasks=refs_to_pb(item.refs)))
    raise ValueError(f"not a message for the worker: {item!r}")


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    """Bidirectional worker sessions."""

    def __init__(self, coordinator: Coordinator, settings: Settings) -> None:
        self.coordinator = coordinator
        self.settings = settings

    def _authorised(self, context: grpc.aio.ServicerContext) -> bool:
        token = self.settings.cluster_token
        if not token:
            return True
        given = dict(context.invocation_metadata() or ()).get("x-taskmaster-token", "")
        return hmac.compare_digest(str(given).encode(), token.encode())

    async def Connect(
        self, request_iterator: AsyncIterator[pb.WorkerMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CoordinatorMessage]:
        """One worker's session."""
        if not self._authorised(context):
            log.warning("refused a worker from %s: missing or wrong cluster token", context.peer())
            self.coordinator.counters["joins_refused"] += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong cluster token")
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("kind") != "register":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be register")
            return
        reg = first.register
        try:
            joined = await self.coordinator.register(
                worker_id=reg.worker_id, secret=reg.secret, name=reg.name, host=reg.host,
                pid=reg.pid, capacity=reg.capacity, commands=list(reg.commands),
                in_flight=dict(refs_from_pb(reg.in_flight)), peer=context.peer(),
            )
        except IdentityRefused as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except TooManyWorkers as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except CutOff as exc:  # the worker dials another coordinator
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except (RegistrationRefused, ValueError) as exc:  # ValueError: a ref's task id
            log.warning("refused a worker registration from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        session = joined.session
        # before the assignment loop runs again (no await since the session was made)
        session.prefetch = min(max(0, reg.prefetch), self.settings.max_worker_prefetch)
        yield pb.CoordinatorMessage(registered=pb.Registered(
            worker_id=session.worker_id, heartbeat_interval=self.settings.heartbeat_interval,
            revoked=refs_to_pb(joined.revoked), secret=joined.secret,
        ))
        reader = asyncio.create_task(self._read(session, request_iterator))
        reason = "stream closed"
        try:
            while True:
                item = await session.outbox.get()
                if isinstance(item, Close):
                    reason = item.reason
                    return
                yield out_to_pb(item)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if session.draining:
                reason = f"worker {session.name} drained and left"
            else:
                reason = f"worker {session.name} lost: {reason}"
            await self.coordinator.disconnected(session, reason)

    async def _read(self, session: Session, requests: AsyncIterator[pb.WorkerMessage]) -> None:
        writes: set[asyncio.Task[None]] = set()
        try:
            async for msg in requests:
                kind = msg.WhichOneof("kind")
                if kind == "heartbeat":
                    self._heartbeat(session, msg.heartbeat)
                elif kind == "status":
                    reports, refused = self._reports(session, msg.status.updates)
                    # bounded: past its rate or its writes in flight, this worker waits
                    await self.coordinator.admit(session, len(msg.status.updates))
                    task = asyncio.create_task(self._write(session, reports, refused))
                    writes.add(task)
                    task.add_done_callback(writes.discard)
            if writes:
                await asyncio.gather(*writes, return_exceptions=True)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            session.send(Close("worker closed its stream"))

    def _heartbeat(self, session: Session, beat: pb.Heartbeat) -> None:
        in_flight = None
        if beat.draining:
            try:
                in_flight = refs_from_pb(beat.in_flight)
            except ValueError as exc:  # a peer's malformed ref: the beat counts, its list not
                log.warning("ignored the in-flight list of worker %s: %s", session.name, exc,
                            extra={"worker_id": session.worker_id})
        self.coordinator.heartbeat(session, draining=beat.draining, in_flight=in_flight)

    def _reports(self, session: Session, updates: Iterable[pb.StatusUpdate]
                 ) -> tuple[list[Report], list[Ack]]:
        """The updates as Reports, and refusals of those that cannot be one."""
        reports: list[Report] = []
        refused: list[Ack] = []
        for u in updates:
            try:
                reports.append(report_from_pb(u))
            except ValueError as exc:
                self.coordinator.counters["unstorable"] += 1
                log.warning("refused a malformed report from worker %s: %s", session.name, exc,
                            extra={"worker_id": session.worker_id})
                refused.append(Ack(u.seq, False, f"malformed: {exc}"))
        return reports, refused

    async def _write(self, session: Session, reports: list[Report], refused: list[Ack]) -> None:
        try:
            acks = await self.coordinator.report(session, reports)
        except WriteFailed:
            # not written through no fault of the reports: the worker sends them again
            session.send(Close("the coordinator could not write this worker's reports"))
            return
        session.send(Acks(refused + acks))


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from TASKMASTER_TLS_CERT/KEY (and _CA: then client certificates are
    required); None when no certificate is configured."""
    if not settings.tls_cert and not settings.tls_key:
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("TASKMASTER_TLS_CERT and TASKMASTER_TLS_KEY must be set together")
    ca = Path(settings.tls_ca).read_bytes() if settings.tls_ca else None
    return grpc.ssl_server_credentials(
        [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
        root_certificates=ca, require_client_auth=ca is not None)


class CoordinatorServer:
    """The whole coordinator process: store, logic, gRPC server with health and reflection."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.server: grpc.aio.Server | None = None
        self.coordinator: Coordinator | None = None
        self.port = 0
        self.store: Store | None = None
        self.metrics: CoordinatorMetrics | None = None
        self.metrics_server: MetricsServer | None = None

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Migrate, start the loops and listen; returns the bound port."""
        await prepare(self.database_url)
        # bulk: claims and reports of many rows, planned for their actual arrays
        self.store = await Store.open(self.database_url, min_size=2, max_size=8, bulk=True,
                                      claims=True)
        self.coordinator = Coordinator(self.store, self.settings)
        self.metrics = CoordinatorMetrics(self.coordinator)
        self.coordinator.observer = self.metrics
        self.server = grpc.aio.server(options=[
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            # one coordinator per port: without this, gRPC's SO_REUSEPORT lets a second
            # coordinator bind the same port and take half of the workers' connections
            ("grpc.so_reuseport", 0),
        ])
        pb_grpc.add_CoordinatorServicer_to_server(
            CoordinatorServicer(self.coordinator, self.settings), self.server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        bind = f"{host or self.settings.host}:{self.settings.coordinator_port if port is None else port}"
        credentials = server_credentials(self.settings)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(bind)
            else:
                self.port = self.server.add_secure_port(bind, credentials)
        except RuntimeError as exc:  # grpc says only "Failed to bind to address ..."
            await self.store.close()
            raise CannotListen("coordinator", bind, "the address is in use or not available "
                               f"({exc})") from None
        self.coordinator.address = f"{host or self.settings.host}:{self.port}"
        if not self.settings.coordinator_name:
            # in a container (compose, Kubernetes) its hostname tells the replicas apart
            in_container = os.getpid() == 1 or os.path.exists("/.dockerenv")
            self.coordinator.name = (socket.gethostname() if in_container
                                     else f"coordinator-{self.port}")
        await self.coordinator.start()
        await self.server.start()
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("coordinator listening on %s (port %d%s)", bind, self.port,
                 ", TLS" if credentials is not None else "")
        if self.settings.metrics_port:
            self.metrics_server = MetricsServer(self.metrics)
            await self.metrics_server.start(host or self.settings.host, self.settings.metrics_port)
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        """Stop serving (workers keep their tasks and reconnect to the next coordinator)."""
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.coordinator is not None:
            await self.coordinator.stop()
        if self.server is not None:
            await self.server.stop(grace)
        if self.store is not None:
            await self.store.close()

    async def wait(self) -> None:
        """Until the server stops."""
        assert self.server is not None
        await self.server.wait_for_termination()
