"""The policy in simulated time: deterministic, the pool follows a step and comes back,
and a patient policy pays in queue wait for a lower peak."""

from __future__ import annotations

from taskmaster.autoscale import Policy
from taskmaster.autoscale.simulate import (
    burst_trace,
    compare,
    percentile,
    simulate,
    sine_trace,
    step_trace,
)

POLICY = Policy(enabled=True, min=10, max=3000, target_kind="wait", target=2.0, step_up=1000,
                step_down=500, cooldown_up=3.0, cooldown_down=60.0, interval=2.0)


def test_a_step_is_followed_up_and_back_down() -> None:
    run = simulate(POLICY, step_trace(200, 1500, 300, 1500), duration=2400, dt=0.5)
    at = {round(t): w for t, w in zip(run.times, run.workers, strict=True)}
    assert at[290] < 200  # 200/s of 0.65 s tasks: ~130 slots
    assert at[340] >= 975  # 1500/s: ~975 slots, reached within 40 s of the step
    assert at[2399] == 10  # the minimum again after the load and the cool-down
    assert run.served > 0.99 * (200 * 300 + 1500 * 1200)  # nothing lost
    assert run.mean_wait < 1.0


def test_it_is_deterministic() -> None:
    trace = burst_trace(300, 1500, 600, 60)
    a = simulate(POLICY, trace, duration=1800, dt=0.5)
    b = simulate(POLICY, trace, duration=1800, dt=0.5)
    assert (a.workers, a.wait, a.worker_seconds) == (b.workers, b.wait, b.worker_seconds)


def test_settings_trade_cost_against_wait() -> None:
    patient = Policy(**{**POLICY.to_json(), "target": 10.0, "cooldown_up": 15.0})
    rows = compare({"default": POLICY, "patient": patient},
                   {"burst": (burst_trace(300, 1500, 600, 60), 3600, 0.5),
                    "sine": (sine_trace(800, 700, 86400), 86400, 5.0)})
    by = {(r["trace"], r["policy"]): r for r in rows}
    assert by[("burst", "patient")]["mean_wait_s"] > by[("burst", "default")]["mean_wait_s"]
    assert by[("burst", "patient")]["peak_workers"] < by[("burst", "default")]["peak_workers"]
    # a slow daily cycle is followed by both, with the queue wait near nothing
    assert by[("sine", "default")]["mean_wait_s"] < 0.1
    assert 975 <= int(by[("sine", "default")]["peak_workers"]) <= 1200  # 1500/s x 0.65 s


def test_percentile() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.95) == 4.0
