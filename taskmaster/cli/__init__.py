"""The `taskmaster` command: run the stack or one component, drive a running stack, look at it.

A room above the cluster: it uses taskmaster.cluster (and the components it starts), never
the other way round.
"""

from taskmaster.cli.options import option, settings_from
from taskmaster.cli.parser import build_parser, main

__all__ = ["build_parser", "main", "option", "settings_from"]
