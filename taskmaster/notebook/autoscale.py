"""The Autoscale panel: the local stack's autoscaler, on or off, its range and target,
and its last decision with the reason (GET/PUT /api/pool/autoscale, the `pool_scaled`
events of the feed).

Apply sends the checkbox, the range and the target in one PUT; a wrong value comes back
as the API's 422 naming the field, in the toast, and changes nothing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from taskmaster.model import EventType
from taskmaster.notebook.controls import ActionPanel


class AutoscalePanel(ActionPanel):
    """Autoscaler on/off, min..max workers, target; the last resize and why."""

    def __init__(self, client: Any, *, max_workers: int = 12, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.status: dict[str, Any] = {}
        self.enabled = widgets.Checkbox(value=False, description="Autoscale",
                                        indent=False, layout=widgets.Layout(width="110px"))
        self.range = widgets.IntRangeSlider(value=(1, min(6, max_workers)), min=0,
                                            max=max_workers, description="Workers",
                                            style={"description_width": "initial"},
                                            layout=widgets.Layout(width="260px"))
        self.target = widgets.Text(value="wait=2", description="Target",
                                   placeholder="wait=2 or backlog=1",
                                   style={"description_width": "initial"},
                                   layout=widgets.Layout(width="180px"))
        self.apply_button = widgets.Button(description="Apply", button_style="primary")
        self.apply_button.on_click(self.handler(lambda _b: self.apply()))
        self.decision = widgets.HTML()
        self.decision.add_class("tm-autoscale-decision")
        self.children = [
            widgets.HTML("<b>Autoscale</b>"),
            widgets.HBox([self.enabled, self.range, self.target],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            widgets.HBox([self.apply_button, self.toast],
                         layout=widgets.Layout(align_items="center")),
            self.decision,
        ]
        self.add_class("tm-panel")
        self._draw()

    def changes(self) -> dict[str, Any]:
        """The PUT body the widgets describe."""
        low, high = self.range.value
        return {"enabled": bool(self.enabled.value), "min": int(low), "max": int(high),
                "target": self.target.value.strip()}

    def apply(self) -> None:
        """Send the widgets' settings (the toast says what the autoscaler does now)."""
        self.submit(lambda: self._apply(self.changes()), self._applied,
                    busy="Autoscale: applying ...")

    async def _apply(self, changes: dict[str, Any]) -> dict[str, Any]:
        self.take(await self.client.set_autoscale(**changes))
        return self.status

    def _applied(self, status: dict[str, Any]) -> str:
        if not status.get("enabled"):
            return "Autoscale off: the pool stays as it is"
        return (f"Autoscale on: {status['min']}..{status['max']} workers, target "
                f"{status.get('target_text')}")

    async def refresh(self) -> dict[str, Any]:
        """Read the autoscaler's status and show it (the widgets follow it)."""
        self.take(await self.client.autoscale())
        return self.status

    def take(self, status: Mapping[str, Any]) -> None:
        """Show a GET/PUT /api/pool/autoscale answer."""
        self.status = dict(status)
        self.enabled.value = bool(status.get("enabled"))
        low, high = int(status.get("min", 1)), int(status.get("max", 1))
        self.range.max = max(self.range.max, high)
        self.range.value = (low, high)
        self.target.value = str(status.get("target_text") or self.target.value)
        self._draw()

    def on_event(self, event: Mapping[str, Any]) -> None:
        """A Feed listener: a `pool_scaled` event becomes the last decision shown."""
        if event.get("event") == EventType.POOL_SCALED:
            last = {k: event.get(k) for k in ("from", "to", "reason")}
            self.status = {**self.status, "last_change": last}
            self._draw()

    def _draw(self) -> None:
        last = self.status.get("last_change")
        state = ("on" if self.status.get("enabled") else "off") if self.status else "unknown"
        text = f"autoscaler {state}"
        if self.status.get("workers") is not None:
            text += f", {self.status['workers']} workers running"
        if last:
            text += (f"; last resize {last.get('from')} &rarr; {last.get('to')}: "
                     f"{html.escape(str(last.get('reason')))}")
        self.decision.value = f'<span style="font-size:12px;color:#374151">{text}</span>'

    @property
    def last_reason(self) -> str:
        """Why the pool last changed ("" before any resize)."""
        last = self.status.get("last_change") or {}
        return str(last.get("reason") or "")

    def __repr__(self) -> str:
        low, high = self.range.value
        return (f"AutoscalePanel(enabled={bool(self.enabled.value)}, range={low}..{high}, "
                f"target={self.target.value!r})")


# ---- the simulation's charts (taskmaster.autoscale.simulate) ----

PALETTE = ("#2563eb", "#16a34a", "#d97706", "#7c3aed", "#dc2626")


def simulation_chart(runs: Mapping[str, Any], *, title: str, service: float,
                     concurrency: int = 1) -> Any:
    """Workers over simulated time for each policy's Run, with the slots the load needs
    (arrivals x service time) dashed in grey."""
    import bqplot

    xs, ys = bqplot.LinearScale(), bqplot.LinearScale(min=0)
    marks = []
    first = next(iter(runs.values()))
    minutes = [t / 60 for t in first.times]
    needed = [r * service / concurrency for r in first.rate]
    marks.append(bqplot.Lines(x=minutes, y=needed, scales={"x": xs, "y": ys},
                              colors=["#9ca3af"], line_style="dashed", labels=["load needs"],
                              display_legend=True))
    for color, (name, run) in zip(PALETTE, runs.items(), strict=False):
        marks.append(bqplot.Lines(x=[t / 60 for t in run.times], y=run.workers,
                                  scales={"x": xs, "y": ys}, colors=[color], labels=[name],
                                  display_legend=True, interpolation="step-after"))
    return bqplot.Figure(
        marks=marks, title=title, legend_location="top-left",
        axes=[bqplot.Axis(scale=xs, label="simulated minutes"),
              bqplot.Axis(scale=ys, orientation="vertical", label="workers", tick_format="d")],
        layout=widgets.Layout(width="100%", height="300px"),
        fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20})


def tradeoff_chart(rows: list[dict[str, Any]], trace: str) -> Any:
    """Worker-hours spent against the mean queue wait, one point per policy, on one trace."""
    import bqplot

    mine = [r for r in rows if r["trace"] == trace]
    xs, ys = bqplot.LinearScale(min=0), bqplot.LinearScale(min=0)
    marks = [bqplot.Scatter(x=[r["worker_hours"]], y=[r["mean_wait_s"]],
                            scales={"x": xs, "y": ys}, colors=[color], labels=[r["policy"]],
                            display_legend=True, default_size=120)
             for color, r in zip(PALETTE, mine, strict=False)]
    return bqplot.Figure(
        marks=marks, title=f"{trace}: cost against wait", legend_location="top-right",
        axes=[bqplot.Axis(scale=xs, label="worker-hours"),
              bqplot.Axis(scale=ys, orientation="vertical", label="mean queue wait (s)")],
        layout=widgets.Layout(width="33%", height="280px"),
        fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20})
