"""Log configuration for the CLI: plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from taskmaster.config import redact

# fields that library code passes in `extra` and that JSON lines carry
FIELDS = ("task_id", "worker_id", "attempt", "request_id",
          "method", "path", "route", "status", "duration_ms", "remote")

# The HTTP request being served (set by the scheduler's middleware): every line logged
# while answering it carries its id, even from code that knows nothing of requests.
REQUEST_ID: ContextVar[str | None] = ContextVar("taskmaster_request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is None and name == "request_id":
                value = REQUEST_ID.get()
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class RedactingFormatter(logging.Formatter):
    """Another formatter's lines with every URL's password replaced by *** (a database
    URL in an error message, a traceback or a third party's log line)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        """The inner formatter's line, redacted."""
        return redact(self.inner.format(record))


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Set up the root logger for a CLI process."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(RedactingFormatter(JsonFormatter()))
    else:
        handler.setFormatter(RedactingFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # the scheduler's access log (one line per request, with its fields) is for JSON logs
    logging.getLogger("taskmaster.access").setLevel(
        logging.NOTSET if fmt == "json" else logging.WARNING)
