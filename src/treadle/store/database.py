"""The database handle: connections, one writer, and change events after commit.

SQLite (the embedded default) allows one writer at a time. Writes in this process queue on one
lock and open with `BEGIN IMMEDIATE`, so a write never fails half-way on a lock upgrade and
another process (say `treadle stdio` beside `treadle serve`) waits its turn via busy_timeout.
PostgreSQL runs writers side by side; see store/portable.py for how they stay exact.

The hot path's group commits (store/ledger.py) may instead run as one function over a plain
sqlite3 connection (`write_direct`), behind the same lock: no thread hop while no other process
writes, one per transaction when one does, where aiosqlite makes one per statement.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from treadle.clock import now_iso
from treadle.errors import SetupError
from treadle.ids import new_time_ordered_uuid
from treadle.settings import DEFAULT_DATABASE_POOL_SIZE, database_url
from treadle.store import schema
from treadle.store.change_bus import ChangeBus, LocalChanges
from treadle.store.migrations import migrate
from treadle.store.pg_statements import PostgresStatements
from treadle.store.portable import (
    ACTIVITY_SEQUENCE,
    activity_numbers,
    text_from_postgresql,
    text_to_postgresql,
    upsert,
)
from treadle.store.version_probe import VersionProbe

GLOBAL_SCOPE = "*"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A committed configuration change (change events drive resync: treadle.mcp.resync)."""

    org_id: str
    workspace_id: str | None
    target_type: str
    target_id: str
    change: str


ChangeListener = Callable[[ChangeEvent], None]


@dataclass(slots=True)
class WriteTxn:
    conn: AsyncConnection
    actor: str
    events: list[ChangeEvent] = field(default_factory=list)

    async def changed(
        self,
        *,
        org_id: str,
        workspace_id: str | None,
        target_type: str,
        target_id: str,
        change: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record a configuration change: bump versions, log activity, queue the event."""
        # Always `*` first (sorted): concurrent PostgreSQL writers lock version rows in one
        # order, so two of them never wait for each other's rows (a deadlock).
        for scope in sorted({workspace_id or GLOBAL_SCOPE, GLOBAL_SCOPE}):
            await bump_version(self.conn, scope)
        await insert_activity(
            self.conn,
            org_id=org_id,
            workspace_id=workspace_id,
            type="config_change",
            source="rest" if self.actor.startswith("api_key:") else "cli",
            actor=self.actor,
            status="ok",
            target_type=target_type,
            target_id=target_id,
            change=change,
            input=detail,
        )
        self.events.append(ChangeEvent(org_id, workspace_id, target_type, target_id, change))


async def bump_version(conn: AsyncConnection, scope: str) -> None:
    table = schema.config_versions
    # One statement: two writers creating the same scope's row concurrently both count.
    await upsert(
        conn,
        table,
        {"scope": scope, "version": 1},
        keys=["scope"],
        update={"version": table.c.version + 1},
    )


async def insert_activity(conn: AsyncConnection, **values: Any) -> str:
    entry_id = new_time_ordered_uuid()
    await insert_activity_rows(conn, [{"id": entry_id, "created_at": now_iso(), **values}])
    return entry_id


_ACTIVITY_COLUMNS = [c.name for c in schema.activity.c if c.name != "seq"]


@functools.cache  # built once: a statement object costs more to make than to run cached
def numbered_activity_insert() -> sa.Insert:
    """PostgreSQL: an `activity` INSERT whose rows draw their `seq` from the sequence in
    the statement itself (in the order of its rows), for `activity_params` rows."""
    return schema.activity.insert().values(seq=sa.Sequence(ACTIVITY_SEQUENCE).next_value())


def activity_params(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    # executemany needs the same keys in every row.
    return [{c: row.get(c) for c in _ACTIVITY_COLUMNS} for row in rows]


async def insert_activity_rows(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Append `activity` rows (each with its id and created_at), numbered in order."""
    table = schema.activity
    numbers = await activity_numbers(conn, len(rows))
    columns = _ACTIVITY_COLUMNS
    await conn.execute(
        table.insert(),
        [
            {**{c: row.get(c) for c in columns}, "seq": number}
            for row, number in zip(rows, numbers, strict=True)
        ],
    )


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The path of a file-backed SQLite database; None for anything else (other databases,
    in-memory ones, URI filenames with options)."""
    url = engine.url
    if engine.dialect.name != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if url.database.startswith("file:"):
        return None
    return url.database


class NotNow(Exception):
    """A direct transaction that cannot run on the loop right now; nothing was written."""


class DirectSqlite:
    """Plain sqlite3 connections that run whole write transactions, one at a time.

    A transaction is first tried on the caller's thread (the event loop) on a connection
    that never waits for the file's lock: when no other process is writing, a small commit
    in WAL mode with synchronous=NORMAL costs tens of microseconds, less than handing it to
    a worker thread and back. When another process holds the lock (`treadle stdio` beside
    `treadle serve`), that attempt fails at once, before anything is written, and the same
    work runs in a worker thread on a second connection that waits for the lock (busy_timeout),
    so the loop never blocks on another process. WAL checkpoints, which write the database
    file and so take milliseconds, never run on the loop either: the inline connection has
    automatic checkpoints off, and every `CHECKPOINT_EVERY` inline commits the next
    transaction runs in the thread and checkpoints after it."""

    CHECKPOINT_EVERY = 500

    def __init__(self, path: str) -> None:
        self._path = path
        self._inline: sqlite3.Connection | None = None
        self._waiting: sqlite3.Connection | None = None
        self._since_checkpoint = 0

    def _connect(self, *, busy_ms: int, autocheckpoint: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        # As `_configure_sqlite` sets up every SQLAlchemy connection. In WAL mode NORMAL
        # keeps every commit through a process crash (`kill -9`); only power loss may undo
        # the last ones.
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            f"PRAGMA busy_timeout={busy_ms}",
            "PRAGMA foreign_keys=ON",
            *(() if autocheckpoint else ("PRAGMA wal_autocheckpoint=0",)),
        ):
            conn.execute(pragma)
        return conn

    def run_inline(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` here if the lock is free at once; `NotNow` (nothing written) when
        another process is writing or a checkpoint is due."""
        if self._since_checkpoint >= self.CHECKPOINT_EVERY:
            raise NotNow
        if self._inline is None:
            self._inline = self._connect(busy_ms=0, autocheckpoint=False)
        conn = self._inline
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as failed:
            if failed.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise NotNow from None
            raise
        result = self._finish(conn, work, inline=True)
        self._since_checkpoint += 1
        return result

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one `BEGIN IMMEDIATE` transaction and commit it, waiting for the
        file's lock as long as busy_timeout allows (blocking: for a worker thread)."""
        if self._waiting is None:
            self._waiting = self._connect(busy_ms=10000, autocheckpoint=True)
        conn = self._waiting
        conn.execute("BEGIN IMMEDIATE")
        result = self._finish(conn, work, inline=False)
        if self._since_checkpoint >= self.CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return result

    def _finish(
        self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], *, inline: bool
    ) -> T:
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            try:
                if conn.in_transaction:
                    conn.rollback()
            except sqlite3.Error:
                self._drop(inline)  # unusable: the next transaction opens a fresh one
            raise
        return result

    def _drop(self, inline: bool) -> None:
        conn = self._inline if inline else self._waiting
        if conn is not None:
            conn.close()
        if inline:
            self._inline = None
        else:
            self._waiting = None

    def close(self) -> None:
        self._drop(True)
        self._drop(False)


class Database:
    def __init__(self, engine: AsyncEngine, *, pool_size: int = DEFAULT_DATABASE_POOL_SIZE) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # PostgreSQL: single statements outside an explicit transaction (`query`, `write_one`):
        # one round trip each instead of three (BEGIN, the statement, COMMIT/ROLLBACK), on
        # asyncpg directly (store/pg_statements.py).
        self._single = (
            None if self.is_sqlite else PostgresStatements(engine, _text_codecs, pool_size)
        )
        self._write_lock = anyio.Lock()
        self._listeners: list[ChangeListener] = []
        # How changes reach other processes (and theirs this one): chosen by `treadle.app`.
        self.changes: ChangeBus = LocalChanges()
        self._probe = VersionProbe.for_engine(engine)
        path = sqlite_file(engine)
        self._direct = None if path is None else DirectSqlite(path)

    @classmethod
    async def open(cls, url: str, *, pool_size: int = DEFAULT_DATABASE_POOL_SIZE) -> Database:
        engine = create_engine(url, pool_size=pool_size)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, pool_size=pool_size)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
        if self._single is not None:
            await self._single.close()
        if self._direct is not None:
            async with self._write_lock:  # not while a worker thread still uses it
                self._direct.close()
        await self.engine.dispose()

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def deliver(self, change: ChangeEvent) -> None:
        """Tell this process's listeners about a committed change (its own or another's)."""
        for listener in list(self._listeners):
            listener(change)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        # Transactions are shielded from cancellation (see `write`); bodies are only queries.
        with anyio.CancelScope(shield=True):
            async with self.engine.connect() as conn, conn.begin():
                yield conn

    async def query(
        self, statement: sa.Executable, params: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """The rows of one read statement. On PostgreSQL it runs on its own (autocommit): a
        single statement sees one consistent snapshot anyway, and the hot path (the version
        read of every request, quota counts) saves two round trips."""
        if self._single is None:
            async with self.read() as conn:
                return [tuple(row) for row in await conn.execute(statement, params)]
        rows: list[tuple[Any, ...]] = []
        with anyio.CancelScope(shield=True):
            rows = await self._single.run(statement, params)
        return rows

    async def write_one(
        self,
        statement: sa.Executable,
        params: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
    ) -> list[tuple[Any, ...]]:
        """One write statement that needs no transaction around it (it is atomic by itself:
        a conditional upsert, a multi-row insert) and emits no change event; its RETURNING
        rows, if any. SQLite: in a write transaction behind this process's writer lock, as
        every write; PostgreSQL: on its own, one round trip."""
        if self._single is None:
            async with self.write("system") as txn:
                result = await txn.conn.execute(statement, params)
                return [tuple(row) for row in result] if result.returns_rows else []
        rows: list[tuple[Any, ...]] = []
        with anyio.CancelScope(shield=True):
            rows = await self._single.run(statement, params)
        return rows

    @asynccontextmanager
    async def write(self, actor: str) -> AsyncIterator[WriteTxn]:
        # Shielded: cancelling aiosqlite in the middle of a query leaves a connection whose
        # close never finishes (and a half-done transaction); a caller that is cancelled (a
        # client that went away) instead waits the milliseconds its transaction takes.
        with anyio.CancelScope(shield=True):
            async with self._writer_turn(), self.engine.connect() as conn:
                conn = await conn.execution_options(treadle_write=True)
                async with conn.begin():
                    txn = WriteTxn(conn, actor)
                    yield txn
                    if txn.events:  # e.g. NOTIFY: sent if, and when, this commits
                        await self.changes.within(conn, txn.events)
        # Published only after commit: a listener that re-reads sees the new state.
        for change in txn.events:
            self.deliver(change)
        if txn.events:
            await self.changes.committed(txn.events)

    def _writer_turn(self) -> AbstractAsyncContextManager[object]:
        # SQLite has one writer: this process's writes queue here rather than in busy_timeout.
        # PostgreSQL writers run side by side; what must serialise, serialises in the
        # database (store/portable.py), across every process alike.
        return self._write_lock if self.is_sqlite else nullcontext()

    @property
    def writes_directly(self) -> bool:
        """Whether `write_direct` is available (a file-backed SQLite database)."""
        return self._direct is not None

    async def write_direct(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction of a plain sqlite3 connection (`DirectSqlite`:
        on the loop when the file's lock is free, else in a worker thread), queued with this
        process's other writes. No change events: for the
        execution ledger, which changes no configuration."""
        assert self._direct is not None, "write_direct needs a file-backed SQLite database"
        # Shielded like `write`: a transaction once started finishes (the thread cannot be
        # stopped half-way anyway), and the lock is only let go after it.
        with anyio.CancelScope(shield=True):
            async with self._write_lock:
                try:
                    result = self._direct.run_inline(work)
                except NotNow:
                    result = await anyio.to_thread.run_sync(self._direct.transaction, work)
        return result

    async def config_version(self) -> int:
        """The global configuration version, as every process's commits have left it.

        Called on every request to validate in-memory configuration caches, so on SQLite it
        is read synchronously through `VersionProbe` (microseconds, no thread hop); where the
        probe cannot answer it is an ordinary read."""
        if self._probe is not None:
            found = self._probe.read()
            if found is not None:
                return found
        return await self.version(GLOBAL_SCOPE)

    async def version(self, scope: str = GLOBAL_SCOPE) -> int:
        rows = await self.query(_version_query(), {"scope": scope})
        return int(rows[0][0]) if rows else 0

    async def config_version_beside(
        self, statement: sa.Select[Any], params: dict[str, Any]
    ) -> tuple[int, tuple[Any, ...]] | None:
        """The global configuration version and the rest of `statement`'s one row, read
        together: `statement` is `version_beside(...)`'s. One round trip where there would
        be two, so only where reads are round trips (PostgreSQL); None on SQLite, whose
        version probe reads without one (the caller reads each on its own there)."""
        if self._single is None:
            return None
        rows = await self.query(statement, {"scope": GLOBAL_SCOPE, **params})
        version, *rest = rows[0]
        return int(version or 0), tuple(rest)


def version_beside(*columns: sa.ScalarSelect[Any]) -> sa.Select[Any]:
    """One row: the global configuration version, then `columns` (scalar subqueries), for
    `Database.config_version_beside`. Build it once: statements are compiled per object."""
    return sa.select(_version_query().scalar_subquery(), *columns)


@functools.cache  # built once: read on every request
def _version_query() -> sa.Select[tuple[int]]:
    table = schema.config_versions
    return sa.select(table.c.version).where(table.c.scope == sa.bindparam("scope"))


def create_engine(url: str, *, pool_size: int = DEFAULT_DATABASE_POOL_SIZE) -> AsyncEngine:
    """An engine for `url`, set up for its database (SQLite or PostgreSQL via asyncpg)."""
    url = database_url(url)
    try:
        engine = create_async_engine(url, **_engine_options(url, pool_size))
    except ImportError as missing:
        if url.startswith("postgresql"):
            raise SetupError(
                'PostgreSQL needs the asyncpg driver: pip install "treadle[postgres]"'
            ) from missing
        raise
    except sa.exc.ArgumentError as error:
        raise SetupError(f"TREADLE_DATABASE_URL is not a database URL ({error})") from error
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    else:
        _configure_postgresql(engine)
    return engine


def _engine_options(url: str, pool_size: int) -> dict[str, Any]:
    if not url.startswith("postgresql"):
        return {}
    # Writers do not queue in the process on PostgreSQL (see `Database._writer_turn`), so a
    # burst of calls holds more connections at once than SQLite's one writer and its readers.
    return {"pool_size": pool_size, "max_overflow": 2 * pool_size}


def _configure_postgresql(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Every text value, bound or read, through the NUL-keeping escape (store/portable.py).
        dbapi_connection.run_async(_text_codecs)


async def _text_codecs(conn: Any) -> None:
    for name in ("text", "varchar"):
        await conn.set_type_codec(
            name,
            schema="pg_catalog",
            encoder=text_to_postgresql,
            decoder=text_from_postgresql,
            format="text",
        )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" hook below emit BEGIN itself (pysqlite's own is too late).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # busy_timeout first: switching a new file to WAL needs a lock another process
        # starting at the same moment may hold.
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        writing = conn.get_execution_options().get("treadle_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")
