"""Which database the tests run on: a SQLite file per data dir (the default), or, with
`TREADLE_TEST_DATABASE=postgresql`, a fresh PostgreSQL database per data dir.

A PostgreSQL test database gets a unique name (parallel-safe under pytest-xdist) and is
dropped when its test ends (`drop`) or, for session-wide data dirs, when the session ends
(`drop_all`). It is a copy of a template this process migrated once with the product's own
migrations (`CREATE DATABASE … TEMPLATE`: a gateway opening it finds nothing to apply), or
an empty one for tests of the migrations themselves. Databases use an ICU `en-US` collation
where the server has one, so a query whose ordering or prefix matching followed the locale
instead of bytes shows up.

The server is `TREADLE_TEST_POSTGRES_URL` (default: local, user postgres, trust auth).
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from treadle.settings import sqlite_url

T = TypeVar("T")

BACKEND = os.environ.get("TREADLE_TEST_DATABASE", "sqlite").strip().lower() or "sqlite"
if BACKEND not in ("sqlite", "postgresql"):
    raise RuntimeError(f"TREADLE_TEST_DATABASE must be sqlite or postgresql, not {BACKEND!r}")
ON_POSTGRESQL = BACKEND == "postgresql"

SERVER_URL = os.environ.get("TREADLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def only_on_sqlite(reason: str) -> pytest.MarkDecorator:
    """Skip on PostgreSQL runs: the test is about SQLite itself (its file, its locks)."""
    return pytest.mark.skipif(ON_POSTGRESQL, reason=f"SQLite only: {reason}")


_created: dict[Path, str] = {}  # data dir → its database's name
_lock = threading.RLock()
_template: str | None = None  # this process's migrated template database
_icu: bool | None = None  # whether the server can create ICU databases (asked once)
# Creating a database takes most of a second on a busy machine: one thread creates the next
# migrated database while a test runs, another drops those of finished tests.
_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-database-create")
_dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-database-drop")
_spare: Future[str] | None = None
_dropping: list[Future[None]] = []


def database_url(data_dir: Path, *, migrated: bool = True) -> str:
    """The database URL for `data_dir`; the same URL every time it is asked for the same
    data dir (so a subprocess and this process share it). `migrated=False`: the database
    starts empty (the first ask decides)."""
    if not ON_POSTGRESQL:
        return sqlite_url(data_dir / "treadle.db")
    global _spare
    key = data_dir.resolve()
    with _lock:
        name = _created.get(key)
        if name is None:
            if migrated:
                template = _migrated_template()
                spare, _spare = _spare, _worker.submit(_new_database, template)
                name = spare.result() if spare is not None else _new_database(template)
            else:
                name = _new_database(None)
            _created[key] = name
    return _url(name)


def database_env(data_dir: Path) -> dict[str, str]:
    """Environment for a `treadle` subprocess on `data_dir`, so it opens the same database."""
    return {"TREADLE_DATABASE_URL": database_url(data_dir)} if ON_POSTGRESQL else {}


def clone(source: Path, target: Path) -> None:
    """Give `target` a copy of `source`'s database. On SQLite the file lives in the data
    dir, which the caller copies; on PostgreSQL nothing may be connected to `source`'s
    database meanwhile."""
    if not ON_POSTGRESQL:
        return
    with _lock:
        _created[target.resolve()] = _new_database(_created[source.resolve()])


def drop(data_dir: Path) -> None:
    """Drop `data_dir`'s database (PostgreSQL), even if connections are still open to it."""
    with _lock:
        name = _created.pop(data_dir.resolve(), None)
        if name is not None:
            _dropping.append(_dropper.submit(_blocking, _drop(name)))


def drop_all() -> None:
    """Drop every database this process created, and wait until they are gone."""
    global _template, _spare
    for data_dir in list(_created):
        drop(data_dir)
    with _lock:
        spare, _spare = _spare, None
        template, _template = _template, None
        if spare is not None:
            _blocking(_drop(spare.result()))
        if template is not None:
            _blocking(_drop(template))
        for dropped in _dropping:
            dropped.result()
        _dropping.clear()


async def rows_of_every_table(
    engine: AsyncEngine, skip: tuple[str, ...] = ()
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, each table's rows in a fixed order (for before/after
    comparisons of a whole database)."""
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for name in names:
            if name not in skip:
                found = await conn.execute(sa.select(sa.text("*")).select_from(sa.table(name)))
                rows[name] = sorted((tuple(row) for row in found), key=repr)
    return rows


def _migrated_template() -> str:
    global _template
    with _lock:
        if _template is None:
            name = _new_database(None)
            _run(_migrate(_url(name)))
            _template = name
        return _template


def _new_database(template: str | None) -> str:
    name = f"treadle_test_{uuid.uuid4().hex}"
    _run(_create(name, template))
    return name


def _url(name: str) -> str:
    return f"postgresql+asyncpg://{SERVER_URL.split('://', 1)[1]}/{name}"


async def _create(name: str, template: str | None) -> None:
    if template is None:
        await _create_empty(name)
    else:
        await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    # Commits need not wait for the disk in tests: no behaviour depends on it, and tests
    # commit often. (A setting of this database only; the server's stays as it is.)
    await _admin(f'ALTER DATABASE "{name}" SET synchronous_commit TO off')


async def _create_empty(name: str) -> None:
    global _icu
    if _icu is not False:
        try:
            await _admin(
                f'CREATE DATABASE "{name}" TEMPLATE template0'
                " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
        except Exception:
            if _icu:
                raise
            _icu = False  # a server built without ICU: its default collation, then
        else:
            _icu = True
            return
    await _admin(f'CREATE DATABASE "{name}"')


async def _drop(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str) -> None:
    from treadle.store.database import create_engine
    from treadle.store.migrations import migrate

    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def _admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{SERVER_URL}/postgres")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _blocking(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to completion on an event loop of its own thread: callers may be sync
    fixtures or code already inside the test's event loop."""
    outcome: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            outcome.append((True, asyncio.run(work)))
        except BaseException as error:
            outcome.append((False, error))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result
