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

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from treadle.engine.limits import Admitted, WindowHit, fits, overlap, rolled, window_of
from treadle.engine.outcome import RateStatus
from treadle.errors import StaleConfiguration
from treadle.store import schema
from treadle.store.database import GLOBAL_SCOPE, Database

_TABLE = schema.rate_windows
_USAGE = schema.usage_counters


def _hit_statement(
    build: Callable[[sa.Table], Any], only_if: sa.ColumnElement[bool] | None = None
) -> Insert:
    """The upsert, with parameters key, start, window, weight (the overlap) and limit;
    with `only_if`, a hit only where that holds (else the statement touches no row)."""
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
    key = sa.bindparam("key", type_=sa.Text)
    if only_if is None:
        statement = build(table).values(
            key=key, window_start=start, current_count=1, previous_count=0
        )
    else:
        first = sa.select(key, start, sa.literal(1, sa.BigInteger), sa.literal(0, sa.BigInteger))
        statement = build(table).from_select(
            ["key", "window_start", "current_count", "previous_count"], first.where(only_if)
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


@dataclass(frozen=True, slots=True)
class _Hit:
    """One hit's moment and windows, and the hit statement's parameters for it."""

    now: float
    window: int
    start: int
    weight: float
    key: str
    limit: int

    @classmethod
    def at(cls, now: float, key: str, limit: int, window_seconds: int) -> _Hit:
        window, start = window_of(now, window_seconds)
        return cls(now, window, start, overlap(now, start, window), key, limit)

    def params(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "start": self.start,
            "window": self.window,
            "weight": self.weight,
            "limit": self.limit,
        }


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
        hit = _Hit.at(self._clock(), key, limit, window_seconds)
        if limit < 1:
            # Nothing fits whatever is stored (both counts are >= 0): no need to ask.
            return await self._answer(hit, None)
        rows = await self._db.write_one(self._statement, hit.params())  # one round trip
        return await self._answer(hit, (int(rows[0][0]), int(rows[0][1])) if rows else None)

    def admission(self, period: Callable[[], str]) -> RateAndQuota | None:
        """The rate-limit hit and the quota reservation in one statement, where the
        database runs data-modifying CTEs (PostgreSQL); `period` names the quota's month."""
        return None if self._db.is_sqlite else RateAndQuota(self, period)

    async def _answer(self, hit: _Hit, counted: tuple[int, int] | None) -> tuple[bool, RateStatus]:
        """The answer, from (previous, current after the hit) when counted."""
        now, window, start, limit = hit.now, hit.window, hit.start, hit.limit
        if counted is not None:
            previous, current_after = counted
            return True, WindowHit(now, window, start, previous, current_after - 1, True).status(
                limit
            )
        if limit < 1:
            return False, WindowHit(now, window, start, 0, 0, False).status(limit)
        # Refused: the counts the refusal came from, for retry_after (read again; any later
        # state is as true an answer to "when does a call fit").
        previous, current = await self._rolled(hit.key, start, window)
        if fits(previous, current, hit.weight, limit):
            # Room was made in between (a replica whose clock runs ahead rolled the windows).
            return False, RateStatus(limit, 0, start + window, 1)
        return False, WindowHit(now, window, start, previous, current, False).status(limit)

    async def _rolled(self, key: str, start: int, window: int) -> tuple[int, int]:
        rows = await self._db.query(_read_statement(), {"key": key})
        if not rows:
            return 0, 0
        row = rows[0]
        counts = rolled(int(row[0]), int(row[1]), int(row[2]), start, window)
        return counts.previous, counts.current


@functools.cache
def _read_statement() -> sa.Select[tuple[int, int, int]]:
    table = _TABLE
    return sa.select(table.c.window_start, table.c.current_count, table.c.previous_count).where(
        table.c.key == sa.bindparam("key")
    )


class RateAndQuota:
    """`treadle.engine.limits.Admission` on PostgreSQL: the hit statement and the quota's
    conditional count (`UsageCounters.reserve`'s) as one statement of two data-modifying
    CTEs, the quota's running only on the row the hit returned. Each row is locked and its
    condition re-checked as when they run apart, so both stay exact across replicas, and a
    refused hit counts nothing, as before: one round trip where there were two.

    The same statement reads the configuration version and, given the version the call was
    served at (`expected_version`), counts only if it still holds: a call whose face did not
    read the version (`ConfigCache.assumed_snapshot`) learns here, at no extra round trip,
    whether its configuration was current. The statement's snapshot is taken when it starts,
    so a change committed before then is seen, as a read of its own would see it."""

    def __init__(self, limiter: DatabaseRateLimiter, period: Callable[[], str]) -> None:
        self._limiter = limiter
        self._period = period

    async def _versions(self) -> int:
        return await self._limiter._db.version(GLOBAL_SCOPE)

    async def admit(
        self,
        key: str,
        limit: int,
        window_seconds: int,
        org_id: str,
        quota: int,
        *,
        expected_version: int | None = None,
    ) -> Admitted:
        limiter = self._limiter
        hit = _Hit.at(limiter._clock(), key, limit, window_seconds)
        if limit < 1:
            # Refused whatever is stored, so no statement: the version is read on its own.
            if expected_version is not None:
                version = await self._versions()
                if version != expected_version:
                    raise StaleConfiguration(version)
            _allowed, status = await limiter._answer(hit, None)
            return Admitted(False, status, False, 0)
        params = {
            **hit.params(),
            "org_id": org_id,
            "period": self._period(),
            "quota": quota,
            "scope": GLOBAL_SCOPE,
            "expected": expected_version,
        }
        ((previous, current, counted, before, version, _no_flush),) = await limiter._db.write_one(
            _admission_statement(), params
        )
        if expected_version is not None and version != expected_version:
            # Nothing was counted: the hit (and so the quota's count) ran on no row.
            raise StaleConfiguration(int(version))
        if previous is None:
            _allowed, status = await limiter._answer(hit, None)
            return Admitted(False, status, False, 0)
        _allowed, status = await limiter._answer(hit, (int(previous), int(current)))
        if counted is None:
            return Admitted(True, status, False, int(before or 0))
        return Admitted(True, status, True, int(counted) - 1)


@functools.cache  # built once: run on every call
def _admission_statement() -> sa.Select[tuple[int, int, int, int, int, str]]:
    """(previous, current after the hit) or NULLs when refused (or the version moved); the
    quota count after this call or NULL when refused (or not asked); the quota count before
    the statement; the configuration version. Parameter `expected`: the version the call
    was served at, or NULL to count whatever it is."""
    versions = schema.config_versions
    # 0 with no row yet, as `Database.version` answers.
    version = sa.func.coalesce(
        sa.select(versions.c.version)
        .where(versions.c.scope == sa.bindparam("scope", type_=sa.Text))
        .scalar_subquery(),
        0,
    )
    expected = sa.bindparam("expected", type_=sa.BigInteger)
    hit = _hit_statement(postgresql.insert, sa.or_(expected.is_(None), version == expected)).cte(
        "hit"
    )
    usage = _USAGE
    org_id = sa.bindparam("org_id", type_=sa.Text)
    period = sa.bindparam("period", type_=sa.Text)
    quota = sa.bindparam("quota", type_=sa.BigInteger)
    asked = sa.select(org_id, period, sa.literal(1, sa.Integer)).where(
        sa.exists(sa.select(hit.c.current_count)), quota >= 1
    )
    counted = (
        postgresql.insert(usage)
        .from_select(["org_id", "period", "count"], asked)
        .on_conflict_do_update(
            index_elements=[usage.c.org_id, usage.c.period],
            set_={"count": usage.c.count + 1},
            where=usage.c.count < quota,
        )
        .returning(usage.c.count)
        .cte("counted")
    )
    # The statement's snapshot: the count before it (for a refusal's `current`).
    before = sa.select(usage.c.count).where(usage.c.org_id == org_id, usage.c.period == period)
    # This statement's own commit does not wait for the WAL flush (~160 µs at c=1, one of the
    # two a call waited for). Nothing is acknowledged on it alone: the call answers only once
    # its activity record is committed, durably, and that flush covers every WAL record
    # before it, this one's included. A crash in between loses the count of a call that
    # never answered, as it loses that call's record.
    no_flush = sa.func.set_config(
        sa.literal("synchronous_commit"), sa.literal("off"), sa.true()
    ).label("no_flush")
    return sa.select(
        sa.select(hit.c.previous_count).scalar_subquery(),
        sa.select(hit.c.current_count).scalar_subquery(),
        sa.select(counted.c.count).scalar_subquery(),
        before.scalar_subquery(),
        version,
        no_flush,
    )
