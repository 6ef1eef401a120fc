"""Jupyter panels (ipywidgets + bqplot) mirroring the seed's React UI, fed by the SSE feed.

    from taskmaster.notebook import connect

    stack = await connect(workers=3)   # the demo's stack (TASKMASTER_URL) or one of its own
    dash = await stack.dashboard()     # events + polls + render tick, in the kernel's loop
    dash                               # display it
    await dash.wait_for(lambda s: s.count("task_completed") >= 50, timeout=60)
    await stack.close()

Panels also work on their own over any Client: `Dashboard(Client(url)).start()`.
"""

import logging

from taskmaster.notebook.analysis import SEED, Audit, EventRecord, audit
from taskmaster.notebook.chart import BarChart, ThroughputChart
from taskmaster.notebook.controls import (
    DEFAULT_COMMANDS,
    BulkTaskPanel,
    DockerCommands,
    PoolOps,
    WorkerControlPanel,
)
from taskmaster.notebook.dashboard import Dashboard
from taskmaster.notebook.feed import Feed, live
from taskmaster.notebook.stack import Stack, connect
from taskmaster.notebook.state import DashboardState, TaskRow
from taskmaster.notebook.views import ActivityLog, StatsPanel, TaskMonitor, WorkersPanel

# A notebook kernel configures no logging: without this, the stack's warnings (a member
# restarted, a stream reconnecting) would print into whichever cell runs at the time.
logging.getLogger("taskmaster").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_COMMANDS",
    "SEED",
    "ActivityLog",
    "Audit",
    "BarChart",
    "BulkTaskPanel",
    "Dashboard",
    "DashboardState",
    "DockerCommands",
    "EventRecord",
    "Feed",
    "PoolOps",
    "Stack",
    "StatsPanel",
    "TaskMonitor",
    "TaskRow",
    "ThroughputChart",
    "WorkerControlPanel",
    "WorkersPanel",
    "audit",
    "connect",
    "live",
]
