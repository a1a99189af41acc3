"""The sliding-window rate limiter with its counts in the database: one budget per key for
every process on it (replicas of `treadle serve` on PostgreSQL).

A hit is one statement: insert the key's row, or roll its two fixed windows forward and count
the hit, but only where `previous * overlap + current + 1 <= limit` holds for the rolled
counts (`ON CONFLICT DO UPDATE … WHERE … RETURNING`). The row is locked for the statement, so
concurrent hits from any number of processes are decided one after the other, each on the
counts the one before left: exactly `limit` of them fit. On SQLite the statement runs in the
one-writer transaction (`BEGIN IMMEDIATE`); `treadle.app` says which limiter runs where.

The window arithmetic is `treadle.engine.limits`' (the same expression, evaluated by the
database in IEEE doubles), so this limiter answers exactly as the in-process one does. A
refused hit writes nothing: rolling the windows without counting changes no later decision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from treadle.engine.limits import WindowHit, fits, overlap, rolled, window_of
from treadle.engine.outcome import RateStatus
from treadle.store import schema
from treadle.store.database import Database

_TABLE = schema.rate_windows


def _hit_statement(build: Callable[[sa.Table], Any]) -> Insert:
    """The upsert, with parameters key, start, window, weight (the overlap) and limit."""
    table = _TABLE
    start = sa.bindparam("start", type_=sa.BigInteger)
    window = sa.bindparam("window", type_=sa.BigInteger)
    weight = sa.bindparam("weight", type_=sa.Float)
    limit = sa.bindparam("limit", type_=sa.BigInteger)
    delta = start - table.c.window_start
    # `treadle.engine.limits.rolled`, in SQL.
    same = delta <= 0
    previous = sa.case(
        (same, table.c.previous_count),
        (delta < 2 * window, table.c.current_count),
        else_=0,
    )
    current = sa.case((same, table.c.current_count), else_=0)
    statement = build(table).values(
        key=sa.bindparam("key", type_=sa.Text),
        window_start=start,
        current_count=1,
        previous_count=0,
    )
    counted: Insert = statement.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "window_start": sa.case((same, table.c.window_start), else_=start),
            "current_count": current + 1,
            "previous_count": previous,
        },
        where=previous * weight + current + 1 <= limit,
    ).returning(table.c.previous_count, table.c.current_count)
    return counted


class DatabaseRateLimiter:
    """`treadle.engine.limits.RateLimiter` over the `rate_windows` table."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        dialect = db.engine.dialect
        self._statement = _hit_statement(
            postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        )

    async def hit(self, key: str, limit: int, window_seconds: int) -> tuple[bool, RateStatus]:
        now = self._clock()
        window, start = window_of(now, window_seconds)
        weight = overlap(now, start, window)
        if limit < 1:
            # Nothing fits whatever is stored (both counts are >= 0): no need to ask.
            return False, WindowHit(now, window, start, 0, 0, False).status(limit)
        values = {"key": key, "start": start, "window": window, "weight": weight, "limit": limit}
        counted = await self._count(values)
        if counted is not None:
            previous, current_after = counted
            return True, WindowHit(now, window, start, previous, current_after - 1, True).status(
                limit
            )
        # Refused: the counts the refusal came from, for retry_after (read again; any later
        # state is as true an answer to "when does a call fit").
        previous, current = await self._rolled(key, start, window)
        if fits(previous, current, weight, limit):
            # Room was made in between (a replica whose clock runs ahead rolled the windows).
            return False, RateStatus(limit, 0, start + window, 1)
        return False, WindowHit(now, window, start, previous, current, False).status(limit)

    async def _count(self, values: dict[str, Any]) -> tuple[int, int] | None:
        """(previous, current after this hit) when counted; None when refused."""
        rows = await self._db.write_one(self._statement, values)  # one round trip
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    async def _rolled(self, key: str, start: int, window: int) -> tuple[int, int]:
        table = _TABLE
        rows = await self._db.query(
            sa.select(table.c.window_start, table.c.current_count, table.c.previous_count).where(
                table.c.key == key
            )
        )
        if not rows:
            return 0, 0
        row = rows[0]
        counts = rolled(int(row[0]), int(row[1]), int(row[2]), start, window)
        return counts.previous, counts.current
