"""What the notebooks and the docs teach: their words, their shape, and the cheat sheet.

- The product speaks only of itself and of "the demo guide" (the TaskMaster interactive
  demo guide, a Node.js demo of the same system): a word from how it was made, one readers
  cannot look up, appears nowhere in the notebooks, the package, the docs or the README.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TEXT = {".py", ".md", ".ipynb", ".sql", ".toml", ".yaml", ".yml", ".ini", ".txt", ".proto", ".cfg",
        ".json", ".sh", ".html", ".css", ".js"}
# built from parts, so that this file does not match itself
UNKNOWN_WORD = re.compile(r"\b" + "se" + r"ed", re.IGNORECASE)


def product_files() -> list[Path]:
    roots = [ROOT / "taskmaster", ROOT / "notebooks", ROOT / "docs", ROOT / "tests",
             ROOT / "benchmarks", ROOT / "deploy"]
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / "compose.yaml"]
    for root in roots:
        files += [p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT
                  and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts]
    return [f for f in files if f.exists()]


def test_the_product_never_uses_a_word_readers_cannot_look_up() -> None:
    files = product_files()
    assert len(files) > 50 and any(f.suffix == ".ipynb" for f in files)
    found = []
    for path in files:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if UNKNOWN_WORD.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert found == [], "say \"the demo guide\" instead:\n" + "\n".join(found)


@pytest.mark.parametrize("text", ["the " + "se" + "ed's narrative", "SE" + "ED.assignment_s",
                                  "se" + "eded"])
def test_the_word_check_catches_what_it_is_for(text: str) -> None:
    assert UNKNOWN_WORD.search(text)



def cells(path: Path) -> list[dict]:
    import json
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_notebook_ends_with_exercises_and_worked_answers(path: Path) -> None:
    markdown = [source(c) for c in cells(path) if c["cell_type"] == "markdown"]
    last = markdown[-1]
    assert last.startswith("## Exercises"), f"{path.name}: the last text is not the exercises"
    questions = re.findall(r"^\d+\. ", last, re.MULTILINE)
    answers = re.findall(r"<details><summary>Answer</summary>\n\n(.+?)\n\n</details>", last, re.S)
    assert len(questions) >= 2 and len(answers) == len(questions), path.name
    assert all(len(a) > 80 for a in answers), "a worked answer, not a word"


# notebooks other parts of the kit add (several coordinators, auto-scaling); linked already
FORTHCOMING = {"08_no_single_point_of_failure.ipynb", "09_autoscaling.ipynb"}
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def notebook_markdown(path: Path) -> str:
    import json
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_links_work_in_a_lab_rooted_at_notebooks(path: Path) -> None:
    """JupyterLab under `taskmaster demo` is rooted at (a copy of) notebooks/: a link out of
    it (`../taskmaster/...`) is dead there, so code and docs are named, not linked."""
    for target in LINK.findall(notebook_markdown(path)):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert not target.startswith(("../", "/")), f"{path.name}: {target} leaves notebooks/"
        assert (NOTEBOOKS / target).exists() or target in FORTHCOMING, f"{path.name}: {target}"
