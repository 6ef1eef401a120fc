"""Flags that default from settings, and running a command's coroutine."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from taskmaster.config import Settings, help_for

_FIELD_TYPES = {f.name: type(f.default) for f in fields(Settings)}


def option(parser: argparse.ArgumentParser, name: str, *flags: str, **kw: Any) -> None:
    """Add --name for a setting: typed, defaulting from TASKMASTER_NAME, help naming it."""
    kind = _FIELD_TYPES[name]
    flag_names = flags or (f"--{name.replace('_', '-')}",)
    if kind is bool:
        parser.add_argument(*flag_names, dest=name, action="store_true", default=None,
                            help=help_for(name))
        return
    parser.add_argument(*flag_names, dest=name, type=kind, default=None, help=help_for(name),
                        metavar=kw.pop("metavar", name.upper()), **kw)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    overrides = {name: getattr(args, name) for name in _FIELD_TYPES if hasattr(args, name)}
    return Settings.from_env(**overrides)


def common(parser: argparse.ArgumentParser) -> None:
    option(parser, "log_level")
    option(parser, "log_format")
    option(parser, "home")


def run(coro_fn: Callable[[], Any]) -> int:
    try:
        import uvloop

        return int(uvloop.run(coro_fn()) or 0)
    except ImportError:
        return int(asyncio.run(coro_fn()) or 0)


async def until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
