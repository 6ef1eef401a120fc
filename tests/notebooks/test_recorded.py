"""The notebooks are stored as nbval needs them: every code cell run, outputs recorded.

nbval compares nothing for a cell whose stored execution count is empty, so a notebook
saved without running it would pass unchecked. This catches that, and keeps the files
small and free of the recording machine's details.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
IGNORE = "nbval-ignore-output"


def test_the_narrative_is_all_there() -> None:
    names = [p.stem.split("_")[0] for p in NOTEBOOKS]
    assert len(names) == len(set(names)), f"two notebooks share a number: {names}"
    # the interview's parts, its deep dives, and its follow-ups (monitoring, restarts and
    # outages, at 100x); other parts of the kit add theirs between and after
    wanted = {"00", "01", "02", "03", "04", "05", "06", "07", "09", "10", "11", "12", "13"}
    assert wanted <= set(names), sorted(wanted - set(names))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_recorded_with_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    for i, cell in enumerate(code):
        assert cell.execution_count is not None, f"code cell {i} was not run before saving"
        assert not [o for o in cell.outputs if o.output_type == "error"], f"cell {i} failed"
        assert "execution" not in cell.metadata, "record without per-cell timings"
    assert "widgets" not in nb.metadata, "record without the widgets' state"
    text = path.read_text()
    # no path of the machine that recorded it
    root = str(Path(__file__).resolve().parents[2])
    assert root not in text and str(Path.home()) + "/" not in text
    # the tag is for measured figures and source listings, never a whole notebook
    assert sum(IGNORE in c.metadata.get("tags", []) for c in code) < len(code) / 2
