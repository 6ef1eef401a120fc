"""The dashboard in a real browser: JupyterLab, headless Chromium, the real "Create Tasks".

As in `taskmaster demo`: a stack runs, and JupyterLab's kernels find it through
TASKMASTER_URL. The test opens 00_dashboard.ipynb, runs all its cells, clicks the button in
the page, checks through the API that the tasks were created and ran, and that the bqplot
chart drew lines with data. With TASKMASTER_UPDATE_SCREENSHOT=1 the screenshot refreshes
docs/dashboard.png, which the README shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskmaster.cluster.local import free_port
from taskmaster.lab import Stack, connect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "00_dashboard.ipynb"
# The README's picture is refreshed only on request, so a test run leaves the tree clean.
SCREENSHOT = (ROOT / "docs" / "dashboard.png" if os.environ.get("TASKMASTER_UPDATE_SCREENSHOT")
              else Path(tempfile.gettempdir()) / "taskmaster-dashboard.png")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]


def chromium() -> str:
    """Debian's chromium (never a browser downloaded by `playwright install`)."""
    for candidate in (os.environ.get("CHROMIUM", ""), "/usr/bin/chromium",
                      shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("the browser test needs Chromium: `apt-get install chromium` "
                "(`make install-test` installs it)", pytrace=False)


@pytest.fixture
def executable() -> str:
    """The browser, checked before anything is started."""
    return chromium()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The stack the notebook's kernel connects to (as `taskmaster demo` provides it)."""
    running = await connect(workers=3, own=True)
    try:
        yield running
    finally:
        await running.close()


@contextlib.contextmanager
def jupyterlab(root: Path, tmp_path: Path, stack_url: str, notebook: str) -> Iterator[str]:
    """JupyterLab on the folder root, its kernels finding the stack through TASKMASTER_URL,
    its settings under tmp_path; yields the notebook's URL and stops JupyterLab after."""
    # no "news" pop-up over the page: the announcements plugin is off
    config = tmp_path / "config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "TASKMASTER_URL": stack_url, "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = (tmp_path / "jupyterlab.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", f"--ServerApp.token={token}", "--LabApp.expose_app_in_browser=True",
         f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}/lab/tree/{notebook}?token={token}&reset"
    finally:
        proc.terminate()  # JupyterLab shuts its kernels down
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def lab(tmp_path: Path, stack: Stack) -> Iterator[str]:
    """JupyterLab on a copy of the dashboard notebook; yields the notebook's URL."""
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    with jupyterlab(root, tmp_path, stack.url, NOTEBOOK) as url:
        yield url


async def wait_for(predicate: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.25)


async def lab_ready(url: str) -> bool:
    """True once JupyterLab answers its API."""
    base, _, query = url.partition("/lab/")
    token = query.split("token=")[1].split("&")[0]
    timeout = aiohttp.ClientTimeout(total=5)
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with aiohttp.ClientSession(timeout=timeout) as http, \
                http.get(f"{base}/api/status", headers={"Authorization": f"token {token}"}) as r:
            return r.status == 200
    return False


KERNEL_IDLE = """() => {
    const session = window.jupyterapp.shell.currentWidget?.sessionContext?.session;
    return session?.kernel?.status === 'idle';
}"""
async def run_all_cells(page: Any, url: str, collapse: bool = True) -> None:
    """Open a notebook's URL in a playwright page and run all its cells once the kernel is
    idle (cells sent before are dropped); collapse the left bar for room."""
    await page.goto(url, timeout=60_000)
    await page.wait_for_function("window.jupyterapp !== undefined", timeout=60_000)
    await page.wait_for_selector(".jp-Notebook", timeout=60_000)
    await page.wait_for_function(KERNEL_IDLE, timeout=60_000)
    if collapse:
        await page.evaluate("window.jupyterapp.shell.collapseLeft()")
    await page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


LINES_WITH_DATA = """() => [...document.querySelectorAll('.bqplot path.line')]
    .map(p => p.getAttribute('d') || '').filter(d => d.length > 20 && d.includes('L')).length"""


async def test_dashboard_in_chromium(executable: str, lab: str, stack: Stack) -> None:
    from playwright.async_api import async_playwright

    await wait_for(lambda: lab_ready(lab), 60, "JupyterLab to answer")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True,
                                           args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1800})
            await run_all_cells(page, lab)

            create = page.get_by_role("button", name="Create Tasks")
            await create.wait_for(state="visible", timeout=120_000)
            before = await stack.client.stats()
            await create.click()  # the real button, clicked in the page

            await page.locator(".tm-toast-done", has_text="Created 50 tasks").wait_for(
                timeout=30_000)  # the toast, not the run-of-show that quotes it
            after = await stack.client.wait_until(
                lambda s: s["total"] - before["total"] == 50
                and s["completed"] - before["completed"] == 50, timeout=90)
            assert after["failed"] == before["failed"]
            assert await wait_for(lambda: page.evaluate(LINES_WITH_DATA), 30,
                                  "the chart to draw its lines")
            await page.wait_for_timeout(1500)  # one more render tick with the final numbers
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await page.locator(".tm-dashboard").screenshot(path=str(SCREENSHOT))
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
