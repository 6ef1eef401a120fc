"""Jupyter panels (ipywidgets + bqplot) mirroring the seed's React UI, fed by the SSE feed.

    from taskmaster.client import Client
    from taskmaster.notebook import Dashboard

    client = Client("http://127.0.0.1:8081")
    dash = Dashboard(client)
    dash.start()        # events + polls + render tick, in the kernel's event loop
    dash                # display it
    await dash.wait_for(lambda s: s.count("task_completed") >= 50, timeout=60)
    await dash.stop()
"""

from taskmaster.notebook.chart import ThroughputChart
from taskmaster.notebook.controls import (
    DEFAULT_COMMANDS,
    BulkTaskPanel,
    DockerCommands,
    PoolOps,
    WorkerControlPanel,
)
from taskmaster.notebook.dashboard import Dashboard
from taskmaster.notebook.feed import Feed, live
from taskmaster.notebook.state import DashboardState, TaskRow
from taskmaster.notebook.views import ActivityLog, StatsPanel, TaskMonitor, WorkersPanel

__all__ = [
    "DEFAULT_COMMANDS",
    "ActivityLog",
    "BulkTaskPanel",
    "Dashboard",
    "DashboardState",
    "DockerCommands",
    "Feed",
    "PoolOps",
    "StatsPanel",
    "TaskMonitor",
    "TaskRow",
    "ThroughputChart",
    "WorkerControlPanel",
    "WorkersPanel",
    "live",
]
