"""Auto-scaling on queue depth: the policy (pure, no I/O) that the local stack's supervisor,
the compose backend and the notebook's simulation share."""

from taskmaster.autoscale.policy import (
    TARGET_KINDS,
    Autoscaler,
    Decision,
    Observation,
    Policy,
    check,
    demand,
    from_settings,
    parse_range,
    parse_target,
    with_range,
)

__all__ = [
    "TARGET_KINDS",
    "Autoscaler",
    "Decision",
    "Observation",
    "Policy",
    "check",
    "demand",
    "from_settings",
    "parse_range",
    "parse_target",
    "with_range",
]
