"""The auto-scaling policy: targets, min/max, step limits, cool-downs, hysteresis, noise."""

from __future__ import annotations

import itertools
import random

import pytest

from taskmaster.autoscale import Autoscaler, Observation, Policy, demand, parse_range, parse_target
from taskmaster.errors import InvalidInput

BASE = Policy(enabled=True, min=1, max=10, target_kind="backlog", target=1.0, step_up=4,
              step_down=2, cooldown_up=3.0, cooldown_down=15.0, tolerance=0.1)


def obs(pending: int, running: int, throughput: float = 0.0, concurrency: int = 1) -> Observation:
    return Observation(pending=pending, running=running, throughput=throughput,
                       concurrency=concurrency)


def run(scaler: Autoscaler, trace: list[tuple[float, Observation]], start: int) -> list[int]:
    """Apply each decision at once; the pool sizes after each look."""
    current, sizes = start, []
    for now, o in trace:
        current = scaler.decide(now, current, o).to
        sizes.append(current)
    return sizes


def test_backlog_target_counts_running_and_waiting_slots() -> None:
    assert demand(BASE, obs(pending=6, running=2)) == 8
    assert demand(BASE, obs(pending=6, running=2, concurrency=4)) == 2
    assert demand(BASE.updated({"target": 3.0}, 32), obs(pending=6, running=2)) == 4


def test_wait_target_uses_the_service_time() -> None:
    p = BASE.updated({"target_kind": "wait", "target": 2.0}, 32)
    # 4 running, 8 done per second: 0.5 s each; a slot clears 4 waiting tasks in 2 s
    assert demand(p, obs(pending=20, running=4, throughput=8.0)) == 4 + 20 / 4
    # nothing completed yet: one waiting task per slot
    assert demand(p, obs(pending=3, running=1)) == 4


def test_up_at_once_by_at_most_the_step() -> None:
    s = Autoscaler(BASE)
    d = s.decide(0.0, 1, obs(pending=50, running=1))
    assert (d.current, d.to) == (1, 5) and "queue 50" in d.reason
    assert s.decide(1.0, 5, obs(pending=50, running=5)).to == 5  # cooling down
    assert s.decide(3.0, 5, obs(pending=50, running=5)).to == 9
    assert s.decide(6.0, 9, obs(pending=50, running=9)).to == 10  # the maximum


def test_min_and_max_hold() -> None:
    s = Autoscaler(BASE.updated({"min": 2, "max": 4}, 32))
    assert s.decide(0.0, 0, obs(0, 0)).to == 2  # below the minimum: up at once
    assert s.decide(100.0, 2, obs(0, 0)).to == 2  # never under the minimum
    assert s.decide(200.0, 2, obs(1000, 2)).to == 4  # never over the maximum
    s.configure(BASE.updated({"min": 1, "max": 3}, 32))
    d = s.decide(201.0, 4, obs(1000, 4))
    assert d.to == 3 and "maximum" in d.reason  # a lowered maximum applies at once


def test_down_waits_for_the_window_and_steps() -> None:
    s = Autoscaler(BASE)
    assert s.decide(0.0, 1, obs(100, 1)).to == 5
    # the load is gone: nothing changes until demand has been low for cooldown_down
    sizes = run(s, [(t, obs(0, 0)) for t in (1.0, 5.0, 10.0, 14.0)], 5)
    assert sizes == [5, 5, 5, 5]
    assert s.decide(15.0, 5, obs(0, 0)).to == 3  # step_down
    assert s.decide(20.0, 3, obs(0, 0)).to == 3  # cooling down since the last change
    assert s.decide(30.0, 3, obs(0, 0)).to == 1
    assert s.decide(60.0, 1, obs(0, 0)).to == 1


def test_a_short_dip_does_not_shrink_the_pool() -> None:
    s = Autoscaler(BASE)
    current = s.decide(0.0, 1, obs(100, 1)).to  # 5
    trace = []
    for t in range(1, 60):
        busy = not (20 <= t < 30)  # ten seconds of quiet inside a busy minute
        trace.append((float(t), obs(0, 5) if busy else obs(0, 0)))
    assert set(run(s, trace, current)) == {5}


def test_hysteresis_band_around_the_pool() -> None:
    s = Autoscaler(BASE.updated({"tolerance": 0.2}, 32))
    assert s.decide(0.0, 5, obs(pending=1, running=5)).to == 5  # 6 > 5 but inside 20 %
    assert s.decide(10.0, 5, obs(pending=2, running=5)).to == 7  # past the band


def test_a_short_spike_grows_nothing() -> None:
    s = Autoscaler(BASE)
    assert s.decide(0.0, 4, obs(0, 4)).to == 4
    assert s.decide(1.0, 4, obs(20, 4)).to == 4  # one look: not for cooldown_up yet
    assert s.decide(2.0, 4, obs(0, 4)).to == 4
    assert s.decide(3.0, 4, obs(20, 4)).to == 4
    assert s.decide(4.0, 4, obs(20, 4)).to == 4
    assert s.decide(5.0, 4, obs(20, 4)).to == 8  # sustained for the whole window


def test_no_flapping_under_noise() -> None:
    """A steady load with noisy figures: after the ramp the pool changes rarely and only in
    one direction at a time, never up-down-up within a cool-down."""
    rng = random.Random(7)
    s = Autoscaler(BASE)
    current, changes = 1, []
    for step in range(600):  # ten minutes, one look a second
        now = float(step)
        running = min(current, max(0, round(rng.gauss(4.0, 1.0))))
        pending = max(0, round(rng.gauss(1.0, 1.5)))
        d = s.decide(now, current, obs(pending, running))
        if d.changed:
            changes.append((now, d.current, d.to))
            current = d.to
    late = [c for c in changes if c[0] > 60]
    assert len(late) <= 4, changes
    for (t1, a, b), (t2, c, d2) in itertools.pairwise(changes):
        if (b > a) != (d2 > c):  # a reversal waits for the down window
            assert t2 - t1 >= BASE.cooldown_up, changes


def test_parse_target_and_range() -> None:
    assert parse_target("wait=2") == ("wait", 2.0)
    assert parse_target("2s") == ("wait", 2.0)
    assert parse_target("backlog=1.5") == ("backlog", 1.5)
    assert parse_range("1:6", 32) == (1, 6)
    for bad in ("wait=0", "soon", "backlog=x", "depth=2"):
        with pytest.raises(InvalidInput) as exc:
            parse_target(bad)
        assert exc.value.field == "target"
    for bad in ("6:1", "1-6", "1:99", "0:0"):
        with pytest.raises(InvalidInput) as exc:
            parse_range(bad, 32)
        assert exc.value.field == "autoscale"


@pytest.mark.parametrize(("changes", "field"), [
    ({"min": -1}, "min"), ({"max": 99}, "max"), ({"min": 5, "max": 2}, "min"),
    ({"enabled": "yes"}, "enabled"), ({"target": 0}, "target"), ({"target": "later"}, "target"),
    ({"target_kind": "depth"}, "target_kind"), ({"step_up": 0}, "step_up"),
    ({"cooldown_down": -1}, "cooldown_down"), ({"tolerance": 2}, "tolerance"),
    ({"interval": True}, "interval"), ({"bogus": 1}, "bogus"), ({"max": 2.5}, "max"),
])
def test_bad_settings_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        BASE.updated(changes, 32)
    assert exc.value.field == field and exc.value.status == 422


def test_target_text_sets_the_kind() -> None:
    p = BASE.updated({"target": "wait=1.5"}, 32)
    assert (p.target_kind, p.target, p.target_text) == ("wait", 1.5, "wait=1.5")
