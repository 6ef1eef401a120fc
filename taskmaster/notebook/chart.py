"""ThroughputChart: completed tasks per second, queue depth and running, over time."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np

from taskmaster.notebook.state import DashboardState

with warnings.catch_warnings():
    # bqscales declares a trait the way traitlets 4.1 deprecated; nothing we can change
    warnings.simplefilter("ignore", DeprecationWarning)
    import bqplot

SERIES = (
    ("completed", "completed/s", "#16a34a"),
    ("queue_depth", "queue depth", "#2563eb"),
    ("running", "running", "#d97706"),
)


def _dates(seconds: list[float]) -> np.ndarray:
    return (np.asarray(seconds, dtype=float) * 1000).astype("datetime64[ms]")


class ThroughputChart(widgets.VBox):
    """A bqplot Figure with one line per series, redrawn at the render tick."""

    sections = ("series",)

    def __init__(
        self, state: DashboardState | None = None, height: str = "260px", **kwargs: Any
    ) -> None:
        self.state = state if state is not None else DashboardState()
        x = bqplot.DateScale()
        y = bqplot.LinearScale(min=0.0)
        self.lines: dict[str, bqplot.Lines] = {
            key: bqplot.Lines(
                x=_dates([]), y=np.array([], dtype=float), scales={"x": x, "y": y},
                colors=[color], labels=[label], display_legend=True, stroke_width=2,
            )
            for key, label, color in SERIES
        }
        self.figure = bqplot.Figure(
            marks=list(self.lines.values()),
            axes=[bqplot.Axis(scale=x, label="time", tick_format="%H:%M:%S"),
                  bqplot.Axis(scale=y, side="left")],
            title="Throughput",
            legend_location="top-left",
            animation_duration=0,
            layout=widgets.Layout(height=height, width="100%"),
            fig_margin={"top": 40, "bottom": 40, "left": 50, "right": 20},
        )
        super().__init__(children=[self.figure], **kwargs)
        self._drawn: tuple[int, ...] | None = None

    def render(self, state: DashboardState | None = None, force: bool = False) -> bool:
        """Put the state's series into the lines; True if redrawn."""
        state = state if state is not None else self.state
        xs, ys = state.completed_series()
        # the completed series also moves with the clock (zeros), hence the last second
        key = (*(state.versions[s] for s in self.sections), int(xs[-1]) if xs else -1)
        if key == self._drawn and not force:
            return False
        self._drawn = key
        samples = list(state.samples)
        stamps = [t for t, _, _ in samples]
        data = {
            "completed": (xs, ys),
            "queue_depth": (stamps, [q for _, q, _ in samples]),
            "running": (stamps, [r for _, _, r in samples]),
        }
        for name, (x, y) in data.items():
            line = self.lines[name]
            with line.hold_sync():
                line.x = _dates(x)
                line.y = np.asarray(y, dtype=float)
        return True

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
