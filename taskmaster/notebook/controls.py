"""Panels that act: bulk task creation, worker/coordinator control, reset.

Their buttons are real ipywidgets Buttons: `panel.button.click()` from code runs the
same handler as a person's click. The handler starts the API call as a task in the
running event loop (ipykernel's, or any asyncio loop) and shows it in a toast line: what
is happening ("Scaling to 1 worker ..."), then how it ended ("Scaled to 1 worker: 2 left
after finishing their tasks", or the error); the next action's message replaces it.
`await panel.wait()` waits for the last action and returns its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import ipywidgets as widgets

from taskmaster.client import ApiError
from taskmaster.model import WorkerStatus
from taskmaster.notebook.state import DashboardState
from taskmaster.pool import compose_command

log = logging.getLogger(__name__)

DEFAULT_COMMANDS = ("demo-job", "noop", "sleep", "fail", "flaky", "cpu")
SETTLE_TIMEOUT = 30.0  # seconds a toast waits for an action's outcome to show in the feed
CONFIRM_SECONDS = 5.0  # how long Reset waits for its confirming second click
_LABEL = {"description_width": "initial"}


def _wrap() -> widgets.Layout:
    return widgets.Layout(flex_flow="row wrap", align_items="center")


def _middle() -> widgets.Layout:
    return widgets.Layout(align_items="center")


class PoolOps(Protocol):
    """The pool operations WorkerControlPanel drives.

    `taskmaster.client.Client` has them, over the scheduler's /api/pool (which a stack
    started by `taskmaster up`, `taskmaster demo` or the lab bench forwards to its
    supervisor). Each may be sync or async; a raised exception is shown in the panel's
    toast (an ApiError with a `command` shows the command to run instead).
    """

    def scale(self, n: int) -> Any:
        """Run `n` workers."""

    def kill_worker(self, name: str, graceful: bool = False) -> Any:
        """Stop one worker: SIGKILL, or SIGTERM (drain) when graceful."""

    def coordinator(self, action: str) -> Any:
        """"kill", "start" or "restart" the coordinator (a named one: a `name=` keyword)."""


def error_text(exc: BaseException, instead: str | None = None) -> str:
    """What a toast says about a failed action: the API's error text when there is one.

    Without a pool manager (501, or 404 from a scheduler without the pool API) it also
    names the shell command to run instead: the scheduler's, else `instead`.
    """
    if isinstance(exc, ApiError):
        command = exc.command or (instead if exc.status in (404, 501) else None)
        return f"{exc.error}; run instead: {command}" if command else exc.error
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def plural(n: int, word: str) -> str:
    """"1 worker", "2 workers", "0 tasks"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


TOAST_COLORS = {"busy": "#6b7280", "done": "#16a34a", "error": "#dc2626"}


class ActionPanel(widgets.VBox):
    """A box with a toast line and a way to run button actions in the event loop.

    The toast goes through states: "busy" while the action runs (its text ends with
    "..."), then "done" or "error"; `toast_state` says which, `toast_text` what it says.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # the loop the panel was made in (a notebook's cell: the kernel's loop), where the
        # client's HTTP session lives and where every action runs
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.toast = widgets.HTML()
        self.toast.add_class("tm-toast")
        self.toast_text = ""
        self.toast_ok = True
        self.toast_state = "idle"  # busy, done or error once an action ran
        self.pending: asyncio.Future[Any] | None = None
        self.elapsed = 0.0  # seconds the last action took (its API round trip)
        self._tasks: set[asyncio.Task[Any]] = set()

    def in_owner(self, fn: Callable[[], Any]) -> None:
        """Run fn in the loop the panel was made in. A kernel may hand a click to another
        thread with a loop of its own (ipykernel 7's subshells, which JupyterLab uses for
        widget messages), where the client's session cannot be used."""
        loop = self._loop
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is None or loop is current or loop.is_closed() or not loop.is_running():
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def handler(self, fn: Callable[..., Any]) -> Callable[..., None]:
        """A widget callback that runs fn (with the callback's arguments) via in_owner."""
        def callback(*args: Any) -> None:
            self.in_owner(lambda: fn(*args))
        return callback

    def show(self, text: str, ok: bool = True, busy: bool = False) -> None:
        """Show a toast line (busy: an action still running)."""
        self.toast_text, self.toast_ok = text, ok
        self.toast_state = "busy" if busy else "done" if ok else "error"
        color = TOAST_COLORS[self.toast_state]
        stamp = time.strftime("%H:%M:%S")
        self.toast.value = (
            f'<span class="tm-toast-{self.toast_state}" style="color:{color}">'
            f'{html.escape(text)}</span> <span style="color:#9ca3af;font-size:10px">{stamp}'
            "</span>"
        )

    def submit(
        self, action: Callable[[], Any], done: Callable[[Any], str], instead: str | None = None,
        *, busy: str | None = None,
        settle: Callable[[Any], Awaitable[str | None]] | None = None,
    ) -> None:
        """Run action() (sync or async) in the running loop: toast `busy` meanwhile, then
        done(result), or the error. `settle(result)`, if given, may wait (bounded) for the
        outcome to show in the stack and return the final text."""

        async def run() -> Any:
            started = time.perf_counter()
            if busy:
                self.show(busy, busy=True)
            try:
                result = action()
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:  # the toast is where a person sees what went wrong
                log.info("action failed: %s", exc)
                self.show(error_text(exc, instead), ok=False)
                return exc
            finally:
                self.elapsed = time.perf_counter() - started
            text = done(result)
            if settle is not None:
                self.show(text + " ...", busy=True)
                text = await settle(result) or text
            self.show(text)
            return result

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a plain script: run it to the end now
            self.pending = None
            asyncio.run(run())
            return
        task = loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.pending = task

    async def wait(self) -> Any:
        """Wait for the last action; its result, or the exception it showed."""
        return await self.pending if self.pending is not None else None


class BulkTaskPanel(ActionPanel):
    """Bulk task creation: command, count, delay and a "Create Tasks" button."""

    def __init__(
        self,
        client: Any,
        *,
        commands: Sequence[str] | None = None,
        command: str = "demo-job",
        count: int = 50,
        delay: float = 0.0,
        payload: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.payload = payload
        options = list(commands or DEFAULT_COMMANDS)
        if command not in options:
            options.insert(0, command)
        self.command = widgets.Dropdown(options=options, value=command, description="Command",
                                        style=_LABEL, layout=widgets.Layout(width="200px"))
        # unbounded on purpose: a bad count reaches the API, whose 4xx text is shown
        self.count = widgets.IntText(value=count, description="Count", style=_LABEL,
                                     layout=widgets.Layout(width="140px"))
        self.delay = widgets.FloatText(value=delay, description="Delay (s)", style=_LABEL,
                                       layout=widgets.Layout(width="140px"))
        self.button = widgets.Button(description="Create Tasks", button_style="primary")
        self.button.on_click(self.handler(self._clicked))
        self.children = [
            widgets.HTML("<b>Bulk Task Creation</b>"),
            widgets.HBox([self.command, self.count, self.delay], layout=_wrap()),
            widgets.HBox([self.button, self.toast]),
        ]
        self.add_class("tm-panel")

    def _clicked(self, _button: widgets.Button) -> None:
        command, count, delay = self.command.value, self.count.value, self.delay.value
        self.submit(
            lambda: self.client.schedule_batch(
                command, count, delay_seconds=delay, payload=self.payload
            ),
            _created,
            busy=f"Creating {plural(count, 'task')} ...",
        )

    async def load_commands(self) -> list[str]:
        """Fill the dropdown from the scheduler's known commands (kept as is on failure)."""
        try:
            names = await self.client.commands()
        except Exception as exc:
            log.info("known commands unavailable, keeping defaults: %s", exc)
            return list(self.command.options)
        if names:
            current = self.command.value
            self.command.options = names
            self.command.value = current if current in names else names[0]
        return list(self.command.options)

    def __repr__(self) -> str:
        return f"BulkTaskPanel(command={self.command.value!r}, count={self.count.value})"


def _created(result: Any) -> str:
    n = result.get("created", 0) if isinstance(result, dict) else result
    return f"Created {plural(int(n), 'task')}"


class DockerCommands:
    """The docker compose command doing each pool action on the compose stack, to copy to
    a shell: `taskmaster.pool.compose_command`, as the scheduler's 501 answers name them.

    `compose` is the compose program with its options, e.g. "docker compose -f compose.yaml".
    """

    def __init__(self, compose: str | Sequence[str] = "docker compose") -> None:
        self.compose = tuple(shlex.split(compose) if isinstance(compose, str) else compose)

    def scale(self, n: int) -> str:
        """Run n workers."""
        return compose_command("scale", n, compose=self.compose)

    def kill_worker(self, container: str, graceful: bool = False) -> str:
        """Stop (SIGTERM, then SIGKILL after the grace) or kill (SIGKILL) one container."""
        return compose_command("kill_worker", container, graceful=graceful, compose=self.compose)

    def coordinator(self, action: str) -> str:
        """Kill (a real crash inside its container, which the restart policy undoes),
        stop, start or restart the coordinator service."""
        return compose_command("coordinator", action, compose=self.compose)


def _code(text: str) -> str:
    return f'<code style="user-select:all;font-size:11px">{html.escape(text)}</code>'


class WorkerControlPanel(ActionPanel):
    """Scale the pool, kill or stop one worker, crash and restart the coordinator.

    `pool` is anything with the PoolOps methods. Worker rows come from `state`
    (refreshed by `render`) or from `set_workers`.
    """

    sections = ("workers",)

    def __init__(
        self,
        pool: PoolOps,
        *,
        state: DashboardState | None = None,
        workers: int = 3,
        max_workers: int = 20,
        docker: DockerCommands | None = None,
        coordinators: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool = pool
        # several coordinators: a row of buttons each, and the workers it holds
        self.coordinators = list(coordinators) if len(coordinators) > 1 else []
        self.named_buttons: dict[str, dict[str, widgets.Button]] = {}
        self.holds: dict[str, widgets.HTML] = {}
        self.state = state if state is not None else DashboardState()
        self.docker = docker or DockerCommands()
        self.slider = widgets.IntSlider(
            value=workers, min=0, max=max_workers, description="Workers", style=_LABEL,
            layout=widgets.Layout(width="240px"),
        )
        self.scale_button = widgets.Button(description="Scale", button_style="primary")
        self.scale_command = widgets.HTML()
        self.slider.observe(lambda _change: self._show_scale_command(), names="value")
        self._show_scale_command()
        self.scale_button.on_click(self.handler(lambda _b: self.scale(self.slider.value)))
        self.coordinator_buttons: dict[str, widgets.Button] = {}
        rows = []
        for action, label, style in (
            ("kill", "Crash coordinator", "danger"),
            ("start", "Start coordinator", "success"),
            ("restart", "Restart coordinator", "warning"),
        ):
            if self.coordinators:
                break
            button = widgets.Button(description=label, button_style=style)
            button.on_click(self.handler(lambda _b, a=action: self.coordinator(a)))
            self.coordinator_buttons[action] = button
            command = widgets.HTML(_code(self.docker.coordinator(action)))
            button.layout = widgets.Layout(width="170px")
            rows.append(widgets.HBox([button, command], layout=_middle()))
        for name in self.coordinators:
            buttons = {}
            for action, label, style in (("kill", "Crash", "danger"), ("start", "Start", "success"),
                                         ("restart", "Restart", "warning")):
                button = widgets.Button(description=label, button_style=style,
                                        layout=widgets.Layout(width="80px"))
                button.on_click(self.handler(lambda _b, a=action, n=name: self.coordinator(a, n)))
                buttons[action] = button
            self.named_buttons[name] = buttons
            self.holds[name] = widgets.HTML()
            rows.append(widgets.HBox([widgets.Label(name, layout=widgets.Layout(width="110px")),
                                      *buttons.values(), self.holds[name]], layout=_middle()))
        if self.coordinators:  # the first one's, as with a single coordinator
            self.coordinator_buttons = dict(self.named_buttons[self.coordinators[0]])
        self.worker_buttons: dict[str, dict[str, widgets.Button]] = {}
        self._containers: dict[str, str] = {}
        self.worker_rows = widgets.VBox()
        self._worker_key: tuple[tuple[str, str], ...] | None = None
        self.children = [
            widgets.HTML("<b>Worker Control</b>"),
            widgets.HBox([self.slider, self.scale_button, self.scale_command], layout=_middle()),
            self.worker_rows,
            *rows,
            self.toast,
        ]
        self.add_class("tm-panel")
        self.render(force=True)

    def _show_scale_command(self) -> None:
        self.scale_command.value = _code(self.docker.scale(self.slider.value))

    # actions (what the buttons do)
    def _fed(self) -> bool:
        """True when the state is fed by the stack (a Feed polls it), so it can tell how
        many workers are online."""
        return bool(self.state.stats) or bool(self.state.workers)

    def scale(self, n: int) -> None:
        """Ask the pool for n workers; the toast says how it went: who left after finishing
        their tasks, who started (and, once the feed shows them, that they are online)."""
        before = self.state.online_workers() if self._fed() else None
        busy = f"Scaling to {plural(n, 'worker')} ..."
        if before is not None and before > n:
            busy = (f"Scaling to {plural(n, 'worker')}: {before - n} finishing their tasks, "
                    "then leaving ...")

        def done(_result: Any) -> str:
            if before is None:
                return f"Scaled to {plural(n, 'worker')}"
            if before > n:
                return f"Scaled to {plural(n, 'worker')}: {before - n} left after finishing their tasks"
            if before < n:
                return f"Scaled to {plural(n, 'worker')}: {n - before} started"
            return f"Scaled to {plural(n, 'worker')}: no change"

        async def settle(_result: Any) -> str | None:
            if before is None or before >= n:
                return None
            online = await self._until(lambda: self.state.online_workers() >= n)
            text = done(_result)
            return f"{text}, all online" if online else f"{text}, not all online yet"

        self.submit(lambda: self.pool.scale(n), done, self.docker.scale(n), busy=busy,
                    settle=settle)

    async def _until(self, condition: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
        """Wait (bounded) until the fed state satisfies condition; whether it did."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    def kill_worker(self, name: str, graceful: bool = False) -> None:
        """Kill (SIGKILL) or gracefully stop one worker."""
        container = self._containers.get(name, name)
        if graceful:
            busy = f"Stopping {name} (graceful: it finishes its tasks, then leaves) ..."
            done = f"Stopped {name}: it finished its tasks and left"
        else:
            busy = f"Killing {name} (SIGKILL) ..."
            done = f"Killed {name} (SIGKILL): its tasks go back to the queue"
        self.submit(lambda: self.pool.kill_worker(name, graceful), lambda _r: done,
                    self.docker.kill_worker(container, graceful), busy=busy)

    def coordinator(self, action: str, name: str | None = None) -> None:
        """Kill, start or restart the coordinator (one of several, by name)."""
        if name is not None:
            self._named_coordinator(action, name)
            return
        busy = {"kill": "Crashing the coordinator (SIGKILL) ...",
                "start": "Starting the coordinator ...", "stop": "Stopping the coordinator ...",
                "restart": "Restarting the coordinator ..."}.get(action, f"{action} ...")
        said = {"kill": "Coordinator crashed (SIGKILL); its supervisor restarts it, the "
                        "workers reconnect",
                "start": "Coordinator started", "stop": "Coordinator stopped",
                "restart": "Coordinator restarted; the workers reconnect"}
        self.submit(
            lambda: self.pool.coordinator(action),
            lambda _r: said.get(action, f"Coordinator: {action} done"),
            self.docker.coordinator(action),
            busy=busy,
        )

    def _named_coordinator(self, action: str, name: str) -> None:
        verb = {"kill": "Crashing", "start": "Starting", "stop": "Stopping",
                "restart": "Restarting"}.get(action, action)
        said = {"kill": f"{name} crashed (SIGKILL); its workers moved to the other "
                        "coordinators, and its supervisor restarts it",
                "start": f"{name} started", "stop": f"{name} stopped",
                "restart": f"{name} restarted; its workers moved to the others"}
        self.submit(lambda: self.pool.coordinator(action, name=name),  # type: ignore[call-arg]
                    lambda _r: said.get(action, f"{name}: {action} done"),
                    self.docker.coordinator(action), busy=f"{verb} {name} ...")

    # worker rows
    def render(self, state: DashboardState | None = None, force: bool = False) -> bool:
        """Rebuild the per-worker rows when the set of live workers changed; show which
        workers each coordinator holds."""
        state = state if state is not None else self.state
        if self.coordinators:
            held: dict[str, list[str]] = {n: [] for n in self.coordinators}
            for w in state.workers.values():
                where = w.get("coordinator")
                if where in held and w.get("status") != WorkerStatus.OFFLINE:
                    held[where].append(str(w.get("name")))
            for name, html in self.holds.items():
                text = ", ".join(sorted(held[name])) or "no workers"
                if html.value != text:
                    html.value = text
        return self.set_workers(state.workers.values(), force=force)

    def set_workers(self, workers: Any, force: bool = False) -> bool:
        """Show kill/stop buttons for these workers (dicts with name and status)."""
        live = sorted(
            (str(w.get("name") or w.get("id")), str(w.get("container") or w.get("name") or ""))
            for w in workers
            if w.get("status", WorkerStatus.ONLINE) != WorkerStatus.OFFLINE
        )
        key = tuple(live)
        if key == self._worker_key and not force:
            return False
        self._worker_key = key
        old = self.worker_rows.children
        self.worker_buttons = {}
        self._containers = {name: container or name for name, container in live}
        rows = []
        for name, container in live:
            kill = widgets.Button(description="Kill (SIGKILL)", button_style="danger")
            stop = widgets.Button(description="Stop (graceful)", button_style="warning")
            kill.on_click(self.handler(lambda _b, n=name: self.kill_worker(n, graceful=False)))
            stop.on_click(self.handler(lambda _b, n=name: self.kill_worker(n, graceful=True)))
            self.worker_buttons[name] = {"kill": kill, "stop": stop}
            commands = (
                _code(self.docker.kill_worker(container or name))
                + " / "
                + _code(self.docker.kill_worker(container or name, graceful=True))
            )
            rows.append(
                widgets.HBox([widgets.Label(name, layout=widgets.Layout(width="80px")),
                              kill, stop, widgets.HTML(commands)], layout=_middle())
            )
        self.worker_rows.children = rows
        for row in old:  # closed, so that rebuilt rows do not pile up in the kernel
            for child in row.children:
                child.close()
            row.close()
        return True

    def __repr__(self) -> str:
        return f"WorkerControlPanel(workers={self.slider.value})"


class ResetPanel(ActionPanel):
    """Reset: every task, event and count cleared (POST /api/reset), the online workers kept.

    A person clicks twice: the first click asks for confirmation for CONFIRM_SECONDS;
    `reset()` from code does it at once.
    """

    def __init__(self, client: Any, *, confirm_seconds: float = CONFIRM_SECONDS,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.confirm_seconds = confirm_seconds
        self.button = widgets.Button(description="Reset", button_style="danger",
                                     tooltip="Delete every task and event; workers stay")
        self.button.on_click(self.handler(self._clicked))
        self._armed_until = 0.0
        self.children = [
            widgets.HTML("<b>Reset</b> <span style=\"color:#6b7280;font-size:11px\">every task, "
                         "event and count cleared; online workers stay</span>"),
            widgets.HBox([self.button, self.toast], layout=_middle()),
        ]
        self.add_class("tm-panel")

    def _clicked(self, _button: widgets.Button) -> None:
        if time.monotonic() < self._armed_until:
            self._armed_until = 0.0
            self.reset()
            return
        self._armed_until = time.monotonic() + self.confirm_seconds
        self.button.description = "Confirm reset"
        self.show(f"Click again within {self.confirm_seconds:g} s to delete every task and "
                  "event", busy=True)
        self._later(self.confirm_seconds, self._disarm)

    def _later(self, seconds: float, callback: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: the next click disarms
            asyncio.get_running_loop().call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._armed_until and time.monotonic() >= self._armed_until:
            self._armed_until = 0.0
            self.button.description = "Reset"
            self.show("Not reset (no second click)")

    def reset(self) -> None:
        """Reset the stack now (no confirmation)."""
        self.button.description = "Reset"
        self.submit(self.client.reset, _reset_done, busy="Resetting ...")

    def __repr__(self) -> str:
        return "ResetPanel()"


def _reset_done(result: Any) -> str:
    r = result if isinstance(result, dict) else {}
    text = f"Reset: {plural(int(r.get('tasks', 0)), 'task')} cleared"
    if r.get("pending") or r.get("running"):
        text += f" ({r.get('pending', 0)} pending cancelled, {r.get('running', 0)} running stopped)"
    dropped = int(r.get("workers_dropped", 0))
    if dropped:
        text += f", {plural(dropped, 'offline worker')} forgotten"
    return text + f"; {plural(int(r.get('workers_kept', 0)), 'worker')} kept"
