"""The coordinator's Prometheus metrics, served on a port of their own.

Counters move as the coordinator assigns tasks and applies workers' reports; gauges about
the connected workers (and what each reports holding) are read at scrape time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from taskmaster.coordinator.service import Coordinator, Observer
from taskmaster.model import Delivery, ReportState, TaskStatus
from taskmaster.store import Applied, Moved

log = logging.getLogger(__name__)

WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
RUN_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
# the run time of a delivery that ended this way is observed, labelled with it
_OUTCOMES = frozenset({ReportState.COMPLETED, ReportState.FAILED, ReportState.CANCELLED})


# the counters the coordinator keeps itself: (metric, key in Coordinator.counters, help)
_COUNTERS = [
    ("taskmaster_reports", "reports", "Status reports received from workers."),
    ("taskmaster_reports_refused", "refused",
     "Reports refused by fencing: their delivery had been given to someone else."),
    ("taskmaster_workers_refused", "joins_refused",
     "Worker connections refused: a missing or wrong cluster token, or a worker id without "
     "its secret."),
    ("taskmaster_reports_unstorable", "unstorable",
     "Reports that could not be stored (malformed, a result over the size limit, or refused "
     "by PostgreSQL); their attempts failed instead."),
    ("taskmaster_reports_throttled", "throttled",
     "Status messages a worker had to wait to send (over its rate, or too many being "
     "written)."),
    ("taskmaster_tasks_pruned", "tasks_pruned",
     "Finished tasks deleted after TASKMASTER_TASK_RETENTION."),
    ("taskmaster_vacuums", "vacuums",
     "VACUUMs of the queue's tables run by the coordinator (TASKMASTER_VACUUM_DEAD_ROWS)."),
]


class _SessionCollector(Collector):
    """Figures read from the coordinator's live sessions at scrape time."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        """The gauges and the counters the coordinator keeps itself."""
        c = self.coordinator
        sessions = [s for s in list(c.sessions.values()) if not s.closed]
        online = GaugeMetricFamily("taskmaster_workers_online",
                                   "Workers connected to this coordinator and taking tasks.")
        online.add_metric([], sum(1 for s in sessions if not s.draining))
        draining = GaugeMetricFamily("taskmaster_workers_draining",
                                     "Workers connected to this coordinator and draining.")
        draining.add_metric([], sum(1 for s in sessions if s.draining))
        slots = GaugeMetricFamily("taskmaster_worker_slots", "Task slots a worker offers.",
                                  labels=["worker"])
        held = GaugeMetricFamily("taskmaster_worker_tasks_in_flight",
                                 "Tasks a connected worker holds.", labels=["worker"])
        for s in sessions:
            slots.add_metric([s.name], s.capacity)
            held.add_metric([s.name], len(s.held))
        yield from (online, draining, slots, held)
        for name, key, text in _COUNTERS:
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], c.counters[key])
            yield counter


class CoordinatorMetrics(Observer):
    """Counters and histograms fed by the coordinator, in a registry of their own."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        r.register(_SessionCollector(coordinator))

        def by_command(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["command"], registry=r)

        self.tasks_assigned = by_command("taskmaster_tasks_assigned_total",
                                         "Deliveries sent to workers.")
        self.tasks_completed = by_command("taskmaster_tasks_completed_total", "Tasks completed.")
        self.tasks_failed = by_command("taskmaster_tasks_failed_total",
                                       "Tasks failed for good (out of attempts).")
        self.tasks_retried = by_command("taskmaster_tasks_retried_total",
                                        "Failed attempts put back to run again after a backoff.")
        self.tasks_reassigned = by_command(
            "taskmaster_tasks_reassigned_total",
            "Tasks taken back from a lost worker and put back in the queue.")
        self.tasks_cancelled = by_command("taskmaster_tasks_cancelled_total",
                                          "Held tasks cancelled (by their worker, or when lost).")
        self.tasks_rejected = by_command("taskmaster_tasks_rejected_total",
                                         "Deliveries a worker refused (draining or full), put back.")
        # the counter of each final status; label children by (metric, *labels) (_child)
        self._final = {TaskStatus.COMPLETED: self.tasks_completed,
                       TaskStatus.FAILED: self.tasks_failed,
                       TaskStatus.CANCELLED: self.tasks_cancelled}
        self._children: dict[tuple[Any, ...], Any] = {}
        self.wait = Histogram(
            "taskmaster_task_queue_wait_seconds",
            "From when a task was due (created, or its retry time) to when a worker started it.",
            ["command"], buckets=WAIT_BUCKETS, registry=r)
        self.run = Histogram(
            "taskmaster_task_run_seconds", "How long an attempt ran on its worker, by outcome.",
            ["command", "outcome"], buckets=RUN_BUCKETS, registry=r)

    # ---- Observer ----

    def assigned(self, deliveries: list[Delivery]) -> None:
        """Count deliveries by command."""
        counts: dict[str, int] = {}
        for d in deliveries:
            counts[d.command] = counts.get(d.command, 0) + 1
        for command, n in counts.items():
            self.tasks_assigned.labels(command).inc(n)

    def _child(self, metric: Any, *labels: str) -> Any:
        """metric.labels(*labels), looked up once (a report batch asks for the same few)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def applied(self, applied: list[Applied]) -> None:
        """Outcomes, wait and run times of accepted reports (counters added once a batch)."""
        counts: dict[tuple[Counter, str], int] = {}
        for a in applied:
            if (a.old_status is TaskStatus.ASSIGNED and a.state is not ReportState.REJECTED
                    and a.due_at is not None and a.started_at is not None):
                self._child(self.wait, a.command).observe(
                    max(0.0, (a.started_at - a.due_at).total_seconds()))
            outcome = a.state.value if a.state in _OUTCOMES else None
            if outcome and a.started_at is not None and a.finished_at is not None:
                self._child(self.run, a.command, outcome).observe(
                    max(0.0, (a.finished_at - a.started_at).total_seconds()))
            counter = self._final.get(a.status)
            if a.status is TaskStatus.PENDING:
                counter = self.tasks_rejected if a.state is ReportState.REJECTED else self.tasks_retried
            if counter is not None:
                counts[counter, a.command] = counts.get((counter, a.command), 0) + 1
        for (counter, command), n in counts.items():
            self._child(counter, command).inc(n)

    def moved(self, moved: Moved) -> None:
        """Tasks taken from lost workers: requeued, failed for good or cancelled."""
        for (command, status), n in moved.tasks.items():
            if status is TaskStatus.PENDING:
                self.tasks_reassigned.labels(command).inc(n)
            elif status is TaskStatus.FAILED:
                self.tasks_failed.labels(command).inc(n)
            elif status is TaskStatus.CANCELLED:
                self.tasks_cancelled.labels(command).inc(n)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class MetricsServer:
    """GET /metrics over HTTP on the coordinator's metrics port."""

    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; the bound port, or 0 when the port is taken (logged, not fatal)."""
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            log.warning("coordinator metrics not served: cannot listen on %s:%d (%s); "
                        "set TASKMASTER_METRICS_PORT", host, port, exc)
            return 0
        self.runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("coordinator metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
