"""Assignment strategies: which worker gets each free slot, in order."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    """A worker that can take work now."""

    worker_id: str
    free: int  # free slots
    load: int  # tasks held now


Strategy = Callable[[Sequence[Candidate], int, int], tuple[list[str], int]]


def round_robin(workers: Sequence[Candidate], start: int, limit: int) -> tuple[list[str], int]:
    """One slot per worker in turn, starting after the last worker served.

    Returns (slot list, the cursor to pass next time). Never more slots for a worker than it
    has free, never more than limit in all.
    """
    n = len(workers)
    if n == 0 or limit <= 0:
        return [], start
    free = [w.free for w in workers]
    slots: list[str] = []
    i = start % n
    idle_turns = 0
    while len(slots) < limit and idle_turns < n:
        if free[i] > 0:
            slots.append(workers[i].worker_id)
            free[i] -= 1
            idle_turns = 0
        else:
            idle_turns += 1
        i = (i + 1) % n
    return slots, i


def least_loaded(workers: Sequence[Candidate], start: int, limit: int) -> tuple[list[str], int]:
    """Each slot to the worker holding the fewest tasks at that moment."""
    load = {w.worker_id: w.load for w in workers}
    free = {w.worker_id: w.free for w in workers}
    order = {w.worker_id: i for i, w in enumerate(workers)}
    slots: list[str] = []
    while len(slots) < limit:
        choices = [w for w in free if free[w] > 0]
        if not choices:
            break
        best = min(choices, key=lambda w: (load[w], (order[w] - start) % len(order)))
        slots.append(best)
        free[best] -= 1
        load[best] += 1
    return slots, start + 1


def random_choice(workers: Sequence[Candidate], start: int, limit: int) -> tuple[list[str], int]:
    """Each slot to a random worker with room (a baseline to compare against)."""
    free = {w.worker_id: w.free for w in workers}
    slots: list[str] = []
    while len(slots) < limit:
        choices = [w for w in free if free[w] > 0]
        if not choices:
            break
        pick = random.choice(choices)
        slots.append(pick)
        free[pick] -= 1
    return slots, start


STRATEGIES: dict[str, Strategy] = {
    "round-robin": round_robin,
    "least-loaded": least_loaded,
    "random": random_choice,
}
