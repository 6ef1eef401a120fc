"""TaskStream: one row per worker slot, one bar per attempt, coloured by outcome (bqplot).

It listens to the same feed as the other panels (`feed.listeners`), folds each event into a
StreamLayout (streamlayout.py) and redraws at the feed's render tick only when the layout
changed: a burst of thousands of events costs one redraw.

    stream = TaskStream(window=60)
    feed = live(client, stream)         # or: it is already in the Dashboard
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bqplot
import ipywidgets as widgets
import numpy as np

from taskmaster.notebook.state import DashboardState
from taskmaster.notebook.streamlayout import OUTCOMES, Bar, StreamLayout

COLORS = {
    "running": "#2563eb",
    "completed": "#16a34a",
    "failed": "#dc2626",
    "reassigned": "#d97706",
    "cancelled": "#6b7280",
}
MAX_DRAWN = 2_000  # bars sent to the browser per redraw (the newest); the layout keeps more


def describe(bar: Bar, now: float) -> str:
    """The hover text of a bar: task id, command, attempt, duration and outcome."""
    return (f"task {bar.task_id} · {bar.command or '?'} · attempt {bar.attempt} · "
            f"{bar.duration(now):.2f}s · {bar.outcome}")


class TaskStream(widgets.VBox):
    """The task stream panel (a bqplot Figure); `layout` is its pure model."""

    sections = ()  # it draws from its own layout, not from the DashboardState

    def __init__(self, state: DashboardState | None = None, *, window: float = 60.0,
                 max_bars: int = 5_000, height: str = "260px", **kwargs: Any) -> None:
        self.state = state  # its polls name the workers whose worker_online came before
        self.stream = StreamLayout(window=window, max_bars=max_bars)
        self.x = bqplot.LinearScale(min=-float(window), max=0.0)
        # the names' scale has the same bands as the bars' scale (its first name at the bottom)
        self.y = bqplot.LinearScale(min=-0.5, max=0.5)
        self.y_names = bqplot.OrdinalScale(domain=[""])
        self.bars = bqplot.Lines(
            x=np.zeros((0, 2)), y=np.zeros((0, 2)), scales={"x": self.x, "y": self.y},
            colors=[COLORS["running"]], stroke_width=10, labels=[],
            tooltip=bqplot.Tooltip(fields=["name"], show_labels=False),
        )
        self.figure = bqplot.Figure(
            marks=[self.bars],
            axes=[bqplot.Axis(scale=self.x, label="seconds before the latest event",
                              num_ticks=7),
                  bqplot.Axis(scale=self.y_names, side="left")],
            title="Task stream", animation_duration=0,
            fig_margin={"top": 40, "bottom": 40, "left": 110, "right": 20},
            layout=widgets.Layout(height=height, width="100%"),
        )
        legend = " ".join(f'<span style="color:{COLORS[o]}">■ {o}</span>' for o in OUTCOMES)
        self.legend = widgets.HTML(f'<div class="tm-stream-legend">{legend}</div>')
        self.hovered = widgets.HTML("")
        self.hovered.add_class("tm-stream-hover")
        self.bars.on_hover(self._hover)
        super().__init__(children=[self.figure, self.legend, self.hovered], **kwargs)
        self.add_class("tm-taskstream")
        self.drawn: list[Bar] = []  # the bars as last drawn, in the mark's order
        self.row_names: list[str] = []
        self.renders = 0
        self._drawn_version = -1
        self._known_ids = 0
        self._labels: dict[tuple[str, int], str] = {}

    def on_event(self, event: Mapping[str, Any]) -> None:
        """Fold one feed event in (a feed listener; never redraws)."""
        self.stream.apply(event)

    def render(self, state: DashboardState | None = None, force: bool = False) -> bool:
        """Redraw if the layout changed since the last redraw; True if redrawn."""
        state = state if state is not None else self.state
        if state is not None and len(state.worker_ids) != self._known_ids:
            self._known_ids = len(state.worker_ids)
            self.stream.learn({i: n for i, n in state.worker_ids.items()
                               if i not in self.stream.names})
        if state is not None:
            self.stream.learn_capacity({str(w["id"]): int(w["capacity"])
                                        for w in state.workers.values()
                                        if w.get("id") and isinstance(w.get("capacity"), int)})
        if self.stream.version == self._drawn_version and not force:
            return False
        self._drawn_version = self.stream.version
        self.renders += 1
        rows, bars = self.stream.visible()
        bars = bars[-MAX_DRAWN:]
        index = {row: len(rows) - 1 - i for i, row in enumerate(rows)}  # the first on top
        now = self.stream.now
        xs = np.array([[b.start - now, (b.end if b.end is not None else now) - now]
                       for b in bars], dtype=float).reshape(-1, 2)
        ys = np.array([[index[b.row]] * 2 for b in bars], dtype=float).reshape(-1, 2)
        labels = self.stream.labels(rows)
        names = labels or [""]
        with self.bars.hold_sync():
            self.bars.x, self.bars.y = xs, ys
            self.bars.colors = [COLORS[b.outcome] for b in bars] or [COLORS["running"]]
            self.bars.labels = [describe(b, now) for b in bars]
            self.bars.stroke_width = max(2.0, min(14.0, 150.0 / max(1, len(rows))))
        with self.y.hold_sync():
            self.y.min, self.y.max = -0.5, len(names) - 0.5
        self.y_names.domain = names[::-1]
        self.drawn, self.row_names = bars, labels
        self._labels = dict(zip(rows, labels, strict=True))
        return True

    def _hover(self, _mark: Any, content: Mapping[str, Any]) -> None:
        index = (content.get("data") or {}).get("index")
        if isinstance(index, int) and 0 <= index < len(self.drawn):
            self.hovered.value = describe(self.drawn[index], self.stream.now)

    def rows_with_bars(self) -> list[str]:
        """Names of the rows holding at least one drawn bar (what the picture shows)."""
        return sorted({self._labels[b.row] for b in self.drawn})

    def __repr__(self) -> str:
        return "TaskStream()"  # id- and count-free: a notebook's stored output stays valid
