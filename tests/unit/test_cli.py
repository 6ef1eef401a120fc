"""The command line: every flag of a setting defaults from its TASKMASTER_* variable, says so
in --help, and wins over the variable when given."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from taskmaster.cli import build_parser, settings_from
from taskmaster.config import Settings

SETTING_TYPES = {f.name: type(f.default) for f in fields(Settings)}


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
             ) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every leaf sub-command: ("db", "migrate") -> its parser."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(commands(sub, (*prefix, name)))
    return out or {prefix: parser}


PARSER = build_parser()
COMMANDS = commands(PARSER)
# the positional arguments a command needs before its flags can be parsed
POSITIONALS = {("scale",): ["2"], ("kill",): ["worker-1"], ("healthcheck",): ["http", "http://x"],
               ("load",): ["--rate", "1"], ("record",): ["--seconds", "1", "out.jsonl"]}
SETTING_FLAGS = [
    (path, action.option_strings[0], action.dest)
    for path, sub in COMMANDS.items()
    for action in sub._actions
    if action.dest in SETTING_TYPES and action.option_strings
]


# settings that take one of a few words
WORDS = {"assign_strategy": ("least-loaded", "random")}


def samples(kind: type, name: str = "") -> tuple[str, str, Any, Any]:
    """(env text, flag text, env value, flag value) for a setting type."""
    if name in WORDS:
        env, flag = WORDS[name]
        return env, flag, env, flag
    if kind is int:
        return "4321", "1234", 4321, 1234
    if kind is float:
        return "2.5", "0.75", 2.5, 0.75
    if issubclass(kind, Path):
        return "/srv/from-env", "/srv/from-flag", Path("/srv/from-env"), Path("/srv/from-flag")
    return "from-env", "from-flag", "from-env", "from-flag"


def test_the_documented_commands_exist() -> None:
    assert set(COMMANDS) >= {("up",), ("scheduler",), ("coordinator",), ("worker",),
                             ("db", "migrate"), ("status",)}


@pytest.mark.parametrize(("command", "flags"), [
    ("up", ["--workers", "--concurrency", "--database-url", "--scheduler-port",
            "--coordinator-port"]),
    ("scheduler", ["--host", "--port", "--database-url"]),
    ("coordinator", ["--host", "--port", "--database-url"]),
    ("worker", ["--coordinator", "--concurrency", "--name", "--tasks"]),
    ("status", ["--url"]),
])
def test_the_documented_flags_exist(command: str, flags: list[str]) -> None:
    known = {s for a in COMMANDS[(command,)]._actions for s in a.option_strings}
    assert set(flags) <= known


def test_component_ports_map_to_their_settings() -> None:
    assert settings_from(PARSER.parse_args(["scheduler", "--port", "9001"])).scheduler_port == 9001
    assert settings_from(PARSER.parse_args(["coordinator", "--port", "9002"])
                         ).coordinator_port == 9002
    assert settings_from(PARSER.parse_args(["worker", "--name", "w7"])).worker_name == "w7"


def test_up_starts_three_workers_by_default() -> None:
    assert PARSER.parse_args(["up"]).workers == 3
    assert PARSER.parse_args(["up", "--workers", "5"]).workers == 5


@pytest.mark.parametrize(("path", "flag", "name"), SETTING_FLAGS,
                         ids=[f"{' '.join(p)} {f}" for p, f, _ in SETTING_FLAGS])
def test_flag_help_names_its_variable(path: tuple[str, ...], flag: str, name: str) -> None:
    action = next(a for a in COMMANDS[path]._actions if a.dest == name)
    assert f"TASKMASTER_{name.upper()}" in (action.help or "")
    assert "--help" not in (action.help or "")


@pytest.mark.parametrize(("path", "flag", "name"), SETTING_FLAGS,
                         ids=[f"{' '.join(p)} {f}" for p, f, _ in SETTING_FLAGS])
def test_flag_defaults_from_its_variable_and_overrides_it(
    monkeypatch: pytest.MonkeyPatch, path: tuple[str, ...], flag: str, name: str
) -> None:
    kind = SETTING_TYPES[name]
    path = (*path, *POSITIONALS.get(path, []))
    variable = f"TASKMASTER_{name.upper()}"
    if kind is bool:
        assert getattr(settings_from(PARSER.parse_args([*path])), name) is False
        monkeypatch.setenv(variable, "1")
        assert getattr(settings_from(PARSER.parse_args([*path])), name) is True
        monkeypatch.setenv(variable, "0")
        assert getattr(settings_from(PARSER.parse_args([*path, flag])), name) is True
        return
    env_text, flag_text, env_value, flag_value = samples(kind, name)
    default = getattr(Settings(), name)
    assert getattr(settings_from(PARSER.parse_args([*path])), name) == default
    monkeypatch.setenv(variable, env_text)
    assert getattr(settings_from(PARSER.parse_args([*path])), name) == env_value
    assert getattr(settings_from(PARSER.parse_args([*path, flag, flag_text])), name) == flag_value


def test_every_component_takes_the_database_url() -> None:
    for path in [("up",), ("scheduler",), ("coordinator",), ("db", "migrate")]:
        assert any(a.dest == "database_url" for a in COMMANDS[path]._actions), path


def test_a_bad_variable_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from taskmaster.cli import main

    monkeypatch.setenv("TASKMASTER_SCHEDULER_PORT", "eighty")
    with pytest.raises(SystemExit) as exit_info:
        main(["status"])
    assert exit_info.value.code == 2
    assert "TASKMASTER_SCHEDULER_PORT='eighty'" in capsys.readouterr().err


def test_a_bad_flag_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        PARSER.parse_args(["worker", "--concurrency", "many"])
    assert "--concurrency" in capsys.readouterr().err


def test_component_commands_parse_the_same_without_the_rest() -> None:
    """The lean parser a starting worker, coordinator or scheduler uses has the same
    commands and flags as the whole one."""
    lean = commands(build_parser(components_only=True))
    whole = commands(PARSER)
    assert set(lean) == {p for p in whole if p[0] in ("scheduler", "coordinator", "worker", "db")}
    for path, parser in lean.items():
        assert ([a.option_strings for a in parser._actions]
                == [a.option_strings for a in whole[path]._actions]), path


def test_a_starting_worker_does_not_load_the_http_client() -> None:
    """`taskmaster worker` parses its command line without importing aiohttp (a quarter of a
    second of CPU at every start of every worker) or urllib.request (a tenth of what is
    left); `taskmaster ps` still has aiohttp."""
    import subprocess
    import sys

    probe = ("import sys; from taskmaster.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('aiohttp' in sys.modules, 'urllib.request' in sys.modules)")
    for argv, loaded in ((["worker", "--help"], "False False"), (["ps", "--help"], "True")):
        out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                             text=True, check=True, timeout=60).stdout
        assert out.strip().splitlines()[-1].startswith(loaded), argv
