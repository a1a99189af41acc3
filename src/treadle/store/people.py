"""End users and their (or the workspace's) connections. Secrets stay sealed in here."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from treadle.catalog.model import ConnectionCredentials
from treadle.clock import now_iso
from treadle.errors import ErrorCode, Refusal
from treadle.ids import new_uuid
from treadle.store import schema
from treadle.store.database import Database, WriteTxn
from treadle.store.portable import serialise
from treadle.store.records import Connection, EndUser
from treadle.vault import Vault


def _end_user(row: sa.Row[Any]) -> EndUser:
    return EndUser(
        id=row.id,
        org_id=row.org_id,
        workspace_id=row.workspace_id,
        external_id=row.external_id,
        display_name=row.display_name,
        email=row.email,
        metadata=row.metadata,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class EndUsers:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        txn: WriteTxn,
        *,
        org_id: str,
        workspace_id: str,
        external_id: str,
        display_name: str | None,
        email: str | None,
        metadata: dict[str, Any] | None,
    ) -> EndUser:
        table = schema.end_users
        # Until commit, no concurrent creation (any process) passes this check for the workspace.
        await serialise(txn.conn, "end users", workspace_id)
        exists = await txn.conn.execute(
            sa.select(table.c.id).where(
                table.c.workspace_id == workspace_id, table.c.external_id == external_id
            )
        )
        if exists.first() is not None:
            raise Refusal(ErrorCode.DUPLICATE, "An end user with this externalId already exists")
        now = now_iso()
        user = EndUser(
            new_uuid(), org_id, workspace_id, external_id, display_name, email, metadata, now, now
        )
        await txn.conn.execute(
            table.insert().values(
                id=user.id,
                org_id=org_id,
                workspace_id=workspace_id,
                external_id=external_id,
                display_name=display_name,
                email=email,
                metadata=metadata,
                created_at=now,
                updated_at=now,
            )
        )
        await txn.changed(
            org_id=org_id,
            workspace_id=workspace_id,
            target_type="end_user",
            target_id=user.id,
            change="created",
            detail={"externalId": external_id},
        )
        return user

    async def get(self, org_id: str, end_user_id: str) -> EndUser | None:
        table = schema.end_users
        async with self._db.read() as conn:
            query = table.select().where(table.c.id == end_user_id, table.c.org_id == org_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _end_user(row)

    async def list(
        self, org_id: str, workspace_id: str | None, workspace_ids: set[str] | None
    ) -> list[EndUser]:
        table = schema.end_users
        query = table.select().where(table.c.org_id == org_id)
        if workspace_id is not None:
            query = query.where(table.c.workspace_id == workspace_id)
        if workspace_ids is not None:
            query = query.where(table.c.workspace_id.in_(workspace_ids))
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.created_at, table.c.id))
            return [_end_user(row) for row in rows]

    async def delete(self, txn: WriteTxn, user: EndUser) -> None:
        """Deleting an end user deletes their connections (and their kv state stays scoped)."""
        connections = schema.connections
        owned = await txn.conn.execute(
            sa.select(connections.c.id).where(connections.c.end_user_id == user.id)
        )
        connection_ids = sorted(owned.scalars())
        await txn.conn.execute(connections.delete().where(connections.c.end_user_id == user.id))
        await txn.conn.execute(schema.end_users.delete().where(schema.end_users.c.id == user.id))
        await txn.changed(
            org_id=user.org_id,
            workspace_id=user.workspace_id,
            target_type="end_user",
            target_id=user.id,
            change="deleted",
            detail={"externalId": user.external_id, "deletedConnections": connection_ids},
        )


_CONNECTION_COLUMNS = (
    *(c for c in schema.connections.c if c.name != "secret"),
    schema.end_users.c.external_id.label("end_user_external_id"),
)


def _connection_query(with_secret: bool = False) -> sa.Select[Any]:
    joined = schema.connections.outerjoin(
        schema.end_users, schema.connections.c.end_user_id == schema.end_users.c.id
    )
    secret = (schema.connections.c.secret,) if with_secret else ()
    return sa.select(*_CONNECTION_COLUMNS, *secret).select_from(joined)


def _connection(row: sa.Row[Any]) -> Connection:
    return Connection(
        id=row.id,
        org_id=row.org_id,
        workspace_id=row.workspace_id,
        end_user_id=row.end_user_id,
        end_user_external_id=row.end_user_external_id,
        integration_name=row.integration_name,
        type=row.type,
        display_name=row.display_name,
        external_id=row.external_id,
        base_url=row.base_url,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sealed_secret=row._mapping.get("secret"),
    )


class Connections:
    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self._vault = vault

    async def create(
        self,
        txn: WriteTxn,
        *,
        org_id: str,
        workspace_id: str | None,
        end_user_id: str | None,
        integration_name: str,
        type: str,
        display_name: str,
        external_id: str,
        values: dict[str, str],
        base_url: str | None,
    ) -> Connection:
        table = schema.connections
        # Until commit, no concurrent creation (any process) passes this check for the org.
        await serialise(txn.conn, "connection ids", org_id)
        clash = sa.select(table.c.id).where(
            table.c.org_id == org_id,
            sa.func.coalesce(table.c.workspace_id, "") == (workspace_id or ""),
            table.c.external_id == external_id,
        )
        if (await txn.conn.execute(clash)).first() is not None:
            raise Refusal(ErrorCode.DUPLICATE, "A connection with this externalId already exists")
        now = now_iso()
        connection_id = new_uuid()
        await txn.conn.execute(
            table.insert().values(
                id=connection_id,
                org_id=org_id,
                workspace_id=workspace_id,
                end_user_id=end_user_id,
                integration_name=integration_name,
                type=type,
                display_name=display_name,
                external_id=external_id,
                secret=self._vault.seal(values),
                base_url=base_url,
                status="active",
                created_at=now,
                updated_at=now,
            )
        )
        created = await self._get_in(txn, org_id, connection_id)
        assert created is not None
        # The record names the connection, never its values.
        await txn.changed(
            org_id=org_id,
            workspace_id=workspace_id,
            target_type="connection",
            target_id=connection_id,
            change="created",
            detail={"integrationName": integration_name, "externalId": external_id},
        )
        return created

    async def _get_in(self, txn: WriteTxn, org_id: str, connection_id: str) -> Connection | None:
        query = _connection_query().where(
            schema.connections.c.id == connection_id, schema.connections.c.org_id == org_id
        )
        row = (await txn.conn.execute(query)).first()
        return None if row is None else _connection(row)

    async def get(self, org_id: str, connection_id: str) -> Connection | None:
        query = _connection_query().where(
            schema.connections.c.id == connection_id, schema.connections.c.org_id == org_id
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _connection(row)

    async def find(
        self,
        org_id: str,
        *,
        workspace_id: str,
        connection_id: str | None = None,
        external_id: str | None = None,
        end_user_external_id: str | None = None,
        integration_name: str | None = None,
        with_secret: bool = False,
    ) -> list[Connection]:
        """Connections visible from one workspace (its own and org-wide ones) matching filters;
        `with_secret`: each carries its sealed secret too (for `credentials`, no second query)."""
        table = schema.connections
        query = _connection_query(with_secret).where(
            table.c.org_id == org_id,
            sa.or_(table.c.workspace_id == workspace_id, table.c.workspace_id.is_(None)),
        )
        if connection_id is not None:
            query = query.where(table.c.id == connection_id)
        if external_id is not None:
            query = query.where(table.c.external_id == external_id)
        if integration_name is not None:
            query = query.where(table.c.integration_name == integration_name)
        if end_user_external_id is not None:
            query = query.where(
                schema.end_users.c.external_id == end_user_external_id,
                schema.end_users.c.workspace_id == workspace_id,
            )
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.created_at, table.c.id))
            return [_connection(row) for row in rows]

    async def list(
        self, org_id: str, workspace_id: str | None, workspace_ids: set[str] | None
    ) -> list[Connection]:
        """Connections of the org (of `workspace_id` only, when given); with workspace_ids,
        those of these workspaces and the org-wide ones, which serve them too."""
        table = schema.connections
        query = _connection_query().where(table.c.org_id == org_id)
        if workspace_id is not None:
            query = query.where(table.c.workspace_id == workspace_id)
        if workspace_ids is not None:
            query = query.where(
                sa.or_(table.c.workspace_id.in_(workspace_ids), table.c.workspace_id.is_(None))
            )
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.created_at, table.c.id))
            return [_connection(row) for row in rows]

    async def delete(self, txn: WriteTxn, connection: Connection) -> None:
        table = schema.connections
        await txn.conn.execute(table.delete().where(table.c.id == connection.id))
        await txn.changed(
            org_id=connection.org_id,
            workspace_id=connection.workspace_id,
            target_type="connection",
            target_id=connection.id,
            change="deleted",
            detail={
                "integrationName": connection.integration_name,
                "externalId": connection.external_id,
            },
        )

    async def credentials(self, connection: Connection) -> ConnectionCredentials:
        sealed = connection.sealed_secret
        if sealed is None:
            table = schema.connections
            async with self._db.read() as conn:
                query = sa.select(table.c.secret).where(table.c.id == connection.id)
                sealed = (await conn.execute(query)).scalar_one()
        return ConnectionCredentials(
            id=connection.id,
            external_id=connection.external_id,
            type=connection.type,
            values=self._vault.open_sealed(sealed),
            base_url=connection.base_url,
        )

    async def replace_secret(
        self, txn: WriteTxn, connection: Connection, values: dict[str, str], *, status: str
    ) -> None:
        """New secret values (an OAuth token refresh or a re-connect) and status.

        Not a configuration change: a refresh must not bump versions or fill the activity log.
        """
        table = schema.connections
        await txn.conn.execute(
            table.update()
            .where(table.c.id == connection.id)
            .values(secret=self._vault.seal(values), status=status, updated_at=now_iso())
        )

    async def set_status(self, txn: WriteTxn, connection: Connection, status: str) -> None:
        table = schema.connections
        await txn.conn.execute(
            table.update()
            .where(table.c.id == connection.id)
            .values(status=status, updated_at=now_iso())
        )
        await txn.changed(
            org_id=connection.org_id,
            workspace_id=connection.workspace_id,
            target_type="connection",
            target_id=connection.id,
            change="updated",
            detail={
                "integrationName": connection.integration_name,
                "externalId": connection.external_id,
                "status": status,
            },
        )

    async def by_id(self, connection_id: str) -> Connection | None:
        """A connection by id alone, for internal callers that hold its id from a resolution."""
        query = _connection_query().where(schema.connections.c.id == connection_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _connection(row)
