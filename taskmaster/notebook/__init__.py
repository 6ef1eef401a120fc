"""Jupyter panels (ipywidgets + bqplot) mirroring the React UI of the TaskMaster
interactive demo guide, a Node.js demo of the same system; fed by the SSE feed.

What a notebook shows and clicks: panels, the feed consumer, their state, charts, the
dashboard, analysis of recorded events and source listings. It talks to a stack only
through `taskmaster.client.Client` (HTTP + SSE); starting, measuring and tearing down
stacks is the lab bench's job (`taskmaster.lab`).

    dash = Dashboard(Client("http://127.0.0.1:8081"))
    dash.start()                       # events + polls + render tick, in the kernel's loop
    dash                               # display it
    await dash.wait_for(lambda s: s.count(EventType.TASK_COMPLETED) >= 50, timeout=60)
    await dash.stop()

or, with a stack of the notebook's own: `stack = await taskmaster.lab.connect(workers=3)`,
then `dash = await stack.dashboard()`.
"""

import logging

from taskmaster.notebook.analysis import DEMO_GUIDE, Audit, EventRecord, GuideFigures, audit
from taskmaster.notebook.autoscale import AutoscalePanel
from taskmaster.notebook.chart import BarChart, ThroughputChart
from taskmaster.notebook.controls import (
    DEFAULT_COMMANDS,
    BulkTaskPanel,
    DockerCommands,
    PoolOps,
    ResetPanel,
    WorkerControlPanel,
)
from taskmaster.notebook.dashboard import Dashboard
from taskmaster.notebook.feed import Feed, live
from taskmaster.notebook.load import SteadyLoadPanel
from taskmaster.notebook.state import DashboardState, TaskRow
from taskmaster.notebook.streamlayout import StreamLayout
from taskmaster.notebook.taskstream import TaskStream
from taskmaster.notebook.views import ActivityLog, StatsPanel, TaskMonitor, WorkersPanel

# A notebook kernel configures no logging: without this, the stack's warnings (a member
# restarted, a stream reconnecting) would print into whichever cell runs at the time.
logging.getLogger("taskmaster").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_COMMANDS",
    "DEMO_GUIDE",
    "ActivityLog",
    "Audit",
    "AutoscalePanel",
    "BarChart",
    "BulkTaskPanel",
    "Dashboard",
    "DashboardState",
    "DockerCommands",
    "EventRecord",
    "Feed",
    "GuideFigures",
    "PoolOps",
    "ResetPanel",
    "StatsPanel",
    "SteadyLoadPanel",
    "StreamLayout",
    "TaskMonitor",
    "TaskRow",
    "TaskStream",
    "ThroughputChart",
    "WorkerControlPanel",
    "WorkersPanel",
    "audit",
    "live",
]
