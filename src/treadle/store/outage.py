"""Whether an error means the database could not be reached, rather than a defect.

A PostgreSQL server restarting, failing over, refusing new connections (`max_connections`),
or a network between replica and database gone: the request did not run, and the same
request a moment later may. Callers answer that as 503 SERVICE_UNAVAILABLE with
Retry-After, not as an internal error. The same holds for a SQLite file another process
keeps locked past busy_timeout, or one that cannot be opened.

Only the store knows its drivers' exceptions, so the faces ask here (`database_unavailable`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy.exc

from treadle.errors import TreadleError

# SQLSTATE codes and classes of a server that cannot serve this connection now: connection
# exceptions (08), too many connections (53300), shutdown or start-up in progress (57P01-03).
_UNAVAILABLE_STATES = ("08", "53300", "57P01", "57P02", "57P03")
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file")


class DatabaseUnreachable(TreadleError):
    """A new connection to the database could not be opened (the socket failed). Raised by
    the store's own connection code; SQLAlchemy wraps its pool's failures itself."""


def driver_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes a database failure can arrive as (for faces that register a
    handler per class): SQLAlchemy's, sqlite3's, sockets' and, when installed, asyncpg's."""
    found: tuple[type[BaseException], ...] = (
        sqlalchemy.exc.SQLAlchemyError,
        sqlite3.Error,
        DatabaseUnreachable,
    )
    exceptions = _asyncpg_exceptions()
    if exceptions is None:
        return found
    return (*found, exceptions.PostgresError, exceptions.InterfaceError)


def database_unavailable(error: BaseException) -> bool:
    """True for failures to reach or use a database connection (see the module doc)."""
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # no pooled connection came free
        return True
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return error.orig is not None and database_unavailable(error.orig)
    if isinstance(error, sqlite3.OperationalError):
        return str(error).startswith(_SQLITE_UNAVAILABLE)
    if isinstance(error, DatabaseUnreachable):
        return True
    if _asyncpg_unavailable(error):
        return True
    # Drivers wrap one another (SQLAlchemy's asyncpg adapter raises from asyncpg's error).
    cause = error.__cause__
    return cause is not None and cause is not error and database_unavailable(cause)


def _asyncpg_exceptions() -> Any:
    try:
        from asyncpg import exceptions  # type: ignore[import-untyped]
    except ImportError:  # the postgres extra is not installed: nothing of asyncpg's is raised
        return None
    return exceptions


def _asyncpg_unavailable(error: BaseException) -> bool:
    exceptions = _asyncpg_exceptions()
    if exceptions is None:
        return False
    if isinstance(error, exceptions.PostgresError):
        state = getattr(error, "sqlstate", None) or ""
        return state.startswith(_UNAVAILABLE_STATES)
    # A pooled connection the server closed (restart, network): asyncpg's own error.
    return isinstance(error, exceptions.InterfaceError) and "connection is closed" in str(error)
