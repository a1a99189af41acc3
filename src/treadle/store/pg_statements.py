"""Single statements on PostgreSQL straight through asyncpg: the hot path's round trips.

Every call reads the configuration version, counts a rate-limit hit and a quota unit, and
writes its activity record: four single statements that need no transaction around them
(`Database.query`, `Database.write_one`). Through SQLAlchemy's asyncio layer each costs a pool
checkout, a greenlet switch, a compiled-cache lookup and parameter processing, several times
the round trip itself on a loaded 2-core machine. Here they run on a small asyncpg pool of
their own instead:

- each statement object is compiled once (SQLAlchemy's own SQL for asyncpg, so the text is
  the one the ORM path would send) and prepared once per connection (asyncpg's cache);
- a connection returns to the pool without asyncpg's reset query (a round trip per use):
  these statements run in autocommit, leave no transaction, listener or session setting;
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

# Statements built once and reused (the hot path's) are kept compiled. Ones built per call
# add entries never used again; past this many the cache starts afresh (and the reused
# statements are compiled once more).
MAX_COMPILED = 256
POOL_SIZE = 10

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


async def _no_reset(_conn: Any) -> None:
    """Nothing to undo between uses (autocommit statements only): no reset round trip."""


class PostgresStatements:
    def __init__(self, engine: AsyncEngine, init: Callable[[Any], Any]) -> None:
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._dialect: Dialect = engine.dialect
        self._init = init
        self._pool: Any = None  # asyncpg.Pool (asyncpg ships no type hints)
        self._opening = anyio.Lock()
        self._compiled: dict[tuple[int, tuple[str, ...]], _Compiled] = {}

    async def run(
        self,
        statement: sa.Executable,
        params: dict[str, Any] | Sequence[dict[str, Any]] | None,
    ) -> list[Row]:
        """The statement's rows (RETURNING's, for a write); a list of parameter sets runs
        it once per set, in one round trip and one implicit transaction."""
        pool = self._pool if self._pool is not None else await self._open()
        if isinstance(params, Sequence):
            if not params:
                return []
            compiled = self._compile(statement, params[0])
            rows = [compiled.positional(one) for one in params]
            async with pool.acquire() as conn:
                await conn.executemany(compiled.sql, rows)
            return []
        compiled = self._compile(statement, params)
        records = await pool.fetch(compiled.sql, *compiled.positional(params))
        return [compiled.row(record) for record in records]

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

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

    async def _open(self) -> Any:
        async with self._opening:
            if self._pool is None:
                import asyncpg  # type: ignore[import-untyped]  # ships no type hints

                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=POOL_SIZE,
                    init=self._init,
                    reset=_no_reset,
                )
        return self._pool
