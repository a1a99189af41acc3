"""Reads the global configuration version without leaving the event loop.

Every configuration write bumps the `*` row of `config_versions` in its own transaction, so
comparing that number with the one a cache entry was built under tells whether the entry is
still exact, across every process sharing the database file. The hot path asks on every
request; through aiosqlite each ask would be a transaction and several thread hops.

The probe keeps one plain `sqlite3` connection in autocommit mode and reads the row directly.
In WAL mode a reader never waits for writers, and `busy_timeout=0` makes the rare lock
conflicts (recovery after a crash, a checkpoint restarting the log) fail at once instead of
blocking the loop; the caller then falls back to an ordinary asynchronous read.

On PostgreSQL there is no file to read, so `for_engine` gives no source and every request
reads the version with one query (the fallback). A source kept current by LISTEN/NOTIFY on
the version bump is the planned counterpart: it implements `VersionSource` (answering None
until it is subscribed) and `for_engine` returns it for PostgreSQL; nothing else changes.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

_QUERY = "SELECT version FROM config_versions WHERE scope = '*'"


class VersionSource(Protocol):
    """Answers the global configuration version synchronously, or None when it cannot."""

    def read(self) -> int | None: ...

    def close(self) -> None: ...


class VersionProbe:
    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> VersionSource | None:
        """A probe for a file-backed SQLite database; None for anything else."""
        url = engine.url
        if engine.dialect.name != "sqlite" or not url.database or url.database == ":memory:":
            return None
        if url.database.startswith("file:"):
            return None  # URI filenames (shared in-memory databases, options): not probed
        return cls(url.database)

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: tests may open and close a gateway on different threads;
        # reads still happen one at a time, from whichever thread runs the event loop.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA query_only=1")
        return conn

    def read(self) -> int | None:
        """The version, or None when it cannot be read at once (the caller reads it async)."""
        try:
            if self._conn is None:
                self._conn = self._connect()
            row = self._conn.execute(_QUERY).fetchone()
        except sqlite3.Error as error:
            log.debug("version probe could not read (%s); falling back", error)
            self.close()
            return None
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
