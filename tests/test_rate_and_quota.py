"""The rate-limit hit and the quota reservation as one statement (PostgreSQL's admission).

It must answer exactly as the two statements it replaces (`DatabaseRateLimiter.hit`, then
`UsageCounters.reserve`), count nothing on the quota when the hit is refused, and stay exact
under concurrency from two replicas (two `Database`s, each with its own connections).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from treadle.engine.limits import Admitted
from treadle.errors import StaleConfiguration
from treadle.store import Database, schema
from treadle.store.database import GLOBAL_SCOPE
from treadle.store.database import bump_version as bump
from treadle.store.rate_windows import DatabaseRateLimiter, RateAndQuota
from treadle.store.state import UsageCounters

from databases import ON_POSTGRESQL, database_url, drop

pytestmark = pytest.mark.anyio

WINDOW = 64  # a power of two keeps the window fractions exact in floating point
T0 = 1_700_000_000 // WINDOW * WINDOW + WINDOW
PERIOD = "2026-12"
on_postgresql = pytest.mark.skipif(
    not ON_POSTGRESQL, reason="PostgreSQL only: SQLite runs the two statements apart"
)


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def databases(tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = database_url(data_dir)
    a, b = await Database.open(url), await Database.open(url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()
        drop(data_dir)


def admission(db: Database, clock: Clock) -> RateAndQuota:
    made = DatabaseRateLimiter(db, clock=clock).admission(lambda: PERIOD)
    assert made is not None
    return made


async def test_on_sqlite_there_is_no_combined_statement(tmp_path: Path) -> None:
    if ON_POSTGRESQL:
        pytest.skip("about SQLite")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = await Database.open(database_url(data_dir))
    try:
        assert DatabaseRateLimiter(db).admission(lambda: PERIOD) is None
    finally:
        await db.close()


@on_postgresql
async def test_answers_as_the_two_statements_apart(databases: tuple[Database, Database]) -> None:
    db, _ = databases
    clock = Clock()
    combined = admission(db, clock)
    apart = DatabaseRateLimiter(db, clock=clock)
    usage = UsageCounters(db)
    # An irregular schedule over three windows, past the rate limit and the quota.
    for step in [0.0, 1.5, 0.25, 7.0, 0.0, 30.0, 2.0, 50.0, 0.5, 0.5, 64.0, 3.0] * 3:
        clock.now += step
        got = await combined.admit("org-c", 5, WINDOW, "org-c", 14)
        allowed, status = await apart.hit("org-d", 5, WINDOW)
        counted, used = (await usage.reserve("org-d", PERIOD, 14)) if allowed else (False, 0)
        assert got == Admitted(allowed, status, counted, used)
    assert await usage.current("org-c", PERIOD) == await usage.current("org-d", PERIOD) == 14


@on_postgresql
async def test_a_refused_hit_counts_nothing_on_the_quota(
    databases: tuple[Database, Database],
) -> None:
    db, _ = databases
    combined = admission(db, Clock())
    usage = UsageCounters(db)
    assert (await combined.admit("org", 1, WINDOW, "org", 10)).quota_counted
    refused = await combined.admit("org", 1, WINDOW, "org", 10)
    assert not refused.rate_allowed
    assert not refused.quota_counted
    assert refused.rate.retry_after > 0
    assert await usage.current("org", PERIOD) == 1


@on_postgresql
async def test_a_quota_of_zero_refuses_and_creates_no_count(
    databases: tuple[Database, Database],
) -> None:
    db, _ = databases
    got = await admission(db, Clock()).admit("org-zero", 100, WINDOW, "org-zero", 0)
    assert got.rate_allowed
    assert not got.quota_counted
    assert got.quota_used == 0
    assert await UsageCounters(db).current("org-zero", PERIOD) == 0


@on_postgresql
async def test_two_replicas_admit_exactly_the_rate_limit_and_the_quota(
    databases: tuple[Database, Database],
) -> None:
    a, b = (admission(db, Clock()) for db in databases)
    results: list[Admitted] = []

    async def admit(replica: RateAndQuota, key: str, limit: int, quota: int) -> None:
        results.append(await replica.admit(key, limit, WINDOW, key, quota))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(30):  # the rate limit decides: 20 of 30
                tg.start_soon(admit, a if n % 2 else b, "org-rate", 20, 1000)
    assert sorted(r.rate_allowed for r in results) == [False] * 10 + [True] * 20
    assert sum(r.quota_counted for r in results) == 20
    results.clear()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(30):  # the quota decides: 12 of 30, every hit counted
                tg.start_soon(admit, a if n % 2 else b, "org-quota", 1000, 12)
    assert all(r.rate_allowed for r in results)
    assert sorted(r.quota_counted for r in results) == [False] * 18 + [True] * 12
    # Each granted one saw a distinct count before it: 0 … 11.
    assert sorted(r.quota_used for r in results if r.quota_counted) == list(range(12))
    assert await UsageCounters(databases[0]).current("org-quota", PERIOD) == 12


async def bump_version(db: Database) -> int:
    """A configuration change's bump of the global version (`WriteTxn.changed` makes it)."""
    async with db.write("test") as txn:
        await bump(txn.conn, GLOBAL_SCOPE)
    return await db.version()


@on_postgresql
async def test_given_the_version_it_counts_only_while_the_version_holds(
    databases: tuple[Database, Database],
) -> None:
    """What a call served at an assumed configuration version relies on: the statement
    reads the version and, when it moved, counts nothing and says which it is now."""
    db, other = databases
    combined = admission(db, Clock())
    usage = UsageCounters(db)
    version = await db.version()
    assert (
        await combined.admit("org-v", 5, WINDOW, "org-v", 10, expected_version=version)
    ).quota_counted
    moved = await bump_version(other)  # committed through the other replica
    assert moved > version
    with pytest.raises(StaleConfiguration) as stale:
        await combined.admit("org-v", 5, WINDOW, "org-v", 10, expected_version=version)
    assert stale.value.version == moved
    assert await usage.current("org-v", PERIOD) == 1
    rows = await db.query(
        sa.select(schema.rate_windows.c.current_count).where(schema.rate_windows.c.key == "org-v")
    )
    assert rows == [(1,)]  # the refused attempt left the window as it was
    again = await combined.admit("org-v", 5, WINDOW, "org-v", 10, expected_version=moved)
    assert again.quota_counted
    assert again.quota_used == 1


@on_postgresql
async def test_with_no_room_at_all_a_moved_version_is_still_reported(
    databases: tuple[Database, Database],
) -> None:
    """A rate limit below one runs no statement; the version is read on its own then."""
    db, other = databases
    version = await db.version()
    moved = await bump_version(other)
    with pytest.raises(StaleConfiguration):
        await admission(db, Clock()).admit(
            "org-n", 0, WINDOW, "org-n", 10, expected_version=version
        )
    refused = await admission(db, Clock()).admit(
        "org-n", 0, WINDOW, "org-n", 10, expected_version=moved
    )
    assert not refused.rate_allowed
