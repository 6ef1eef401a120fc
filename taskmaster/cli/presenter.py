"""`taskmaster reset` and `taskmaster load`: what a presenter runs between and during demos.

Both talk to the scheduler over HTTP, from any folder: TASKMASTER_URL (--url), else the
stack file of the home, else http://127.0.0.1:<TASKMASTER_SCHEDULER_PORT>.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

import aiohttp

from taskmaster.cli.options import settings_from
from taskmaster.cli.stack import scheduler_url
from taskmaster.client import ApiError, Client
from taskmaster.config import Settings
from taskmaster.errors import InvalidInput


def _err(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def _client(settings: Settings, url: str) -> Client:
    return Client(url, token=settings.api_token or settings.api_read_token or None, timeout=30)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


# ---- reset ----

def cmd_reset(args: argparse.Namespace) -> int:
    """Clear every task, event and count of the running stack (asks first, unless --yes)."""
    settings = settings_from(args)
    url = scheduler_url(settings)

    async def look() -> dict[str, Any]:
        async with _client(settings, url) as client:
            return await client.stats()

    async def reset() -> dict[str, Any]:
        async with _client(settings, url) as client:
            return await client.reset()

    try:
        stats = asyncio.run(look())
        if not args.yes:
            question = (f"Reset the stack at {url}? Its {_plural(stats['total'], 'task')} "
                        f"({stats['pending']:,} pending, {stats['assigned'] + stats['running']:,}"
                        " running) and every event are deleted; the "
                        f"{_plural(stats['workers_online'], 'online worker')} stay. [y/N] ")
            if not sys.stdin.isatty():
                _err("not resetting without a confirmation: pass --yes")
                return 1
            if input(question).strip().lower() not in ("y", "yes"):
                print("not reset.")
                return 1
        done = asyncio.run(reset())
    except ApiError as exc:
        _err(f"the scheduler at {url} refused: {exc.error}")
        return 1
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        _err(f"cannot reach the scheduler at {url} ({exc}); is the stack running? "
             "(TASKMASTER_URL or --url names another)")
        return 1
    print(f"reset: {_plural(done['tasks'], 'task')} deleted ({done['pending']:,} pending "
          f"cancelled, {done['running']:,} running stopped and handed back), "
          f"{_plural(done['workers_dropped'], 'offline worker row')} dropped, "
          f"{_plural(done['workers_kept'], 'worker')} kept; the feed says stack_reset "
          f"(event {done['event_id']})")
    return 0


# ---- load ----

def _payload(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(400, f"--payload is not JSON: {exc}", "payload") from None


def cmd_load(args: argparse.Namespace) -> int:
    """Create tasks at a held rate; progress on the terminal; Ctrl-C stops."""
    from taskmaster.load import LoadError, LoadProgress, SteadyLoad

    settings = settings_from(args)
    url = scheduler_url(settings)
    tty = sys.stdout.isatty()

    def show(p: LoadProgress) -> None:
        if p.done:
            print(("\r" if tty else "") + f"done: {p.line()}" + (" " * 8 if tty else ""),
                  flush=True)
        elif tty:
            print(f"\r{p.line()}   ", end="", flush=True)
        elif int(p.elapsed) % 5 == 0:  # a log, not a terminal: a line every 5 s
            print(p.line(), flush=True)

    async def main() -> int:
        async with _client(settings, url) as client:
            load = SteadyLoad(client, rate=args.rate, command=args.command,
                              payload=_payload(args.payload), seconds=args.seconds,
                              settings=settings)
            _on_signals(load.stop)
            how_long = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
            print(f"creating {args.command} tasks at {args.rate:g}/s on {url} {how_long} ...",
                  flush=True)
            await load.run(show)
        return 0

    try:
        return asyncio.run(main())
    except InvalidInput as exc:
        _err(f"{exc.message} (field {exc.field})")
        return 2
    except LoadError as exc:
        _err(str(exc))
        return 1
    except (aiohttp.ClientError, OSError) as exc:
        _err(f"cannot reach the scheduler at {url} ({exc})")
        return 1


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


def add_commands(sub: Any, option: Callable[..., None]) -> None:
    """Add `reset` and `load` to the `taskmaster` parser."""
    p = sub.add_parser("reset", help="clear every task, event and count of the running stack "
                       "(online workers stay)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    for name in ("url", "scheduler_port", "api_token", "api_read_token", "home", "log_level"):
        option(p, name)
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser("load", help="create tasks at a held rate (progress shown; Ctrl-C stops)")
    p.add_argument("--rate", type=float, required=True, metavar="R",
                   help="tasks per second (at most TASKMASTER_LOAD_MAX_RATE)")
    p.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="stop after S seconds [default: until Ctrl-C]")
    p.add_argument("--command", default="demo-job", metavar="C",
                   help="the tasks' command [default demo-job]")
    p.add_argument("--payload", default=None, metavar="JSON", help="the tasks' payload, as JSON")
    for name in ("url", "scheduler_port", "api_token", "home", "load_max_rate",
                 "load_max_pending", "log_level"):
        option(p, name)
    p.set_defaults(func=cmd_load)
