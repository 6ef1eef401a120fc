"""Prometheus metrics in a notebook: scrape `/metrics`, keep the samples, chart them live.

    recorder = MetricsRecorder({"scheduler": f"{url}/metrics", "coordinator": coord_url})
    chart = MetricsChart(recorder)          # bqplot, redrawn after each scrape
    task = recorder.start(interval=0.5)     # scrapes in the background
    ...
    await recorder.stop()
    recorder.frame()                        # every sample as a pandas DataFrame

What a monitoring system does with the same text format, small enough to read: a scrape
is one GET of each endpoint, parsed with prometheus-client's own parser into rows
(time, source, metric, labels, value); rates and quantiles are computed from counters and
histogram buckets between two scrapes, as PromQL's rate() and histogram_quantile() do.
Bounded: at most `limit` scrapes are kept (the oldest dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiohttp
import ipywidgets as widgets
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from taskmaster.notebook import snapshot as still
from taskmaster.notebook.chart import _dates, bqplot

log = logging.getLogger(__name__)

Sample = tuple[str, tuple[tuple[str, str], ...], float]  # metric, sorted labels, value


def parse(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition (`*_created` series left out)."""
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out.append((s.name, tuple(sorted(s.labels.items())), float(s.value)))
    return out


class Scrape:
    """One scrape of every endpoint: {source: samples}, at time t (epoch seconds)."""

    def __init__(self, t: float, samples: Mapping[str, list[Sample]]) -> None:
        self.t = t
        self.samples = dict(samples)

    def value(self, source: str, metric: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels` (0.0 if none)."""
        want = set(labels.items())
        return sum(v for name, lab, v in self.samples.get(source, [])
                   if name == metric and want <= set(lab))

    def buckets(self, source: str, histogram: str) -> dict[float, float]:
        """A histogram's cumulative bucket counts {upper bound: count}, summed over labels."""
        out: dict[float, float] = {}
        for name, lab, v in self.samples.get(source, []):
            if name == f"{histogram}_bucket":
                le = float(dict(lab)["le"])
                out[le] = out.get(le, 0.0) + v
        return out


def quantile(q: float, buckets: Mapping[float, float]) -> float:
    """histogram_quantile(): the q-quantile of cumulative buckets, interpolated linearly
    inside the bucket it falls in (NaN when there are no observations)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bound: its bound, as Prometheus does
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


class MetricsRecorder:
    """Scrapes `/metrics` endpoints every `interval` seconds and keeps the scrapes."""

    def __init__(self, endpoints: Mapping[str, str], *, limit: int = 2000,
                 token: str | None = None) -> None:
        self.endpoints = dict(endpoints)
        self.scrapes: deque[Scrape] = deque(maxlen=limit)
        self.errors: dict[str, str] = {}
        self.listeners: list[Any] = []  # called with the recorder after each scrape
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def scrape(self, session: aiohttp.ClientSession | None = None) -> Scrape:
        """Scrape every endpoint once (an endpoint that fails gives no samples this time)."""
        own = session is None
        session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            samples: dict[str, list[Sample]] = {}
            for source, url in self.endpoints.items():
                try:
                    async with session.get(url, headers=self._headers) as answer:
                        answer.raise_for_status()
                        samples[source] = parse(await answer.text())
                        self.errors.pop(source, None)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.errors[source] = f"{type(exc).__name__}: {exc}"
                    samples[source] = []
            scrape = Scrape(time.time(), samples)
            self.scrapes.append(scrape)
            for listener in self.listeners:
                listener(self)
            return scrape
        finally:
            if own:
                await session.close()

    def start(self, interval: float = 1.0) -> asyncio.Task[None]:
        """Scrape in the background every `interval` seconds until stop()."""
        self._stop.clear()

        async def run() -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                while not self._stop.is_set():
                    await self.scrape(session)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), interval)

        self._task = asyncio.get_running_loop().create_task(run())
        return self._task

    async def stop(self) -> None:
        """Stop scraping (after one last scrape) and wait for it."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.scrape()

    # ---- reading ----

    def series(self, source: str, metric: str, **labels: str) -> pd.Series:
        """A metric's value at each scrape, indexed by time (epoch seconds)."""
        return pd.Series([s.value(source, metric, **labels) for s in self.scrapes],
                         index=[s.t for s in self.scrapes], name=metric, dtype=float)

    def rate(self, source: str, counter: str, **labels: str) -> pd.Series:
        """Per-second increase of a counter between consecutive scrapes (a reset counts
        from zero, as PromQL's rate() does)."""
        values = self.series(source, counter, **labels)
        t = values.index.to_numpy(dtype=float)
        v = values.to_numpy()
        if len(v) < 2:
            return pd.Series(dtype=float, name=counter)
        increase = np.where(v[1:] >= v[:-1], v[1:] - v[:-1], v[1:])
        return pd.Series(increase / np.maximum(t[1:] - t[:-1], 1e-9), index=t[1:], name=counter)

    def quantile(self, q: float, source: str, histogram: str, window: int = 4) -> pd.Series:
        """The q-quantile of a histogram's observations made over the last `window`
        scrapes, at each scrape (NaN where there were none)."""
        scrapes = list(self.scrapes)
        out = []
        for i, s in enumerate(scrapes):
            now = s.buckets(source, histogram)
            then = scrapes[max(0, i - window)].buckets(source, histogram) if i else {}
            out.append(quantile(q, {le: c - then.get(le, 0.0) for le, c in now.items()}))
        return pd.Series(out, index=[s.t for s in scrapes], name=f"{histogram} p{q * 100:g}")

    def frame(self) -> pd.DataFrame:
        """Every sample of every scrape: time, source, metric, labels, value."""
        rows = [(s.t, source, name, ",".join(f"{k}={v}" for k, v in lab), value)
                for s in self.scrapes for source, samples in s.samples.items()
                for name, lab, value in samples]
        return pd.DataFrame(rows, columns=["time", "source", "metric", "labels", "value"])

    def __repr__(self) -> str:
        return f"MetricsRecorder({', '.join(self.endpoints)}: {len(self.scrapes)} scrapes)"


# (title, [(label, function of the recorder giving a pd.Series)])
Panel = tuple[str, Sequence[tuple[str, Any]]]
COLORS = ("#16a34a", "#2563eb", "#d97706", "#7c3aed", "#dc2626")


class MetricsChart(widgets.VBox):
    """One small bqplot figure per panel, on one time axis, redrawn after each scrape."""

    def __init__(self, recorder: MetricsRecorder, panels: Iterable[Panel],
                 height: str = "160px", **kwargs: Any) -> None:
        self.recorder = recorder
        self.panels = list(panels)
        self.x = bqplot.DateScale()
        self.lines: dict[str, bqplot.Lines] = {}
        figures = []
        for title, series in self.panels:
            y = bqplot.LinearScale(min=0.0)
            marks = []
            for i, (label, _f) in enumerate(series):
                line = bqplot.Lines(x=_dates([]), y=np.array([], dtype=float),
                                    scales={"x": self.x, "y": y}, labels=[label],
                                    colors=[COLORS[i % len(COLORS)]], display_legend=True,
                                    stroke_width=2)
                self.lines[label] = line
                marks.append(line)
            figures.append(bqplot.Figure(
                marks=marks, title=title, animation_duration=0, legend_location="top-left",
                axes=[bqplot.Axis(scale=self.x, tick_format="%H:%M:%S", num_ticks=5),
                      bqplot.Axis(scale=y, side="left", tick_format=".3~f")],
                fig_margin={"top": 30, "bottom": 30, "left": 60, "right": 20},
                layout=widgets.Layout(height=height, width="100%")))
        super().__init__(children=figures, **kwargs)
        recorder.listeners.append(lambda _r: self.render())

    def data(self) -> dict[str, pd.Series]:
        """Each line's series, as drawn."""
        return {label: f(self.recorder) for _t, series in self.panels for label, f in series}

    def render(self) -> None:
        """Redraw every line from the recorder."""
        for label, values in self.data().items():
            values = values.dropna()
            line = self.lines[label]
            with line.hold_sync():
                line.x = _dates(list(values.index))
                line.y = values.to_numpy(dtype=float)

    def snapshot(self) -> still.Snapshot:
        """The charts as a still SVG picture (kept in a notebook file, shown by any viewer)."""
        data = self.data()
        return still.Snapshot([
            still.Panel(title, [still.Series(label, COLORS[i % len(COLORS)],
                                             [float(t) for t in data[label].index],
                                             [float(v) for v in data[label].to_numpy()])
                                for i, (label, _f) in enumerate(series)])
            for title, series in self.panels])

    def __repr__(self) -> str:
        return f"MetricsChart({', '.join(t for t, _ in self.panels)})"
