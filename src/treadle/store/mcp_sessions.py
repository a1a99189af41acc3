"""Which handshake-era MCP sessions are still open, for every replica alike.

A session's state travels sealed in its ID (`treadle.mcp.sealed_sessions`); what no ID can
carry is whether the session has ended since, or when it was last used. One small row per
session says that: written when it opens, marked when it ends (DELETE through any replica),
and its `last_seen` refreshed now and then by whichever replica serves it, so every replica
expires an idle session by the same clock. Rows of sessions long over are pruned as new ones
open. Times are wall-clock milliseconds (replicas' clocks are assumed NTP-close).

Every request of a session reads its row. On a SQLite file that read is synchronous, through
a plain `sqlite3` connection as `VersionProbe` reads the version (microseconds, no thread
hop); where it cannot answer at once, and on PostgreSQL, it is one ordinary query.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from treadle.store import schema
from treadle.store.database import Database, version_beside
from treadle.store.version_probe import VersionProbe

log = logging.getLogger(__name__)

_TABLE = schema.mcp_sessions


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class SessionMark:
    last_seen_ms: int
    ended: bool


class _CannotNow(Exception):
    """The synchronous read could not answer at once: read asynchronously instead."""


class _MarkProbe(VersionProbe):
    _QUERY = "SELECT last_seen, ended_at FROM mcp_sessions WHERE session_key = ?"

    def mark(self, key: str) -> SessionMark | None:
        try:
            if self._conn is None:
                self._conn = self._connect()
            row = self._conn.execute(self._QUERY, (key,)).fetchone()
        except sqlite3.Error as error:
            log.debug("session probe could not read (%s); falling back", error)
            self.close()
            raise _CannotNow from error
        return None if row is None else SessionMark(int(row[0]), row[1] is not None)


@functools.cache  # built once: read on every request of a session
def _mark_query() -> sa.Select[tuple[int, int | None]]:
    return sa.select(_TABLE.c.last_seen, _TABLE.c.ended_at).where(
        _TABLE.c.session_key == sa.bindparam("key")
    )


@functools.cache  # built once: read on every request of a session (PostgreSQL)
def _mark_and_version_query() -> sa.Select[Any]:
    keyed = _TABLE.c.session_key == sa.bindparam("key")
    return version_beside(
        sa.select(_TABLE.c.last_seen).where(keyed).scalar_subquery(),
        sa.select(_TABLE.c.ended_at).where(keyed).scalar_subquery(),
    )


class McpSessions:
    def __init__(self, db: Database) -> None:
        self._db = db
        probe = _MarkProbe.for_engine(db.engine)
        self._probe = probe if isinstance(probe, _MarkProbe) else None

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()

    async def opened(self, key: str, server_id: str, at_ms: int, prune_before_ms: int) -> None:
        """Record a session that is opening; forget sessions unused since `prune_before_ms`
        (ended or expired long ago: their IDs answer 404 either way, row or no row)."""
        async with self._db.write("system") as txn:
            await txn.conn.execute(sa.delete(_TABLE).where(_TABLE.c.last_seen < prune_before_ms))
            await txn.conn.execute(
                sa.insert(_TABLE).values(
                    session_key=key, server_id=server_id, opened_at=at_ms, last_seen=at_ms
                )
            )

    async def get(self, key: str) -> SessionMark | None:
        if self._probe is not None:
            try:
                return self._probe.mark(key)
            except _CannotNow:
                pass
        # One statement on its own: on PostgreSQL one round trip, not BEGIN/SELECT/COMMIT.
        rows = await self._db.query(_mark_query(), {"key": key})
        if not rows:
            return None
        last_seen, ended_at = rows[0]
        return SessionMark(last_seen_ms=int(last_seen), ended=ended_at is not None)

    async def get_with_version(self, key: str) -> tuple[int, SessionMark | None] | None:
        """The configuration version and the session's mark, in one statement where each
        would be a round trip (PostgreSQL); None elsewhere (read each on its own)."""
        found = await self._db.config_version_beside(_mark_and_version_query(), {"key": key})
        if found is None:
            return None
        version, (last_seen, ended_at) = found
        if last_seen is None:
            return version, None
        return version, SessionMark(last_seen_ms=int(last_seen), ended=ended_at is not None)

    async def touch(self, key: str, at_ms: int) -> None:
        async with self._db.write("system") as txn:
            await txn.conn.execute(
                sa.update(_TABLE)
                .where(
                    _TABLE.c.session_key == key,
                    _TABLE.c.ended_at.is_(None),
                    _TABLE.c.last_seen < at_ms,
                )
                .values(last_seen=at_ms)
            )

    async def end(self, key: str, at_ms: int) -> None:
        """Mark the session ended; every replica answers 404 for it from now on."""
        async with self._db.write("system") as txn:
            await txn.conn.execute(
                sa.update(_TABLE)
                .where(_TABLE.c.session_key == key, _TABLE.c.ended_at.is_(None))
                .values(ended_at=at_ms)
            )

    async def forget(self, key: str) -> None:
        """Drop the row of a session that never opened (its `initialize` was refused)."""
        async with self._db.write("system") as txn:
            await txn.conn.execute(sa.delete(_TABLE).where(_TABLE.c.session_key == key))
