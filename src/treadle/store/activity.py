"""The activity log: executions and configuration changes, newest first, cursor-paginated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from treadle.store import schema
from treadle.store.database import Database, WriteTxn, insert_activity
from treadle.store.ledger import ExecutionLedger
from treadle.store.records import ActivityEntry


@dataclass(frozen=True, slots=True)
class ActivityFilter:
    org_id: str
    workspace_ids: set[str] | None = None
    workspace_id: str | None = None
    type: str | None = None
    status: str | None = None
    source: str | None = None
    integration_name: str | None = None
    integration_alias: str | None = None
    action_name: str | None = None
    since: str | None = None
    until: str | None = None
    before_seq: int | None = None
    limit: int = 50


class Activity:
    def __init__(self, db: Database, ledger: ExecutionLedger) -> None:
        self._db = db
        self._ledger = ledger

    async def record(self, txn: WriteTxn, **values: Any) -> str:
        return await insert_activity(txn.conn, **values)

    async def list(self, where: ActivityFilter) -> tuple[list[ActivityEntry], int | None]:
        """A page of entries and the cursor (a sequence number) for the next, older page."""
        # Execution records are written behind the calls: settle this process's first.
        await self._ledger.flush()
        table = schema.activity
        query = _filtered(table.select(), where)
        if where.before_seq is not None:
            query = query.where(table.c.seq < where.before_seq)
        query = query.order_by(table.c.seq.desc()).limit(where.limit + 1)
        async with self._db.read() as conn:
            rows = list(await conn.execute(query))
        entries = [
            ActivityEntry(**{column.name: row._mapping[column.name] for column in table.c})
            for row in rows[: where.limit]
        ]
        cursor = entries[-1].seq if len(rows) > where.limit else None
        return entries, cursor

    async def timeline(self, where: ActivityFilter, width: int) -> Sequence[tuple[str, int, int]]:
        """Action executions matching `where` (its paging aside) per period, oldest first:
        (the first `width` characters of the ISO timestamp, calls, failed or refused
        ones). `width` 13 counts per hour, 10 per day. Periods without calls are absent."""
        await self._ledger.flush()
        table = schema.activity
        period = sa.func.substr(table.c.created_at, 1, width).label("period")
        failed = sa.case((table.c.status.in_(FAILED_STATUSES), 1), else_=0)
        query = _filtered(
            sa.select(period, sa.func.count(), sa.func.sum(failed)),
            replace(where, type="action_execution"),
        )
        query = query.group_by(period).order_by(period)
        async with self._db.read() as conn:
            rows = list(await conn.execute(query))
        return [(str(p), int(calls), int(errors or 0)) for p, calls, errors in rows]

    async def get(self, org_id: str, entry_id: str) -> ActivityEntry | None:
        """One entry of the org by id (the console's detail view)."""
        await self._ledger.flush()
        table = schema.activity
        query = table.select().where(table.c.org_id == org_id, table.c.id == entry_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return ActivityEntry(**{column.name: row._mapping[column.name] for column in table.c})


# What the console's chart counts as an error among action executions.
FAILED_STATUSES = ("failed", "upstream_failed", "refused")


def _filtered(query: Any, where: ActivityFilter) -> Any:
    """`query` narrowed to the org's entries that `where` names (its paging aside)."""
    table = schema.activity
    query = query.where(table.c.org_id == where.org_id)
    if where.workspace_ids is not None:
        # A workspace-restricted reader sees its workspaces and the org-level entries.
        query = query.where(
            sa.or_(table.c.workspace_id.in_(where.workspace_ids), table.c.workspace_id.is_(None))
        )
    for column, wanted in (
        (table.c.workspace_id, where.workspace_id),
        (table.c.type, where.type),
        (table.c.status, where.status),
        (table.c.source, where.source),
        (table.c.integration_name, where.integration_name),
        (table.c.integration_alias, where.integration_alias),
        (table.c.action_name, where.action_name),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    if where.since is not None:
        query = query.where(table.c.created_at >= where.since)
    if where.until is not None:
        query = query.where(table.c.created_at < where.until)
    return query
