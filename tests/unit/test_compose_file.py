"""compose.yaml and the Dockerfile: valid compose, real `taskmaster` commands, sane wiring.

Fast checks without an engine; tests/compose runs the stack on a real one.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskmaster.cli import build_parser
from taskmaster.config import SECRETS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's ${VAR:-default} with the defaults (what an empty environment gives)."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()))


def argv(command: Any) -> list[str]:
    """A command or healthcheck test as an argv list (exec form or a shell string)."""
    if isinstance(command, str):
        return shlex.split(command)
    if command and command[0] in ("CMD", "CMD-SHELL"):
        return argv(command[1]) if command[0] == "CMD-SHELL" else list(command[1:])
    return list(command)


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)], capture_output=True, text=True, timeout=120, check=False)


def test_compose_file_validates_against_the_compose_specification() -> None:
    done = check_jsonschema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_validator_does_reject_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    depends_on:\n", "    depends_onn:\n", 1))
    done = check_jsonschema(broken)
    assert done.returncode != 0
    assert "depends_onn" in done.stdout + done.stderr


def test_docker_compose_v1_reads_the_file_too() -> None:
    # Debian's docker-compose (1.29) refuses what v2 accepts, e.g. a top-level `name:`
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (v1) is not installed")
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                          capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_the_project_is_named_in_dot_env_not_in_the_file() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    assert "name" not in raw  # docker-compose v1 refuses it
    env = dict(line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env.pop("COMPOSE_PROJECT_NAME") == "taskmaster"
    # what `make compose-demo` notes there where no registry is reachable, and nothing else
    assert set(env) <= {"TASKMASTER_BASE_IMAGE", "POSTGRES_IMAGE"}


def test_the_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"secrets", "postgres", "coordinator", "coordinator-2",
                                        "scheduler", "scheduler-2", "worker"}


def test_two_coordinators_behind_one_name_and_two_schedulers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    first, second = services["coordinator"], services["coordinator-2"]
    # the same coordinator twice, told apart by name; `coordinator` resolves to both
    assert first["command"] == second["command"] and first["healthcheck"] == second["healthcheck"]
    assert first["environment"]["TASKMASTER_COORDINATOR_NAME"] == "coordinator"
    assert second["environment"]["TASKMASTER_COORDINATOR_NAME"] == "coordinator-2"
    assert second["networks"]["default"]["aliases"] == ["coordinator"]
    assert second["restart"] == "unless-stopped" and second["init"] is True
    # the schedulers: the same API on 8081 and 8082
    assert services["scheduler"]["command"] == services["scheduler-2"]["command"]
    assert any(str(p).endswith(":8082:8081") for p in services["scheduler-2"]["ports"])
    assert services["scheduler-2"]["healthcheck"] == services["scheduler"]["healthcheck"]
    # the workers wait for both coordinators and dial the name with gRPC's round robin
    assert set(services["worker"]["depends_on"]) == {"coordinator", "coordinator-2"}
    published = [str(p).rsplit(":", 2)[-2] for name in ("coordinator", "coordinator-2")
                 for p in services[name]["ports"]]
    assert len(set(published)) == 2, published  # nothing clashes on the host


def test_each_taskmaster_command_is_a_real_subcommand_with_real_options(
    compose: dict[str, Any],
) -> None:
    parser = build_parser()
    checked = []
    for name, service in compose["services"].items():
        commands = [service.get("command")]
        if "healthcheck" in service:
            commands.append(service["healthcheck"]["test"])
        for command in filter(None, commands):
            args = argv(command)
            if args[0] != "taskmaster":
                continue
            try:
                parsed = parser.parse_args(args[1:])
            except SystemExit:
                pytest.fail(f"{name}: `{shlex.join(args)}` is not a valid taskmaster command line")
            checked.append((name, parsed.command))
    assert ("coordinator", "coordinator") in checked
    assert ("coordinator", "healthcheck") in checked
    assert ("scheduler", "scheduler") in checked
    assert ("scheduler", "healthcheck") in checked
    assert ("worker", "worker") in checked


def test_the_parser_refuses_what_does_not_exist() -> None:
    # the check above would be worthless if argparse accepted anything
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--coordinatr", "coordinator:8080"])


def test_depends_on_names_existing_services_with_valid_conditions(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for other, spec in (depends.items() if isinstance(depends, dict)
                            else ((d, {}) for d in depends)):
            assert other in services, f"{name} depends on a missing service {other!r}"
            assert other != name
            condition = spec.get("condition", "service_started")
            assert condition in ("service_started", "service_healthy",
                                 "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{other} has no healthcheck"
    assert services["coordinator"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["scheduler"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["coordinator"]["condition"] == "service_healthy"


def test_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert argv(services["postgres"]["healthcheck"]["test"])[0] == "pg_isready"
    assert argv(services["coordinator"]["healthcheck"]["test"])[1:3] == ["healthcheck", "grpc"]
    scheduler = argv(services["scheduler"]["healthcheck"]["test"])
    assert scheduler[1:3] == ["healthcheck", "http"]
    assert scheduler[3].endswith(":8081/readyz")


def test_postgres_keeps_its_data_in_a_volume(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    volume, path = postgres["volumes"][0].split(":")
    assert volume in compose["volumes"] and path == "/var/lib/postgresql/data"
    # the image made from Debian's package where no registry is reachable uses that path too
    debian = (ROOT / "deploy" / "postgres" / "Dockerfile").read_text()
    assert "VOLUME /var/lib/postgresql/data" in debian


def test_no_well_known_password_and_the_application_is_no_superuser() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    text = COMPOSE.read_text()
    assert "POSTGRES_PASSWORD:" not in text and ":-taskmaster}@" not in text
    services = raw["services"]
    # the passwords are made on first use, in a volume of their own
    secrets = services["secrets"]
    script = secrets["command"][0]
    assert "/dev/urandom" in script and "chmod 0400" in script
    assert secrets["volumes"] == ["secrets:/secrets"] and "secrets" in raw["volumes"]
    postgres = services["postgres"]
    assert postgres["depends_on"]["secrets"]["condition"] == "service_completed_successfully"
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/secrets/postgres-password"
    assert "secrets:/secrets:ro" in postgres["volumes"]
    assert "./deploy/postgres/initdb:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert postgres["healthcheck"]["test"][2:] == [
        "-h", "127.0.0.1", "-U", "${POSTGRES_USER:-postgres}", "-d", "${POSTGRES_DB:-taskmaster}"]
    # the role the application uses: no superuser, owner of its database only
    role = (ROOT / "deploy" / "postgres" / "initdb" / "10-taskmaster-role.sh").read_text()
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE" in role
    assert 'ALTER DATABASE "$db" OWNER TO "$role"' in role
    assert "reject" in role  # the superuser is refused over TCP
    # Debian's PostgreSQL image takes the public image's variables and runs the same script
    entrypoint = (ROOT / "deploy" / "postgres" / "entrypoint.sh").read_text()
    for variable in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE",
                     "POSTGRES_DB", "PGDATA"):
        assert "${" + variable in entrypoint
    assert "/docker-entrypoint-initdb.d/*.sh" in entrypoint


def test_each_role_gets_only_the_secrets_it_needs() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    wanted = {
        "coordinator": {"TASKMASTER_DATABASE_URL", "TASKMASTER_DATABASE_URL_FILE",
                        "TASKMASTER_CLUSTER_TOKEN"},
        "scheduler": {"TASKMASTER_DATABASE_URL", "TASKMASTER_DATABASE_URL_FILE",
                      "TASKMASTER_API_TOKEN", "TASKMASTER_API_READ_TOKEN",
                      "TASKMASTER_POOL_TOKEN"},
        "worker": {"TASKMASTER_CLUSTER_TOKEN"},
    }
    secret_names = {f"TASKMASTER_{name.upper()}{suffix}" for name in SECRETS
                    for suffix in ("", "_FILE")}
    for name, expected in wanted.items():
        env = services[name]["environment"]
        assert set(env) & secret_names == expected, name
        assert ("secrets:/secrets:ro" in services[name].get("volumes", [])) == (
            "TASKMASTER_DATABASE_URL_FILE" in expected), name
    assert services["scheduler"]["environment"]["TASKMASTER_API_TOKEN"] == (
        "${TASKMASTER_API_TOKEN:-}")
    assert services["coordinator"]["environment"]["TASKMASTER_DATABASE_URL_FILE"] == (
        "/secrets/database-url")


def test_workers_scale_and_stay_down_when_stopped(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker
    assert worker["restart"] == "no"
    assert argv(worker["command"])[2:4] == ["--coordinator", "dns:///coordinator:8080"]
    # `docker stop` must give a draining worker its grace period
    grace = int(worker["environment"]["TASKMASTER_DRAIN_GRACE"])
    assert int(worker["stop_grace_period"].rstrip("s")) > grace


def test_coordinator_and_scheduler_come_back_after_a_crash(compose: dict[str, Any]) -> None:
    for name in ("postgres", "coordinator", "scheduler"):
        assert compose["services"][name]["restart"] == "unless-stopped"
    for name in ("coordinator", "scheduler", "worker"):
        # with an init process as PID 1, `os.kill(-1, SIGKILL)` inside is a crash
        assert compose["services"][name]["init"] is True


def test_scheduler_publishes_8081_and_listens_on_all_interfaces(compose: dict[str, Any]) -> None:
    scheduler = compose["services"]["scheduler"]
    assert any(str(p).endswith("8081:8081") for p in scheduler["ports"])
    assert argv(scheduler["command"])[2:4] == ["--host", "0.0.0.0"]


def test_environment_names_real_settings(compose: dict[str, Any]) -> None:
    known = {f"TASKMASTER_{f.name.upper()}" for f in fields(Settings)}
    known |= {f"TASKMASTER_{name.upper()}_FILE" for name in SECRETS}
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if variable.startswith("TASKMASTER_"):
                assert variable in known, f"{name}: {variable} is no setting"
                if not variable.endswith("_FILE"):
                    Settings.from_env({variable: str(value)})  # parses


def test_the_dockerfile_builds_on_a_base_given_by_compose(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    froms = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert froms and set(froms) == {"${BASE_IMAGE}"}
    for name in ("coordinator", "scheduler", "worker"):
        build = compose["services"][name]["build"]
        assert build["context"] == "." and build["args"]["BASE_IMAGE"] == "python:3.11-slim"
    raw = yaml.safe_load(COMPOSE.read_text())
    assert raw["x-taskmaster"]["build"]["args"]["BASE_IMAGE"] == (
        "${TASKMASTER_BASE_IMAGE:-python:3.11-slim}")
    assert raw["services"]["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {src.rstrip("/") for line in dockerfile.splitlines()
              if line.startswith("COPY") and "--from" not in line
              for src in line.split()[1:-1]}
    assert copied == {"deploy/requirements.txt", "deploy/wheels", "pyproject.toml", "README.md",
                      "proto", "taskmaster"}
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # an allow-list
    assert {f"!{path}" for path in copied} <= set(ignore)
    assert (ROOT / "deploy" / "wheels" / ".gitignore").exists()  # COPY needs the folder


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()


def test_the_image_requirements_are_the_packages_less_the_notebook_kit() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package = {_name(r): r for r in pyproject["project"]["dependencies"]}
    lines = (ROOT / "deploy" / "requirements.txt").read_text().splitlines()
    image = {_name(r): r for r in lines if r.strip() and not r.startswith("#")}
    # same specifiers; a new dependency of the package must be sorted into one or the other
    assert {n: package.get(n) for n in image} == image
    left_out = set(package) - set(image)
    assert left_out == {"jupyterlab", "ipywidgets", "bqplot", "pandas", "pgserver"}
