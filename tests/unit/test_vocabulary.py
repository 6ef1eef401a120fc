"""The words shared across rooms are the model's enums, and the SQL spells the same ones.

Task statuses, worker statuses, report states and event types appear as string literals
in the store's SQL (it runs in PostgreSQL, where the enums cannot reach): every literal
that names one of them must be a member, and every member the SQL must produce, it does.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from taskmaster.model import EventType, ReportState, TaskStatus, WorkerStatus

STORE = resources.files("taskmaster.store")
SCHEMA = STORE.joinpath("schema.sql").read_text()
QUERIES = STORE.joinpath("queries.sql").read_text()
MIGRATIONS = "\n".join(f.read_text() for f in STORE.joinpath("migrations").iterdir()
                       if f.name.endswith(".sql"))
ALL_SQL = "\n".join((SCHEMA, QUERIES, MIGRATIONS))


def literals(sql: str) -> set[str]:
    """The single-quoted string literals of some SQL, comments left out."""
    code = re.sub(r"--[^\n]*", "", sql)
    return set(re.findall(r"'([^']*)'", code))


def compared(sql: str) -> set[str]:
    """The literals a value is compared with or set to: `= 'x'`, `<> 'x'`, `THEN 'x'`,
    `ELSE 'x'`, `IN ('x', 'y')` (JSON keys and event payloads are left out)."""
    code = re.sub(r"--[^\n]*", "", sql)
    found = set(re.findall(r"(?:=|<>|THEN|ELSE)\s*'([^']*)'", code))
    for group in re.findall(r"IN \(((?:\s*'[^']*'\s*,?)+)\)", code):
        found |= set(re.findall(r"'([^']*)'", group))
    return found


def check_list(table: str) -> set[str]:
    """The values a `status` column's CHECK constraint allows in the snapshot."""
    block = SCHEMA[SCHEMA.index(f"CREATE TABLE {table} ("):]
    block = block[:block.index(");")]
    m = re.search(r"CHECK \(status IN \(([^)]*)\)\)", block)
    assert m, f"no status check on {table}"
    return set(re.findall(r"'([^']*)'", m.group(1)))


def test_the_status_columns_allow_exactly_the_enums() -> None:
    assert check_list("tasks") == {s.value for s in TaskStatus}
    assert check_list("workers") == {s.value for s in WorkerStatus}


def test_every_event_the_sql_writes_is_an_event_type_and_every_stored_type_is_written() -> None:
    named = {w for w in literals(ALL_SQL) if re.fullmatch(r"(task|worker|stack|pool)_[a-z_]+", w)}
    named -= {"task_id", "worker_id"}  # columns
    stored = {e.value for e in EventType} - {EventType.REPLAY_TRUNCATED.value}
    assert named - stored == set(), "the SQL writes events the model does not know"
    assert stored - named == set(), "event types that no SQL statement writes"


def test_every_state_word_in_the_sql_is_a_status_or_report_state() -> None:
    words = {s.value for s in TaskStatus} | {s.value for s in WorkerStatus} | {
        s.value for s in ReportState}
    spelled = compared(QUERIES) - {"{}", "in progress"}  # an empty JSON object; pg_xact_status
    assert len(spelled) > 10
    assert spelled <= words | {e.value for e in EventType}, spelled - words
    # the report statement maps every report state
    apply = QUERIES[QUERIES.index("-- name: apply_updates"):]
    apply = apply[:apply.index("-- name:", 10)]
    assert {s.value for s in ReportState} <= literals(apply)


@pytest.mark.parametrize("enum", [TaskStatus, WorkerStatus, ReportState, EventType])
def test_members_are_their_lowercase_names(enum: type) -> None:
    for member in enum:
        assert member.value == member.name.lower()
