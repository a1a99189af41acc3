"""PostgreSQL's single statements on their own asyncpg connections (store/pg_statements.py):
bounded, reused, and a connection the server dropped is replaced, not handed out again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa

from treadle.settings import DEFAULT_DATABASE_POOL_SIZE as POOL_SIZE
from treadle.store import Database

from databases import ON_POSTGRESQL, database_url, drop

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not ON_POSTGRESQL, reason="PostgreSQL only: SQLite has no such path"),
]

_PID = sa.select(sa.func.pg_backend_pid())


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    opened = await Database.open(database_url(data_dir))
    try:
        yield opened
    finally:
        await opened.close()
        drop(data_dir)


async def concurrent_pids(db: Database, count: int) -> list[int]:
    """The backend each of `count` concurrent statements ran on; pg_sleep keeps each
    statement's connection busy while the others ask for one."""
    pids: list[int] = []

    async def one() -> None:
        rows = await db.query(sa.select(sa.func.pg_backend_pid(), sa.func.pg_sleep(0.01)))
        pids.append(int(rows[0][0]))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
    return pids


async def test_the_pool_size_setting_bounds_the_statements_connections(tmp_path: Path) -> None:
    """TREADLE_DATABASE_POOL_SIZE (Settings.database_pool_size) reaches the statements' stack."""
    data_dir = tmp_path / "small"
    data_dir.mkdir()
    small = await Database.open(database_url(data_dir), pool_size=2)
    try:
        pids = await concurrent_pids(small, 8)
        assert len(pids) == 8
        assert len(set(pids)) == 2
    finally:
        await small.close()
        drop(data_dir)


async def test_statements_reuse_a_bounded_set_of_connections(db: Database) -> None:
    pids = await concurrent_pids(db, POOL_SIZE * 3)
    assert len(pids) == POOL_SIZE * 3
    assert 1 < len(set(pids)) <= POOL_SIZE
    # One at a time, the most recently returned connection serves again.
    first = (await db.query(_PID))[0][0]
    assert (await db.query(_PID))[0][0] == first


async def test_a_connection_the_server_ended_is_replaced(db: Database) -> None:
    (pid,) = (await db.query(_PID))[0]
    async with db.read() as conn:  # another connection (SQLAlchemy's) ends that backend
        await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append((await db.query(_PID))[0][0])
        except Exception as failure:  # at most the one statement that met the dead socket
            outcomes.append(type(failure).__name__)
    answered = [o for o in outcomes if isinstance(o, int)]
    assert len(answered) >= 2
    assert pid not in answered


async def test_a_refused_statement_leaves_its_connection_usable(db: Database) -> None:
    (pid,) = (await db.query(_PID))[0]
    with pytest.raises(asyncpg.DivisionByZeroError):
        await db.query(sa.text("SELECT 1 / 0"))
    assert (await db.query(_PID))[0][0] == pid
