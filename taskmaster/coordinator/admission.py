"""Who may join, with what, and how fast: the coordinator's checks on what workers send.

A worker proves who it is with a secret the coordinator issued to it; only the secret's
SHA-256 is stored (with the worker's row), so any coordinator on the database can check it,
also after a restart. Everything else a worker offers is bounded by a setting.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from taskmaster.config import Settings

# a worker's name, host and each command name it offers: longer ones are refused
MAX_NAME_CHARS = 200
# status messages of one worker being written at once; past it its stream is read later
MAX_WRITES_IN_FLIGHT = 64


class RegistrationRefused(Exception):
    """A worker may not join: its registration is malformed or over a limit."""


class IdentityRefused(RegistrationRefused):
    """A worker id without its secret (unknown, or a wrong or missing secret)."""


class TooManyWorkers(RegistrationRefused):
    """The coordinator has as many sessions as TASKMASTER_MAX_WORKER_SESSIONS allows."""


def issue_identity() -> tuple[str, str]:
    """A new worker's (id, secret): 128 random bits of id, 256 of secret."""
    return str(uuid.uuid4()), secrets.token_urlsafe(32)


def secret_hash(secret: str) -> bytes:
    """What is stored of a secret. One SHA-256 is enough: the secret is 256 random bits,
    not a password (nothing to guess, so nothing to slow down)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def _text(value: str, what: str) -> str:
    if len(value) > MAX_NAME_CHARS:
        raise RegistrationRefused(f"{what} is longer than {MAX_NAME_CHARS} characters")
    if "\x00" in value:
        raise RegistrationRefused(f"{what} contains a NUL character")
    return value


def check_registration(settings: Settings, *, name: str, host: str, capacity: int,
                       commands: Sequence[str]) -> tuple[int, list[str]]:
    """(capacity, commands) a registration may have: capacity cut to
    TASKMASTER_MAX_WORKER_CAPACITY; RegistrationRefused for the rest."""
    if capacity < 1:
        raise RegistrationRefused("capacity must be >= 1")
    _text(name, "name")
    _text(host, "host")
    if len(commands) > settings.max_worker_commands:
        raise RegistrationRefused(
            f"{len(commands)} commands offered, more than {settings.max_worker_commands} "
            "(TASKMASTER_MAX_WORKER_COMMANDS)")
    for command in commands:
        if not command.strip():
            raise RegistrationRefused("a command name is empty")
        _text(command, f"command {command[:50]!r}")
    return min(capacity, settings.max_worker_capacity), sorted(set(commands))


@dataclass
class ReportBudget:
    """A token bucket of status updates per second for one worker
    (TASKMASTER_WORKER_REPORT_RATE, one second's worth at once); going past it is a debt the
    worker's stream pays by being read later."""

    rate: float
    tokens: float = field(init=False)
    at: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.rate

    def take(self, n: int) -> float:
        """Spend n updates; the seconds to wait before reading on (0 within the budget)."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate) - n
        self.at = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
