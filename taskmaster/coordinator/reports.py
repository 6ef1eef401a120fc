"""Writing workers' reports: group-committed, fenced, and one bad row refused alone.

PostgreSQL judges what it can store; when it refuses a batch, the batch is halved until
the refused rows stand alone, and their attempts fail, saying why. So a report that nobody
can write (NaN in a result, a NUL, whatever a peer sends) neither wedges its task nor
costs the other reports of its batch their acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from taskmaster.config import Settings
from taskmaster.coordinator.session import Ack, Session, ShortCommands
from taskmaster.model import Report, ReportState, TaskStatus, clean_error
from taskmaster.store import RETRYABLE, Applied, Store

log = logging.getLogger(__name__)


class WriteFailed(Exception):
    """The coordinator could not write a batch of reports (a fault of its own): the worker
    keeps them unacknowledged and sends them again on its next connection."""


def _refusal(exc: BaseException) -> str:
    """What PostgreSQL (or the driver) said of a refused row, in one line."""
    detail = getattr(exc, "detail", None)
    text = f"{exc} ({detail})" if detail else str(exc) or type(exc).__name__
    return clean_error(" ".join(text.split()))[:500]


@dataclass
class PendingWrite:
    """Reports of one status message, waiting for the write loop; done gets their acks."""

    session: Session
    reports: list[Report]
    done: asyncio.Future[list[Ack]]


class ReportWriter:
    """Applies batches of reports through a Store (see the module's docstring)."""

    def __init__(self, store: Store, settings: Settings, counters: dict[str, int]) -> None:
        self.store = store
        self.settings = settings
        self.counters = counters  # the coordinator's: reports, refused, unstorable
        # which commands ran short lately: only their tasks are prefetched
        self.short_commands = ShortCommands(settings.prefetch_below)

    async def write(self, batch: list[PendingWrite]) -> tuple[list[Applied], bool]:
        """Write a batch and answer each message: (what was applied, True when some task
        left its worker so that a slot is free)."""
        # several reports on one delivery are merged by the store, into one row each
        pairs = [(item.session.worker_id, r) for item in batch for r in item.reports]
        # a result over the limit is not written: its attempt fails, saying why
        quarter = self.settings.max_result_bytes // 4  # below it, no result can be too big
        bad = {i: too_big for i, (_, r) in enumerate(pairs)
               if r.result_json is not None and len(r.result_json) > quarter
               and (too_big := self._too_big(r))}
        applied, refused = await self._apply_rows(pairs, [i for i in range(len(pairs))
                                                          if i not in bad])
        bad |= refused
        if bad:
            applied += await self._fail_unstorable(pairs, bad)
        accepted = {(a.worker_id, a.task_id, a.attempt): a.status for a in applied}
        self._run_times(applied)
        freed = False
        i = 0
        for item in batch:
            acks = []
            finished: list[float] = []  # when the tasks it ran finished (its pace)
            for r in item.reports:
                why = bad.get(i)
                i += 1
                status = accepted.get((item.session.worker_id, r.task_id, r.attempt))
                if why is not None:  # its attempt failed instead (status says so)
                    ok, reason = False, f"not stored: {why}; the attempt is recorded as failed"
                else:
                    # merged away (a later report on the same delivery) counts as accepted
                    ok = status is not None or any(
                        (item.session.worker_id, o.task_id, o.attempt) in accepted
                        for o in item.reports if o.task_id == r.task_id and o.attempt == r.attempt
                    )
                    reason = "" if ok else "stale attempt: the task was reassigned"
                if not ok and why is None:
                    self.counters["refused"] += 1
                    log.warning("refused a stale report on task %s attempt %d from %s",
                                r.task_id, r.attempt, item.session.name,
                                extra={"task_id": str(r.task_id), "attempt": r.attempt,
                                       "worker_id": item.session.worker_id})
                    if item.session.held.get(r.task_id) == r.attempt:
                        del item.session.held[r.task_id]
                        freed = True  # its slot is free: tasks may wait for it
                if status is not None and (status.final or status is TaskStatus.PENDING):
                    item.session.held.pop(r.task_id, None)
                    freed = True
                if r.state is ReportState.REJECTED:
                    item.session.gave_back()
                elif r.final and r.started_at is not None and r.finished_at is not None:
                    item.session.ran((r.finished_at - r.started_at).total_seconds(),
                                     self.settings.prefetch_below)
                    finished.append(r.finished_at.timestamp())
                acks.append(Ack(r.seq, ok, reason))
            item.session.finished(finished)
            self.counters["reports"] += len(item.reports)
            if not item.done.done():
                item.done.set_result(acks)
        return applied, freed

    def _run_times(self, applied: list[Applied]) -> None:
        """How long the finished tasks ran, by command (what is prefetched)."""
        for a in applied:
            if (a.state in (ReportState.COMPLETED, ReportState.FAILED)
                    and a.started_at is not None and a.finished_at is not None):
                self.short_commands.ran(a.command,
                                        (a.finished_at - a.started_at).total_seconds())

    def _too_big(self, r: Report) -> str:
        """Why a report's result is over TASKMASTER_MAX_RESULT_BYTES ("" when it is not)."""
        limit = self.settings.max_result_bytes
        size = len((r.result_json or "").encode("utf-8", "surrogatepass"))
        return "" if size <= limit else (
            f"a result of {size} bytes, more than {limit} (TASKMASTER_MAX_RESULT_BYTES)")

    async def _apply_rows(self, pairs: list[tuple[str, Report]], rows: list[int]
                          ) -> tuple[list[Applied], dict[int, str]]:
        """Apply these rows of pairs in one statement; if PostgreSQL refuses one (a value it
        cannot store, whatever a peer sent), halve the batch until that row fails alone:
        (applied, {row: why it was refused}). Retries through an outage."""
        if not rows:
            return [], {}
        try:
            return await self._apply([pairs[i] for i in rows]), {}
        except Exception as exc:
            if len(rows) == 1:
                worker_id, r = pairs[rows[0]]
                why = _refusal(exc)
                self.counters["unstorable"] += 1
                log.warning("could not store a report on task %s attempt %d from worker %s: %s",
                            r.task_id, r.attempt, worker_id, why,
                            extra={"task_id": str(r.task_id), "attempt": r.attempt,
                                   "worker_id": worker_id})
                return [], {rows[0]: why}
            log.info("a batch of %d reports was refused (%s); applying it in halves",
                     len(rows), _refusal(exc))
        half = len(rows) // 2
        first, bad = await self._apply_rows(pairs, rows[:half])
        second, more = await self._apply_rows(pairs, rows[half:])
        return first + second, bad | more

    async def _apply(self, pairs: list[tuple[str, Report]]) -> list[Applied]:
        delay = 0.05
        while True:  # never drop a report while we live: retry through an outage
            try:
                return await self.store.apply_reports(
                    pairs, retry_base=self.settings.retry_base, retry_max=self.settings.retry_max)
            except RETRYABLE as exc:
                log.warning("cannot write %d reports (%s); retrying", len(pairs), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _fail_unstorable(self, pairs: list[tuple[str, Report]], bad: dict[int, str]
                               ) -> list[Applied]:
        """The attempts whose reports could not be stored fail, saying why (retried as any
        failure); a task is never left held by a report nobody can write."""
        now = datetime.now(UTC)
        failures = [(pairs[i][0], Report(
            task_id=pairs[i][1].task_id, attempt=pairs[i][1].attempt, state=ReportState.FAILED,
            error=clean_error(f"the worker's report could not be stored: {why}"),
            started_at=pairs[i][1].started_at, finished_at=pairs[i][1].finished_at or now))
            for i, why in sorted(bad.items())]
        applied, still = await self._apply_rows(failures, list(range(len(failures))))
        for i in still:
            log.error("could not record the failure of task %s attempt %d either",
                      failures[i][1].task_id, failures[i][1].attempt)
        return applied
