"""The presenter's path off the script, in a real browser, on a real `taskmaster demo`.

`taskmaster demo` runs (its stack and JupyterLab on working copies of the notebooks). In
headless Chromium: the dashboard runs, then Create Tasks, scale to 1, scale to 5, kill a
worker from the panel, Reset (and its confirmation), each checked through the API and by
the toast's end message, each step screenshotted; the charts keep rates and counts on
readable axes; then 05_resilience runs on that stack without an error cell; and the
committed notebooks are byte for byte what they were.

Screenshots go to a temporary folder (printed), never into the repository.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taskmaster.client import Client
from taskmaster.cluster.local import free_port
from tests.helpers import interrupt
from tests.notebooks.test_browser import (
    CHROMIUM_ARGS,
    KERNEL_IDLE,
    chromium,
    lab_ready,
    run_all_cells,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(tempfile.gettempdir()) / "taskmaster-off-script"


@dataclass
class Demo:
    """A running `taskmaster demo`: its JupyterLab and its stack."""

    lab: str  # base URL
    token: str
    api: str  # the scheduler
    home: Path
    client: Client

    def notebook(self, name: str) -> str:
        return f"{self.lab}/lab/tree/{name}?token={self.token}&reset"


@pytest.fixture
async def demo(database_url: str, tmp_path: Path) -> AsyncIterator[Demo]:
    """`taskmaster demo` as `make demo` runs it, on this test's database and free ports."""
    config = tmp_path / "config"
    (config / "labconfig").mkdir(parents=True)
    # no "news" pop-up over the dashboard; the page exposes the app to the test
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    (config / "jupyter_server_config.json").write_text(json.dumps(
        {"LabApp": {"expose_app_in_browser": True}}))
    home, token = tmp_path / "home", secrets.token_hex(16)
    lab_port, api_port, grpc_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMASTER_")}
    env.update({
        "TASKMASTER_HOME": str(home), "TASKMASTER_DATABASE_URL": database_url,
        "TASKMASTER_METRICS_PORT": "0", "JUPYTER_TOKEN": token,
        "JUPYTER_CONFIG_DIR": str(config), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    })
    log = (tmp_path / "demo.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskmaster", "demo", "--no-browser", "--workers", "3",
        "--lab-port", str(lab_port), "--scheduler-port", str(api_port),
        "--coordinator-port", str(grpc_port), "--notebooks", str(ROOT / "notebooks"),
        env=env, cwd=tmp_path, stdout=log, stderr=asyncio.subprocess.STDOUT)
    lab = f"http://127.0.0.1:{lab_port}"
    client = Client(f"http://127.0.0.1:{api_port}")
    try:
        await until(lambda: lab_ready(f"{lab}/lab/x?token={token}"), 120,
                    "`taskmaster demo` to open JupyterLab",
                    lambda: (tmp_path / "demo.log").read_text())
        await client.wait_until(lambda s: s["workers_online"] == 3, timeout=60)
        yield Demo(lab, token, client.base_url, home, client)
    finally:
        await client.close()
        await interrupt(proc, 60)
        log.close()


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float, what: str,
                context: Callable[[], str] = lambda: "") -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{context()}")
        await asyncio.sleep(0.25)


# the y-axis ticks of each chart, by title, and how much of its height each line spans
CHARTS = """() => [...document.querySelectorAll('.tm-chart .bqplot')].map(fig => {
    const title = fig.querySelector('.mainheading')?.textContent || '';
    // the y axes: those whose ticks are numbers (the time axis reads 07:21:33)
    const ticks = [...fig.querySelectorAll('.axis')]
        .map(a => [...a.querySelectorAll('.tick text')].map(t => t.textContent))
        .filter(t => t.length && !t.some(x => x.includes(':')));
    const plot = fig.querySelector('.plotarea_background, .plotarea_events');
    const height = plot ? plot.getBBox().height : 0;
    const lines = [...fig.querySelectorAll('path.line')].map(p => {
        const ys = (p.getAttribute('d') || '').match(/[-\\d.]+/g)?.filter((_, i) => i % 2)
            .map(Number) || [];
        return ys.length ? (Math.max(...ys) - Math.min(...ys)) / (height || 1) : -1;
    });
    return {title, ticks, lines};
})"""

NOTEBOOK_CELLS = """() => {
    const nb = window.jupyterapp.shell.currentWidget?.content;
    if (!nb) return null;
    return nb.widgets.filter(w => w.model.type === 'code').map(c => ({
        count: c.model.executionCount,
        error: c.model.outputs.toJSON().some(o => o.output_type === 'error'),
    }));
}"""


async def test_the_demo_survives_going_off_script(demo: Demo) -> None:
    from playwright.async_api import Page, async_playwright

    committed = {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    SHOTS.mkdir(exist_ok=True)
    shots: list[Path] = []

    async def shot(page: Page, name: str, selector: str = ".tm-dashboard") -> None:
        await page.wait_for_timeout(700)  # one more render tick
        path = SHOTS / f"{len(shots) + 1:02d}-{name}.png"
        await page.locator(selector).first.screenshot(path=str(path))
        assert path.stat().st_size > 10_000
        shots.append(path)

    async def toast(page: Page, text: str, timeout: float = 60_000) -> None:
        try:
            await page.get_by_text(text).first.wait_for(timeout=timeout)
        except Exception:
            shown = await page.evaluate(
                "() => [...document.querySelectorAll('.tm-toast')].map(t => t.textContent)")
            await page.screenshot(path=str(SHOTS / "failed.png"), full_page=True)
            raise AssertionError(f"no {text!r} in the page; the toasts say {shown} "
                                 f"(see {SHOTS / 'failed.png'})") from None

    async def slider_to(page: Page, n: int) -> None:
        workers = page.locator(".tm-dashboard .widget-slider",
                               has_text="Workers").filter(has_not_text="Min-max")
        readout = workers.locator(".widget-readout")
        await readout.click()
        await page.keyboard.press("Control+A")
        await page.keyboard.type(str(n))
        await page.keyboard.press("Enter")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), headless=True,
                                           args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 2200})
            await run_all_cells(page, demo.notebook("00_dashboard.ipynb"))
            create = page.get_by_role("button", name="Create Tasks")
            await create.wait_for(state="visible", timeout=120_000)
            await shot(page, "dashboard")

            # create
            await create.click()
            await toast(page, "Created 50 tasks")
            await demo.client.wait_until(lambda s: s["total"] == 50, timeout=30)
            await shot(page, "created")

            # scale to 1, then 5: each message reaches its end
            await slider_to(page, 1)
            await page.get_by_role("button", name="Scale", exact=True).click()
            await toast(page, "Scaled to 1 worker: 2 left after finishing their tasks")
            assert (await demo.client.stats())["workers_online"] == 1
            await shot(page, "scaled-to-1")
            await slider_to(page, 5)
            await page.get_by_role("button", name="Scale", exact=True).click()
            await toast(page, "Scaled to 5 workers: 4 started, all online")
            assert (await demo.client.stats())["workers_online"] == 5
            await shot(page, "scaled-to-5")

            # kill a worker from the panel
            await page.get_by_role("button", name="Kill (SIGKILL)").first.click()
            await toast(page, "(SIGKILL): its tasks go back to the queue")
            await demo.client.wait_until(lambda s: s["workers_online"] == 4, timeout=30)
            names = [w["name"] for w in await demo.client.workers()]
            assert len(names) == len(set(names)) == 5  # one row per name, the killed one too
            await shot(page, "killed")

            # the charts: rates and counts on their own, readable axes
            charts = {c["title"]: c for c in await page.evaluate(CHARTS)}
            assert set(charts) == {"Tasks per second", "Queue depth",
                                   "Workers online and running tasks"}, charts
            counts = charts["Workers online and running tasks"]
            assert max(float(t) for t in counts["ticks"][0] if t) <= 10, counts
            assert max(counts["lines"]) >= 0.25, counts  # the workers' steps are plain to see
            assert len(charts["Tasks per second"]["ticks"]) == 2  # completed/s | created/s
            assert all(max(c["lines"]) > 0 for c in charts.values()), charts

            # reset: a second click confirms
            await page.get_by_role("button", name="Reset", exact=True).click()
            await page.get_by_role("button", name="Confirm reset").click()
            await toast(page, "Reset: 50 tasks cleared")
            s = await demo.client.stats()
            assert (s["total"], s["pending"], s["running"], s["workers_online"]) == (0, 0, 0, 4)
            await page.get_by_text("No tasks yet").wait_for(timeout=15_000)
            await shot(page, "reset")

            # 05_resilience on that stack, as a presenter would run it now
            nb = await browser.new_page(viewport={"width": 1400, "height": 2200})
            await run_all_cells(nb, demo.notebook("05_resilience.ipynb"), collapse=False)

            async def finished() -> list[dict[str, Any]] | None:
                cells = await nb.evaluate(NOTEBOOK_CELLS)
                done = cells and (all(c["count"] for c in cells) or any(c["error"] for c in cells))
                idle = await nb.evaluate(KERNEL_IDLE)
                return cells if done and idle else None

            cells = await until(finished, 240, "05_resilience to run")
            assert not [i for i, c in enumerate(cells) if c["error"]], "an error cell in 05"
            await nb.get_by_text("50 completed exactly once").first.wait_for(timeout=10_000)
            await shot(nb, "05-resilience", ".jp-Notebook")
            assert (await demo.client.stats())["workers_online"] == 3
        finally:
            await browser.close()
    print("\n".join(["screenshots:", *map(str, shots)]))
    # the demo ran on working copies: the committed notebooks are untouched
    assert {p.name: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")} == committed
    assert (demo.home / "notebooks" / "05_resilience.ipynb").exists()
