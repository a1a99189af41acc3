"""Small counters and key/value state that actions and limiters keep in the database."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from treadle.clock import now_iso
from treadle.store import schema
from treadle.store.database import Database, WriteTxn
from treadle.store.portable import serialise, starts_with, upsert


class KeyValueNamespace:
    """One namespace of `kv_entries`; implements `treadle.catalog.StateStore`."""

    def __init__(self, db: Database, namespace: str, actor: str) -> None:
        self._db = db
        self._namespace = namespace
        self._actor = actor

    def _key(self, key: str) -> sa.ColumnElement[bool]:
        table = schema.kv_entries
        return sa.and_(table.c.namespace == self._namespace, table.c.key == key)

    async def get(self, key: str) -> Any | None:
        async with self._db.read() as conn:
            found = await conn.execute(sa.select(schema.kv_entries.c.value).where(self._key(key)))
            return found.scalar()

    async def put(self, key: str, value: Any) -> None:
        # JSON null is a value to keep (`update` reads None as "delete"). JSONText would bind
        # None as SQL NULL, so write the JSON text itself.
        stored = sa.literal("null", sa.Text) if value is None else value
        now = now_iso()
        async with self._db.write(self._actor) as txn:
            await upsert(
                txn.conn,
                schema.kv_entries,
                {"namespace": self._namespace, "key": key, "value": stored, "updated_at": now},
                keys=["namespace", "key"],
                update={"value": stored, "updated_at": now},
            )

    async def delete(self, key: str) -> bool:
        async with self._db.write(self._actor) as txn:
            gone = await txn.conn.execute(schema.kv_entries.delete().where(self._key(key)))
            return gone.rowcount > 0

    async def list_keys(self, prefix: str | None, limit: int) -> list[str]:
        table = schema.kv_entries
        query = sa.select(table.c.key).where(table.c.namespace == self._namespace)
        if prefix:
            query = query.where(starts_with(table.c.key, prefix))
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.key).limit(limit))
            return list(rows.scalars())

    async def update(self, key: str, change: Callable[[Any | None], Any | None]) -> Any | None:
        table = schema.kv_entries
        async with self._db.write(self._actor) as txn:
            # Read-modify-write: concurrent updates of one key (in any process) take turns,
            # so none is lost, also while the row does not exist yet.
            await serialise(txn.conn, "kv", self._namespace, key)
            row = (await txn.conn.execute(sa.select(table.c.value).where(self._key(key)))).first()
            # A stored JSON null reads as None too, so the row (not the value) says "missing".
            old = None if row is None else row.value
            new = change(old)
            if new is None:
                await txn.conn.execute(table.delete().where(self._key(key)))
            elif row is None:
                await txn.conn.execute(
                    table.insert().values(
                        namespace=self._namespace, key=key, value=new, updated_at=now_iso()
                    )
                )
            else:
                await txn.conn.execute(
                    table.update().where(self._key(key)).values(value=new, updated_at=now_iso())
                )
            return new


class UsageCounters:
    """Monthly execution counts per org, shared by every process on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def reserve(self, org_id: str, period: str, limit: int) -> tuple[bool, int]:
        """Count one execution if under `limit`. Returns (counted, count before this call).

        The check and the count are one conditional upsert (`… DO UPDATE … WHERE count <
        limit RETURNING count`): concurrent reservations from any process are granted exactly
        up to the limit, never one more (PostgreSQL re-checks the condition on the row it
        locked), and on PostgreSQL it is a single round trip."""
        if limit >= 1:
            counted = await self._db.write_one(
                _reserve_statement(self._db.is_sqlite),
                {"org_id": org_id, "period": period, "limit": limit},
            )
            if counted:
                return True, int(counted[0][0]) - 1
        return False, await self.current(org_id, period)

    async def add(self, txn: WriteTxn, org_id: str, period: str, added: int) -> None:
        """Count `added` more executions, with no limit (the caller has checked)."""
        table = schema.usage_counters
        await upsert(
            txn.conn,
            table,
            {"org_id": org_id, "period": period, "count": added},
            keys=["org_id", "period"],
            update={"count": table.c.count + added},
        )

    async def current(self, org_id: str, period: str) -> int:
        rows = await self._db.query(
            sa.select(schema.usage_counters.c.count).where(_period(org_id, period))
        )
        return int(rows[0][0]) if rows else 0

    @staticmethod
    async def count_in(conn: AsyncConnection, org_id: str, period: str) -> int:
        found = await conn.execute(
            sa.select(schema.usage_counters.c.count).where(_period(org_id, period))
        )
        return int(found.scalar() or 0)


@functools.cache  # one per dialect, built once (on every call otherwise)
def _reserve_statement(on_sqlite: bool) -> sa.Insert:
    table = schema.usage_counters
    build = sqlite.insert if on_sqlite else postgresql.insert
    return (
        build(table)
        .values(org_id=sa.bindparam("org_id"), period=sa.bindparam("period"), count=1)
        .on_conflict_do_update(
            index_elements=[table.c.org_id, table.c.period],
            set_={"count": table.c.count + 1},
            where=table.c.count < sa.bindparam("limit"),
        )
        .returning(table.c.count)
    )


def _period(org_id: str, period: str) -> sa.ColumnElement[bool]:
    table = schema.usage_counters
    return sa.and_(table.c.org_id == org_id, table.c.period == period)
