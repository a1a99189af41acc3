"""Which handshake-era MCP sessions are still open, for every replica alike.

A session's state travels sealed in its ID (`treadle.mcp.sealed_sessions`); what no ID can
carry is whether the session has ended since, or when it was last used. One small row per
session says that: written when it opens, marked when it ends (DELETE through any replica),
and its `last_seen` refreshed now and then by whichever replica serves it, so every replica
expires an idle session by the same clock. Rows of sessions long over are pruned as new ones
open. Times are wall-clock milliseconds (replicas' clocks are assumed NTP-close).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from treadle.store import schema
from treadle.store.database import Database

_TABLE = schema.mcp_sessions


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class SessionMark:
    last_seen_ms: int
    ended: bool


class McpSessions:
    def __init__(self, db: Database) -> None:
        self._db = db

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
        async with self._db.read() as conn:
            found = (
                await conn.execute(
                    sa.select(_TABLE.c.last_seen, _TABLE.c.ended_at).where(
                        _TABLE.c.session_key == key
                    )
                )
            ).first()
        if found is None:
            return None
        return SessionMark(last_seen_ms=int(found[0]), ended=found[1] is not None)

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
