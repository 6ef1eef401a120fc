"""The auto-scaling policy: how many workers the queue asks for, decided without flapping.

Pure: no I/O and no clock of its own (each call is given `now`), so the same code drives
the local stack's supervisor, the compose backend and the notebook's simulation at 100x.

Each look at the stack is an `Observation` (what GET /api/stats measures). The demand in
task slots is what runs now plus what the queue needs to be served within the target:

- target `wait=W` (seconds of queue wait): with a service time S per task (Little's law:
  running / throughput), one slot gets through W/S waiting tasks in W seconds, so the
  queue needs pending * S / W slots on top of the running ones;
- target `backlog=B` (waiting tasks per slot): pending / B slots on top of the running ones.

Workers wanted = ceil(slots / concurrency), clamped to [min, max]. Then:

- up to the lowest demand seen over the last `cooldown_up` seconds, when that is above the
  pool and the demand is above it by more than the tolerance, at most `step_up` workers at
  a time and not within `cooldown_up` seconds of the last change;
- down only to the highest demand seen over the last `cooldown_down` seconds (a
  stabilization window, as Kubernetes' HPA does), when that is below the pool by more than
  the tolerance, at most `step_down` at a time and not within `cooldown_down` seconds of the
  last change. Noise that dips for less than the window never shrinks the pool.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from taskmaster.config import Settings
from taskmaster.errors import InvalidInput

TargetKind = Literal["wait", "backlog"]
TARGET_KINDS: tuple[TargetKind, ...] = ("wait", "backlog")
# demand remembered for the down window: one look a second for an hour is plenty
HISTORY_LIMIT = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The settings of the autoscaler (GET/PUT /api/pool/autoscale, `taskmaster autoscale`)."""

    enabled: bool = False
    min: int = 1
    max: int = 6
    target_kind: TargetKind = "wait"
    target: float = 2.0  # seconds of queue wait, or waiting tasks per slot
    step_up: int = 4  # most workers added by one decision
    step_down: int = 2  # most workers removed by one decision
    cooldown_up: float = 3.0  # seconds after a change before the pool grows again
    cooldown_down: float = 15.0  # seconds of lower demand (and since a change) before it shrinks
    tolerance: float = 0.1  # demand within this fraction of the pool changes nothing
    interval: float = 1.0  # seconds between two looks at the stack

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON."""
        return asdict(self)

    @property
    def target_text(self) -> str:
        """The target as the --autoscale-target flag writes it (wait=2 or backlog=1)."""
        return f"{self.target_kind}={self.target:g}"

    def updated(self, changes: dict[str, Any], max_workers: int) -> Policy:
        """A copy with the fields of a JSON body changed, checked (InvalidInput naming the
        field; nothing changes on error)."""
        known = set(Policy.__dataclass_fields__)
        for name in changes:
            if name not in known:
                raise InvalidInput(422, f"unknown field {name!r}; the fields are "
                                   f"{', '.join(sorted(known))}", name)
        values = {**asdict(self), **changes}
        if "target" in changes and isinstance(changes["target"], str):
            kind, value = parse_target(changes["target"])
            if "target_kind" not in changes:
                values["target_kind"] = kind
            values["target"] = value
        return check(values, max_workers)


def _number(values: dict[str, Any], name: str, *, integer: bool = False,
            low: float = 0.0, high: float = math.inf, above: bool = False) -> Any:
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise InvalidInput(422, f"{name} must be a number", name)
    if integer and value != int(value):
        raise InvalidInput(422, f"{name} must be a whole number", name)
    if value < low or value > high or (above and value <= low):
        bound = f"above {low:g}" if above else f"at least {low:g}"
        raise InvalidInput(422, f"{name} must be {bound}"
                           + (f" and at most {high:g}" if high < math.inf else "")
                           + f" (got {value!r})", name)
    return int(value) if integer else float(value)


def check(values: dict[str, Any], max_workers: int) -> Policy:
    """A Policy from JSON-like values; InvalidInput names the first wrong field."""
    if not isinstance(values.get("enabled"), bool):
        raise InvalidInput(422, "enabled must be true or false", "enabled")
    low = _number(values, "min", integer=True, low=0, high=max_workers)
    high = _number(values, "max", integer=True, low=1, high=max_workers)
    if low > high:
        raise InvalidInput(422, f"min ({low}) must not be above max ({high})", "min")
    kind = values.get("target_kind")
    if kind not in TARGET_KINDS:
        raise InvalidInput(422, f"target_kind must be one of {', '.join(TARGET_KINDS)} "
                           f"(got {kind!r})", "target_kind")
    return Policy(
        enabled=values["enabled"], min=low, max=high, target_kind=kind,
        target=_number(values, "target", low=0, high=86_400, above=True),
        step_up=_number(values, "step_up", integer=True, low=1, high=max_workers),
        step_down=_number(values, "step_down", integer=True, low=1, high=max_workers),
        cooldown_up=_number(values, "cooldown_up", high=3600),
        cooldown_down=_number(values, "cooldown_down", high=3600),
        tolerance=_number(values, "tolerance", high=0.9),
        interval=_number(values, "interval", low=0.05, high=60))


def parse_target(text: str) -> tuple[TargetKind, float]:
    """`wait=2` (seconds of queue wait; `2s` and `2` mean the same) or `backlog=1` (waiting
    tasks per slot); InvalidInput naming `target`."""
    raw = text.strip().lower()
    kind, _, value = raw.partition("=") if "=" in raw else ("wait", "", raw)
    value = value.removesuffix("s") if kind == "wait" else value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if kind not in TARGET_KINDS or not math.isfinite(number) or number <= 0:
        raise InvalidInput(422, f"target must be wait=SECONDS or backlog=TASKS_PER_SLOT with a "
                           f"number above 0, e.g. wait=2 or backlog=1 (got {text!r})", "target")
    return kind, number  # type: ignore[return-value]


def parse_range(text: str, max_workers: int) -> tuple[int, int]:
    """`MIN:MAX` (e.g. 1:6); InvalidInput naming `autoscale`."""
    low_text, sep, high_text = text.partition(":")
    try:
        low, high = int(low_text), int(high_text)
    except ValueError:
        low = high = -1
    if not sep or not 0 <= low <= high or not 1 <= high <= max_workers:
        raise InvalidInput(422, f"autoscale must be MIN:MAX with 0 <= MIN <= MAX, 1 <= MAX <= "
                           f"{max_workers} (TASKMASTER_MAX_WORKERS), e.g. 1:6 (got {text!r})",
                           "autoscale")
    return low, high


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One look at the stack (the figures of GET /api/stats)."""

    pending: int  # tasks waiting (due)
    running: int  # tasks held by workers (assigned or running)
    throughput: float = 0.0  # tasks completed per second, recently
    workers_online: int = 0
    concurrency: int = 1  # task slots per worker

    @classmethod
    def from_stats(cls, stats: dict[str, Any], concurrency: int) -> Observation:
        """From a GET /api/stats answer."""
        return cls(pending=int(stats.get("queue_depth") or 0),
                   running=int(stats.get("running") or 0) + int(stats.get("assigned") or 0),
                   throughput=float(stats.get("throughput") or 0.0),
                   workers_online=int(stats.get("workers_online") or 0),
                   concurrency=max(1, concurrency))


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What one look decided: from -> to workers (equal: no change), and why."""

    at: float
    current: int
    to: int
    demand: float  # workers the load asks for right now (before limits)
    reason: str

    @property
    def changed(self) -> bool:
        """True when the pool is to be resized."""
        return self.to != self.current

    def to_json(self) -> dict[str, Any]:
        """The decision as JSON (the `pool_scaled` event's data when it changed)."""
        return {"from": self.current, "to": self.to, "demand": round(self.demand, 2),
                "reason": self.reason}


def demand(policy: Policy, obs: Observation) -> float:
    """Workers the load asks for (a fraction: the policy rounds it up)."""
    if policy.target_kind == "wait":
        # service time by Little's law; unknown until something completes: assume the
        # target itself (one waiting task per slot)
        service = obs.running / obs.throughput if obs.throughput > 0 and obs.running else None
        per_slot = policy.target / service if service else 1.0
    else:
        per_slot = policy.target
    slots = obs.running + obs.pending / max(per_slot, 1e-9)
    return slots / obs.concurrency


class Autoscaler:
    """Decides the pool size, one observation at a time (deterministic: the caller gives
    the time)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.last_change: float | None = None
        self.last: Decision | None = None  # the latest decision
        self.last_changed: Decision | None = None  # the latest that resized the pool
        self._history: deque[tuple[float, int]] = deque(maxlen=HISTORY_LIMIT)

    def configure(self, policy: Policy) -> None:
        """New settings; the memory of demand and of the last change stays."""
        self.policy = policy

    def decide(self, now: float, current: int, obs: Observation) -> Decision:
        """The pool size wanted now, given `current` workers and this observation."""
        p = self.policy
        raw = demand(p, obs)
        wanted = min(p.max, max(p.min, math.ceil(raw - 1e-9)))
        self._history.append((now, wanted))
        while self._history and self._history[0][0] <= now - max(p.cooldown_down,
                                                                   p.cooldown_up):
            self._history.popleft()
        since = math.inf if self.last_change is None else now - self.last_change
        # the lowest demand over the up window: a spike shorter than it grows nothing
        rise = min(w for t, w in self._history if t > now - p.cooldown_up or t == now)
        to, reason = current, "steady"
        if current < p.min:
            to, reason = p.min, f"below the minimum of {p.min}"
        elif current > p.max:
            to, reason = max(p.max, current - p.step_down), f"above the maximum of {p.max}"
        elif wanted > current and raw > current * (1 + p.tolerance):
            if since < p.cooldown_up:
                reason = f"wants {wanted}, cooling down ({p.cooldown_up - since:.0f}s left)"
            elif rise <= current:
                reason = f"wants {wanted}, not for {p.cooldown_up:g}s yet"
            else:
                to = min(rise, current + p.step_up)
                reason = self._why_up(obs)
        else:
            # the highest demand over the down window: a dip shorter than it shrinks nothing
            held = max(w for t, w in self._history if t > now - p.cooldown_down or t == now)
            if held < current and raw < current * (1 - p.tolerance):
                if since < p.cooldown_down:
                    reason = f"wants {held}, cooling down ({p.cooldown_down - since:.0f}s left)"
                else:
                    to = max(held, current - p.step_down)
                    reason = (f"demand below {current} workers for {p.cooldown_down:g}s "
                              f"(queue {obs.pending}, running {obs.running})")
        decision = Decision(at=now, current=current, to=to, demand=raw, reason=reason)
        self.last = decision
        if decision.changed:
            self.last_change = now
            self.last_changed = decision
        return decision

    def _why_up(self, obs: Observation) -> str:
        p = self.policy
        target = (f"queue wait target {p.target:g}s" if p.target_kind == "wait"
                  else f"target {p.target:g} waiting per slot")
        return f"queue {obs.pending}, running {obs.running}: over the {target}"

    def status(self) -> dict[str, Any]:
        """The settings and the last decisions (GET /api/pool/autoscale)."""
        return {**self.policy.to_json(), "target_text": self.policy.target_text,
                "last_decision": self.last.to_json() if self.last else None,
                "last_change": self.last_changed.to_json() if self.last_changed else None}


def with_range(policy: Policy, low: int, high: int, **changes: Any) -> Policy:
    """The policy on, between low and high workers (and any other changes)."""
    return replace(policy, enabled=True, min=low, max=high, **changes)


def from_settings(settings: Settings, autoscale: str | None = None,
                  target: str | None = None) -> Policy:
    """The policy TASKMASTER_AUTOSCALE* (or the flags given) describe: off unless a MIN:MAX
    range is given. InvalidInput names the setting at fault."""
    text = settings.autoscale if autoscale is None else autoscale
    kind, value = parse_target(settings.autoscale_target if target is None else target)
    values = {**asdict(Policy()), "target_kind": kind, "target": value,
              "cooldown_up": settings.autoscale_cooldown_up,
              "cooldown_down": settings.autoscale_cooldown_down,
              "interval": settings.autoscale_interval}
    if text:
        low, high = parse_range(text, settings.max_workers)
        values.update(enabled=True, min=low, max=high)
    return check(values, settings.max_workers)
