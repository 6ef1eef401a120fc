"""`taskmaster demo` opens working copies of the notebooks, so that running the demo never
changes the committed ones (their recorded outputs are what nbval compares and what
readers browse)."""

from __future__ import annotations

import json
from pathlib import Path

from taskmaster.cli.demo import working_copies


def notebook(path: Path, *sources: str, output: str = "") -> None:
    cells = [{"cell_type": "code", "source": s, "metadata": {}, "execution_count": 1,
              "outputs": [{"output_type": "stream", "name": "stdout", "text": output}]}
             for s in sources]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}))


def test_copies_are_made_refreshed_when_only_run_and_kept_when_edited(tmp_path: Path) -> None:
    repo, home = tmp_path / "notebooks", tmp_path / "home"
    repo.mkdir()
    notebook(repo / "00_dashboard.ipynb", "dash", output="recorded")
    notebook(repo / "05_resilience.ipynb", "kill")
    committed = {p.name: p.read_bytes() for p in repo.iterdir()}

    folder, kept = working_copies(repo, home)
    assert folder == home / "notebooks" and kept == []
    assert sorted(p.name for p in folder.glob("*.ipynb")) == sorted(committed)

    # the presenter runs the dashboard (new outputs, autosaved) and edits 05's cells
    notebook(folder / "00_dashboard.ipynb", "dash", output="run on the day, widget ids")
    notebook(folder / "05_resilience.ipynb", "kill", "my own cell")
    # meanwhile the repository's 05 changes too
    notebook(repo / "05_resilience.ipynb", "kill", "a new cell")
    committed["05_resilience.ipynb"] = (repo / "05_resilience.ipynb").read_bytes()

    folder, kept = working_copies(repo, home)
    assert kept == ["05_resilience.ipynb"]  # its edits are never overwritten
    assert "my own cell" in (folder / "05_resilience.ipynb").read_text()
    # only run: refreshed from the repository, recorded outputs and all
    assert (folder / "00_dashboard.ipynb").read_bytes() == committed["00_dashboard.ipynb"]
    # and the repository's notebooks were never written
    assert {p.name: p.read_bytes() for p in repo.iterdir()} == committed

    # once the edited copy is deleted, the next start copies the repository's again
    (folder / "05_resilience.ipynb").unlink()
    working_copies(repo, home)
    assert (folder / "05_resilience.ipynb").read_bytes() == committed["05_resilience.ipynb"]


def test_the_recordings_come_along(tmp_path: Path) -> None:
    repo, home = tmp_path / "notebooks", tmp_path / "home"
    (repo / "recordings").mkdir(parents=True)
    notebook(repo / "13_replay.ipynb", "replay")
    (repo / "recordings" / "tour.jsonl").write_text('{"kind": "header"}\n')
    folder, _ = working_copies(repo, home)
    (folder / "recordings" / "mine.jsonl").write_text("made with the Record button\n")
    folder, _ = working_copies(repo, home)
    assert (folder / "recordings" / "tour.jsonl").read_text() == '{"kind": "header"}\n'
    assert (folder / "recordings" / "mine.jsonl").exists()  # a recording of one's own stays
