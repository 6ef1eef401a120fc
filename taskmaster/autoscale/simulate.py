"""The autoscaling policy at any scale, in simulated time: load traces, a queue served by
the workers the policy asks for, and what it costs (worker-seconds) against what it gives
(queue wait).

The queue is a fluid one, first in first out: each step `rate(t) * dt` tasks arrive, every
online slot serves `dt / service` tasks, and the wait of each served slice is the time it
spent queued. A worker the policy adds serves after `startup` seconds (a process, or a pod,
starting) but is paid for from the moment it is asked for; a worker it removes stops being
paid at once (it drains within a step). The policy object is the very one the supervisor
runs (taskmaster.autoscale.policy), fed the same observation.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from taskmaster.autoscale.policy import Autoscaler, Observation, Policy

Trace = Callable[[float], float]  # tasks per second at time t (seconds)


def step_trace(low: float, high: float, start: float, end: float) -> Trace:
    """`low` tasks/s, `high` from `start` to `end`, then nothing."""
    return lambda t: high if start <= t < end else (low if t < start else 0.0)


def burst_trace(base: float, peak: float, every: float, length: float) -> Trace:
    """`base` tasks/s with a burst of `peak` for `length` seconds every `every` seconds."""
    return lambda t: peak if (t % every) < length else base


def sine_trace(mean: float, amplitude: float, period: float) -> Trace:
    """A daily cycle: `mean` +- `amplitude` tasks/s over `period` seconds, lowest at t=0."""
    return lambda t: max(0.0, mean - amplitude * math.cos(2 * math.pi * t / period))


@dataclass(slots=True)
class Run:
    """What one simulation did, step by step, and its totals."""

    times: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)  # arrivals, tasks/s
    workers: list[int] = field(default_factory=list)  # the pool the policy asked for
    online: list[int] = field(default_factory=list)  # of them, serving
    pending: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)  # mean wait of the tasks served this step
    worker_seconds: float = 0.0
    served: float = 0.0
    resizes: int = 0
    _waits: list[tuple[float, float]] = field(default_factory=list)  # (wait, tasks)

    @property
    def mean_wait(self) -> float:
        """Mean queue wait over every task served, seconds."""
        total = sum(n for _, n in self._waits)
        return sum(w * n for w, n in self._waits) / total if total else 0.0

    def wait_quantile(self, q: float) -> float:
        """The queue wait that a fraction q of the served tasks did not exceed, seconds."""
        total = sum(n for _, n in self._waits)
        if not total:
            return 0.0
        seen = 0.0
        for w, n in sorted(self._waits):
            seen += n
            if seen >= q * total:
                return w
        return float(max(w for w, _ in self._waits))


def simulate(policy: Policy, trace: Trace, *, duration: float, dt: float = 1.0,
             service: float = 0.65, concurrency: int = 1, startup: float = 2.0,
             workers: int | None = None) -> Run:
    """Run `policy` against `trace` for `duration` simulated seconds (deterministic)."""
    scaler = Autoscaler(policy)
    size = policy.min if workers is None else workers
    starting: deque[tuple[float, int]] = deque()  # (ready at, how many)
    ready = size
    queue: deque[list[float]] = deque()  # [arrived at, tasks] slices, oldest first
    pending = 0.0
    run = Run()
    throughput = 0.0
    next_look = 0.0
    steps = math.ceil(duration / dt)
    for i in range(steps):
        now = i * dt
        while starting and starting[0][0] <= now:
            ready += starting.popleft()[1]
        arriving = trace(now) * dt
        if arriving > 0:
            queue.append([now, arriving])
            pending += arriving
        capacity = min(ready, size) * concurrency * dt / service
        served, waited = 0.0, 0.0
        while queue and capacity > 1e-12:
            head = queue[0]
            take = min(head[1], capacity)
            run._waits.append((float(now - head[0]), take))
            waited += (now - head[0]) * take
            served += take
            capacity -= take
            head[1] -= take
            if head[1] <= 1e-12:
                queue.popleft()
        pending = max(0.0, pending - served)
        throughput = served / dt
        busy = min(float(min(ready, size) * concurrency), throughput * service)
        if now >= next_look:
            next_look = now + policy.interval
            obs = Observation(pending=round(pending), running=round(busy),
                              throughput=throughput, concurrency=concurrency)
            decision = scaler.decide(now, size, obs)
            if decision.to > size:
                starting.append((now + startup, decision.to - size))
                run.resizes += 1
            elif decision.to < size:
                drop = size - decision.to
                # the ones not yet serving go first
                while drop and starting:
                    at, n = starting.pop()
                    cut = min(n, drop)
                    drop -= cut
                    if n > cut:
                        starting.append((at, n - cut))
                ready -= drop
                run.resizes += 1
            size = decision.to
        run.worker_seconds += size * dt
        run.served += served
        run.times.append(now)
        run.rate.append(trace(now))
        run.workers.append(size)
        run.online.append(min(ready, size))
        run.pending.append(pending)
        run.wait.append(waited / served if served else 0.0)
    return run


def compare(policies: dict[str, Policy], traces: dict[str, tuple[Trace, float, float]],
            **options: float) -> list[dict[str, float | str]]:
    """Each policy on each (trace, duration, dt): worker-hours, mean and p95 queue wait,
    peak workers and resizes, one row each."""
    rows: list[dict[str, float | str]] = []
    for trace_name, (trace, duration, dt) in traces.items():
        for name, policy in policies.items():
            r = simulate(policy, trace, duration=duration, dt=dt,
                         **options)  # type: ignore[arg-type]
            rows.append({"trace": trace_name, "policy": name,
                         "worker_hours": round(r.worker_seconds / 3600, 1),
                         "mean_wait_s": round(r.mean_wait, 2),
                         "p95_wait_s": round(r.wait_quantile(0.95), 2),
                         "peak_workers": max(r.workers), "resizes": r.resizes})
    return rows


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile of values (nearest rank); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
