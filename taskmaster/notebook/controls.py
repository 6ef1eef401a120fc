"""Panels that act: bulk task creation and worker/coordinator control.

Their buttons are real ipywidgets Buttons: `panel.button.click()` from code runs the
same handler as a person's click. The handler starts the API call as a task in the
running event loop (ipykernel's, or any asyncio loop) and shows the outcome in a toast
line; `await panel.wait()` waits for the last action and returns its result.
"""

from __future__ import annotations

import asyncio
import html
import inspect
import logging
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import ipywidgets as widgets

from taskmaster.client import ApiError
from taskmaster.model import WorkerStatus
from taskmaster.notebook.state import DashboardState
from taskmaster.pool import compose_command

log = logging.getLogger(__name__)

DEFAULT_COMMANDS = ("demo-job", "noop", "sleep", "fail", "flaky", "cpu")
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
        """"kill", "start" or "restart" the coordinator."""


def error_text(exc: BaseException, instead: str | None = None) -> str:
    """What a toast says about a failed action: the API's error text when there is one.

    Without a pool manager (501, or 404 from a scheduler without the pool API) it also
    names the shell command to run instead: the scheduler's, else `instead`.
    """
    if isinstance(exc, ApiError):
        command = exc.command or (instead if exc.status in (404, 501) else None)
        return f"{exc.error}; run instead: {command}" if command else exc.error
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class ActionPanel(widgets.VBox):
    """A box with a toast line and a way to run button actions in the event loop."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.toast = widgets.HTML()
        self.toast.add_class("tm-toast")
        self.toast_text = ""
        self.toast_ok = True
        self.pending: asyncio.Future[Any] | None = None
        self.elapsed = 0.0  # seconds the last action took (its API round trip)
        self._tasks: set[asyncio.Task[Any]] = set()

    def show(self, text: str, ok: bool = True) -> None:
        """Show a toast line."""
        self.toast_text, self.toast_ok = text, ok
        color = "#16a34a" if ok else "#dc2626"
        self.toast.value = (
            f'<span class="tm-toast-{"ok" if ok else "error"}" style="color:{color}">'
            f"{html.escape(text)}</span>"
        )

    def submit(
        self, action: Callable[[], Any], done: Callable[[Any], str], instead: str | None = None
    ) -> None:
        """Run action() (sync or async) in the running loop; toast done(result) or the error."""

        async def run() -> Any:
            started = time.perf_counter()
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
            self.show(done(result))
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
        self.button.on_click(self._clicked)
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
    return f"Created {n} task" + ("" if n == 1 else "s")


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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool = pool
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
        self.scale_button.on_click(lambda _b: self.scale(self.slider.value))
        self.coordinator_buttons: dict[str, widgets.Button] = {}
        rows = []
        for action, label, style in (
            ("kill", "Crash coordinator", "danger"),
            ("start", "Start coordinator", "success"),
            ("restart", "Restart coordinator", "warning"),
        ):
            button = widgets.Button(description=label, button_style=style)
            button.on_click(lambda _b, a=action: self.coordinator(a))
            self.coordinator_buttons[action] = button
            command = widgets.HTML(_code(self.docker.coordinator(action)))
            button.layout = widgets.Layout(width="170px")
            rows.append(widgets.HBox([button, command], layout=_middle()))
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
    def scale(self, n: int) -> None:
        """Ask the pool for n workers."""
        self.submit(
            lambda: self.pool.scale(n), lambda _r: f"Scaling to {n} workers", self.docker.scale(n)
        )

    def kill_worker(self, name: str, graceful: bool = False) -> None:
        """Kill (SIGKILL) or gracefully stop one worker."""
        how = "Stopping (graceful)" if graceful else "Killed (SIGKILL)"
        container = self._containers.get(name, name)
        self.submit(
            lambda: self.pool.kill_worker(name, graceful),
            lambda _r: f"{how} {name}",
            self.docker.kill_worker(container, graceful),
        )

    def coordinator(self, action: str) -> None:
        """Kill, start or restart the coordinator."""
        said = {"kill": "Coordinator crashed", "start": "Coordinator started"}
        self.submit(
            lambda: self.pool.coordinator(action),
            lambda _r: said.get(action, f"Coordinator {action}ed"),
            self.docker.coordinator(action),
        )

    # worker rows
    def render(self, state: DashboardState | None = None, force: bool = False) -> bool:
        """Rebuild the per-worker rows when the set of live workers changed."""
        state = state if state is not None else self.state
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
            kill.on_click(lambda _b, n=name: self.kill_worker(n, graceful=False))
            stop.on_click(lambda _b, n=name: self.kill_worker(n, graceful=True))
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
