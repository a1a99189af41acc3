"""Upstream MCP server records: an org's own integrations, served by another MCP server.

A record holds how to reach the server (`transport`), how to authenticate to it (`auth`:
the credentials themselves live in connections, so per-user strategies work), the catalog
last read from it (tools, prompts, resources) and its health. Writes that change what the
integration offers go through `WriteTxn.changed` (version bump, activity, change event);
health is written quietly, since it changes no tool list.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import sqlalchemy as sa

from treadle.clock import now_iso
from treadle.errors import ErrorCode, Refusal
from treadle.store import schema
from treadle.store.database import Database, WriteTxn
from treadle.store.portable import serialise
from treadle.store.records import Connection


@dataclass(frozen=True, slots=True)
class UpstreamHealth:
    connected: bool = False
    last_error: str | None = None
    protocol_version: str | None = None
    last_refresh_at: str | None = None
    server_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "lastError": self.last_error,
            "protocolVersion": self.protocol_version,
            "lastRefreshAt": self.last_refresh_at,
            "serverName": self.server_name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> UpstreamHealth:
        data = data or {}
        return cls(
            connected=bool(data.get("connected", False)),
            last_error=data.get("lastError"),
            protocol_version=data.get("protocolVersion"),
            last_refresh_at=data.get("lastRefreshAt"),
            server_name=data.get("serverName"),
        )


@dataclass(frozen=True, slots=True)
class Upstream:
    id: str
    org_id: str
    name: str
    display_name: str
    description: str | None
    # {"type": "streamable_http", "url": ...} or {"type": "stdio", "command": ..., "args": [...]}
    transport: dict[str, Any]
    allow_private_network: bool
    # {"type": "none"} | {"type": "bearer"} | {"type": "header", "headerName": ...} |
    # {"type": "oauth", "scopes"?: [...], "clientId"?: ..., "clientSecretSealed"?: ...}, plus
    # an optional "connectionId": the connection the catalog is read with.
    auth: dict[str, Any]
    # {"tools": [...], "prompts": [...], "resources": [...], "resourceTemplates": [...]}, in
    # MCP's wire shapes; {} until first read.
    catalog: dict[str, Any]
    catalog_hash: str | None
    health: UpstreamHealth
    created_at: str
    updated_at: str
    tools: tuple[dict[str, Any], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(self.catalog.get("tools") or ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "name": self.name,
            "displayName": self.display_name,
            "description": self.description,
            "transport": self.transport,
            "allowPrivateNetwork": self.allow_private_network,
            "auth": public_auth(self.auth),
            "health": {**self.health.to_json(), "toolCount": len(self.tools)},
            "tools": [tool.get("name") for tool in self.tools],
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


def is_catalog_sign_in(connection: Connection | None, upstream_name: str) -> TypeGuard[Connection]:
    """Whether an OAuth upstream's catalog may be read with `connection` though it is not
    org-wide: a workspace's connection signed in to this upstream, never an end user's."""
    return (
        connection is not None
        and connection.integration_name == upstream_name
        and connection.end_user_id is None
        and connection.type == "oauth2"
    )


def public_auth(auth: dict[str, Any]) -> dict[str, Any]:
    """The record's auth as answers show it: a sealed client secret only as `clientSecretSet`."""
    shown = {k: v for k, v in auth.items() if k != "clientSecretSealed"}
    if "clientSecretSealed" in auth:
        shown["clientSecretSet"] = True
    return shown


def _upstream(row: sa.Row[Any]) -> Upstream:
    return Upstream(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        display_name=row.display_name,
        description=row.description,
        transport=row.transport,
        allow_private_network=bool(row.allow_private_network),
        auth=row.auth,
        catalog=row.catalog or {},
        catalog_hash=row.catalog_hash,
        health=UpstreamHealth.from_json(row.health),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def new_upstream_id() -> str:
    return f"ups_{secrets.token_hex(12)}"


class Upstreams:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        txn: WriteTxn,
        *,
        org_id: str,
        name: str,
        display_name: str,
        description: str | None,
        transport: dict[str, Any],
        allow_private_network: bool,
        auth: dict[str, Any],
    ) -> Upstream:
        table = schema.upstreams
        # Held until the transaction ends: two creations of one name (any process) queue
        # here, and the second sees the first's row.
        await serialise(txn.conn, "upstream_names", org_id)
        taken = await txn.conn.execute(
            sa.select(table.c.id).where(table.c.org_id == org_id, table.c.name == name)
        )
        if taken.first() is not None:
            raise Refusal(ErrorCode.DUPLICATE, "An upstream with this name already exists")
        now = now_iso()
        upstream_id = new_upstream_id()
        await txn.conn.execute(
            table.insert().values(
                id=upstream_id,
                org_id=org_id,
                name=name,
                display_name=display_name,
                description=description,
                transport=transport,
                allow_private_network=allow_private_network,
                auth=auth,
                catalog={},
                catalog_hash=None,
                health=UpstreamHealth().to_json(),
                created_at=now,
                updated_at=now,
            )
        )
        await txn.changed(
            org_id=org_id,
            workspace_id=None,
            target_type="upstream",
            target_id=upstream_id,
            change="created",
        )
        return await self._get_in(txn, upstream_id)

    async def _get_in(self, txn: WriteTxn, upstream_id: str) -> Upstream:
        table = schema.upstreams
        row = (await txn.conn.execute(table.select().where(table.c.id == upstream_id))).one()
        return _upstream(row)

    async def update(self, txn: WriteTxn, current: Upstream, changes: dict[str, Any]) -> Upstream:
        table = schema.upstreams
        values = {**changes, "updated_at": now_iso()}
        await txn.conn.execute(table.update().where(table.c.id == current.id).values(**values))
        await txn.changed(
            org_id=current.org_id,
            workspace_id=None,
            target_type="upstream",
            target_id=current.id,
            change="updated",
            detail={"fields": sorted(changes)},
        )
        return await self._get_in(txn, current.id)

    async def delete(self, txn: WriteTxn, current: Upstream) -> None:
        table = schema.upstreams
        await txn.conn.execute(table.delete().where(table.c.id == current.id))
        await txn.changed(
            org_id=current.org_id,
            workspace_id=None,
            target_type="upstream",
            target_id=current.id,
            change="deleted",
        )

    async def save_catalog(
        self, upstream: Upstream, catalog: dict[str, Any], catalog_hash: str, health: UpstreamHealth
    ) -> bool:
        """Store what the upstream offers now; True when it differs from what was stored
        (then as a configuration change: every process's tool lists follow)."""
        table = schema.upstreams
        async with self._db.write("system") as txn:
            stored = await txn.conn.execute(
                sa.select(table.c.catalog_hash).where(table.c.id == upstream.id)
            )
            row = stored.first()
            if row is None:
                return False  # deleted meanwhile
            changed = bool(row.catalog_hash != catalog_hash)
            values: dict[str, Any] = {"health": health.to_json()}
            if changed:
                values.update(catalog=catalog, catalog_hash=catalog_hash, updated_at=now_iso())
            await txn.conn.execute(table.update().where(table.c.id == upstream.id).values(values))
            if changed:
                await txn.changed(
                    org_id=upstream.org_id,
                    workspace_id=None,
                    target_type="upstream",
                    target_id=upstream.id,
                    change="catalog_refreshed",
                    detail={"tools": len(catalog.get("tools") or ())},
                )
        return changed

    async def save_health(self, upstream_id: str, health: UpstreamHealth) -> None:
        table = schema.upstreams
        async with self._db.write("system") as txn:
            await txn.conn.execute(
                table.update().where(table.c.id == upstream_id).values(health=health.to_json())
            )

    async def get(self, upstream_id: str, org_id: str | None = None) -> Upstream | None:
        table = schema.upstreams
        query = table.select().where(table.c.id == upstream_id)
        if org_id is not None:
            query = query.where(table.c.org_id == org_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _upstream(row)

    async def list(self, org_id: str | None = None) -> list[Upstream]:
        """One org's upstreams, or (None) every org's."""
        table = schema.upstreams
        query = table.select()
        if org_id is not None:
            query = query.where(table.c.org_id == org_id)
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.created_at, table.c.id))
            return [_upstream(row) for row in rows]

    async def stamps(self) -> dict[str, str]:
        """Each upstream's id and `updated_at`: what tells a process its copy is stale."""
        table = schema.upstreams
        async with self._db.read() as conn:
            query = sa.select(table.c.id, table.c.updated_at, table.c.catalog_hash)
            rows = await conn.execute(query)
            return {row.id: f"{row.updated_at}/{row.catalog_hash}" for row in rows}
