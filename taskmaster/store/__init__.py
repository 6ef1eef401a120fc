"""PostgreSQL persistence: schema, migrations, named queries and the Store."""

from taskmaster.store.activity import write_activity
from taskmaster.store.db import (
    close_pool,
    create_pool,
    database_name,
    drop_database,
    ensure_database,
    migrate,
    prepare,
    with_database,
)
from taskmaster.store.embedded import start_embedded_again, stop_embedded
from taskmaster.store.errors import RETRYABLE, ROW_ERRORS, UNAVAILABLE, DatabaseError
from taskmaster.store.listen import Listener
from taskmaster.store.store import (
    Applied,
    BadCursor,
    Delivery,
    FeedEvent,
    Moved,
    NewTask,
    ResetOutcome,
    Store,
)

__all__ = [
    "RETRYABLE",
    "ROW_ERRORS",
    "UNAVAILABLE",
    "Applied",
    "BadCursor",
    "DatabaseError",
    "Delivery",
    "FeedEvent",
    "Listener",
    "Moved",
    "NewTask",
    "ResetOutcome",
    "Store",
    "close_pool",
    "create_pool",
    "database_name",
    "drop_database",
    "ensure_database",
    "migrate",
    "prepare",
    "start_embedded_again",
    "stop_embedded",
    "with_database",
    "write_activity",
]
