"""MCP server records: which workspace a `/mcp/{id}` endpoint serves, and how.

A server's bearer token (`mcp_…`) is shown once and kept only as a hash. Writes go through
`WriteTxn.changed` on the server's workspace, so overrides trigger the same resync as any
other configuration change.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from treadle.clock import now_iso
from treadle.ids import hash_token, new_token
from treadle.store import schema
from treadle.store.database import Database, WriteTxn

SERVER_TOKEN_PREFIX = "mcp"  # noqa: S105 (a prefix, not a secret)

# What a server lists: its tools (TOOLS), three meta-tools that search, describe and call them
# (DISCOVERY), or tools while there are at most `auto_threshold` of them, else the meta-tools.
SERVER_MODES = ("TOOLS", "DISCOVERY", "AUTO")
DEFAULT_AUTO_THRESHOLD = 40


@dataclass(frozen=True, slots=True)
class ToolOverride:
    integration_alias: str
    action_name: str
    partial_ids: tuple[str, ...] | None = None
    description: str | None = None
    enabled: bool = True
    name: str | None = None  # the tool's name, instead of the generated {alias}__{action}

    def to_json(self) -> dict[str, Any]:
        return {
            "integrationAlias": self.integration_alias,
            "actionName": self.action_name,
            "name": self.name,
            "partialIds": None if self.partial_ids is None else list(self.partial_ids),
            "description": self.description,
            "enabled": self.enabled,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolOverride:
        ids = data.get("partialIds")
        return cls(
            integration_alias=data["integrationAlias"],
            action_name=data["actionName"],
            partial_ids=None if ids is None else tuple(ids),
            description=data.get("description"),
            enabled=bool(data.get("enabled", True)),
            name=data.get("name"),
        )


@dataclass(frozen=True, slots=True)
class McpServer:
    id: str
    org_id: str
    workspace_id: str
    name: str
    mode: str
    end_user_id: str | None
    tool_overrides: tuple[ToolOverride, ...]
    token_prefix: str
    created_at: str
    updated_at: str
    auto_threshold: int = DEFAULT_AUTO_THRESHOLD

    def override_for(self, alias: str, action_name: str) -> ToolOverride | None:
        for override in self.tool_overrides:
            if override.integration_alias == alias and override.action_name == action_name:
                return override
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "workspaceId": self.workspace_id,
            "name": self.name,
            "mode": self.mode,
            "autoThreshold": self.auto_threshold,
            "endUserId": self.end_user_id,
            "toolOverrides": [o.to_json() for o in self.tool_overrides],
            "tokenPrefix": self.token_prefix,
            "endpoint": f"/mcp/{self.id}",
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


def _server(row: sa.Row[Any]) -> McpServer:
    return McpServer(
        id=row.id,
        org_id=row.org_id,
        workspace_id=row.workspace_id,
        name=row.name,
        mode=row.mode,
        end_user_id=row.end_user_id,
        tool_overrides=tuple(ToolOverride.from_json(o) for o in row.tool_overrides),
        token_prefix=row.token_prefix,
        created_at=row.created_at,
        updated_at=row.updated_at,
        auto_threshold=row.auto_threshold,
    )


def new_server_id() -> str:
    return f"srv_{secrets.token_hex(12)}"


class McpServers:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        txn: WriteTxn,
        *,
        org_id: str,
        workspace_id: str,
        name: str,
        mode: str,
        end_user_id: str | None,
        tool_overrides: tuple[ToolOverride, ...],
        auto_threshold: int = DEFAULT_AUTO_THRESHOLD,
    ) -> tuple[McpServer, str]:
        """Returns the record and its bearer token, which is never retrievable again."""
        token = new_token(SERVER_TOKEN_PREFIX)
        now = now_iso()
        server_id = new_server_id()
        await txn.conn.execute(
            schema.mcp_servers.insert().values(
                id=server_id,
                org_id=org_id,
                workspace_id=workspace_id,
                name=name,
                mode=mode,
                auto_threshold=auto_threshold,
                end_user_id=end_user_id,
                tool_overrides=[o.to_json() for o in tool_overrides],
                token_hash=hash_token(token),
                token_prefix=token[:10],
                created_at=now,
                updated_at=now,
            )
        )
        await txn.changed(
            org_id=org_id,
            workspace_id=workspace_id,
            target_type="mcp_server",
            target_id=server_id,
            change="created",
        )
        return await self._get_in(txn, server_id), token

    async def _get_in(self, txn: WriteTxn, server_id: str) -> McpServer:
        table = schema.mcp_servers
        row = (await txn.conn.execute(table.select().where(table.c.id == server_id))).one()
        return _server(row)

    async def update(self, txn: WriteTxn, current: McpServer, changes: dict[str, Any]) -> McpServer:
        values = dict(changes)
        if "tool_overrides" in values:
            values["tool_overrides"] = [o.to_json() for o in values["tool_overrides"]]
        values["updated_at"] = now_iso()
        table = schema.mcp_servers
        await txn.conn.execute(table.update().where(table.c.id == current.id).values(**values))
        await txn.changed(
            org_id=current.org_id,
            workspace_id=current.workspace_id,
            target_type="mcp_server",
            target_id=current.id,
            change="updated",
            detail={"fields": sorted(changes)},
        )
        return await self._get_in(txn, current.id)

    async def rotate_token(self, txn: WriteTxn, current: McpServer) -> tuple[McpServer, str]:
        token = new_token(SERVER_TOKEN_PREFIX)
        table = schema.mcp_servers
        await txn.conn.execute(
            table.update()
            .where(table.c.id == current.id)
            .values(token_hash=hash_token(token), token_prefix=token[:10], updated_at=now_iso())
        )
        await txn.changed(
            org_id=current.org_id,
            workspace_id=current.workspace_id,
            target_type="mcp_server",
            target_id=current.id,
            change="token_rotated",
        )
        return await self._get_in(txn, current.id), token

    async def delete(self, txn: WriteTxn, current: McpServer) -> None:
        table = schema.mcp_servers
        await txn.conn.execute(table.delete().where(table.c.id == current.id))
        await txn.changed(
            org_id=current.org_id,
            workspace_id=current.workspace_id,
            target_type="mcp_server",
            target_id=current.id,
            change="deleted",
        )

    async def get(self, server_id: str, org_id: str | None = None) -> McpServer | None:
        table = schema.mcp_servers
        query = table.select().where(table.c.id == server_id)
        if org_id is not None:
            query = query.where(table.c.org_id == org_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _server(row)

    async def by_token(self, token: str) -> McpServer | None:
        table = schema.mcp_servers
        async with self._db.read() as conn:
            query = table.select().where(table.c.token_hash == hash_token(token))
            row = (await conn.execute(query)).first()
        return None if row is None else _server(row)

    async def list(self, org_id: str, workspace_ids: set[str] | None = None) -> list[McpServer]:
        table = schema.mcp_servers
        query = table.select().where(table.c.org_id == org_id)
        if workspace_ids is not None:
            query = query.where(table.c.workspace_id.in_(workspace_ids))
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.created_at, table.c.id))
            return [_server(row) for row in rows]

    @staticmethod
    async def drop_partial(txn: WriteTxn, workspace_id: str, partial_id: str) -> None:
        """Remove a deleted partial's ID from every tool override."""
        table = schema.mcp_servers
        rows = await txn.conn.execute(table.select().where(table.c.workspace_id == workspace_id))
        for row in list(rows):
            server = _server(row)
            if not any(partial_id in (o.partial_ids or ()) for o in server.tool_overrides):
                continue
            cleaned = tuple(
                o
                if o.partial_ids is None
                else replace(o, partial_ids=tuple(p for p in o.partial_ids if p != partial_id))
                for o in server.tool_overrides
            )
            await txn.conn.execute(
                table.update()
                .where(table.c.id == server.id)
                .values(tool_overrides=[o.to_json() for o in cleaned], updated_at=now_iso())
            )
