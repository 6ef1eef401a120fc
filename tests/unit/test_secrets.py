"""Secrets: read from NAME or the file NAME_FILE names, never shown, URLs redacted in output,
and the pool token's file keyed by every name of this machine a stack answers on."""

from __future__ import annotations

import io
import logging
import socket
from pathlib import Path

import pytest

from taskmaster.config import SECRETS, Settings, redact
from taskmaster.logs import RedactingFormatter
from taskmaster.tokens import (
    find_pool_token,
    new_token,
    remove_pool_token,
    stack_key,
    token_path,
    write_pool_token,
)


def test_every_secret_is_read_from_its_variable_or_a_file(tmp_path: Path) -> None:
    for name in SECRETS:
        variable = f"TASKMASTER_{name.upper()}"
        secret = tmp_path / name
        secret.write_text(f"from-file-{name}\n")  # a mounted secret ends with a newline
        assert getattr(Settings.from_env({f"{variable}_FILE": str(secret)}), name) == (
            f"from-file-{name}")
        # the variable itself wins; an empty one falls back to the file
        both = {variable: "direct", f"{variable}_FILE": str(secret)}
        assert getattr(Settings.from_env(both), name) == "direct"
        assert getattr(Settings.from_env({**both, variable: ""}), name) == f"from-file-{name}"
    with pytest.raises(ValueError, match=r"TASKMASTER_API_TOKEN_FILE=.*cannot be read"):
        Settings.from_env({"TASKMASTER_API_TOKEN_FILE": str(tmp_path / "missing")})


def test_no_secret_in_a_repr() -> None:
    settings = Settings(database_url="postgresql://app:hunter2@db/x", api_token="tok-1",
                        api_read_token="tok-2", cluster_token="tok-3", pool_token="tok-4",
                        control_token="tok-5")
    text = repr(settings)
    for secret in ("hunter2", "tok-1", "tok-2", "tok-3", "tok-4", "tok-5"):
        assert secret not in text


def test_urls_are_redacted_in_text_and_in_logs() -> None:
    assert redact("postgresql://app:s3cr@t@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact("postgresql://postgres@127.0.0.1/x") == "postgresql://postgres@127.0.0.1/x"
    assert redact("dsn postgres://h/d?user=a&password=pw&sslmode=require") == (
        "dsn postgres://h/d?user=a&password=***&sslmode=require")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter(logging.Formatter("%(message)s")))
    logger = logging.getLogger("test_secrets")
    logger.addHandler(handler)
    try:
        try:
            raise ConnectionError("cannot reach postgresql://app:hunter2@db/x")
        except ConnectionError:
            logger.exception("connecting to %s", "postgresql://app:hunter2@db/x")
    finally:
        logger.removeHandler(handler)
    assert "hunter2" not in out.getvalue() and "app:***@db" in out.getvalue()


def test_the_pool_token_file_is_found_by_every_local_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    names = ["http://127.0.0.1:8081", "http://localhost:8081/", "http://[::1]:8081",
             f"http://{socket.gethostname()}:8081", "http://0.0.0.0:8081", "127.0.0.1:8081"]
    assert {stack_key(url) for url in names} == {"local-8081"}
    assert stack_key("http://127.0.0.1:8091") == "local-8091"
    assert stack_key("https://tasks.example.org") == "tasks.example.org-443"
    assert stack_key("http://evil/../../x:1") != stack_key("http://127.0.0.1:1")
    token = new_token()
    path = write_pool_token("http://127.0.0.1:8081", token)
    assert path == tmp_path / "taskmaster" / "pool-tokens" / "local-8081"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert all(find_pool_token(url) == token for url in names)
    assert find_pool_token("http://127.0.0.1:8091") == ""
    remove_pool_token("http://localhost:8081", "another stack's")
    assert path.exists()  # not ours to remove
    remove_pool_token("http://localhost:8081", token)
    assert not token_path("http://127.0.0.1:8081").exists()
