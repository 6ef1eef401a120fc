"""The lab bench: starts, measures and tears down stacks for the notebooks.

    from taskmaster.lab import connect

    stack = await connect(workers=3)   # the demo's stack (TASKMASTER_URL) or one of its own
    dash = await stack.dashboard()     # the panels of taskmaster.notebook, over HTTP and SSE
    ...
    await stack.close()

`taskmaster.notebook` holds what a notebook shows and clicks and speaks only HTTP and SSE;
this package is what starts processes, opens databases and drops them: `connect()` and
`Stack` (stack.py), the experiments the notebooks measure (measure.py) and the watchdog
that cleans up after a killed kernel (`python -m taskmaster.lab.watchdog`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskmaster.lab.measure import (
        ClaimRace,
        CpuMeter,
        Distribution,
        FencingStory,
        Phase,
        Trickle,
        WorkerSampler,
        claim_race,
        fencing_walkthrough,
        measure_phase,
        new_key,
        run_trickle,
        scaling_table,
        strategy_table,
        worker_table,
    )
    from taskmaster.lab.stack import Stack, connect

# Loaded on first use: the watchdog (`python -m taskmaster.lab.watchdog`) imports this
# package first and must not pay for pandas, the widgets and the database driver.
_EXPORTS = {
    "Stack": "stack",
    "connect": "stack",
    "claim_race": "measure",
    "ClaimRace": "measure",
    "CpuMeter": "measure",
    "Distribution": "measure",
    "FencingStory": "measure",
    "Phase": "measure",
    "Trickle": "measure",
    "WorkerSampler": "measure",
    "fencing_walkthrough": "measure",
    "measure_phase": "measure",
    "new_key": "measure",
    "run_trickle": "measure",
    "scaling_table": "measure",
    "strategy_table": "measure",
    "worker_table": "measure",
}

__all__ = [
    "ClaimRace",
    "CpuMeter",
    "Distribution",
    "FencingStory",
    "Phase",
    "Stack",
    "Trickle",
    "WorkerSampler",
    "claim_race",
    "connect",
    "fencing_walkthrough",
    "measure_phase",
    "new_key",
    "run_trickle",
    "scaling_table",
    "strategy_table",
    "worker_table",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
