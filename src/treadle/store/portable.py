"""Where SQLite and PostgreSQL differ, answered once for every repository.

SQLite (the embedded default) has one writer at a time: a write transaction opens with
`BEGIN IMMEDIATE` and holds the database's only write lock until it ends, so a repository's
"read, decide, write" is exact across every process sharing the file. PostgreSQL runs write
transactions side by side (READ COMMITTED), from any number of replicas. The same repository
code stays exact there because it

- takes a named lock (`serialise`) before it reads what it is about to decide, wherever a
  decision spans statements (a duplicate check before an insert, a read-modify-write);
- writes counters and "insert or replace" rows as one statement (`upsert`);
- numbers the activity log from a database sequence (`activity_numbers`).

Text columns are byte-wise on both (SQLite's BINARY collation; `COLLATE "C"` on PostgreSQL,
see `migrations.py`), and prefixes match as ranges (`starts_with`), so ordering and prefix
matching never depend on the database's locale.

PostgreSQL text cannot hold NUL, which SQLite text (and a kv-store key, "any text") can. The
PostgreSQL connections therefore carry text through `text_to_postgresql` and back through
`text_from_postgresql`: NUL becomes U+0001 U+0001 and U+0001 becomes U+0001 U+0002. That
escape keeps every string distinct and keeps their byte order and prefixes, so a NUL is
stored, found, sorted and prefix-matched like any other character, and a lookup of an id
holding one finds nothing instead of failing. Strings without NUL or U+0001 (every id and
name treadle issues) pass unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from treadle.store import schema

POSTGRESQL = "postgresql"

# The sequence that numbers `activity.seq` on PostgreSQL (created by the first migration).
ACTIVITY_SEQUENCE = "activity_seq_numbers"

# Separates the parts of a lock name; text that never occurs in IDs or keys we lock on.
_KEY_SEPARATOR = "\x1f"


def on_postgresql(conn: AsyncConnection) -> bool:
    return conn.dialect.name == POSTGRESQL


async def serialise(conn: AsyncConnection, *name: str) -> None:
    """Hold the lock called `name` until this write transaction ends.

    Two transactions that serialise on the same name run one after the other, in every
    process on the database. On PostgreSQL this is a transaction-scoped advisory lock on a
    64-bit hash of the name (a collision only makes two unrelated names wait for each
    other); on SQLite it is a no-op, because the write transaction already holds the only
    write lock there is."""
    if on_postgresql(conn):
        await conn.execute(
            # (The name is text like any other: a NUL in a key reaches the server escaped.)
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
            {"name": _KEY_SEPARATOR.join(name)},
        )


async def upsert(
    conn: AsyncConnection,
    table: sa.Table,
    values: Mapping[str, Any],
    *,
    keys: Sequence[str],
    update: Mapping[str, Any] | None = None,
) -> None:
    """Insert `values`, or, when a row with the same `keys` exists, apply `update` to it
    (nothing, without `update`). One statement: atomic on both databases.

    In `update`, a column of `table` (e.g. `table.c.count + 1`) means the existing row's."""
    build = postgresql.insert if on_postgresql(conn) else sqlite.insert
    statement = build(table).values(**values)
    if update is None:
        await conn.execute(statement.on_conflict_do_nothing(index_elements=list(keys)))
    else:
        await conn.execute(
            statement.on_conflict_do_update(index_elements=list(keys), set_=dict(update))
        )


async def activity_numbers(conn: AsyncConnection, count: int) -> list[int]:
    """`count` new, increasing `activity.seq` numbers for rows this transaction inserts."""
    if count <= 0:
        return []
    if on_postgresql(conn):
        # Concurrent writers each draw their own numbers; no two rows ever share one.
        numbers = sa.select(sa.Sequence(ACTIVITY_SEQUENCE).next_value()).select_from(
            sa.func.generate_series(1, count)
        )
        drawn = await conn.execute(numbers)
        return sorted(int(number) for number in drawn.scalars())
    # SQLite: the write transaction keeps every other writer out until it commits.
    top = await conn.execute(sa.select(sa.func.coalesce(sa.func.max(schema.activity.c.seq), 0)))
    first = int(top.scalar() or 0) + 1
    return list(range(first, first + count))


def starts_with(column: sa.ColumnElement[str], prefix: str) -> sa.ColumnElement[bool]:
    """`column` begins with `prefix`, as a byte-wise range: an index serves it, and `%` or
    `_` in the prefix are plain characters (unlike LIKE)."""
    lower = column >= prefix
    upper = _successor(prefix)
    return lower if upper is None else sa.and_(lower, column < upper)


# A prefix code ordered like the characters it stands for (U+0000 < U+0001 < U+0002 …), so
# comparing escaped strings gives the order of the originals.
_ESCAPE = "\x01"
_ESCAPED = re.compile("\x01([\x01\x02])")


def text_to_postgresql(value: str) -> str:
    if "\x00" not in value and _ESCAPE not in value:
        return value
    return value.replace(_ESCAPE, "\x01\x02").replace("\x00", "\x01\x01")


def text_from_postgresql(value: str) -> str:
    if _ESCAPE not in value:
        return value
    return _ESCAPED.sub(lambda found: "\x00" if found[1] == "\x01" else "\x01", value)


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix` (code point
    order, which is UTF-8 byte order); None when there is none (empty, or all U+10FFFF)."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    following = ord(stripped[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:
        following = 0xE000  # surrogates are not characters UTF-8 can hold
    return stripped[:-1] + chr(following)
