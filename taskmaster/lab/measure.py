"""Experiments the notebooks run on a live stack, each returning what it measured.

A sampler of GET /api/workers, throughput phases between scaling steps, a trickled load
to compare assignment strategies, and the fencing walk-through on a scratch Store.
The notebooks call these in one line and assert on the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import psutil

from taskmaster.model import EventType, Report, ReportState, TaskStatus, WorkerStatus
from taskmaster.notebook.analysis import (
    DEMO_GUIDE,
    GuideFigures,
    busy_seconds,
    by_worker,
    completions,
    utilisation,
    when,
)
from taskmaster.notebook.dashboard import Dashboard
from taskmaster.store import NewTask, Store


class WorkerSampler:
    """Polls GET /api/workers in the background: which worker holds a task, and how often."""

    def __init__(self, client: Any, interval: float = 0.1) -> None:
        self.client = client
        self.interval = interval
        self.samples: list[dict[str, bool]] = []
        self.peak: Counter[str] = Counter()  # most tasks each worker held in one sample
        self._task: asyncio.Task[None] | None = None

    def start(self) -> WorkerSampler:
        """Start sampling in the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="worker-sampler")
        return self

    async def _run(self) -> None:
        while True:
            sample: dict[str, bool] = {}
            for w in await self.client.workers():
                if w.get("status") != WorkerStatus.ONLINE:
                    continue
                held = len(w.get("current_task_ids") or [])
                name = str(w.get("name"))
                sample[name] = held > 0
                self.peak[name] = max(self.peak[name], held)
            self.samples.append(sample)
            await asyncio.sleep(self.interval)

    async def stop(self) -> WorkerSampler:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self

    def utilisation(self) -> dict[str, float]:
        """Per worker, the share of samples in which it held a task."""
        return utilisation(self.samples)

    def __repr__(self) -> str:
        return "WorkerSampler()"


@dataclass(frozen=True, slots=True)
class Phase:
    """Throughput with a given number of workers, measured between two completions."""

    workers: int
    intervals: int  # completions after the first one in the window
    seconds: float

    @property
    def rate(self) -> float:
        """Completed tasks per second."""
        return self.intervals / self.seconds if self.seconds > 0 else 0.0


async def measure_phase(dash: Dashboard, workers: int, completed: int = 20,
                        timeout: float = 60.0) -> Phase:
    """Tasks/s from now until `completed` more tasks completed (needs a load running)."""
    if completed < 2:
        raise ValueError("measure at least 2 completions")
    start, mark = time.time(), dash.events.mark()

    def fresh() -> list[float]:
        return sorted(t for e in completions(dash.events.since(mark)) if (t := when(e)) >= start)

    await dash.wait_for(lambda _s: len(fresh()) >= completed, timeout)
    times = fresh()[:completed]
    return Phase(workers=workers, intervals=completed - 1, seconds=times[-1] - times[0])


def scaling_table(phases: Sequence[Phase], guide: GuideFigures = DEMO_GUIDE) -> pd.DataFrame:
    """Measured tasks/s per worker count beside the demo guide's, each also relative to
    1 worker."""
    by_workers = {p.workers: p.rate for p in phases}
    base = by_workers.get(1) or next(iter(by_workers.values()), 0.0)
    guide_base = guide.scaling.get(1, 0.0)
    rows = []
    for p in phases:
        guide_rate = guide.scaling.get(p.workers)
        rows.append({
            "workers": p.workers,
            "measured tasks/s": round(p.rate, 2),
            "measured vs 1 worker": round(p.rate / base, 2) if base else None,
            "demo guide tasks/s": guide_rate,
            "demo guide vs 1 worker": round(guide_rate / guide_base, 2)
            if guide_rate is not None and guide_base else None,
        })
    return pd.DataFrame(rows).set_index("workers")


# ---- assignment strategies ----

@dataclass(frozen=True, slots=True)
class Trickle:
    """A load that arrives one task at a time: every `every`-th task is long."""

    count: int = 30
    every: int = 3
    long_seconds: float = 0.8
    short_seconds: float = 0.05
    interval: float = 0.1  # seconds between two arrivals

    def is_long(self, i: int) -> bool:
        """Whether the i-th task (from 0) is a long one."""
        return i % self.every == 0


@dataclass(slots=True)
class Distribution:
    """Where the tasks of one run went, per worker name."""

    strategy: str
    tasks: Counter[str] = field(default_factory=Counter)
    long: Counter[str] = field(default_factory=Counter)
    busy: dict[str, float] = field(default_factory=dict)  # seconds of work
    pickup: list[float] = field(default_factory=list)  # seconds from due to assigned
    completed: int = 0
    expected: int = 0

    def share_of_long(self) -> float:
        """The largest share of the long tasks one worker got (1/workers is even)."""
        total = sum(self.long.values())
        return max(self.long.values()) / total if total else 0.0


async def run_trickle(client: Any, strategy: str, load: Trickle = Trickle(),
                      timeout: float = 60.0) -> Distribution:
    """Send the load one task at a time; when all finished, see which worker ran what."""
    ids: list[tuple[str, bool]] = []
    for i in range(load.count):
        long = load.is_long(i)
        seconds = load.long_seconds if long else load.short_seconds
        created = await client.schedule("sleep", {"seconds": seconds})
        ids.append((str(created["id"]), long))
        await asyncio.sleep(load.interval)
    deadline = time.monotonic() + timeout
    names = {w["id"]: str(w.get("name")) for w in await client.workers()}
    result = Distribution(strategy=strategy, expected=len(ids))
    for task_id, long in ids:
        while True:
            task = await client.task(task_id)
            if TaskStatus(task["status"]).final:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} not finished within {timeout}s")
            await asyncio.sleep(0.05)
        if task["status"] != TaskStatus.COMPLETED:
            continue
        if task.get("worker_id") not in names:
            names.update({w["id"]: str(w.get("name")) for w in await client.workers()})
        name = names.get(task.get("worker_id"), str(task.get("worker_id")))
        result.completed += 1
        result.tasks[name] += 1
        result.long[name] += long
        result.busy[name] = result.busy.get(name, 0.0) + _seconds(task)
        result.pickup.append(_seconds(task, "scheduled_at", "assigned_at"))
    return result


def _seconds(task: Mapping[str, Any], start: str = "started_at", end: str = "completed_at"
             ) -> float:
    first, last = task.get(start), task.get(end)
    if not (first and last):
        return 0.0
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


def strategy_table(results: Sequence[Distribution]) -> pd.DataFrame:
    """Tasks, long tasks and busy seconds per worker, one row per strategy."""
    workers = sorted({w for r in results for w in r.tasks})
    rows = {}
    for r in results:
        row: dict[tuple[str, str], Any] = {}
        for w in workers:
            row[("tasks", w)] = r.tasks.get(w, 0)
        for w in workers:
            row[("long tasks", w)] = r.long.get(w, 0)
        for w in workers:
            row[("busy s", w)] = round(r.busy.get(w, 0.0), 2)
        rows[r.strategy] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


# ---- the claim under contention ----

@dataclass(frozen=True, slots=True)
class ClaimRace:
    """Several claimers emptying one queue at once with the coordinator's claim statement."""

    tasks: int  # tasks in the queue
    claimers: int
    rounds: int  # claim statements run in all
    claims: Counter[str]  # task id -> how many times it was claimed
    per_claimer: Counter[str]  # claimer -> tasks it got
    seconds: float

    @property
    def claimed_twice(self) -> list[str]:
        """Task ids that more than one claim returned (none, if the claim is sound)."""
        return [t for t, n in self.claims.items() if n > 1]


async def claim_race(store: Store, *, tasks: int = 200, claimers: int = 4,
                     slots: int = 5) -> ClaimRace:
    """Fill a scratch Store's queue, then let `claimers` coordinators-to-be claim from it
    concurrently (`Store.assign`, the `assign_tasks` statement), `slots` tasks per claim,
    until the queue is empty. What each claim returned is counted per task."""
    names = [f"claimer-{i + 1}" for i in range(claimers)]
    for name in names:
        await store.upsert_worker(worker_id=name, name=name, host="notebook", pid=0,
                                  capacity=tasks, commands=["sleep"])
    await store.create_batch(NewTask(command="sleep", payload={"seconds": 0}), tasks)
    claims: Counter[str] = Counter()
    per: Counter[str] = Counter()
    rounds = 0

    async def claimer(name: str) -> None:
        nonlocal rounds
        while True:
            got = await store.assign([name] * slots)
            rounds += 1
            if not got:
                return
            for delivery in got:
                claims[str(delivery.task_id)] += 1
                per[name] += 1

    start = time.perf_counter()
    await asyncio.gather(*(claimer(n) for n in names))
    return ClaimRace(tasks=tasks, claimers=claimers, rounds=rounds, claims=claims,
                     per_claimer=per, seconds=time.perf_counter() - start)


# ---- what a task costs ----

class CpuMeter:
    """CPU seconds each part of a stack used: its members by role, and the PostgreSQL
    backends serving its database (found by their process title, as `ps` shows them)."""

    def __init__(self, members: Mapping[str, tuple[str, int | None]], database: str) -> None:
        self.members = dict(members)  # name -> (role, pid)
        self.database = database
        self._start: dict[int, tuple[str, float]] = {}

    def _now(self) -> dict[int, tuple[str, float]]:
        procs = [(role, pid) for role, pid in self.members.values() if pid]
        for p in psutil.process_iter(["cmdline"]):
            title = " ".join(p.info["cmdline"] or [])
            if title.startswith("postgres:") and f" {self.database} " in title:
                procs.append(("postgresql", p.pid))
        out: dict[int, tuple[str, float]] = {}
        for role, pid in procs:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                out[pid] = (role, t.user + t.system)
        return out

    def start(self) -> CpuMeter:
        """Take the starting figures."""
        self._start = self._now()
        return self

    def per_task(self, tasks: int) -> dict[str, float]:
        """Microseconds of CPU per task, by role, since start()."""
        used: dict[str, float] = {}
        for pid, (role, cpu) in self._now().items():
            used[role] = used.get(role, 0.0) + cpu - self._start.get(pid, (role, 0.0))[1]
        return {role: round(seconds / tasks * 1e6, 1) for role, seconds in sorted(used.items())}


# ---- fencing ----

@dataclass(frozen=True, slots=True)
class FencingStory:
    """What happened to one task whose first worker was cut off and came back late."""

    first_attempt: int
    second_attempt: int
    stale_accepted: int  # reports of the cut-off worker that counted (0: refused)
    fresh_accepted: int
    status: str
    attempt: int
    worker: str
    result: Any
    events: list[str]  # event @worker, in order


async def fencing_walkthrough(store: Store) -> FencingStory:
    """Play coordinator and two workers on a scratch Store, step by step.

    worker-A gets the task and goes silent; it is declared dead and the task goes back
    (attempt 2) to worker-B. worker-A then reports its stale result for attempt 1: the
    store refuses it, because the attempt is the fencing token. worker-B's result counts.
    """
    for name in ("worker-A", "worker-B"):
        await store.upsert_worker(worker_id=name, name=name, host="notebook", pid=0,
                                  capacity=1, commands=["demo-job"])
    task, _ = await store.create_task(NewTask(command="demo-job"))
    [first] = await store.assign(["worker-A"])
    await store.workers_offline(["worker-A"], "missed heartbeats (partitioned)")
    [second] = await store.assign(["worker-B"])
    stale = await store.apply_reports(
        [("worker-A", Report(task_id=task.id, attempt=first.attempt, state=ReportState.COMPLETED,
                             result_json='{"by": "worker-A"}'))], retry_base=0.5, retry_max=5.0)
    fresh = await store.apply_reports(
        [("worker-B", Report(task_id=task.id, attempt=second.attempt, state=ReportState.COMPLETED,
                             result_json='{"by": "worker-B"}'))], retry_base=0.5, retry_max=5.0)
    final = await store.get_task(task.id)
    assert final is not None
    events = [
        e.event + (f" @{e.worker_id}" if e.worker_id else "")
        for e in await store.events_after(0, 1000)
        if e.task_id in (None, task.id) and e.event != EventType.WORKER_ONLINE
    ]
    return FencingStory(
        first_attempt=first.attempt, second_attempt=second.attempt,
        stale_accepted=len(stale), fresh_accepted=len(fresh), status=str(final.status.value),
        attempt=final.attempt, worker=str(final.worker_id), result=final.result,
        events=events,
    )


def new_key() -> str:
    """A fresh idempotency key (as a client would derive from its own request id)."""
    return f"order-{uuid.uuid4().hex[:12]}"


def worker_table(events: Sequence[Mapping[str, Any]], names: Any,
                 sampler: WorkerSampler | None = None) -> pd.DataFrame:
    """Per worker: tasks completed, seconds busy, and how busy it was (from the events, and
    from the GET /api/workers samples when a sampler is given)."""
    done = completions(events)
    started = [when(e) for e in events if e.get("event") == EventType.TASK_RUNNING]
    window = (max(when(e) for e in done) - min(started)) if done and started else 0.0
    counts, busy = by_worker(events, names), busy_seconds(events, names)
    sampled = sampler.utilisation() if sampler is not None else {}
    rows = []
    for name in sorted(set(counts) | set(sampled)):
        row = {"worker": name, "tasks completed": counts.get(name, 0),
               "busy s": round(busy.get(name, 0.0), 2),
               "busy % (events)": round(100 * busy.get(name, 0.0) / window, 1) if window else None}
        if sampler is not None:
            row["busy % (GET /api/workers)"] = round(100 * sampled.get(name, 0.0), 1)
        rows.append(row)
    return pd.DataFrame(rows).set_index("worker")
