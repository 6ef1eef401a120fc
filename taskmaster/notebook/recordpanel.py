"""The dashboard's Record button: what the panels receive, written to a recording file."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from taskmaster.notebook.feed import Feed
from taskmaster.notebook.recording import MAX_BYTES, Recorder, RecordingTooLarge
from taskmaster.notebook.state import DashboardState

log = logging.getLogger(__name__)


class RecordButton(widgets.HBox):
    """Click to record the feed's events and polls into `folder`; click again to stop.

    A recording reaching max_bytes stops by itself and says so; replay one with
    `Dashboard(Replay(path))` or `connect(recording=path)`.
    """

    sections = ("stats",)

    def __init__(self, feed: Feed, *, folder: str | Path = "recordings",
                 max_bytes: int = MAX_BYTES, **kwargs: Any) -> None:
        self.feed = feed
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.recorder: Recorder | None = None
        self.saved: Path | None = None
        self.button = widgets.ToggleButton(value=False, description="Record", icon="circle",
                                           tooltip="record the feed to a file, for replay "
                                                   "without a stack")
        self.status = widgets.HTML("")
        self.button.observe(self._toggled, names="value")
        super().__init__(children=[self.button, self.status], **kwargs)
        self.add_class("tm-record")
        self._polled = -1

    @property
    def recording(self) -> bool:
        """True while a recording is being written."""
        return self.recorder is not None

    def start(self, path: str | Path | None = None) -> Recorder:
        """Start recording (to `path`, default a new file in the folder)."""
        if self.recorder is not None:
            return self.recorder
        path = Path(path) if path is not None else self.folder / time.strftime(
            "taskmaster-%Y%m%d-%H%M%S.jsonl")
        self.recorder = Recorder(path, max_bytes=self.max_bytes,
                                 source=str(getattr(self.feed.client, "base_url", "")))
        self.feed.listeners.append(self._event)
        if self not in self.feed.views:
            self.feed.add(self)
        self._polled = -1
        self.render(self.feed.state)
        self.button.value = True
        self.status.value = f"recording to {path}"
        return self.recorder

    def stop(self, reason: str = "stopped") -> Path | None:
        """Stop and close the file; its path."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return self.saved
        # a new list: the feed may be iterating over the old one right now
        self.feed.listeners = [f for f in self.feed.listeners if f != self._event]
        if not recorder.closed:
            try:
                self._snapshot(recorder, self.feed.state)
            except RecordingTooLarge:
                reason = "size bound reached"
        recorder.close(reason)
        self.saved = recorder.path
        self.button.value = False
        self.status.value = (f"saved {recorder.events} events to {recorder.path}"
                             + ("" if reason == "stopped" else f" ({reason})"))
        return self.saved

    def _toggled(self, change: Mapping[str, Any]) -> None:
        if change["new"] and self.recorder is None:
            try:
                self.start()
            except OSError as exc:
                self.button.value = False
                self.status.value = f"cannot record: {exc}"
        elif not change["new"] and self.recorder is not None:
            self.stop()

    def _event(self, event: Mapping[str, Any]) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        try:
            recorder.event(event)
        except RecordingTooLarge as exc:
            log.warning("%s", exc)
            self.stop(reason=str(exc))

    def _snapshot(self, recorder: Recorder, state: DashboardState) -> None:
        if state.stats:
            recorder.snapshot(state.stats, state.workers.values())

    def render(self, state: DashboardState | None = None, force: bool = False) -> bool:
        """At the feed's tick: write the latest poll if it is new."""
        state = state if state is not None else self.feed.state
        recorder = self.recorder
        if recorder is None or (state.versions["stats"] == self._polled and not force):
            return False
        self._polled = state.versions["stats"]
        try:
            self._snapshot(recorder, state)
        except RecordingTooLarge as exc:
            self.stop(reason=str(exc))
        return True

    def __repr__(self) -> str:
        return f"RecordButton({'recording' if self.recording else 'idle'})"
