"""Commands that act on a running local stack from another terminal, in any folder.

`taskmaster ps`, `scale N`, `kill WORKER [--graceful]`, `coordinator-crash [--no-restart]`,
`coordinator-stop`, `coordinator-start`, `coordinator-restart`. They find the stack (see
find_stack) through --control-url, the scheduler's address (--url, TASKMASTER_URL) and its
pool API, the stack file of $TASKMASTER_HOME, or the default address; show progress, then
the members table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from taskmaster.cli.health import grpc_health
from taskmaster.cli.options import settings_from
from taskmaster.cli.tables import table
from taskmaster.cluster.control import ControlClient, ControlError, NoStack, find_control_url
from taskmaster.config import Settings

PROBE_TIMEOUT = 5.0  # seconds to wait for a stack's first answer


def _say(text: str) -> None:
    print(text, flush=True)


class Stack:
    """The running stack as seen from the CLI: its control API and its scheduler."""

    def __init__(self, settings: Settings, control_url: str) -> None:
        self.settings = settings
        # a control API, or a scheduler, whose /api/pool has the same paths
        self.control = ControlClient(control_url,
                                     token=settings.api_token or settings.api_read_token,
                                     pool_token=settings.pool_token or None)
        self.read_token = settings.api_read_token or settings.api_token

    async def online_workers(self, scheduler: str) -> set[str] | None:
        """Names the scheduler lists as online (None when it cannot be asked)."""
        headers = {"Authorization": f"Bearer {self.read_token}"} if self.read_token else {}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                async with http.get(scheduler + "/api/workers", headers=headers) as resp:
                    if resp.status != 200:
                        return None
                    rows = await resp.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None
        return {str(w.get("name")) for w in rows if w.get("status") == "online"}

    async def wait_workers(self, pool: dict[str, Any], timeout: float) -> bool:
        """Until the scheduler shows exactly the running local workers online; prints progress."""
        workers = [m for m in pool["members"] if m["role"] == "worker"]
        running = {m["name"] for m in workers if m["state"] == "running"}
        gone = {m["name"] for m in workers} - running
        deadline = time.monotonic() + timeout
        last: tuple[int, int] | None = None
        while True:
            online = await self.online_workers(pool["scheduler"])
            if online is not None:
                now = (len(running & online), len(gone & online))
                if now != last:
                    extra = f", {now[1]} stopped still listed online" if now[1] else ""
                    _say(f"  workers online: {now[0]}/{len(running)}{extra}")
                    last = now
                if now == (len(running), 0):
                    return True
            if time.monotonic() > deadline:
                _say(f"  gave up waiting after {timeout:g}s (see GET {pool['scheduler']}"
                     "/api/workers)")
                return False
            await asyncio.sleep(0.1)

    async def wait_coordinator(self, old_pid: int | None, timeout: float,
                               name: str = "coordinator") -> dict[str, Any]:
        """Until the coordinator runs again (another pid) and answers its gRPC health check."""
        deadline = time.monotonic() + timeout
        while True:
            pool = await self.control.pool()
            m = _member(pool, name)
            address = pool.get("coordinators", {}).get(name, pool["coordinator"])
            if m and m["state"] == "running" and m["pid"] != old_pid:
                ok, _ = await asyncio.to_thread(grpc_health, address, 1.0)
                if ok:
                    return pool
            if time.monotonic() > deadline:
                raise TimeoutError(f"the coordinator is not back after {timeout:g}s")
            await asyncio.sleep(0.1)


def _member(pool: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((m for m in pool["members"] if m["name"] == name), None)


def default_url(settings: Settings) -> str:
    """The scheduler's default address: http://127.0.0.1:<TASKMASTER_SCHEDULER_PORT>."""
    return f"http://127.0.0.1:{settings.scheduler_port}"


async def find_stack(settings: Settings, home_given: bool) -> str:
    """The base URL to send pool requests to, from any folder: the control URL given
    (--control-url), else the scheduler given (--url, TASKMASTER_URL), else the stack file
    of the home (a live one), else, unless --home was given, the scheduler at the default
    address. Checked to answer; NoStack says what was tried and what to do."""
    if settings.pool_url:
        return settings.pool_url.rstrip("/")
    if settings.url:
        return await _answering(settings, settings.url.rstrip("/"), "TASKMASTER_URL or --url")
    try:
        return find_control_url(settings.home)
    except NoStack as exc:
        if home_given:
            raise
        missing = str(exc)
    url = default_url(settings)
    try:
        return await _answering(settings, url, "the default address")
    except NoStack as exc:
        raise NoStack(f"no running stack found: {exc}; and {missing.removeprefix('no running stack: ')}"
                      ) from None


async def _answering(settings: Settings, url: str, named_by: str) -> str:
    """url, once a scheduler (or control API) answers GET /api/pool there."""
    token = settings.api_token or settings.api_read_token
    try:
        async with ControlClient(url, token=token, timeout=PROBE_TIMEOUT,
                                 pool_token=settings.pool_token or None) as probe:
            await probe.pool()
    except ControlError:
        return url  # it answers (a refusal is reported by the command itself)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise NoStack(f"nothing answers at {url} ({named_by}: {type(exc).__name__}). Start a "
                      "stack with `taskmaster up`, or point TASKMASTER_URL (or --url) at its "
                      "scheduler, or pass --home with the folder it keeps its state in") from None
    return url


def _run_async(args: argparse.Namespace, body: Callable[[Stack], Any]) -> int:
    settings = settings_from(args)
    home_given = getattr(args, "home", None) is not None or bool(os.environ.get("TASKMASTER_HOME"))

    async def main() -> int:
        try:
            url = await find_stack(settings, home_given)
        except NoStack as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        stack = Stack(settings, url)
        try:
            return int(await body(stack) or 0)
        except ControlError as exc:
            hint = f"; run instead: {exc.command}" if exc.command else ""
            print(f"error: {exc.body.get('error', exc)}{hint}", file=sys.stderr)
            return 1
        except (aiohttp.ClientConnectionError, OSError) as exc:
            print(f"error: cannot reach the stack at {url} ({exc}); is `taskmaster up` still "
                  "running?", file=sys.stderr)
            return 1
        except TimeoutError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            await stack.control.close()

    return asyncio.run(main())


# ---- commands ----

def cmd_ps(args: argparse.Namespace) -> int:
    """Print the members of the running stack."""

    async def body(stack: Stack) -> int:
        pool = await stack.control.pool()
        _say(f"scheduler {pool['scheduler']}   coordinator {pool['coordinator']}   "
             f"workers running: {pool['workers']}")
        _say(table(pool["members"]))
        return 0

    return _run_async(args, body)


def cmd_scale(args: argparse.Namespace) -> int:
    """Run exactly N workers."""

    async def body(stack: Stack) -> int:
        before = {m["name"]: m for m in (await stack.control.pool())["members"]}
        running = sum(1 for m in before.values() if m["role"] == "worker"
                      and m["state"] == "running")
        _say(f"scaling from {running} to {args.workers} workers ...")
        after = (await stack.control.scale(args.workers))["members"]
        for m in after:
            old = before.get(m["name"])
            if m["role"] != "worker":
                continue
            if m["state"] == "running" and (old is None or old["pid"] != m["pid"]):
                _say(f"  started {m['name']} (pid {m['pid']})")
            elif old is not None and old["state"] == "running" and m["state"] != "running":
                _say(f"  stopped {m['name']} ({m['state']})")
        return await _finish(stack, args)

    return _run_async(args, body)


def cmd_kill(args: argparse.Namespace) -> int:
    """SIGKILL one worker, or SIGTERM it with --graceful."""

    async def body(stack: Stack) -> int:
        how = ("stopping {} (SIGTERM: it finishes its tasks, then leaves) ..." if args.graceful
               else "killing {} (SIGKILL: its tasks go back to the queue) ...")
        _say(how.format(args.worker))
        member = (await stack.control.kill_worker(args.worker, graceful=args.graceful))["member"]
        _say(f"  {member['name']}: {member['state']}")
        return await _finish(stack, args)

    return _run_async(args, body)


def _coordinator_command(action: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        restart = not getattr(args, "no_restart", False)

        async def body(stack: Stack) -> int:
            pool = await stack.control.pool()
            name = args.name or next(iter(pool.get("coordinators") or ["coordinator"]))
            old = _member(pool, name)
            old_pid = old["pid"] if old else None
            who = "the coordinator" if name == "coordinator" else name
            _say({"kill": f"crashing {who} (SIGKILL) ...",
                  "stop": f"stopping {who} (SIGTERM) ...",
                  "start": f"starting {who} ...",
                  "restart": f"restarting {who} ..."}[action])
            member = (await stack.control.coordinator(action, restart=restart,
                                                      name=args.name))["member"]
            _say(f"  {member['name']}: {member['state']}")
            comes_back = action in ("start", "restart") or (action == "kill" and restart)
            if action == "kill":
                _say("  the supervisor restarts it, like a compose restart policy ..." if restart
                     else "  it stays down: `taskmaster coordinator-start` brings it back")
            if comes_back and not args.no_wait:
                pool = await stack.wait_coordinator(
                    old_pid if action != "start" else None, args.timeout, name)
                m = _member(pool, name)
                _say(f"  {name} back (pid {m['pid'] if m else '?'}), serving gRPC health; "
                     "workers reconnect on their own")
            return await _finish(stack, args)

        return _run_async(args, body)

    command.__doc__ = f"{action} the coordinator of the running stack."
    return command


def cmd_autoscale(args: argparse.Namespace) -> int:
    """Show the autoscaler of the running stack, or change it."""
    from taskmaster.autoscale import parse_range
    from taskmaster.errors import InvalidInput

    changes: dict[str, Any] = {}
    for name in ("target", "step_up", "step_down", "cooldown_up", "cooldown_down"):
        if getattr(args, f"as_{name}") is not None:
            changes[name] = getattr(args, f"as_{name}")
    state = args.state
    if state in ("on", "off"):
        changes["enabled"] = state == "on"
    elif state is not None:
        try:
            changes["min"], changes["max"] = parse_range(state, settings_from(args).max_workers)
        except InvalidInput as exc:
            print(f"error: {exc} (or on, off)", file=sys.stderr)
            return 2
        changes["enabled"] = True

    async def body(stack: Stack) -> int:
        status = await stack.control.autoscale(**changes)
        _say(autoscale_line(status))
        return 0

    return _run_async(args, body)


def autoscale_line(status: dict[str, Any]) -> str:
    """The autoscaler's state in a few lines."""
    head = (f"autoscale {'on' if status['enabled'] else 'off'}: {status['min']}..{status['max']}"
            f" workers, target {status.get('target_text')}, cool-downs up "
            f"{status['cooldown_up']:g}s down {status['cooldown_down']:g}s, steps up "
            f"{status['step_up']} down {status['step_down']}; {status['workers']} running")
    last = status.get("last_change")
    if last:
        head += f"\n  last resize: {last['from']} -> {last['to']} ({last['reason']})"
    if status.get("last_decision"):
        head += f"\n  last look: {status['last_decision']['reason']}"
    return head


async def _finish(stack: Stack, args: argparse.Namespace) -> int:
    pool = await stack.control.pool()
    ok = True
    if not args.no_wait:
        ok = await stack.wait_workers(pool, args.timeout)
        pool = await stack.control.pool()
    _say(table(pool["members"]))
    return 0 if ok else 1


def add_commands(sub: Any, option: Callable[..., None]) -> None:
    """Add the stack-control and healthcheck subcommands to the `taskmaster` parser."""

    def common(p: argparse.ArgumentParser, wait: bool = True) -> None:
        option(p, "url", metavar="URL")
        option(p, "pool_url", "--control-url", metavar="URL")
        option(p, "scheduler_port")
        option(p, "api_token")
        option(p, "api_read_token")
        option(p, "home")
        option(p, "log_level")
        if wait:
            p.add_argument("--no-wait", action="store_true",
                           help="return once the processes are started or signalled")
            p.add_argument("--timeout", type=float, default=60.0,
                           help="seconds to wait for the workers to show up [default 60]")

    p = sub.add_parser("ps", help="members of the running stack (pid, host, state)")
    common(p, wait=False)
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("scale", help="run exactly N workers on the running stack")
    p.add_argument("workers", type=int, metavar="N", help="number of workers")
    common(p)
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("kill", help="SIGKILL a worker of the running stack (--graceful: SIGTERM)")
    p.add_argument("worker", metavar="WORKER",
                   help="worker name (as `taskmaster ps` shows) or id (as GET /api/workers shows)")
    p.add_argument("--graceful", action="store_true",
                   help="SIGTERM: the worker finishes its tasks, then leaves")
    common(p)
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("autoscale", help="show or change the autoscaler of the running stack")
    p.add_argument("state", nargs="?", metavar="on|off|MIN:MAX",
                   help="turn it on or off, or on between MIN and MAX workers (e.g. 1:6)")
    p.add_argument("--target", dest="as_target", metavar="wait=SECONDS|backlog=TASKS",
                   help="queue wait to aim at, or waiting tasks per slot")
    p.add_argument("--step-up", dest="as_step_up", type=int, metavar="N",
                   help="most workers added at once")
    p.add_argument("--step-down", dest="as_step_down", type=int, metavar="N",
                   help="most workers drained at once")
    p.add_argument("--cooldown-up", dest="as_cooldown_up", type=float, metavar="SECONDS",
                   help="seconds of higher demand (and since a resize) before it grows")
    p.add_argument("--cooldown-down", dest="as_cooldown_down", type=float, metavar="SECONDS",
                   help="seconds of lower demand (and since a resize) before it shrinks")
    common(p, wait=False)
    p.set_defaults(func=cmd_autoscale)

    p = sub.add_parser("coordinator-crash",
                       help="SIGKILL the coordinator; the supervisor restarts it")
    p.add_argument("--no-restart", action="store_true",
                   help="leave it down (until `taskmaster coordinator-start`)")
    p.add_argument("name", nargs="?", default=None, metavar="NAME",
                   help="which coordinator (coordinator-1, ... as `taskmaster ps` shows) "
                   "[default the first]")
    common(p)
    p.set_defaults(func=_coordinator_command("kill"))
    for action, text in (("stop", "stop the coordinator (SIGTERM); it stays down"),
                         ("start", "start a stopped coordinator"),
                         ("restart", "stop the coordinator and start it again")):
        p = sub.add_parser(f"coordinator-{action}", help=text)
        p.add_argument("name", nargs="?", default=None, metavar="NAME",
                       help="which coordinator [default the first]")
        common(p)
        p.set_defaults(func=_coordinator_command(action))
