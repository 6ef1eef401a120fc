"""`taskmaster record --seconds N out.jsonl`: record a stack's feed and polls to a file,
for replay without a stack (`Replay(path)` in a notebook, `connect(recording=path)`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from taskmaster.cli.options import common, run, settings_from
from taskmaster.cli.stack import scheduler_url

DEFAULT_MAX_BYTES = 50_000_000  # as taskmaster.notebook.recording.MAX_BYTES (not imported:
# the panels' package loads the widgets, which every other command would then pay for)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


def cmd_record(args: argparse.Namespace) -> int:
    """Record for --seconds; exit 1 with a clear message if the stack cannot be reached or
    the file reaches --max-bytes (it then holds what fit, and ends cleanly)."""
    from taskmaster.client import ApiError, Client
    from taskmaster.notebook.recording import RecordingTooLarge, record

    settings = settings_from(args)
    url = scheduler_url(settings)

    async def main() -> int:
        async with Client(url, token=settings.api_read_token or settings.api_token) as client:
            try:
                await client.stats()
            except (OSError, ApiError) as exc:
                print(f"cannot reach the scheduler at {url}: {exc}\n"
                      "start the stack with `taskmaster up`, or pass --url", file=sys.stderr)
                return 1
            start_at = 0 if args.from_start else None
            try:
                recorder = await record(client, args.out, args.seconds,
                                        stats_interval=args.stats_interval,
                                        max_bytes=args.max_bytes, last_event_id=start_at)
            except RecordingTooLarge as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        print(f"recorded {recorder.events} events and {recorder.snapshots} polls in "
              f"{args.seconds:g} s to {args.out} ({recorder.bytes} bytes)", flush=True)
        return 0

    return run(main)


def add_commands(sub: Any, option: Callable[..., None]) -> None:
    """Add the record subcommand."""
    p = sub.add_parser("record", help="record a stack's event feed and stats to a file, "
                       "for replay without a stack")
    p.add_argument("out", metavar="OUT.jsonl", help="the recording to write (replaced)")
    p.add_argument("--seconds", type=_positive, required=True, help="how long to record")
    p.add_argument("--stats-interval", type=_positive, default=1.0,
                   help="seconds between two polls of /api/stats and /api/workers [default 1]")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help="bound of the file; recording stops with an error past it "
                        f"[default {DEFAULT_MAX_BYTES}]")
    p.add_argument("--from-start", action="store_true",
                   help="begin with the events the scheduler still holds (its replay buffer), "
                        "not only those from now on")
    for name in ("url", "scheduler_port", "api_token", "api_read_token"):
        option(p, name)
    common(p)
    p.set_defaults(func=cmd_record)
