"""Start and control a whole stack: local processes or docker compose, one interface.

`Cluster` (base.py) is the interface; `LocalCluster` runs local processes (what
`taskmaster up` runs), `ComposeCluster` drives `docker compose`.
"""

from __future__ import annotations

from typing import Any

from taskmaster.cluster.base import Cluster, MemberInfo
from taskmaster.pool import compose_command

__all__ = ["Cluster", "ComposeCluster", "LocalCluster", "MemberInfo", "compose_command"]


def __getattr__(name: str) -> Any:
    # imported on first use: the scheduler needs base.py only, not the process machinery
    if name == "LocalCluster":
        from taskmaster.cluster.local import LocalCluster

        return LocalCluster
    if name == "ComposeCluster":
        from taskmaster.cluster.compose import ComposeCluster

        return ComposeCluster
    raise AttributeError(name)
