"""Log configuration for the CLI: plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

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


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Set up the root logger for a CLI process."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # the scheduler's access log (one line per request, with its fields) is for JSON logs
    logging.getLogger("taskmaster.access").setLevel(
        logging.NOTSET if fmt == "json" else logging.WARNING)
