"""The one error type for bad input, whichever door it came through (HTTP API, control API,
CLI, Python): a 4xx status, a message that says what to send instead, the field at fault."""

from __future__ import annotations

from typing import Any


class InvalidInput(ValueError):
    """Bad input: an HTTP status (4xx), the message and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, Any]:
        """The JSON error body: {"error": ..., "field": ...}."""
        return {"error": self.message, "field": self.field}


# The exit status of a component (scheduler, coordinator) that could not listen on its
# port: a supervisor does not restart it forever, and says why.
EXIT_CANNOT_LISTEN = 3


class CannotListen(OSError):
    """A component could not bind its address (another process listens there)."""

    def __init__(self, what: str, address: str, reason: str) -> None:
        super().__init__(f"the {what} cannot listen on {address}: {reason}")
        self.what = what
        self.address = address
        self.reason = reason
