"""Workspace integrations and input partials: the configuration tool lists derive from.

Every write here goes through `WriteTxn.changed`, which bumps the configuration version and
queues the change event that MCP resync listens to.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from treadle.clock import now_iso
from treadle.errors import ErrorCode, Refusal
from treadle.ids import new_uuid, new_workspace_integration_id
from treadle.store import schema
from treadle.store.database import Database, WriteTxn
from treadle.store.mcp_servers import McpServers
from treadle.store.portable import serialise, starts_with
from treadle.store.records import ConnectionStrategy, Partial, WorkspaceIntegration


def _integration(row: sa.Row[Any]) -> WorkspaceIntegration:
    allowed = row.allowed_actions
    return WorkspaceIntegration(
        id=row.id,
        org_id=row.org_id,
        workspace_id=row.workspace_id,
        integration_name=row.integration_name,
        alias=row.alias,
        connection_strategy=ConnectionStrategy(row.connection_strategy),
        connection_id=row.connection_id,
        allowed_actions=None if allowed is None else tuple(allowed),
        settings=row.settings,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class WorkspaceIntegrations:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _check_alias(
        self, txn: WriteTxn, workspace_id: str, alias: str, integration_name: str
    ) -> None:
        table = schema.workspace_integrations
        # Held until the transaction ends: a concurrent creation of the alias (any process)
        # waits here and then sees this one's row.
        await serialise(txn.conn, "aliases", workspace_id)
        query = sa.select(table.c.integration_name).where(
            table.c.workspace_id == workspace_id, table.c.alias == alias
        )
        holder = (await txn.conn.execute(query)).scalar()
        if holder is None:
            return
        if holder == integration_name:
            raise Refusal(
                ErrorCode.DUPLICATE, "Integration with this alias already exists in the workspace"
            )
        raise Refusal(
            ErrorCode.ALIAS_CONFLICT,
            "Alias is already associated with a different integration in this workspace",
            integrationAlias=alias,
        )

    async def create(
        self,
        txn: WriteTxn,
        *,
        org_id: str,
        workspace_id: str,
        integration_name: str,
        alias: str,
        strategy: ConnectionStrategy,
        connection_id: str | None,
        allowed_actions: tuple[str, ...] | None,
        settings: dict[str, Any],
    ) -> WorkspaceIntegration:
        await self._check_alias(txn, workspace_id, alias, integration_name)
        now = now_iso()
        record = WorkspaceIntegration(
            id=new_workspace_integration_id(),
            org_id=org_id,
            workspace_id=workspace_id,
            integration_name=integration_name,
            alias=alias,
            connection_strategy=strategy,
            connection_id=connection_id,
            allowed_actions=allowed_actions,
            settings=settings,
            created_at=now,
            updated_at=now,
        )
        await txn.conn.execute(
            schema.workspace_integrations.insert().values(
                id=record.id,
                org_id=org_id,
                workspace_id=workspace_id,
                integration_name=integration_name,
                alias=alias,
                connection_strategy=strategy.value,
                connection_id=connection_id,
                allowed_actions=None if allowed_actions is None else list(allowed_actions),
                settings=settings,
                created_at=now,
                updated_at=now,
            )
        )
        await txn.changed(
            org_id=org_id,
            workspace_id=workspace_id,
            target_type="workspace_integration",
            target_id=record.id,
            change="created",
            detail={"integrationName": integration_name, "integrationAlias": alias},
        )
        return record

    async def update(
        self, txn: WriteTxn, current: WorkspaceIntegration, changes: dict[str, Any]
    ) -> WorkspaceIntegration:
        """`changes` holds column names → new values; only what the caller set."""
        alias = changes.get("alias")
        if alias is not None and alias != current.alias:
            await self._check_alias(txn, current.workspace_id, alias, current.integration_name)
        values = dict(changes)
        if "connection_strategy" in values:
            values["connection_strategy"] = ConnectionStrategy(values["connection_strategy"]).value
        if values.get("allowed_actions") is not None:
            values["allowed_actions"] = list(values["allowed_actions"])
        values["updated_at"] = now_iso()
        table = schema.workspace_integrations
        await txn.conn.execute(table.update().where(table.c.id == current.id).values(**values))
        row = (await txn.conn.execute(table.select().where(table.c.id == current.id))).one()
        await txn.changed(
            org_id=current.org_id,
            workspace_id=current.workspace_id,
            target_type="workspace_integration",
            target_id=current.id,
            change="updated",
            detail={"fields": sorted(changes)},
        )
        return _integration(row)

    async def delete(self, txn: WriteTxn, current: WorkspaceIntegration) -> None:
        table = schema.workspace_integrations
        await txn.conn.execute(table.delete().where(table.c.id == current.id))
        await txn.conn.execute(
            schema.kv_entries.delete().where(
                starts_with(schema.kv_entries.c.namespace, f"{current.workspace_id}/{current.id}/")
            )
        )
        await txn.changed(
            org_id=current.org_id,
            workspace_id=current.workspace_id,
            target_type="workspace_integration",
            target_id=current.id,
            change="deleted",
            detail={"integrationAlias": current.alias},
        )

    async def get(self, org_id: str, integration_id: str) -> WorkspaceIntegration | None:
        table = schema.workspace_integrations
        async with self._db.read() as conn:
            query = table.select().where(table.c.id == integration_id, table.c.org_id == org_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _integration(row)

    async def list(self, workspace_id: str) -> list[WorkspaceIntegration]:
        table = schema.workspace_integrations
        async with self._db.read() as conn:
            query = (
                table.select().where(table.c.workspace_id == workspace_id).order_by(table.c.alias)
            )
            return [_integration(row) for row in await conn.execute(query)]


def _partial(row: sa.Row[Any]) -> Partial:
    return Partial(
        id=row.id,
        org_id=row.org_id,
        workspace_id=row.workspace_id,
        integration_name=row.integration_name,
        integration_alias=row.integration_alias,
        action_name=row.action_name,
        name=row.name,
        description=row.description,
        values=row.values,
        enforced_keys=tuple(row.enforced_keys),
        is_default=bool(row.is_default),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _same_scope(partial: Partial) -> sa.ColumnElement[bool]:
    table = schema.partials
    return sa.and_(
        table.c.workspace_id == partial.workspace_id,
        table.c.integration_name == partial.integration_name,
        sa.func.coalesce(table.c.integration_alias, "") == (partial.integration_alias or ""),
        sa.func.coalesce(table.c.action_name, "") == (partial.action_name or ""),
    )


async def _lock_partials(txn: WriteTxn, partial: Partial) -> None:
    """Names and the default are decided per workspace: concurrent writers (any process)
    take turns, so neither two equal names nor two defaults of one scope get in."""
    await serialise(txn.conn, "partials", partial.workspace_id)


class Partials:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _refuse_duplicate_name(self, txn: WriteTxn, partial: Partial) -> None:
        table = schema.partials
        await _lock_partials(txn, partial)
        query = sa.select(table.c.id).where(
            _same_scope(partial), table.c.name == partial.name, table.c.id != partial.id
        )
        if (await txn.conn.execute(query)).first() is not None:
            raise Refusal(
                ErrorCode.DUPLICATE, "A partial with this name already exists in the same scope"
            )

    async def _clear_other_defaults(self, txn: WriteTxn, partial: Partial) -> None:
        # "the default for its scope": at most one default per exact scope.
        table = schema.partials
        await _lock_partials(txn, partial)
        await txn.conn.execute(
            table.update()
            .where(_same_scope(partial), table.c.id != partial.id, table.c.is_default.is_(True))
            .values(is_default=False, updated_at=now_iso())
        )

    async def create(
        self,
        txn: WriteTxn,
        *,
        org_id: str,
        workspace_id: str,
        integration_name: str,
        integration_alias: str | None,
        action_name: str | None,
        name: str,
        description: str | None,
        values: dict[str, Any],
        enforced_keys: tuple[str, ...],
        is_default: bool,
    ) -> Partial:
        now = now_iso()
        partial = Partial(
            id=new_uuid(),
            org_id=org_id,
            workspace_id=workspace_id,
            integration_name=integration_name,
            integration_alias=integration_alias,
            action_name=action_name,
            name=name,
            description=description,
            values=values,
            enforced_keys=enforced_keys,
            is_default=is_default,
            created_at=now,
            updated_at=now,
        )
        await self._refuse_duplicate_name(txn, partial)
        if is_default:
            await self._clear_other_defaults(txn, partial)
        await txn.conn.execute(
            schema.partials.insert().values(
                id=partial.id,
                org_id=org_id,
                workspace_id=workspace_id,
                integration_name=integration_name,
                integration_alias=integration_alias,
                action_name=action_name,
                name=name,
                description=description,
                values=values,
                enforced_keys=list(enforced_keys),
                is_default=is_default,
                created_at=now,
                updated_at=now,
            )
        )
        await txn.changed(
            org_id=org_id,
            workspace_id=workspace_id,
            target_type="partial",
            target_id=partial.id,
            change="created",
        )
        return partial

    async def update(self, txn: WriteTxn, current: Partial, changes: dict[str, Any]) -> Partial:
        merged = _partial_with(current, changes)
        if "name" in changes:
            await self._refuse_duplicate_name(txn, merged)
        if changes.get("is_default") is True:
            await self._clear_other_defaults(txn, merged)
        values = dict(changes)
        if "enforced_keys" in values:
            values["enforced_keys"] = list(values["enforced_keys"])
        values["updated_at"] = now_iso()
        table = schema.partials
        await txn.conn.execute(table.update().where(table.c.id == current.id).values(**values))
        row = (await txn.conn.execute(table.select().where(table.c.id == current.id))).one()
        await txn.changed(
            org_id=current.org_id,
            workspace_id=current.workspace_id,
            target_type="partial",
            target_id=current.id,
            change="updated",
            detail={"fields": sorted(changes)},
        )
        return _partial(row)

    async def delete(self, txn: WriteTxn, current: Partial) -> None:
        """Also removes the partial's ID from every MCP tool override."""
        table = schema.partials
        await txn.conn.execute(table.delete().where(table.c.id == current.id))
        await McpServers.drop_partial(txn, current.workspace_id, current.id)
        await txn.changed(
            org_id=current.org_id,
            workspace_id=current.workspace_id,
            target_type="partial",
            target_id=current.id,
            change="deleted",
        )

    async def get(self, org_id: str, partial_id: str) -> Partial | None:
        table = schema.partials
        async with self._db.read() as conn:
            query = table.select().where(table.c.id == partial_id, table.c.org_id == org_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _partial(row)

    async def list(
        self,
        workspace_id: str,
        *,
        integration_name: str | None = None,
        action_name: str | None = None,
    ) -> list[Partial]:
        table = schema.partials
        query = table.select().where(table.c.workspace_id == workspace_id)
        if integration_name is not None:
            query = query.where(table.c.integration_name == integration_name)
        if action_name is not None:
            query = query.where(table.c.action_name == action_name)
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.created_at, table.c.id))
            return [_partial(row) for row in rows]


def _partial_with(current: Partial, changes: dict[str, Any]) -> Partial:
    fields = dict(changes)
    if "enforced_keys" in fields:
        fields["enforced_keys"] = tuple(fields["enforced_keys"])
    return dataclasses.replace(current, **fields)
