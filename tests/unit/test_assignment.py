"""Assignment strategies: fair turns, a rotating cursor, never more than the free slots."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskmaster.config import Settings, help_for
from taskmaster.coordinator.assignment import (
    STRATEGIES,
    Candidate,
    least_loaded,
    random_choice,
    round_robin,
)


def workers(*free: int, load: int = 0) -> list[Candidate]:
    """Candidates w0, w1, ... with these free slots."""
    return [Candidate(f"w{i}", f, load) for i, f in enumerate(free)]


# ---- round robin ----

def test_round_robin_gives_one_slot_per_worker_in_turn() -> None:
    slots, cursor = round_robin(workers(1, 1, 1), 0, 10)
    assert slots == ["w0", "w1", "w2"]
    assert cursor == 0


def test_round_robin_interleaves_workers_with_several_slots() -> None:
    slots, _ = round_robin(workers(2, 2, 2), 0, 10)
    assert slots == ["w0", "w1", "w2", "w0", "w1", "w2"]


def test_round_robin_starts_at_the_cursor_and_wraps() -> None:
    assert round_robin(workers(1, 1, 1), 1, 10)[0] == ["w1", "w2", "w0"]
    assert round_robin(workers(1, 1, 1), 5, 10)[0] == ["w2", "w0", "w1"]


def test_round_robin_cursor_rotates_one_slot_rounds() -> None:
    ws = workers(1, 1, 1)
    cursor, served = 0, []
    for _ in range(9):
        slots, cursor = round_robin(ws, cursor, 1)
        served += slots
    assert served == ["w0", "w1", "w2"] * 3


def test_round_robin_cursor_points_after_the_last_worker_served() -> None:
    assert round_robin(workers(1, 1, 1, 1), 0, 2) == (["w0", "w1"], 2)
    assert round_robin(workers(1, 1, 1, 1), 3, 2) == (["w3", "w0"], 1)


def test_round_robin_skips_full_workers() -> None:
    slots, _ = round_robin(workers(0, 3, 0, 1), 0, 10)
    assert slots == ["w1", "w3", "w1", "w1"]


def test_round_robin_respects_the_limit() -> None:
    slots, cursor = round_robin(workers(5, 5), 0, 3)
    assert slots == ["w0", "w1", "w0"]
    assert cursor == 1


def test_round_robin_with_nothing_to_give() -> None:
    assert round_robin([], 4, 10) == ([], 4)
    assert round_robin(workers(1, 1), 1, 0) == ([], 1)
    assert round_robin(workers(0, 0), 1, 10)[0] == []


def test_round_robin_is_fair_over_many_rounds() -> None:
    ws = workers(1, 1, 1, 1, 1)
    counts: Counter[str] = Counter()
    cursor = 0
    for n in [1, 2, 3, 1, 4, 2, 5, 3, 1, 3]:  # 25 slots in rounds of varying size
        slots, cursor = round_robin(ws, cursor, n)
        counts.update(slots)
    assert set(counts.values()) == {5}


# ---- least loaded ----

def test_least_loaded_fills_the_idlest_first() -> None:
    ws = [Candidate("a", 3, 2), Candidate("b", 3, 0), Candidate("c", 3, 1)]
    slots, _ = least_loaded(ws, 0, 4)
    assert slots == ["b", "b", "c", "a"]  # then all hold 2: the tie goes to the cursor


def test_least_loaded_breaks_ties_by_rotation() -> None:
    ws = workers(1, 1, 1)
    assert least_loaded(ws, 0, 1)[0] == ["w0"]
    assert least_loaded(ws, 1, 1)[0] == ["w1"]
    assert least_loaded(ws, 2, 1)[0] == ["w2"]
    assert least_loaded(ws, 2, 1)[1] == 3


# ---- random ----

def test_random_fills_every_free_slot_when_allowed() -> None:
    slots, _ = random_choice(workers(2, 0, 1), 0, 10)
    assert Counter(slots) == {"w0": 2, "w2": 1}


# ---- every strategy ----

def test_strategies_are_the_documented_ones() -> None:
    assert set(STRATEGIES) == {"round-robin", "least-loaded", "random"}
    assert Settings().assign_strategy in STRATEGIES
    for name in STRATEGIES:
        assert name in help_for("assign_strategy")


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@given(free=st.lists(st.integers(0, 5), max_size=8), start=st.integers(0, 50),
       limit=st.integers(0, 30))
def test_never_more_than_free_slots_or_the_limit(name: str, free: list[int], start: int,
                                                  limit: int) -> None:
    ws = workers(*free)
    slots, _ = STRATEGIES[name](ws, start, limit)
    given_to = Counter(slots)
    for w in ws:
        assert given_to[w.worker_id] <= w.free
    assert set(given_to) <= {w.worker_id for w in ws}
    # and nothing is held back while there is room and demand
    assert len(slots) == min(limit, sum(free))
