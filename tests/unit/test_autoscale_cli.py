"""`taskmaster up --autoscale` and `taskmaster autoscale` refuse bad values before anything
starts, naming the flag or variable at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmaster.cli import main


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["up", "--autoscale", "9:1"], {}, "--autoscale: autoscale must be MIN:MAX"),
    (["up", "--autoscale", "1:6", "--autoscale-target", "soon"], {},
     "--autoscale-target: target must be wait=SECONDS or backlog=TASKS_PER_SLOT"),
    (["up", "--autoscale", "1:6"], {"TASKMASTER_AUTOSCALE_COOLDOWN_DOWN": "-1"},
     "TASKMASTER_AUTOSCALE_COOLDOWN_DOWN: cooldown_down must be at least 0"),
    (["autoscale", "1-6"], {}, "autoscale must be MIN:MAX"),
])
def test_bad_autoscale_values_are_refused_before_anything_starts(
        argv: list[str], env: dict[str, str], named: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main([*argv, "--home", str(tmp_path)]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "stack.json").exists()
