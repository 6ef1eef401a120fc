"""The Steady load panel: tasks created at a held rate (taskmaster.load, the generator
behind `taskmaster load`), so that each part of the demo has something to watch.

A rate slider, a command, Start and Stop. The rate may move while the load runs; the toast
shows the progress once a second and how it ended.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets

from taskmaster.errors import InvalidInput
from taskmaster.load import LoadError, LoadProgress, SteadyLoad
from taskmaster.notebook.controls import DEFAULT_COMMANDS, ActionPanel

log = logging.getLogger(__name__)

RATES = (0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500)  # tasks per second on the slider


class SteadyLoadPanel(ActionPanel):
    """Start and stop a steady load of `command` tasks at the slider's rate."""

    def __init__(self, client: Any, *, rate: float = 2, command: str = "demo-job",
                 commands: Sequence[str] | None = None, payload: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.payload = payload
        options = list(commands or DEFAULT_COMMANDS)
        if command not in options:
            options.insert(0, command)
        self.rate = widgets.SelectionSlider(options=list(RATES), value=rate,
                                            description="Tasks/s",
                                            style={"description_width": "initial"},
                                            layout=widgets.Layout(width="260px"))
        self.command = widgets.Dropdown(options=options, value=command, description="Command",
                                        style={"description_width": "initial"},
                                        layout=widgets.Layout(width="200px"))
        self.start_button = widgets.Button(description="Start load", button_style="success")
        self.stop_button = widgets.Button(description="Stop load", button_style="warning",
                                          disabled=True)
        self.start_button.on_click(self.handler(lambda _b: self.start()))
        self.stop_button.on_click(self.handler(lambda _b: self.stop()))
        self.rate.observe(self.handler(self._rate_moved), names="value")
        self.load: SteadyLoad | None = None
        self.children = [
            widgets.HTML("<b>Steady Load</b>"),
            widgets.HBox([self.rate, self.command],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            widgets.HBox([self.start_button, self.stop_button, self.toast],
                         layout=widgets.Layout(align_items="center")),
        ]
        self.add_class("tm-panel")

    @property
    def running(self) -> bool:
        """True while a load runs."""
        return self.load is not None

    def start(self) -> None:
        """Start creating tasks at the slider's rate (a running load is left as it is)."""
        if self.load is not None:
            return
        try:
            load = SteadyLoad(self.client, rate=float(self.rate.value),
                              command=self.command.value, payload=self.payload)
        except InvalidInput as exc:
            self.show(exc.message, ok=False)
            return
        self.load = load
        self.start_button.disabled, self.stop_button.disabled = True, False
        self.submit(lambda: self._run(load), self._ended,
                    busy=f"Steady load: {self.rate.value:g} {load.command} tasks/s starting ...")

    async def _run(self, load: SteadyLoad) -> LoadProgress:
        try:
            return await load.run(self._progress)
        except LoadError as exc:  # the toast shows the scheduler's own words
            raise (exc.__cause__ if isinstance(exc.__cause__, Exception) else exc) from None
        finally:
            self.load = None
            self.start_button.disabled, self.stop_button.disabled = False, True

    def _progress(self, p: LoadProgress) -> None:
        if not p.done:
            self.show(f"Steady load: {p.line()} ...", busy=True)

    @staticmethod
    def _ended(p: LoadProgress) -> str:
        return f"Stopped steady load: {p.line()}"

    def stop(self) -> None:
        """Stop the load (the toast then says what it did)."""
        if self.load is not None:
            self.load.stop()

    async def stop_and_wait(self) -> LoadProgress | None:
        """Stop the load and wait until it has ended; its final progress."""
        self.stop()
        result = await self.wait()
        return result if isinstance(result, LoadProgress) else None

    def _rate_moved(self, change: dict[str, Any]) -> None:
        if self.load is not None:
            try:
                self.load.set_rate(float(change["new"]))
            except InvalidInput as exc:
                self.show(exc.message, ok=False)

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
        return f"SteadyLoadPanel(rate={self.rate.value:g}, command={self.command.value!r})"
