"""ThroughputChart: the stack over time, in three stacked charts that share a sliding time
axis, so that no line is flattened by another's scale:

- tasks per second: completed/s (left axis) and created/s (right axis: a burst of 2,000
  creates does not flatten the completions);
- the queue depth (its own axis, as it may reach thousands);
- the workers online (a step line: scaling and kills show as steps) and the running tasks.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np

from taskmaster.notebook.snapshot import Panel, Series, Snapshot
from taskmaster.notebook.state import DashboardState

with warnings.catch_warnings():
    # bqscales declares a trait the way traitlets 4.1 deprecated; nothing we can change
    warnings.simplefilter("ignore", DeprecationWarning)
    import bqplot

GREEN, BLUE, AMBER, PURPLE = "#16a34a", "#2563eb", "#d97706", "#7c3aed"
# (key, label, colour, chart, axis side, interpolation)
SERIES = (
    ("completed", "completed/s", GREEN, "rates", "left", "linear"),
    ("created", "created/s", BLUE, "rates", "right", "linear"),
    ("queue_depth", "queue depth", BLUE, "queue", "left", "linear"),
    ("workers", "workers online", PURPLE, "counts", "left", "step-after"),
    ("running", "running tasks", AMBER, "counts", "left", "linear"),
)
CHARTS = (("rates", "Tasks per second"), ("queue", "Queue depth"),
          ("counts", "Workers online and running tasks"))
MARGIN = {"top": 30, "bottom": 30, "left": 60, "right": 60}
MIN_SPAN = 60.0  # seconds the time axis shows at least
# the smallest top of each chart's axes: an idle stack draws flat lines low on a sane scale
FLOOR = {"rates": 2.0, "queue": 10.0, "counts": 4.0}


def nice(value: float) -> float:
    """The round number at or above value: 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 x 10^k."""
    if value <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(value))
    return next(round(m * scale, 12) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
                if m * scale >= value * (1 - 1e-9))


def ticks(top: float) -> np.ndarray:
    """At most 7 round ticks from 0 to top: steps of 1, 2 or 5 x 10^k."""
    scale = 10.0 ** math.floor(math.log10(top / 6)) if top > 0 else 1.0
    step = next(m * scale for m in (1, 2, 5, 10) if top / (m * scale) <= 6 + 1e-9)
    return np.round(np.arange(0.0, top + step / 2, step), 12)


def _dates(seconds: list[float]) -> np.ndarray:
    return (np.asarray(seconds, dtype=float) * 1000).astype("datetime64[ms]")


class ThroughputChart(widgets.VBox):
    """Three bqplot Figures over one sliding time window, redrawn at the render tick."""

    sections = ("series",)

    def __init__(self, state: DashboardState | None = None, height: str = "170px",
                 window: float | None = None, **kwargs: Any) -> None:
        self.state = state if state is not None else DashboardState()
        # the last `window` seconds are shown (at most what the state keeps)
        self.window = float(min(window or self.state.window, self.state.window))
        self.x = bqplot.DateScale()  # one time scale: the three charts move together
        self.scales: dict[tuple[str, str], bqplot.LinearScale] = {}
        self.lines: dict[str, bqplot.Lines] = {}
        marks: dict[str, list[bqplot.Lines]] = {chart: [] for chart, _ in CHARTS}
        for key, label, color, chart, side, interpolation in SERIES:
            y = self.scales.setdefault((chart, side), bqplot.LinearScale(min=0.0))
            line = bqplot.Lines(x=_dates([]), y=np.array([], dtype=float),
                                scales={"x": self.x, "y": y}, colors=[color], labels=[label],
                                display_legend=True, stroke_width=2,
                                interpolation=interpolation)
            self.lines[key] = line
            marks[chart].append(line)
        self.figures: dict[str, bqplot.Figure] = {}
        self.axes: dict[tuple[str, str], bqplot.Axis] = {}
        for chart, title in CHARTS:
            axes = [bqplot.Axis(scale=self.x, tick_format="%H:%M:%S", num_ticks=6)]
            for (name, side), scale in self.scales.items():
                if name != chart:
                    continue
                keyed = [(k, label) for k, label, _, c, sd, _ in SERIES
                         if c == chart and sd == side]
                # an axis of one series wears its colour and its name
                color = self.lines[keyed[0][0]].colors[0] if len(keyed) == 1 else "#374151"
                self.axes[(name, side)] = axis = bqplot.Axis(scale=scale, side=side,
                                        label=keyed[0][1] if len(keyed) == 1 else "",
                                        tick_format="d" if chart != "rates" else ".3~f",
                                        label_offset="40px",
                                        color=color, label_color=color,
                                        grid_lines="solid" if side == "left" else "none")
                axes.append(axis)
            self.figures[chart] = bqplot.Figure(
                marks=marks[chart], axes=axes, title=title, legend_location="top-left",
                animation_duration=0, fig_margin=MARGIN,
                layout=widgets.Layout(height=height, width="100%"))
        self.figure = self.figures["rates"]  # the first chart (kept for older callers)
        super().__init__(children=list(self.figures.values()), **kwargs)
        self.add_class("tm-chart")
        self._drawn: tuple[int, ...] | None = None

    def render(self, state: DashboardState | None = None, force: bool = False) -> bool:
        """Put the state's series into the lines and slide the window; True if redrawn."""
        state = state if state is not None else self.state
        now = time.time()
        # the window slides with the clock: redraw once a second even when nothing happens
        key = (*(state.versions[s] for s in self.sections), int(now))
        if key == self._drawn and not force:
            return False
        self._drawn = key
        # the window grows from the first thing seen to its bound, then slides: a young
        # dashboard's lines use the whole width, never a sliver at the right edge
        seen = [t for t in (state.samples[0][0] if state.samples else None,
                            min(state.completed_buckets, default=None),
                            min(state.created_buckets, default=None)) if t is not None]
        first = max(now - self.window, min([now - MIN_SPAN, *seen]))
        data = _series(state, now, [s for s in state.samples if s[0] >= first])
        for name, (xs, ys) in data.items():
            keep = [i for i, t in enumerate(xs) if t >= first]
            line = self.lines[name]
            with line.hold_sync():
                line.x = _dates([xs[i] for i in keep])
                line.y = np.asarray([ys[i] for i in keep], dtype=float)
        with self.x.hold_sync():
            self.x.min = np.datetime64(int(first * 1000), "ms")
            self.x.max = np.datetime64(int(now * 1000), "ms")
        for (chart, side), scale in self.scales.items():
            top = max([FLOOR[chart], *(float(np.max(self.lines[k].y, initial=0))
                                       for k, _, _, c, sd, _ in SERIES
                                       if c == chart and sd == side)])
            # headroom above the highest point, at a round number (its ticks are round too);
            # whole steps for the counts
            scale.max = float(int(top) + 1) if chart == "counts" else nice(top * 1.1)
            axis, wanted = self.axes[(chart, side)], ticks(scale.max)
            if not np.array_equal(axis.tick_values, wanted):
                axis.tick_values = wanted
        return True

    def snapshot(self) -> Snapshot:
        """The three charts as a still SVG picture (kept in a notebook file, shown by any
        viewer), from the same series, over everything the state keeps."""
        state, now = self.state, time.time()
        data = _series(state, now, list(state.samples))
        return Snapshot([
            Panel(title, [Series(label, color, *data[key], step=interpolation == "step-after")
                          for key, label, color, c, _side, interpolation in SERIES
                          if c == chart])
            for chart, title in CHARTS])

    def __repr__(self) -> str:
        return "ThroughputChart()"


PALETTE = ("#2563eb", "#16a34a", "#d97706", "#7c3aed", "#dc2626")


class BarChart(widgets.VBox):
    """Grouped bars: a group per category (e.g. worker), a bar per series (e.g. strategy).

    `data` maps each series name to {category: value}; missing values count as 0.
    """

    def __init__(
        self,
        data: Mapping[str, Mapping[str, float]],
        *,
        title: str = "",
        ylabel: str = "",
        height: str = "280px",
        **kwargs: Any,
    ) -> None:
        self.series = list(data)
        self.categories = sorted({c for values in data.values() for c in values})
        self.values = np.array(
            [[float(data[s].get(c, 0.0)) for c in self.categories] for s in self.series]
        ).reshape(len(self.series), len(self.categories))
        x, y = bqplot.OrdinalScale(), bqplot.LinearScale(min=0.0)
        self.bars = bqplot.Bars(
            x=self.categories, y=self.values, scales={"x": x, "y": y}, type="grouped",
            labels=self.series, display_legend=True,
            colors=list(PALETTE[: max(1, len(self.series))]),
        )
        self.figure = bqplot.Figure(
            marks=[self.bars],
            axes=[bqplot.Axis(scale=x), bqplot.Axis(scale=y, orientation="vertical",
                                                    label=ylabel)],
            title=title, legend_location="top-right", animation_duration=0,
            layout=widgets.Layout(height=height, width="100%"),
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
        )
        super().__init__(children=[self.figure], **kwargs)

    def __repr__(self) -> str:
        return f"BarChart({len(self.series)} series x {len(self.categories)} categories)"


def _series(state: DashboardState, now: float, samples: list[Any]
            ) -> dict[str, tuple[list[float], list[Any]]]:
    """Every series the charts draw, by name: the rates from the state, the rest from these
    polled samples (time, queue depth, running, workers)."""
    stamps = [t for t, _, _, _ in samples]
    return {
        "completed": state.completed_series(now),
        "created": state.created_series(now),
        "queue_depth": (stamps, [q for _, q, _, _ in samples]),
        "running": (stamps, [r for _, _, r, _ in samples]),
        "workers": (stamps, [w for _, _, _, w in samples]),
    }
