"""Single statements on PostgreSQL straight through asyncpg: the hot path's round trips.

Every call reads the configuration version, counts a rate-limit hit and a quota unit, and
writes its activity record: four single statements that need no transaction around them
(`Database.query`, `Database.write_one`). Through SQLAlchemy's asyncio layer each costs a pool
checkout, a greenlet switch, a compiled-cache lookup and parameter processing, several times
the round trip itself on a loaded 2-core machine. Here they run on a small asyncpg pool of
their own instead:

- each statement object is compiled once (SQLAlchemy's own SQL for asyncpg, so the text is
  the one the ORM path would send) and prepared once per connection (asyncpg's cache);
- a connection goes back to a plain stack of them (`_Connections`) as it is, without the
  reset query (a round trip) or the bookkeeping of `asyncpg.Pool`: these statements run in
  autocommit and leave no transaction, listener or session setting behind;
- parameters and rows pass through the columns' own bind and result processors, and text
  through the NUL-keeping codec (store/portable.py) every PostgreSQL connection carries.

A statement is atomic by itself, as before; nothing else changes but the path to the server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from treadle.store.outage import DatabaseUnreachable

# Statements built once and reused (the hot path's) are kept compiled. Ones built per call
# add entries never used again; past this many the cache starts afresh (and the reused
# statements are compiled once more).
MAX_COMPILED = 256

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Compiled:
    statement: sa.Executable  # held so that its id() names it for as long as this entry lives
    sql: str
    compiled: Any  # sqlalchemy.sql.compiler.SQLCompiler
    names: tuple[str, ...]
    binds: tuple[Callable[[Any], Any] | None, ...]
    results: tuple[Callable[[Any], Any] | None, ...]

    # The values the statement itself carries (literals, `x == "*"`), by bind name; None
    # when its bind names are escaped forms of the parameters' keys (then SQLAlchemy maps).
    constants: dict[str, Any] | None

    def positional(self, params: dict[str, Any] | None) -> list[Any]:
        given = params or {}
        if self.constants is None:
            values = self.compiled.construct_params(params)
        else:
            # construct_params' answer, without its per-call walk over every bind.
            values = self.constants if not given else {**self.constants, **given}
        return [
            value if bind is None else bind(value)
            for value, bind in zip(map(values.__getitem__, self.names), self.binds, strict=True)
        ]

    def row(self, record: Any) -> Row:
        if not any(self.results):
            return tuple(record)
        return tuple(
            value if result is None else result(value)
            for value, result in zip(record, self.results, strict=True)
        )


class _Connections:
    """A LIFO stack of at most `size` asyncpg connections, for single autocommit statements.

    Lighter than `asyncpg.Pool` (about 0.1 ms of CPU less per statement here: no holder
    objects, timeouts or reset query): a statement leaves nothing to reset, so a connection
    goes back as it is. One that failed other than by the server's refusal of the
    statement (a lost connection, an interrupted protocol) is closed instead of returned."""

    def __init__(self, dsn: str, init: Callable[[Any], Any], size: int) -> None:
        self._dsn = dsn
        self._init = init
        self._size = size
        self._idle: list[Any] = []
        self._open = 0  # connections that exist: idle, in use, or being opened
        self._freed = anyio.Event()
        self._waiting = 0  # callers waiting for a connection to come back
        self._closed = False

    async def take(self) -> Any:
        while not self._idle:
            if self._closed:
                raise RuntimeError("the database handle is closed")
            if self._open < self._size:
                self._open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            self._waiting += 1
            try:
                await self._freed.wait()
            finally:
                self._waiting -= 1
        conn = self._idle.pop()
        if conn.is_closed():
            # Lost while idle (the server restarted or failed over, the network dropped):
            # asyncpg noticed when the socket closed. Sending on it could only fail, so it
            # is replaced before anything is sent, as SQLAlchemy's pool invalidates its own.
            self._open -= 1
            conn.terminate()
            return await self.take()
        return conn

    def give_back(self, conn: Any, failure: BaseException | None) -> None:
        import asyncpg  # type: ignore[import-untyped]  # ships no type hints

        if (
            self._closed
            or conn.is_closed()
            or not (failure is None or isinstance(failure, asyncpg.PostgresError))
        ):
            self._open -= 1
            conn.terminate()
        else:
            self._idle.append(conn)
        self._wake()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            try:
                await conn.close(timeout=5)
            except Exception:  # closing anyway: a connection that cannot say goodbye
                conn.terminate()
        if self._waiting:
            freed, self._freed = self._freed, anyio.Event()
            freed.set()

    def _wake(self) -> None:
        if self._waiting:
            freed, self._freed = self._freed, anyio.Event()
            freed.set()

    async def _connect(self) -> Any:
        import asyncpg

        try:
            conn = await asyncpg.connect(self._dsn)
        except OSError as error:  # refused, unreachable, reset: the socket's, not a query's
            raise DatabaseUnreachable(type(error).__name__) from error
        try:
            await self._init(conn)
        except BaseException:
            conn.terminate()
            raise
        return conn


class PostgresStatements:
    def __init__(self, engine: AsyncEngine, init: Callable[[Any], Any], pool_size: int) -> None:
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._dialect: Dialect = engine.dialect
        self._connections = _Connections(self._dsn, init, pool_size)
        self._compiled: dict[tuple[int, tuple[str, ...]], _Compiled] = {}

    async def run(
        self,
        statement: sa.Executable,
        params: dict[str, Any] | Sequence[dict[str, Any]] | None,
    ) -> list[Row]:
        """The statement's rows (RETURNING's, for a write); a list of parameter sets runs
        it once per set, in one round trip and one implicit transaction."""
        if isinstance(params, Sequence) and not params:
            return []
        first = params[0] if isinstance(params, Sequence) else params
        compiled = self._compile(statement, first)
        many = [compiled.positional(p) for p in params] if isinstance(params, Sequence) else None
        args = compiled.positional(first) if many is None else []
        conn = await self._connections.take()
        failure: BaseException | None = None
        try:
            if many is not None:
                await conn.executemany(compiled.sql, many)
                return []
            records = await conn.fetch(compiled.sql, *args)
        except BaseException as failed:
            failure = failed
            raise
        finally:
            self._connections.give_back(conn, failure)
        return [compiled.row(record) for record in records]

    async def close(self) -> None:
        await self._connections.close()

    def _compile(self, statement: sa.Executable, params: dict[str, Any] | None) -> _Compiled:
        # An INSERT's columns are those of its parameters, so they are part of the key.
        keys = tuple(params) if params else ()
        found = self._compiled.get((id(statement), keys))
        if found is not None and found.statement is statement:
            return found
        compiled: Any = statement.compile(  # type: ignore[attr-defined]
            dialect=self._dialect, column_keys=list(keys) or None
        )
        processors = compiled._bind_processors
        names = tuple(compiled.positiontup or ())
        results = tuple(
            column[3]._cached_result_processor(self._dialect, None)
            for column in compiled._result_columns
        )
        constants = None if compiled.escaped_bind_names else compiled.construct_params(_check=False)
        entry = _Compiled(
            statement,
            compiled.string,
            compiled,
            names,
            tuple(processors.get(name) for name in names),
            results,
            constants,
        )
        if len(self._compiled) >= MAX_COMPILED:
            self._compiled.clear()
        self._compiled[(id(statement), keys)] = entry
        return entry
