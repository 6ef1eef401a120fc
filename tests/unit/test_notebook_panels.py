"""The panels: construction, button clicks (with a fake pool), toasts, redraws, chart data."""

from __future__ import annotations

import asyncio
import html
import shlex
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from taskmaster.client import ApiError, Client
from taskmaster.notebook import (
    ActivityLog,
    BulkTaskPanel,
    Dashboard,
    DashboardState,
    DockerCommands,
    ResetPanel,
    StatsPanel,
    SteadyLoadPanel,
    TaskMonitor,
    ThroughputChart,
    WorkerControlPanel,
    WorkersPanel,
)
from taskmaster.pool import COORDINATOR_ACTIONS, CRASH_SNIPPET, compose_command


class FakeApi:
    """Stands in for the Client where the panel, not the HTTP, is under test."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def schedule_batch(self, command: str, count: int, delay_seconds: float = 0,
                             payload: Any = None) -> dict[str, Any]:
        self.calls.append(("schedule_batch", command, count, delay_seconds, payload))
        if count < 1:
            raise ApiError(400, "count must be between 1 and 100000", "count")
        return {"created": count, "command": command, "ids": []}

    async def commands(self) -> list[str]:
        return ["demo-job", "sleep"]


class FakePool:
    """Pool operations, async and sync mixed, as the PoolOps protocol allows."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def scale(self, n: int) -> list[str]:
        self.calls.append(("scale", n))
        return [f"worker-{i}" for i in range(n)]

    def kill_worker(self, name: str, graceful: bool = False) -> None:
        self.calls.append(("kill_worker", name, graceful))

    async def coordinator(self, action: str) -> None:
        self.calls.append(("coordinator", action))
        if action == "restart":
            raise ApiError(501, "no pool manager", None,
                           {"error": "no pool manager",
                            "command": "docker compose restart coordinator"})


async def wait_until(condition: Any, timeout: float = 5.0) -> None:
    """Until condition() holds (a panel's task runs meanwhile); AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def workers(*names: str, status: str = "online") -> list[dict[str, Any]]:
    return [{"id": f"id-{n}", "name": n, "status": status, "tasks_completed": 0} for n in names]


async def test_bulk_panel_click_creates_tasks_and_toasts() -> None:
    api = FakeApi()
    panel = BulkTaskPanel(api)
    assert (panel.command.value, panel.count.value, panel.delay.value) == ("demo-job", 50, 0.0)
    panel.button.click()
    await panel.wait()
    assert api.calls == [("schedule_batch", "demo-job", 50, 0.0, None)]
    assert panel.toast_text == "Created 50 tasks" and panel.toast_ok
    assert "Created 50 tasks" in panel.toast.value


async def test_bulk_panel_shows_the_api_error_text() -> None:
    panel = BulkTaskPanel(FakeApi())
    panel.count.value = 0
    panel.button.click()
    await panel.wait()
    assert panel.toast_text == "count must be between 1 and 100000"
    assert not panel.toast_ok and "tm-toast-error" in panel.toast.value


async def test_bulk_panel_loads_known_commands() -> None:
    panel = BulkTaskPanel(FakeApi(), commands=["noop"], command="noop")
    assert await panel.load_commands() == ["demo-job", "sleep"]
    assert panel.command.value == "demo-job"
    assert repr(panel) == "BulkTaskPanel(command='demo-job', count=50)"


def test_bulk_panel_click_without_a_loop_runs_to_the_end() -> None:
    api = FakeApi()
    panel = BulkTaskPanel(api, count=3)
    panel.button.click()
    assert panel.toast_text == "Created 3 tasks" and len(api.calls) == 1


async def test_worker_controls_scale_kill_stop_and_coordinator() -> None:
    pool = FakePool()
    state = DashboardState()
    state.set_workers(workers("worker-1", "worker-2") + workers("worker-9", status="offline"))
    panel = WorkerControlPanel(pool, state=state, workers=3)
    assert sorted(panel.worker_buttons) == ["worker-1", "worker-2"]  # offline: no buttons

    panel.slider.value = 5
    assert "docker compose up --scale worker=5 -d" in panel.scale_command.value
    panel.scale_button.click()
    # started: waiting for the feed to show them online
    await wait_until(lambda: panel.toast_text == "Scaled to 5 workers: 3 started ...")
    assert panel.toast_state == "busy"
    # the feed shows them online: the message reaches its end
    state.set_workers(workers(*(f"worker-{i}" for i in range(1, 6))))
    await panel.wait()
    assert panel.toast_text == "Scaled to 5 workers: 3 started, all online"
    assert panel.toast_state == "done"

    panel.worker_buttons["worker-2"]["kill"].click()
    await panel.wait()
    assert panel.toast_text == "Killed worker-2 (SIGKILL): its tasks go back to the queue"
    panel.worker_buttons["worker-1"]["stop"].click()
    await panel.wait()
    assert panel.toast_text == "Stopped worker-1: it finished its tasks and left"

    panel.coordinator_buttons["kill"].click()
    await panel.wait()
    assert panel.toast_text.startswith("Coordinator crashed (SIGKILL)")
    panel.coordinator_buttons["restart"].click()
    await panel.wait()
    assert panel.toast_text == (
        "no pool manager; run instead: docker compose restart coordinator"
    )
    assert pool.calls == [("scale", 5), ("kill_worker", "worker-2", False),
                          ("kill_worker", "worker-1", True), ("coordinator", "kill"),
                          ("coordinator", "restart")]


async def test_worker_controls_show_the_docker_commands() -> None:
    state = DashboardState()
    state.set_workers(workers("worker-1"))
    panel = WorkerControlPanel(FakePool(), state=state,
                               docker=DockerCommands("docker compose -f compose.yaml"))
    text = html.unescape(str([getattr(w, "value", "") for w in _walk(panel)]))
    crash = "python -c 'import os, signal; os.kill(-1, signal.SIGKILL)'"
    for command in ("docker compose -f compose.yaml up --scale worker=3 -d",
                    "docker kill worker-1", "docker stop worker-1",
                    f"docker compose -f compose.yaml exec -T coordinator {crash}",
                    "docker compose -f compose.yaml start coordinator",
                    "docker compose -f compose.yaml restart coordinator"):
        assert command in text
    state.set_workers(workers("worker-1", "worker-2"))
    assert panel.render() is True and sorted(panel.worker_buttons) == ["worker-1", "worker-2"]
    assert panel.render() is False  # same workers: rows are not rebuilt


def test_docker_commands_are_the_pools_compose_commands() -> None:
    docker = DockerCommands()
    assert docker.scale(5) == compose_command("scale", 5) == "docker compose up --scale worker=5 -d"
    for graceful in (False, True):
        assert docker.kill_worker("stack-worker-2", graceful) == compose_command(
            "kill_worker", "stack-worker-2", graceful=graceful)
    for action in COORDINATOR_ACTIONS:
        assert docker.coordinator(action) == compose_command("coordinator", action)
    # a crash the restart policy undoes: killed inside the container, not `docker compose kill`
    assert docker.coordinator("kill").endswith(shlex.quote(CRASH_SNIPPET))
    other = DockerCommands(["podman-compose", "-p", "tm"])
    assert other.scale(2) == compose_command("scale", 2, compose=("podman-compose", "-p", "tm"))


def _walk(widget: Any) -> list[Any]:
    out = [widget]
    for child in getattr(widget, "children", ()):
        out.extend(_walk(child))
    return out


def _event(kind: str, task: str, **extra: Any) -> dict[str, Any]:
    return {"event": kind, "task_id": task, "timestamp": datetime.now(UTC).isoformat(), **extra}


def test_views_redraw_only_when_their_sections_change() -> None:
    state = DashboardState()
    monitor, log, stats, workers_panel = (TaskMonitor(state), ActivityLog(state, lines=5),
                                          StatsPanel(state), WorkersPanel(state))
    assert "No tasks yet" in monitor.body.value and "No workers" in workers_panel.body.value
    assert monitor.render() is False
    for i in range(100):
        state.apply(_event("task_scheduled", f"task-{i:04d}", command="demo-job"))
    state.apply(_event("task_reassigned", "task-0099", reason="worker lost", next_attempt=2))
    state.apply(_event("task_progress", "task-0098", progress=70))
    assert monitor.render() is True and monitor.render() is False
    html = monitor.body.value
    assert html.count("<tr>") == 51  # header + the 50 most recent
    assert "reassigned" in html and "width:70%" in html and "task-009" in html
    assert log.render() is True and log.body.value.count("<br>") == 4  # 5 lines shown
    assert "reassigned" in log.body.value and "reason=worker lost" in log.body.value
    assert workers_panel.render() is False
    state.set_workers([{"id": "w", "name": "worker-1", "status": "online",
                        "current_task_ids": ["task-0001", "task-0002"], "tasks_completed": 7},
                       {"id": "w2", "name": "worker-2", "status": "draining",
                        "current_task_id": None, "current_task_ids": []}])
    assert workers_panel.render() is True
    assert "worker-1" in workers_panel.body.value and "task-000 +1" in workers_panel.body.value
    assert "idle" in workers_panel.body.value and "tm-draining" in workers_panel.body.value
    state.apply(_event("task_assigned", "task-0098", worker_id="w2", attempt=1))
    monitor.render()
    log.render()
    assert "worker-2" in monitor.body.value and "@worker-2" in log.body.value  # names, not ids
    state.set_stats({"total": 100, "pending": 100, "throughput": 2.5})
    assert stats.render() is True and "2.5" in stats.body.value and ">100<" in stats.body.value
    assert [repr(v) for v in (monitor, log, stats, workers_panel)] == [
        "TaskMonitor()", "ActivityLog()", "StatsPanel()", "WorkersPanel()"]


def test_throughput_chart_lines_have_data_after_a_tick() -> None:
    state = DashboardState()
    chart = ThroughputChart(state)
    assert all(len(line.x) == 0 for line in chart.lines.values())
    now = time.time()
    for i in range(6):
        state.apply(_event("task_completed", f"t{i}",
                           timestamp=datetime.fromtimestamp(now - 2, UTC).isoformat()))
    state.set_stats({"queue_depth": 7, "running": 3}, now=now - 3)
    state.set_stats({"queue_depth": 4, "running": 3}, now=now - 1)
    assert chart.render() is True
    completed, queue, running = (chart.lines[k] for k in ("completed", "queue_depth", "running"))
    assert len(completed.x) == len(completed.y) >= 2 and max(completed.y) == 6
    assert list(queue.y) == [7, 4] and list(running.y) == [3, 3] and len(queue.x) == 2
    assert str(completed.x.dtype) == "datetime64[ms]"
    assert chart.render() is False  # nothing new within the same second


async def test_dashboard_composes_every_panel() -> None:
    dash = Dashboard(FakeApi(), pool=FakePool())
    parts = _walk(dash)
    for panel in (dash.bulk, dash.controls, dash.stats, dash.chart, dash.monitor,
                  dash.workers_panel, dash.activity):
        assert panel in parts
    assert repr(dash) == "Dashboard()"
    assert dash._repr_mimebundle_()["text/plain"] == "Dashboard()"
    dash.bulk.button.click()
    await dash.bulk.wait()
    assert dash.bulk.toast_text == "Created 50 tasks"


def test_feed_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        Dashboard(FakeApi()).start()


class NoPoolApi:
    """A scheduler without the pool API: every pool call is a 404."""

    async def scale(self, n: int) -> None:
        raise ApiError(404, "404: Not Found")

    async def kill_worker(self, name: str, graceful: bool = False) -> None:
        raise ApiError(404, "404: Not Found")

    async def coordinator(self, action: str) -> None:
        raise ConnectionRefusedError("connection refused")


async def test_worker_controls_name_the_command_to_run_instead() -> None:
    state = DashboardState()
    state.set_workers([{"id": "x", "name": "worker-1", "container": "stack-worker-1",
                        "status": "online"}])
    panel = WorkerControlPanel(NoPoolApi(), state=state)
    panel.scale_button.click()
    await panel.wait()
    assert panel.toast_text == "404: Not Found; run instead: docker compose up --scale worker=3 -d"
    panel.worker_buttons["worker-1"]["stop"].click()
    await panel.wait()
    assert panel.toast_text == "404: Not Found; run instead: docker stop stack-worker-1"
    panel.coordinator_buttons["start"].click()
    await panel.wait()
    assert panel.toast_text == "ConnectionRefusedError: connection refused"
    assert not panel.toast_ok


class PoolApi:
    """A scheduler's /api/pool endpoints, recording what the panel's Client posts."""

    def __init__(self, scale_delay: float = 0.0) -> None:
        self.scale_delay = scale_delay
        self.calls: list[tuple[str, Any]] = []
        self.url = ""

    async def scale(self, request: web.Request) -> web.Response:
        self.calls.append((request.path, await request.json()))
        await asyncio.sleep(self.scale_delay)  # the workers that leave drain
        return web.json_response({"workers": 2})

    async def post(self, request: web.Request) -> web.Response:
        self.calls.append((request.path, await request.json()))
        return web.json_response({"member": {"name": "x", "state": "running"}})

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response({"manager": "local", "workers": 2, "members": []})


@pytest.fixture
async def pool_api() -> AsyncIterator[PoolApi]:
    fake = PoolApi(scale_delay=1.0)
    app = web.Application()
    app.router.add_get("/api/pool", fake.get)
    app.router.add_post("/api/pool/scale", fake.scale)
    app.router.add_post("/api/pool/workers/{name}/kill", fake.post)
    app.router.add_post("/api/pool/coordinator/{action}", fake.post)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


async def test_the_dashboards_worker_controls_are_the_clients_pool_api(pool_api: PoolApi) -> None:
    # a request timeout shorter than the drain of a scale-down: pool actions have their own
    async with Client(pool_api.url, timeout=0.5, pool_timeout=5.0) as client:
        assert (await client.pool())["manager"] == "local"
        dash = Dashboard(client)
        assert dash.controls.pool is client
        dash.state.set_workers(workers("worker-1", "worker-2"))
        dash.controls.render()
        dash.controls.slider.value = 2
        dash.controls.scale_button.click()
        await dash.controls.wait()
        assert dash.controls.toast_text == "Scaled to 2 workers: no change"
        assert dash.controls.toast_ok
        dash.controls.worker_buttons["worker-2"]["kill"].click()
        await dash.controls.wait()
        dash.controls.worker_buttons["worker-1"]["stop"].click()
        await dash.controls.wait()
        dash.controls.coordinator_buttons["kill"].click()
        await dash.controls.wait()
        assert dash.controls.toast_text.startswith("Coordinator crashed (SIGKILL)")
        with pytest.raises(ValueError, match="action must be one of"):
            await client.coordinator("explode")
    assert pool_api.calls == [
        ("/api/pool/scale", {"workers": 2}),
        ("/api/pool/workers/worker-2/kill", {"graceful": False}),
        ("/api/pool/workers/worker-1/kill", {"graceful": True}),
        ("/api/pool/coordinator/kill", {"restart": True}),
    ]


async def test_a_pool_action_still_times_out(pool_api: PoolApi) -> None:
    async with Client(pool_api.url, timeout=0.2, pool_timeout=0.3) as client:
        with pytest.raises(TimeoutError):
            await client.scale(2)


# ---- messages reach an end state; reset; steady load; readable charts ----

class SlowPool(FakePool):
    """A pool whose scale takes a while (workers draining), so its busy message shows."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def scale(self, n: int) -> list[str]:
        self.calls.append(("scale", n))
        await self.release.wait()
        return []


async def test_a_scale_down_says_what_is_happening_then_how_it_ended() -> None:
    pool = SlowPool()
    state = DashboardState()
    state.set_workers(workers("worker-1", "worker-2", "worker-3"))
    panel = WorkerControlPanel(pool, state=state)
    panel.scale(1)
    await wait_until(lambda: panel.toast_state == "busy")
    assert panel.toast_text == "Scaling to 1 worker: 2 finishing their tasks, then leaving ..."
    pool.release.set()
    await panel.wait()
    assert panel.toast_text == "Scaled to 1 worker: 2 left after finishing their tasks"
    assert panel.toast_state == "done" and "tm-toast-done" in panel.toast.value
    # the next action's message replaces it, from its first moment
    pool.release.clear()
    panel.kill_worker("worker-1")
    await wait_until(lambda: panel.toast_text.startswith("Killed worker-1"))
    panel.scale(0)
    await wait_until(lambda: panel.toast_text.startswith("Scaling to 0 workers: 3 finishing"))
    pool.release.set()
    await panel.wait()
    assert panel.toast_text == "Scaled to 0 workers: 3 left after finishing their tasks"


async def test_a_scale_up_ends_when_the_feed_shows_the_workers_or_says_it_did_not() -> None:
    pool = FakePool()
    state = DashboardState()
    state.set_workers(workers("worker-1"))
    panel = WorkerControlPanel(pool, state=state)
    panel.scale(2)
    await wait_until(lambda: panel.toast_text == "Scaled to 2 workers: 1 started ...")
    state.set_workers(workers("worker-1", "worker-2"))
    await panel.wait()
    assert panel.toast_text == "Scaled to 2 workers: 1 started, all online"
    # a panel without a feed does not wait for what it cannot see
    lone = WorkerControlPanel(FakePool())
    lone.scale(1)
    await lone.wait()
    assert lone.toast_text == "Scaled to 1 worker" and lone.toast_state == "done"


class ResetApi(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.resets = 0

    async def reset(self) -> dict[str, Any]:
        self.resets += 1
        return {"tasks": 51, "pending": 40, "running": 3, "workers_dropped": 1,
                "workers_kept": 3, "event_id": 77}


async def test_reset_asks_for_a_second_click_then_says_what_it_cleared() -> None:
    api = ResetApi()
    panel = ResetPanel(api, confirm_seconds=0.3)
    panel.button.click()
    assert api.resets == 0 and panel.button.description == "Confirm reset"
    assert panel.toast_text.startswith("Click again within 0.3 s")
    await wait_until(lambda: panel.button.description == "Reset")  # not confirmed in time
    assert panel.toast_text == "Not reset (no second click)" and api.resets == 0
    panel.button.click()
    panel.button.click()
    await panel.wait()
    assert api.resets == 1
    assert panel.toast_text == ("Reset: 51 tasks cleared (40 pending cancelled, 3 running "
                                "stopped), 1 offline worker forgotten; 3 workers kept")
    panel.reset()  # from code: no confirmation
    await panel.wait()
    assert api.resets == 2 and repr(panel) == "ResetPanel()"


class LoadApi(FakeApi):
    async def stats(self) -> dict[str, Any]:
        return {"queue_depth": 0, "running": 0, "completed": 0}


async def test_the_steady_load_panel_starts_shows_progress_and_stops() -> None:
    api = LoadApi()
    panel = SteadyLoadPanel(api, rate=50, command="noop", commands=["noop", "sleep"])
    assert repr(panel) == "SteadyLoadPanel(rate=50, command='noop')"
    panel.start_button.click()
    assert panel.running and panel.start_button.disabled and not panel.stop_button.disabled
    await wait_until(lambda: sum(c[2] for c in api.calls) >= 20)
    assert panel.toast_state == "busy" and panel.toast_text.startswith("Steady load: created")
    panel.rate.value = 100  # moves the running load's rate
    assert panel.load is not None and panel.load.rate == 100
    panel.stop_button.click()
    progress = await panel.wait()
    assert not panel.running and not panel.start_button.disabled
    assert panel.toast_state == "done"
    assert panel.toast_text.startswith(f"Stopped steady load: created {progress.created:,} noop")
    assert progress.created == sum(c[2] for c in api.calls)
    assert {c[1] for c in api.calls} == {"noop"}


async def test_the_steady_load_panel_shows_a_refusal() -> None:
    class Refusing(LoadApi):
        async def schedule_batch(self, command: str, count: int, delay_seconds: float = 0,
                                 payload: Any = None) -> dict[str, Any]:
            raise ApiError(422, "unknown command 'x'; known commands: noop", "command")

    panel = SteadyLoadPanel(Refusing(), rate=5)
    panel.start()
    await panel.wait()
    assert panel.toast_state == "error" and not panel.running
    assert panel.toast_text == "unknown command 'x'; known commands: noop"


def test_the_charts_keep_rates_and_counts_on_their_own_axes() -> None:
    state = DashboardState(window=120)
    chart = ThroughputChart(state)
    now = time.time()
    # 2,000 queued, 3 running on 3 workers, 2 completions a second, a burst of creates
    for i in range(2000):
        state.apply(_event("task_scheduled", f"t{i}",
                           timestamp=datetime.fromtimestamp(now - 5, UTC).isoformat()))
    for i in range(4):
        state.apply(_event("task_completed", f"t{i}",
                           timestamp=datetime.fromtimestamp(now - 3 + i // 2, UTC).isoformat()))
    state.set_stats({"queue_depth": 2000, "running": 3, "workers_online": 3}, now=now - 4)
    state.set_stats({"queue_depth": 1996, "running": 2, "assigned": 1, "workers_online": 1},
                    now=now - 1)
    assert chart.render() is True
    y = {k: line.scales["y"] for k, line in chart.lines.items()}
    # every family on its own scale: 2,000 queued or created do not flatten 3 running
    assert y["completed"] is not y["created"] is not y["queue_depth"] is not y["running"]
    assert y["running"] is y["workers"]
    assert y["queue_depth"].max >= 2000 and y["created"].max >= 2000
    assert y["running"].max <= 5 and y["completed"].max <= 3
    # round ticks, few of them: 0, 500, ... on the queue; whole workers on the counts
    assert list(chart.axes[("queue", "left")].tick_values) == [0, 500, 1000, 1500, 2000, 2500]
    assert list(chart.axes[("counts", "left")].tick_values) == [0, 1, 2, 3, 4, 5]
    assert list(chart.lines["workers"].y) == [3, 1] and chart.lines["workers"].interpolation \
        == "step-after"  # scaling and kills show as steps
    assert list(chart.lines["running"].y) == [3, 3]  # assigned + running
    assert all(line.scales["x"] is chart.x for line in chart.lines.values())  # one time axis
    def span() -> float:
        return float((chart.x.max - chart.x.min) / np.timedelta64(1, "s"))

    assert span() == pytest.approx(60, abs=1)  # young: a minute, the lines use the width
    older = DashboardState(window=120)
    older.set_stats({"queue_depth": 1}, now=now - 500)
    older.set_stats({"queue_depth": 2}, now=now - 1)
    chart = ThroughputChart(older)
    chart.render()
    assert span() == pytest.approx(120, abs=1)  # then a bounded sliding window
    assert list(chart.lines["queue_depth"].y) == [2]  # what slid out is not drawn
    assert len(chart.figures) == 3 and repr(chart) == "ThroughputChart()"


async def test_a_click_handled_in_another_thread_runs_in_the_panels_loop() -> None:
    """JupyterLab may deliver a widget message to a kernel subshell: another thread with its
    own loop, where the client's HTTP session cannot be used. The action still runs in the
    loop the panel was made in."""
    import threading

    loops: list[asyncio.AbstractEventLoop] = []

    class Recording(FakeApi):
        async def schedule_batch(self, command: str, count: int, delay_seconds: float = 0,
                                 payload: Any = None) -> dict[str, Any]:
            loops.append(asyncio.get_running_loop())
            return await super().schedule_batch(command, count, delay_seconds, payload)

    panel = BulkTaskPanel(Recording(), count=2)
    mine = asyncio.get_running_loop()

    def subshell() -> None:
        async def click() -> None:
            panel.button.click()  # as ipykernel's subshell thread would run the handler
        asyncio.run(click())

    thread = threading.Thread(target=subshell)
    thread.start()
    await asyncio.to_thread(thread.join)
    await wait_until(lambda: panel.toast_text == "Created 2 tasks")
    assert loops == [mine]


def test_axes_end_at_round_numbers() -> None:
    from taskmaster.notebook.chart import nice

    assert [nice(v) for v in (0.3, 2.2, 9.9, 55, 2200, 1, 12, 0)] == [
        0.3, 2.5, 10, 60, 2500, 1, 12, 1]


class NamedCoordinators:
    """Pool operations of a stack with several coordinators."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def scale(self, n: int) -> None:
        self.calls.append(("scale", n))

    async def kill_worker(self, name: str, graceful: bool = False) -> None:
        self.calls.append(("kill_worker", name, graceful))

    async def coordinator(self, action: str, name: str | None = None) -> None:
        self.calls.append(("coordinator", action, name))


async def test_worker_controls_show_each_coordinator_with_its_buttons_and_its_workers() -> None:
    pool = NamedCoordinators()
    state = DashboardState()
    rows = workers("worker-1", "worker-2", "worker-3")
    for row, where in zip(rows, ["coordinator-1", "coordinator-2", "coordinator-1"], strict=True):
        row["coordinator"] = where
    state.set_workers(rows)
    panel = WorkerControlPanel(pool, state=state, coordinators=["coordinator-1", "coordinator-2"])
    assert sorted(panel.named_buttons) == ["coordinator-1", "coordinator-2"]
    assert panel.holds["coordinator-1"].value == "worker-1, worker-3"
    assert panel.holds["coordinator-2"].value == "worker-2"

    panel.named_buttons["coordinator-2"]["kill"].click()
    await panel.wait()
    assert pool.calls == [("coordinator", "kill", "coordinator-2")]
    assert panel.toast_text.startswith("coordinator-2 crashed (SIGKILL)")

    # the workers moved: the rows follow what the feed shows
    for row in rows:
        row["coordinator"] = "coordinator-1"
    state.set_workers(rows)
    panel.render()
    assert panel.holds["coordinator-1"].value == "worker-1, worker-2, worker-3"
    assert panel.holds["coordinator-2"].value == "no workers"
