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
