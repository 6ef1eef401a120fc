"""Still pictures of the live charts, for a notebook read without running it.

The bqplot charts are widgets: a notebook file keeps only a reference to them, so someone
browsing the repository (or opening a notebook before running it) sees `ThroughputChart()`
and nothing else. `Snapshot` draws the same series as a small SVG image, self-contained,
which a notebook file keeps as an ordinary output and any notebook viewer shows.

    dash.snapshot()          # the dashboard's stats line and its three charts, as now
    chart.snapshot()         # any chart with series: ThroughputChart, MetricsChart

nbval compares outputs: tests/notebooks/sanitize.ini replaces a whole `<svg>` by a word, so
the picture is recorded but its figures, which vary from run to run, are not compared.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PANEL_HEIGHT = 150
WIDTH = 860
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 26, 22


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a label, a colour, times (epoch seconds) and values."""

    label: str
    color: str
    xs: Sequence[float]
    ys: Sequence[float]
    step: bool = False  # drawn as steps (counts that jump: workers online)


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    series: Sequence[Series]


@dataclass(slots=True)
class Snapshot:
    """A still picture of some charts (and a line of text above them)."""

    panels: Sequence[Panel]
    caption: str = ""
    taken: float = field(default_factory=time.time)

    def _repr_svg_(self) -> str:
        return self.svg()

    def __repr__(self) -> str:
        return f"Snapshot({', '.join(p.title for p in self.panels)})"

    def svg(self) -> str:
        """The picture: one panel per chart, on one time axis."""
        xs = [x for p in self.panels for s in p.series for x in s.xs
              if isinstance(x, int | float) and math.isfinite(x)]
        t0, t1 = (min(xs), max(xs)) if xs else (self.taken - 60, self.taken)
        if t1 - t0 < 1:
            t0 = t1 - 1
        head = 20 if self.caption else 0
        height = head + PANEL_HEIGHT * len(self.panels)
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
               f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
               f'<rect width="{WIDTH}" height="{height}" fill="white"/>']
        if self.caption:
            out.append(f'<text x="{LEFT}" y="14" font-size="12" fill="#111827">'
                       f'{escape(self.caption)}</text>')
        for i, panel in enumerate(self.panels):
            out.append(self._panel(panel, head + i * PANEL_HEIGHT, t0, t1))
        out.append("</svg>")
        return "\n".join(out)

    def _panel(self, panel: Panel, y0: int, t0: float, t1: float) -> str:
        w, h = WIDTH - LEFT - RIGHT, PANEL_HEIGHT - TOP - BOTTOM
        values = [v for s in panel.series for v in s.ys
                  if isinstance(v, int | float) and math.isfinite(v)]
        top = _nice(max([1.0, *values]) * 1.1)

        def px(t: float) -> float:
            return LEFT + (t - t0) / (t1 - t0) * w

        def py(v: float) -> float:
            return y0 + TOP + h - v / top * h

        parts = [f'<text x="{LEFT}" y="{y0 + 16}" font-weight="bold" fill="#111827">'
                 f'{escape(panel.title)}</text>']
        legend_x = LEFT + 8 + 7.0 * len(panel.title)
        for s in panel.series:
            parts.append(f'<rect x="{legend_x:.0f}" y="{y0 + 8}" width="10" height="10" '
                         f'fill="{s.color}"/><text x="{legend_x + 14:.0f}" y="{y0 + 17}" '
                         f'fill="#374151">{escape(s.label)}</text>')
            legend_x += 24 + 6.5 * len(s.label)
        for frac in (0.0, 0.5, 1.0):  # grid and y labels
            y = py(top * frac)
            parts.append(f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{y:.1f}" y2="{y:.1f}" '
                         f'stroke="#e5e7eb"/><text x="{LEFT - 6}" y="{y + 4:.1f}" '
                         f'text-anchor="end" fill="#6b7280">{_label(top * frac)}</text>')
        base = y0 + TOP + h
        parts.append(f'<text x="{LEFT}" y="{base + 16}" fill="#6b7280">'
                     f'{time.strftime("%H:%M:%S", time.localtime(t0))}</text>'
                     f'<text x="{LEFT + w}" y="{base + 16}" text-anchor="end" fill="#6b7280">'
                     f'{time.strftime("%H:%M:%S", time.localtime(t1))}'
                     f' ({t1 - t0:.0f} s)</text>')
        for s in panel.series:
            points: list[tuple[float, float]] = []
            for x, v in zip(s.xs, s.ys, strict=False):
                if not (isinstance(v, int | float) and math.isfinite(v)):
                    continue
                if s.step and points:
                    points.append((px(x), points[-1][1]))
                points.append((px(x), py(v)))
            if points:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" '
                             f'stroke-width="2"/>')
        return "\n".join(parts)


def _nice(value: float) -> float:
    """The round number at or above value: 1, 2, 5 x 10^k."""
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if m * exp >= value:
            return float(m * exp)
    return float(10 * exp)


def _label(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
