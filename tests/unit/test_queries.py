"""The named queries of queries.sql: every one parsed, none defined twice."""

from __future__ import annotations

import ast
import re
from importlib import resources
from pathlib import Path

import pytest

import taskmaster.store
from taskmaster.store.queries import parse, q, queries

QUERIES_TEXT = resources.files("taskmaster.store").joinpath("queries.sql").read_text()
STORE_DIR = Path(taskmaster.store.__file__).parent


def declared_names(text: str) -> list[str]:
    """Names on every line that looks like a name marker, however it is spelled."""
    return re.findall(r"^\s*--\s*name\s*:\s*(\S*)", text, flags=re.M | re.I)


def test_every_name_marker_is_parsed() -> None:
    names = declared_names(QUERIES_TEXT)
    assert names, "queries.sql declares no query"
    assert sorted(queries()) == sorted(names)
    assert len(set(names)) == len(names)


def test_every_query_has_sql() -> None:
    for name, sql in queries().items():
        lines = [ln for ln in sql.splitlines() if ln.strip() and not ln.strip().startswith("--")]
        assert lines, f"{name} has no SQL"
        assert not sql.endswith(";"), name
        assert "-- name:" not in sql, name


def test_q_returns_the_named_query() -> None:
    assert q("get_task").startswith("SELECT * FROM tasks")
    with pytest.raises(KeyError):
        q("no_such_query")


def test_parse_splits_sections_and_drops_the_header() -> None:
    text = "-- header\n\n-- name: a\nSELECT 1;\n\n-- name: b\n-- about b\nSELECT 2\n;\n"
    assert parse(text) == {"a": "SELECT 1", "b": "-- about b\nSELECT 2\n"}


def test_parse_rejects_a_duplicate_name() -> None:
    with pytest.raises(ValueError, match="'a'"):
        parse("-- name: a\nSELECT 1;\n-- name: b\nSELECT 2;\n-- name: a\nSELECT 3;\n")


def test_parse_of_nothing() -> None:
    assert parse("") == {}
    assert parse("-- only a comment\n") == {}


def used_query_names() -> set[str]:
    """Every literal name passed to q() in the store package."""
    found = set()
    for path in STORE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "q" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                found.add(node.args[0].value)
    return found


def test_every_query_the_store_uses_exists() -> None:
    used = used_query_names()
    assert used
    assert used <= set(queries()), used - set(queries())
