"""Settings.from_env: parsing, errors that name the variable, and the env() round trip."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from taskmaster.config import ENV_PREFIX, Settings, help_for


def test_tests_run_without_taskmaster_variables() -> None:
    assert not [k for k in os.environ if k.startswith(ENV_PREFIX)]


def test_defaults_when_nothing_is_set() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env() == Settings()


def test_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMASTER_SCHEDULER_PORT", "9999")
    assert Settings.from_env().scheduler_port == 9999


def test_parses_each_kind() -> None:
    s = Settings.from_env({
        "TASKMASTER_HOME": "/srv/tm",
        "TASKMASTER_DATABASE_URL": "postgresql://u@h/db",
        "TASKMASTER_SCHEDULER_PORT": "18081",
        "TASKMASTER_HEARTBEAT_INTERVAL": "0.25",
        "TASKMASTER_ENABLE_POOL_API": "yes",
        "TASKMASTER_CONCURRENCY": " 4 ",
    })
    assert s.home == Path("/srv/tm")
    assert isinstance(s.home, Path)
    assert s.database_url == "postgresql://u@h/db"
    assert s.scheduler_port == 18081
    assert s.heartbeat_interval == 0.25
    assert s.enable_pool_api is True
    assert s.concurrency == 4


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("ON", True), ("Yes", True),
     ("0", False), ("false", False), ("off", False), ("NO", False)],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"TASKMASTER_ENABLE_POOL_API": raw}).enable_pool_api is expected


def test_empty_value_means_default() -> None:
    assert Settings.from_env({"TASKMASTER_SCHEDULER_PORT": ""}).scheduler_port == 8081


def test_unrelated_variables_are_ignored() -> None:
    assert Settings.from_env({"SCHEDULER_PORT": "1", "TASKMASTER_NOPE": "x"}) == Settings()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("TASKMASTER_SCHEDULER_PORT", "eighty"),
        ("TASKMASTER_SCHEDULER_PORT", "1.5"),
        ("TASKMASTER_HEARTBEAT_INTERVAL", "soon"),
        ("TASKMASTER_ENABLE_POOL_API", "maybe"),
        ("TASKMASTER_MAX_BATCH_COUNT", "10k"),
    ],
)
def test_bad_value_names_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ValueError) as info:
        Settings.from_env({name: raw})
    assert name in str(info.value)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize(("name", "raw"), [("TASKMASTER_CREATE_QUEUE", "0"),
                                         ("TASKMASTER_STATUS_BATCH", "-5"),
                                         ("TASKMASTER_MAX_BODY_BYTES", "0")])
def test_a_limit_below_one_is_refused_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=f"{name}={raw} must be at least 1"):
        Settings.from_env({name: raw})
    with pytest.raises(ValueError, match=name):
        Settings().with_(**{name.removeprefix("TASKMASTER_").lower(): int(raw)})


def test_overrides_win_and_none_is_ignored() -> None:
    env = {"TASKMASTER_SCHEDULER_PORT": "9000", "TASKMASTER_HOST": "0.0.0.0"}
    s = Settings.from_env(env, scheduler_port=9100, host=None)
    assert s.scheduler_port == 9100
    assert s.host == "0.0.0.0"


def _non_default(f: dataclasses.Field) -> object:
    value = f.default
    if f.name == "assign_strategy":
        return "random"
    if f.name == "worker_start":
        return "exec"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    if isinstance(value, float):
        return value + 0.125
    if isinstance(value, Path):
        return value / "sub dir"
    return f"{value}-x"


def test_env_round_trip_of_defaults() -> None:
    s = Settings()
    env = s.env()
    assert set(env) == {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    assert all(isinstance(v, str) for v in env.values())
    assert Settings.from_env(env) == s


def test_env_round_trip_of_every_field_changed() -> None:
    changed = Settings().with_(**{f.name: _non_default(f) for f in dataclasses.fields(Settings)})
    for f in dataclasses.fields(Settings):
        assert getattr(changed, f.name) != f.default, f.name
    assert Settings.from_env(changed.env()) == changed


def test_an_unknown_strategy_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="TASKMASTER_ASSIGN_STRATEGY='fastest' must be one of "
                       "round-robin, least-loaded, random"):
        Settings.from_env({"TASKMASTER_ASSIGN_STRATEGY": "fastest"})


def test_with_returns_a_copy() -> None:
    s = Settings()
    t = s.with_(concurrency=8)
    assert (s.concurrency, t.concurrency) == (1, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.concurrency = 2  # type: ignore[misc]


def test_heartbeat_timeout() -> None:
    s = Settings(heartbeat_interval=0.5, heartbeat_misses=4)
    assert s.heartbeat_timeout == 2.0


def test_help_names_the_variable_and_default() -> None:
    text = help_for("scheduler_port")
    assert "TASKMASTER_SCHEDULER_PORT" in text
    assert "8081" in text
    with pytest.raises(KeyError):
        help_for("no_such_setting")


def test_every_setting_has_help() -> None:
    for f in dataclasses.fields(Settings):
        assert f.metadata.get("help"), f.name
