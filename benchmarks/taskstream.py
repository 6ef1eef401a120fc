"""`python -m benchmarks.taskstream`: what the task stream costs at 1,000 tasks/s.

Feeds the layout a synthetic run of N tasks at RATE tasks/s (8 workers x 4 slots, each task
assigned, running and completed: three events), then redraws the panel once per simulated
render tick (5 Hz). Prints the median cost per event, per redraw, and the share of one
core that a live run at RATE would take. No stack needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from taskmaster.notebook.taskstream import TaskStream


def synthetic_run(tasks: int, rate: float, workers: int = 8, slots: int = 4
                  ) -> list[dict[str, Any]]:
    """Events of `tasks` tasks arriving at `rate`/s, each running for its slot's turn."""
    t0 = time.time()
    stamp = [datetime.fromtimestamp(t0 + i / 1000, UTC).isoformat() for i in range(100_000)]
    events: list[dict[str, Any]] = []
    for w in range(workers):
        events.append({"event": "worker_online", "worker_id": f"w{w}", "name": f"worker-{w}",
                       "capacity": slots, "timestamp": stamp[0]})
    lanes = workers * slots
    run_ms = int(lanes / rate * 1000)  # every slot stays busy at this rate
    starts = [(int(i / rate * 1000), i) for i in range(tasks)]
    ends = sorted((ms + run_ms, i) for ms, i in starts)
    timeline = sorted([(ms, 0, i) for ms, i in starts] + [(ms, 1, i) for ms, i in ends])
    for ms, what, i in timeline:
        task, worker = f"task-{i:06d}", f"w{i % workers}"
        when = stamp[min(ms, len(stamp) - 1)]
        if what == 0:
            events.append({"event": "task_assigned", "task_id": task, "worker_id": worker,
                           "attempt": 1, "command": "sleep", "timestamp": when})
            events.append({"event": "task_running", "task_id": task, "worker_id": worker,
                           "attempt": 1, "timestamp": when})
        else:
            events.append({"event": "task_completed", "task_id": task, "worker_id": worker,
                           "attempt": 1, "command": "sleep", "duration_ms": run_ms,
                           "timestamp": when})
    for n, event in enumerate(events, start=1):
        event["id"] = n
    return events


def measure(tasks: int, rate: float, window: float, repeats: int) -> dict[str, float]:
    """Median figures over `repeats` runs."""
    events = synthetic_run(tasks, rate)
    per_tick = max(1, int(len(events) / (tasks / rate) / 5))  # events between two 5 Hz ticks
    apply_us: list[float] = []
    render_ms: list[float] = []
    bars = 0
    for _ in range(repeats):
        panel = TaskStream(window=window)
        started = time.perf_counter()
        for event in events:
            panel.on_event(event)
        apply_us.append((time.perf_counter() - started) / len(events) * 1e6)
        panel = TaskStream(window=window)
        for i in range(0, len(events), per_tick):
            for event in events[i:i + per_tick]:
                panel.on_event(event)
            started = time.perf_counter()
            panel.render()
            render_ms.append((time.perf_counter() - started) * 1000)
        bars = len(panel.drawn)
    apply = statistics.median(apply_us)
    render = statistics.median(render_ms)
    events_per_s = len(events) / (tasks / rate)
    return {"events": len(events), "apply_us": apply, "render_ms": render, "bars_drawn": bars,
            "core_share": (events_per_s * apply / 1e6) + 5 * render / 1000}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the task stream's cost per event and per redraw."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.taskstream", description=__doc__)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=1000.0, help="tasks per second")
    p.add_argument("--window", type=float, default=60.0, help="seconds the panel shows")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    r = measure(args.tasks, args.rate, args.window, args.repeats)
    print(f"task stream at {args.rate:.0f} tasks/s ({r['events']} events, window "
          f"{args.window:.0f}s): {r['apply_us']:.2f} us/event (median), "
          f"{r['render_ms']:.1f} ms/redraw of {r['bars_drawn']} bars (median), "
          f"{r['core_share'] * 100:.1f}% of one core at a 5 Hz redraw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
