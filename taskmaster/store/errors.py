"""What PostgreSQL's failures mean to the rooms above the store, in three kinds.

Only the store names asyncpg; the scheduler and the coordinator catch these tuples.
"""

from __future__ import annotations

import asyncpg

# The database cannot be reached right now (down, restarting, connection lost, too slow):
# answer 503, or wait and try again.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, TimeoutError)

# Also safe to run again: a statement that lost a lock race rolled back whole.
RETRYABLE: tuple[type[BaseException], ...] = (
    *UNAVAILABLE, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

# What one bad row of a batch can cause (the others may be retried without it).
ROW_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

# Any error PostgreSQL answered with.
DatabaseError = asyncpg.PostgresError
