"""The task stream in a real browser during a worker kill: JupyterLab, headless Chromium.

A notebook shows a TaskStream fed by a live stack; the test kills a worker while its task
runs, waits until the task ran again elsewhere, screenshots the panel and reads the picture
back: bars (in the outcome colours) on at least two rows, one of them the orange of a bar
cut by the kill. With TASKMASTER_UPDATE_SCREENSHOT=1 it refreshes docs/taskstream.png,
which the README shows.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from taskmaster.lab import Stack
from taskmaster.notebook.taskstream import COLORS
from tests.notebooks.test_browser import (
    CHROMIUM_ARGS,
    KERNEL_IDLE,
    ROOT,
    executable,  # noqa: F401  (a fixture)
    jupyterlab,
    lab_ready,
    run_all_cells,
    stack,  # noqa: F401  (a fixture)
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "taskstream.ipynb"
SCREENSHOT = (ROOT / "docs" / "taskstream.png" if os.environ.get("TASKMASTER_UPDATE_SCREENSHOT")
              else Path(tempfile.gettempdir()) / "taskmaster-taskstream.png")
CELLS = [
    "from taskmaster.lab import connect\n"
    "from taskmaster.notebook import TaskStream, live\n"
    "stack = await connect(workers=None)\n"
    "stream = TaskStream(window=20)\n"
    "feed = live(stack.client, stream, render_hz=5)\n"
    "await feed.wait_for(lambda s: s.connection == 'connected' and bool(s.workers))\n"
    "stream",
]
BARS_DRAWN = """() => [...document.querySelectorAll('.tm-taskstream .bqplot path.line')]
    .filter(p => (p.getAttribute('d') || '').includes('L')).length"""


@pytest.fixture
def lab(tmp_path: Path, stack: Stack) -> Iterator[str]:  # noqa: F811
    """JupyterLab on a notebook that shows only the task stream; yields its URL."""
    root = tmp_path / "notebooks"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / NOTEBOOK)
    with jupyterlab(root, tmp_path, stack.url, NOTEBOOK) as url:
        yield url


def _rgb(color: str) -> str:
    r, g, b = bytes.fromhex(color.lstrip("#"))
    return f"rgb({r}, {g}, {b})"


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and body[12] == 0, "8-bit, non-interlaced PNG expected"
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows = zlib.decompress(idat), width * channels, []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i] for i in range(len(r)) if i % channels < 3) for r in rows]


def bands(path: Path, colors: list[str], min_pixels: int = 8) -> dict[str, list[int]]:
    """For each colour, the pixel rows where it covers at least min_pixels, grouped into
    bands of adjacent rows: {colour: [band start, ...]}."""
    _, _, rows = png_pixels(path)
    wanted = {c: bytes.fromhex(c.lstrip("#")) for c in colors}
    hit_rows: dict[str, list[int]] = {c: [] for c in colors}
    for y, row in enumerate(rows):
        for c, rgb in wanted.items():
            if row.count(rgb) >= min_pixels and _aligned(row, rgb) >= min_pixels:
                hit_rows[c].append(y)
    out: dict[str, list[int]] = {}
    for c, ys in hit_rows.items():
        out[c] = [y for i, y in enumerate(ys) if i == 0 or ys[i - 1] != y - 1]
    return out


def _aligned(row: bytes, rgb: bytes) -> int:
    """Pixels of this colour (3-byte aligned matches only)."""
    return sum(1 for i in range(0, len(row) - 2, 3) if row[i:i + 3] == rgb)


async def test_the_task_stream_during_a_worker_kill(executable: str, lab: str,  # noqa: F811
                                                    stack: Stack) -> None:  # noqa: F811
    from playwright.async_api import async_playwright

    await wait_for(lambda: lab_ready(lab), 60, "JupyterLab to answer")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True,
                                           args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await run_all_cells(page, lab)
            await page.locator(".tm-taskstream").wait_for(state="visible", timeout=120_000)
            await page.wait_for_function(KERNEL_IDLE, timeout=60_000)  # the feed is live

            # three long tasks on three workers; one worker is killed while it runs its own
            client = stack.client
            created = await client.schedule_batch("sleep", 3, payload={"seconds": 3})
            ids = {str(i) for i in created["ids"]}
            await client.wait_until(lambda s: s["running"] == 3, timeout=30, interval=0.1)
            tasks = [await client.task(i) for i in ids]
            victim = next(t for t in tasks if t.get("worker_id"))
            workers = {w["id"]: w["name"] for w in await client.workers()}
            await page.wait_for_timeout(1000)  # a second of bars before the kill
            await stack.cluster.kill_worker(workers[victim["worker_id"]])  # type: ignore[union-attr]
            done = await client.wait_until(lambda s: s["completed"] == 3, timeout=60,
                                           interval=0.2)
            assert done["failed"] == 0
            again = await client.task(str(victim["id"]))
            assert again["attempt"] == 2 and again["worker_id"] != victim["worker_id"]
            assert await wait_for(lambda: page.evaluate(BARS_DRAWN), 30, "the bars")
            await page.wait_for_timeout(1000)  # the last render tick
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await page.locator(".tm-taskstream").screenshot(path=str(SCREENSHOT))
            # hovering the cut bar names its task, command, attempt, duration and outcome
            cut_bar = page.locator(".tm-taskstream path.line"
                                   f'[style*="{_rgb(COLORS["reassigned"])}"]')
            assert await cut_bar.count() == 1
            await cut_bar.hover(force=True)
            told = page.locator(".tm-stream-hover").get_by_text(
                re.compile(rf"task {victim['id']} · sleep · attempt 1 · [0-9.]+s · reassigned"))
            await told.first.wait_for(timeout=10_000)
        finally:
            await browser.close()

    found = bands(SCREENSHOT, [COLORS["completed"], COLORS["reassigned"]])
    rows = sorted(set(found[COLORS["completed"]]) | set(found[COLORS["reassigned"]]))
    assert len(rows) >= 2, f"bars on {len(rows)} row(s) of the picture: {found}"
    assert found[COLORS["reassigned"]], "no bar cut by the kill in the picture"


def test_the_png_reader_reads_what_it_should(tmp_path: Path) -> None:
    """The reader above, on a picture made here: two orange rows and one green."""
    width, height = 40, 12
    rows = []
    for y in range(height):
        pixel = b"\xd9\x77\x06" if y in (2, 3, 8) else b"\x16\xa3\x4a" if y == 5 else b"\xff" * 3
        rows.append(b"\x00" + pixel * width)
    png = b"\x89PNG\r\n\x1a\n"
    for kind, body in ((b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
                       (b"IDAT", zlib.compress(b"".join(rows))), (b"IEND", b"")):
        png += struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    (tmp_path / "p.png").write_bytes(png)
    found = bands(tmp_path / "p.png", ["#d97706", "#16a34a"])
    assert found == {"#d97706": [2, 8], "#16a34a": [5]}
