"""The zero-setup database: a real PostgreSQL from the pgserver wheel."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATABASE = "taskmaster"


def start_embedded(home: Path, *, database: str = DATABASE) -> tuple[str, Any]:
    """Start (or join) the embedded server under home/pgdata; (URL, server handle).

    The server stops when the last process using it exits.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path(home).resolve() / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    datadir = (Path(home) / "pgdata").resolve()
    datadir.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting the embedded PostgreSQL in %s", datadir)
    server = pgserver.get_server(datadir, cleanup_mode="stop")
    return server.get_uri(database), server


def resolve_database(database_url: str, home: Path) -> tuple[str, Any]:
    """The configured URL, or an embedded server's when none is configured."""
    if database_url:
        return database_url, None
    return start_embedded(home)


def stop_embedded(server: Any) -> None:
    """Stop an embedded server now, as an outage would ("fast": every connection is cut),
    keeping its data; `start_embedded_again(server)` brings it back on the same socket."""
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import

    log.warning("stopping the embedded PostgreSQL in %s", server.pgdata)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def start_embedded_again(server: Any) -> None:
    """Start an embedded server stopped by stop_embedded (same data, same socket)."""
    log.info("starting the embedded PostgreSQL in %s again", server.pgdata)
    server.ensure_postgres_running()
