"""The ledger's plain-sqlite3 commits (store/database.py `DirectSqlite`): on the loop while
the file's lock is free, in a worker thread when another process holds it, and WAL
checkpoints never on the loop yet never forgotten.

These drive the SQLite file itself (a second sqlite3 connection plays the other process),
so they run on SQLite only; on PostgreSQL the ledger commits through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from treadle.store.database import DirectSqlite, NotNow

from databases import only_on_sqlite

pytestmark = [
    pytest.mark.anyio,
    only_on_sqlite("drives the SQLite file directly with a second sqlite3 connection"),
]


def _database(tmp_path: Path) -> str:
    path = str(tmp_path / "direct.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.close()
    return path


def _insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def work(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (n) VALUES (?)", (value,))
        return threading.get_ident()

    return work


def _count(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()


def test_a_free_lock_commits_on_the_callers_thread(tmp_path: Path) -> None:
    path = _database(tmp_path)
    direct = DirectSqlite(path)
    try:
        ran_on = direct.run_inline(_insert(1))
        assert ran_on == threading.get_ident()
        assert _count(path) == 1  # committed: another connection sees it
    finally:
        direct.close()


def test_a_lock_held_elsewhere_refuses_inline_at_once_and_writes_nothing(tmp_path: Path) -> None:
    path = _database(tmp_path)
    other = sqlite3.connect(path, isolation_level=None)
    direct = DirectSqlite(path)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(NotNow):
            direct.run_inline(_insert(1))
        other.execute("COMMIT")
        assert _count(path) == 0
        direct.run_inline(_insert(2))
        assert _count(path) == 1
    finally:
        other.close()
        direct.close()


async def test_write_direct_waits_in_a_thread_behind_another_writer(tmp_path: Path) -> None:
    """Through `Database.write_direct`: while another connection holds the lock the loop
    stays free (a task keeps running) and the write lands once the lock is let go."""
    from treadle.store.database import Database, create_engine

    path = _database(tmp_path)
    db = Database(create_engine(f"sqlite+aiosqlite:///{path}"))
    other = sqlite3.connect(path, isolation_level=None)
    ticks = 0
    try:
        other.execute("BEGIN IMMEDIATE")
        async with anyio.create_task_group() as tg:
            ran_on: list[int] = []

            async def write() -> None:
                ran_on.append(await db.write_direct(_insert(7)))

            tg.start_soon(write)
            with anyio.fail_after(10):
                while ticks < 20:  # the loop runs while the write waits
                    ticks += 1
                    await anyio.lowlevel.checkpoint()
            assert not ran_on
            other.execute("COMMIT")
        assert ran_on
        assert ran_on[0] != threading.get_ident()
        assert _count(path) == 1
    finally:
        other.close()
        await db.close()


def _wal_bytes(path: str) -> int:
    wal = Path(path + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_checkpoints_run_in_the_thread_path_every_so_often(tmp_path: Path) -> None:
    """Inline commits never checkpoint; after CHECKPOINT_EVERY of them the next one is
    refused inline, and the waiting path commits and checkpoints, so the WAL stops growing."""
    unchecked_path = _database(tmp_path)
    unchecked = DirectSqlite(unchecked_path)
    unchecked.CHECKPOINT_EVERY = 10**9
    checked_path = str(tmp_path / "b.db")
    Path(checked_path).write_bytes(Path(unchecked_path).read_bytes())
    checked = DirectSqlite(checked_path)
    checked.CHECKPOINT_EVERY = 20
    try:
        for value in range(300):
            unchecked.run_inline(_insert(value))
            try:
                checked.run_inline(_insert(value))
            except NotNow:
                checked.transaction(_insert(value))
        assert _count(checked_path) == 300 == _count(unchecked_path)
        assert _wal_bytes(checked_path) * 4 < _wal_bytes(unchecked_path)
    finally:
        unchecked.close()
        checked.close()
