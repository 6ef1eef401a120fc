"""The Autoscale panel over a stand-in for the client that keeps a real policy, and the
pool_scaled line of the activity log."""

from __future__ import annotations

import time
from typing import Any

from taskmaster.autoscale import Autoscaler, Policy
from taskmaster.client import ApiError
from taskmaster.errors import InvalidInput
from taskmaster.notebook import AutoscalePanel
from taskmaster.notebook.views import format_event


class AutoscaleApi:
    """GET/PUT /api/pool/autoscale answered by a real Autoscaler (the checks are real)."""

    def __init__(self) -> None:
        self.scaler = Autoscaler(Policy())
        self.puts: list[dict[str, Any]] = []

    async def autoscale(self) -> dict[str, Any]:
        return {**self.scaler.status(), "workers": 2}

    async def set_autoscale(self, **changes: Any) -> dict[str, Any]:
        self.puts.append(changes)
        try:
            self.scaler.configure(self.scaler.policy.updated(changes, 32))
        except InvalidInput as exc:
            raise ApiError(exc.status, exc.message, exc.field, exc.to_json()) from None
        return await self.autoscale()


async def wait_toast(panel: AutoscalePanel, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while panel.toast_state in ("idle", "busy"):
        assert time.monotonic() < deadline, panel.toast_text
        await panel.wait()


async def test_apply_turns_it_on_and_shows_the_settings() -> None:
    api = AutoscaleApi()
    panel = AutoscalePanel(api)
    await panel.refresh()
    assert repr(panel) == "AutoscalePanel(enabled=False, range=1..6, target='wait=2')"
    assert "autoscaler off, 2 workers running" in panel.decision.value
    panel.enabled.value, panel.range.value, panel.target.value = True, (2, 8), "backlog=1.5"
    panel.apply_button.click()
    await wait_toast(panel)
    assert api.puts == [{"enabled": True, "min": 2, "max": 8, "target": "backlog=1.5"}]
    assert panel.toast_text == "Autoscale on: 2..8 workers, target backlog=1.5"
    assert api.scaler.policy.target_kind == "backlog" and api.scaler.policy.min == 2


async def test_a_refused_value_names_the_field_and_changes_nothing() -> None:
    api = AutoscaleApi()
    panel = AutoscalePanel(api)
    panel.enabled.value, panel.target.value = True, "soon"
    panel.apply()
    await wait_toast(panel)
    assert panel.toast_state == "error" and "target must be wait=SECONDS" in panel.toast_text
    assert api.scaler.policy == Policy()


def test_a_pool_scaled_event_becomes_the_last_decision() -> None:
    panel = AutoscalePanel(AutoscaleApi())
    event = {"event": "pool_scaled", "id": 7, "timestamp": "2026-11-30T10:00:00+00:00",
             "from": 1, "to": 5, "reason": "queue 31, running 1: over the queue wait target 2s"}
    panel.on_event({"event": "task_completed", "task_id": "x"})
    assert panel.last_reason == ""
    panel.on_event(event)
    assert panel.last_reason.startswith("queue 31")
    assert "last resize 1 &rarr; 5" in panel.decision.value
    line = format_event(event)
    assert "pool_scaled" in line and "workers 1 &rarr; 5" in line and "reason=queue 31" in line
