"""The notebooks' checks can fail: each is run here, as the notebook holds it, on the events
of a scheduler that behaves as the demo guide's did (a poll every second), and must fail;
on those of one that behaves as TaskMaster does, it must pass.

The cells are read from the committed notebooks, so a check loosened there fails here.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from taskmaster.notebook import DEMO_GUIDE
from taskmaster.notebook.analysis import lifecycle, pickup_delays, span, throughput

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
T0 = 1_800_000_000.0


def cell(notebook: str, marker: str) -> str:
    """The source of the one code cell of a notebook that contains marker."""
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    found = ["".join(c["source"]) for c in cells
             if c["cell_type"] == "code" and marker in "".join(c["source"])]
    assert len(found) == 1, f"{notebook}: {len(found)} cells with {marker!r}"
    return found[0]


def simulate(tasks: int = 50, slots: int = 3, seconds: float = 0.65,
             poll: float | None = None) -> list[dict[str, Any]]:
    """The events of a burst of tasks on single-slot workers: pushed (a free slot gets the
    next task 5 ms later) or polled (at the next whole `poll` period)."""
    def at(t: float) -> str:
        return datetime.fromtimestamp(T0 + t, UTC).isoformat()

    events = [{"event": "task_scheduled", "task_id": f"t{i}", "timestamp": at(0.001 * i)}
              for i in range(tasks)]
    free = [0.05] * slots
    for i in range(tasks):
        w = min(range(slots), key=lambda k: free[k])
        ready = max(free[w], 0.001 * i)
        assigned = math.ceil(ready / poll) * poll if poll else ready + 0.005
        for kind, t in (("task_assigned", assigned), ("task_running", assigned + 0.001),
                        ("task_completed", assigned + 0.001 + seconds)):
            events.append({"event": kind, "task_id": f"t{i}", "worker_id": f"w{w}",
                           "timestamp": at(t), "attempt": 1})
        free[w] = assigned + 0.001 + seconds
    return sorted(events, key=lambda e: e["timestamp"])


def run_throughput_check(events: list[dict[str, Any]]) -> None:
    """03_concurrency's throughput cell, on these events."""
    done = [e for e in events if e["event"] == "task_completed"]
    table = pd.DataFrame({"busy s": [0.65 * len(done) / 3] * 3,
                          "tasks completed": [len(done) / 3] * 3})
    exec(cell("03_concurrency.ipynb", "measured = throughput(events"), {
        "events": events, "batch": {"ids": [e["task_id"] for e in done]}, "slots": 3,
        "table": table, "throughput": throughput, "DEMO_GUIDE": DEMO_GUIDE})


def run_pickup_check(events: list[dict[str, Any]]) -> None:
    """02_bulk_create's creation, pickup and drain cell, on these events."""
    ids = sorted({e["task_id"] for e in events})
    dash = SimpleNamespace(bulk=SimpleNamespace(elapsed=0.02),
                           events=SimpleNamespace(events=events))
    exec(cell("02_bulk_create.ipynb", "pickups = pickup_delays("), {
        "dash": dash, "batch": {"ids": ids}, "DEMO_GUIDE": DEMO_GUIDE,
        "pickup_delays": pickup_delays, "span": span, "lifecycle": lifecycle})


def test_the_throughput_check_passes_a_pushing_scheduler() -> None:
    run_throughput_check(simulate())


def test_the_throughput_check_fails_a_polling_scheduler() -> None:
    with pytest.raises(AssertionError, match="under 80% of the bound"):
        run_throughput_check(simulate(poll=1.0))


def test_the_pickup_check_passes_a_pushing_scheduler() -> None:
    run_pickup_check(simulate())


def test_the_pickup_check_fails_a_polling_scheduler() -> None:
    with pytest.raises(AssertionError, match="pushed, not polled"):
        run_pickup_check(simulate(poll=1.0))
