"""The README keeps its promises: two set-up commands, every setting documented."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from taskmaster.config import ENV_PREFIX, SECRETS, Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [ENV_PREFIX + f.name.upper() for f in fields(Settings)
               if ENV_PREFIX + f.name.upper() not in README]
    assert not missing, f"README lacks {missing}: paste `python -m taskmaster.config` into it"


def test_ci_runs_the_readme_test_command() -> None:
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)", setup, flags=re.M)
    assert commands == ["make demo", "make test"], commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), "CI must run the README's test command"


def test_documented_settings_exist() -> None:
    known = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    known |= {ENV_PREFIX + name.upper() + "_FILE" for name in SECRETS}  # a secret from a file
    # read by the tests, by notebooks and by compose.yaml rather than by Settings
    extra = {"TASKMASTER_TEST_DATABASE_URL", "TASKMASTER_URL", "TASKMASTER_PUBLISH_ADDRESS",
             "TASKMASTER_UPDATE_SCREENSHOT", "TASKMASTER_MAX"}  # TASKMASTER_MAX_* as a family
    named = set(re.findall(r"TASKMASTER_[A-Z_]+[A-Z]", README))
    assert named <= known | extra, f"README names unknown variables: {sorted(named - known - extra)}"


def test_settings_table_is_fresh() -> None:
    from taskmaster.config import markdown_table

    table = README.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert table.strip() == markdown_table(), "paste `python -m taskmaster.config` into the README"
