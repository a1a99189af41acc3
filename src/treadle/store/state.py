"""Small counters and key/value state that actions and limiters keep in the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from treadle.clock import now_iso
from treadle.store import schema
from treadle.store.database import Database, WriteTxn


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
        if value is not None:
            await self.update(key, lambda _old: value)
            return
        # JSON null is a value to keep (`update` reads None as "delete"). JSONText would bind
        # None as SQL NULL, so write the JSON text itself.
        table = schema.kv_entries
        null = sa.literal("null", sa.Text)
        async with self._db.write(self._actor) as txn:
            found = await txn.conn.execute(sa.select(table.c.key).where(self._key(key)))
            if found.first() is None:
                await txn.conn.execute(
                    table.insert().values(
                        namespace=self._namespace, key=key, value=null, updated_at=now_iso()
                    )
                )
            else:
                await txn.conn.execute(
                    table.update().where(self._key(key)).values(value=null, updated_at=now_iso())
                )

    async def delete(self, key: str) -> bool:
        async with self._db.write(self._actor) as txn:
            gone = await txn.conn.execute(schema.kv_entries.delete().where(self._key(key)))
            return gone.rowcount > 0

    async def list_keys(self, prefix: str | None, limit: int) -> list[str]:
        table = schema.kv_entries
        query = sa.select(table.c.key).where(table.c.namespace == self._namespace)
        if prefix:
            # Compare a range instead of LIKE so `%` and `_` in a prefix stay literal.
            query = query.where(table.c.key >= prefix, table.c.key < prefix + "\U0010ffff")
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.key).limit(limit))
            return list(rows.scalars())

    async def update(self, key: str, change: Callable[[Any | None], Any | None]) -> Any | None:
        table = schema.kv_entries
        async with self._db.write(self._actor) as txn:
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
        """Count one execution if under `limit`. Returns (counted, count before this call)."""
        async with self._db.write("system") as txn:
            current = await self.count_in(txn.conn, org_id, period)
            if current >= limit:
                return False, current
            await self.add(txn, org_id, period, 1)
            return True, current

    async def add(self, txn: WriteTxn, org_id: str, period: str, added: int) -> None:
        """Count `added` more executions, with no limit (the caller has checked)."""
        table = schema.usage_counters
        updated = await txn.conn.execute(
            table.update().where(_period(org_id, period)).values(count=table.c.count + added)
        )
        if updated.rowcount == 0:
            await txn.conn.execute(table.insert().values(org_id=org_id, period=period, count=added))

    async def current(self, org_id: str, period: str) -> int:
        async with self._db.read() as conn:
            return await self.count_in(conn, org_id, period)

    @staticmethod
    async def count_in(conn: AsyncConnection, org_id: str, period: str) -> int:
        found = await conn.execute(
            sa.select(schema.usage_counters.c.count).where(_period(org_id, period))
        )
        return int(found.scalar() or 0)


def _period(org_id: str, period: str) -> sa.ColumnElement[bool]:
    table = schema.usage_counters
    return sa.and_(table.c.org_id == org_id, table.c.period == period)
