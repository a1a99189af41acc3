"""Orgs, workspaces and API keys."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from treadle.clock import now_iso
from treadle.errors import ErrorCode, NotFound, Refusal
from treadle.ids import hash_token, new_token, new_uuid
from treadle.store import schema
from treadle.store.database import Database, WriteTxn, bump_version
from treadle.store.portable import serialise, starts_with
from treadle.store.records import ApiKey, Org, Workspace

API_KEY_PREFIX = "trd"
DEFAULT_PLAN = "self-hosted"
DEFAULT_MONTHLY_QUOTA = 1_000_000
DEFAULT_RATE_LIMIT = 600
DEFAULT_RATE_WINDOW_SECONDS = 60


def _org(row: sa.Row[Any]) -> Org:
    return Org(
        id=row.id,
        name=row.name,
        plan=row.plan,
        monthly_quota=row.monthly_quota,
        rate_limit=row.rate_limit,
        rate_window_seconds=row.rate_window_seconds,
        created_at=row.created_at,
    )


def _first_org() -> sa.Select[Any]:
    return schema.orgs.select().order_by(schema.orgs.c.created_at, schema.orgs.c.id).limit(1)


def _workspace(row: sa.Row[Any]) -> Workspace:
    return Workspace(row.id, row.org_id, row.name, row.created_at, row.updated_at)


def _api_key(row: sa.Row[Any]) -> ApiKey:
    return ApiKey(
        row.id,
        row.org_id,
        row.workspace_id,
        row.name,
        row.key_prefix,
        row.created_at,
        row.expires_at,
    )


class Orgs:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, txn: WriteTxn, name: str) -> Org:
        org = Org(
            id=new_uuid(),
            name=name,
            plan=DEFAULT_PLAN,
            monthly_quota=DEFAULT_MONTHLY_QUOTA,
            rate_limit=DEFAULT_RATE_LIMIT,
            rate_window_seconds=DEFAULT_RATE_WINDOW_SECONDS,
            created_at=now_iso(),
        )
        await txn.conn.execute(
            schema.orgs.insert().values(
                id=org.id,
                name=org.name,
                plan=org.plan,
                monthly_quota=org.monthly_quota,
                rate_limit=org.rate_limit,
                rate_window_seconds=org.rate_window_seconds,
                created_at=org.created_at,
            )
        )
        return org

    async def get(self, org_id: str) -> Org | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(schema.orgs.select().where(schema.orgs.c.id == org_id))
            ).first()
        return None if row is None else _org(row)

    async def first(self) -> Org | None:
        async with self._db.read() as conn:
            row = (await conn.execute(_first_org())).first()
        return None if row is None else _org(row)

    async def first_for_bootstrap(self, txn: WriteTxn) -> Org | None:
        """The first org, read under the bootstrap lock: of two processes setting up an
        empty database at once, the second waits and then finds the first one's org."""
        await serialise(txn.conn, "bootstrap")
        row = (await txn.conn.execute(_first_org())).first()
        return None if row is None else _org(row)

    async def set_limits(
        self,
        txn: WriteTxn,
        org_id: str,
        *,
        plan: str | None = None,
        monthly_quota: int | None = None,
        rate_limit: int | None = None,
        rate_window_seconds: int | None = None,
    ) -> None:
        changes = {
            key: value
            for key, value in {
                "plan": plan,
                "monthly_quota": monthly_quota,
                "rate_limit": rate_limit,
                "rate_window_seconds": rate_window_seconds,
            }.items()
            if value is not None
        }
        if changes:
            table = schema.orgs
            await txn.conn.execute(table.update().where(table.c.id == org_id).values(**changes))
            # Limits are configuration: the bump tells every process's caches to re-read.
            await txn.changed(
                org_id=org_id,
                workspace_id=None,
                target_type="org",
                target_id=org_id,
                change="updated",
                detail=changes,
            )
            # Every workspace's configuration holds its org's limits: its version moves too,
            # so caches that check one workspace's version see it (store/versioned_memo.py).
            workspaces = schema.workspaces
            rows = await txn.conn.execute(
                sa.select(workspaces.c.id)
                .where(workspaces.c.org_id == org_id)
                .order_by(workspaces.c.id)
            )
            for workspace_id in list(rows.scalars()):
                await bump_version(txn.conn, workspace_id)


def _named(org_id: str, name: str) -> sa.Select[Any]:
    table = schema.workspaces
    return table.select().where(table.c.org_id == org_id, table.c.name == name)


class Workspaces:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, txn: WriteTxn, org_id: str, name: str) -> Workspace:
        await self._refuse_duplicate(txn, org_id, name, None)
        now = now_iso()
        workspace = Workspace(new_uuid(), org_id, name, now, now)
        await txn.conn.execute(
            schema.workspaces.insert().values(
                id=workspace.id, org_id=org_id, name=name, created_at=now, updated_at=now
            )
        )
        await txn.changed(
            org_id=org_id,
            workspace_id=workspace.id,
            target_type="workspace",
            target_id=workspace.id,
            change="created",
        )
        return workspace

    async def _refuse_duplicate(
        self, txn: WriteTxn, org_id: str, name: str, except_id: str | None
    ) -> None:
        table = schema.workspaces
        # Until this transaction ends, no other one (in any process) can pass this check for
        # the org: two creations of one name get one workspace and one DUPLICATE.
        await serialise(txn.conn, "workspace names", org_id)
        query = sa.select(table.c.id).where(table.c.org_id == org_id, table.c.name == name)
        found = (await txn.conn.execute(query)).scalar()
        if found is not None and found != except_id:
            raise Refusal(ErrorCode.DUPLICATE, "A workspace with this name already exists")

    async def get(self, org_id: str, workspace_id: str) -> Workspace | None:
        table = schema.workspaces
        async with self._db.read() as conn:
            query = table.select().where(table.c.id == workspace_id, table.c.org_id == org_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _workspace(row)

    async def require(self, org_id: str, workspace_id: str) -> Workspace:
        workspace = await self.get(org_id, workspace_id)
        if workspace is None:
            raise NotFound("Workspace")
        return workspace

    async def by_name(self, org_id: str, name: str) -> Workspace | None:
        async with self._db.read() as conn:
            row = (await conn.execute(_named(org_id, name))).first()
        return None if row is None else _workspace(row)

    async def by_name_in(self, txn: WriteTxn, org_id: str, name: str) -> Workspace | None:
        """`by_name`, inside a write transaction (which sees its own and locked-in writes)."""
        row = (await txn.conn.execute(_named(org_id, name))).first()
        return None if row is None else _workspace(row)

    async def list(self, org_id: str, workspace_ids: set[str] | None = None) -> list[Workspace]:
        table = schema.workspaces
        query = table.select().where(table.c.org_id == org_id)
        if workspace_ids is not None:
            query = query.where(table.c.id.in_(workspace_ids))
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.created_at, table.c.id))
            return [_workspace(row) for row in rows]

    async def rename(self, txn: WriteTxn, workspace: Workspace, name: str) -> Workspace:
        await self._refuse_duplicate(txn, workspace.org_id, name, workspace.id)
        now = now_iso()
        table = schema.workspaces
        await txn.conn.execute(
            table.update().where(table.c.id == workspace.id).values(name=name, updated_at=now)
        )
        await txn.changed(
            org_id=workspace.org_id,
            workspace_id=workspace.id,
            target_type="workspace",
            target_id=workspace.id,
            change="updated",
        )
        return Workspace(workspace.id, workspace.org_id, name, workspace.created_at, now)

    async def delete(self, txn: WriteTxn, workspace: Workspace) -> None:
        """Delete the workspace and everything configured inside it."""
        conn = txn.conn
        end_user_ids = sa.select(schema.end_users.c.id).where(
            schema.end_users.c.workspace_id == workspace.id
        )
        await conn.execute(
            schema.connections.delete().where(
                sa.or_(
                    schema.connections.c.workspace_id == workspace.id,
                    schema.connections.c.end_user_id.in_(end_user_ids),
                )
            )
        )
        for table in (
            schema.end_users,
            schema.workspace_integrations,
            schema.partials,
            schema.api_keys,
        ):
            await conn.execute(table.delete().where(table.c.workspace_id == workspace.id))
        await conn.execute(
            schema.kv_entries.delete().where(
                starts_with(schema.kv_entries.c.namespace, f"{workspace.id}/")
            )
        )
        await conn.execute(schema.workspaces.delete().where(schema.workspaces.c.id == workspace.id))
        await txn.changed(
            org_id=workspace.org_id,
            workspace_id=workspace.id,
            target_type="workspace",
            target_id=workspace.id,
            change="deleted",
        )


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        txn: WriteTxn,
        org_id: str,
        *,
        name: str,
        workspace_id: str | None = None,
        expires_at: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Returns the record and the secret token, which is never retrievable again.

        Creating a key bumps no version: no cache can hold a key that did not exist."""
        token = new_token(API_KEY_PREFIX)
        key = ApiKey(new_uuid(), org_id, workspace_id, name, token[:10], now_iso(), expires_at)
        await txn.conn.execute(
            schema.api_keys.insert().values(
                id=key.id,
                org_id=org_id,
                workspace_id=workspace_id,
                name=name,
                key_prefix=key.key_prefix,
                key_hash=hash_token(token),
                created_at=key.created_at,
                expires_at=expires_at,
            )
        )
        return key, token

    async def authenticate(self, token: str) -> ApiKey | None:
        """The key `token` is the secret of, expired or not (`ApiKey.expired` tells)."""
        table = schema.api_keys
        async with self._db.read() as conn:
            query = table.select().where(table.c.key_hash == hash_token(token))
            row = (await conn.execute(query)).first()
        return None if row is None else _api_key(row)

    async def get(self, org_id: str, key_id: str) -> ApiKey | None:
        table = schema.api_keys
        async with self._db.read() as conn:
            query = table.select().where(table.c.org_id == org_id, table.c.id == key_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _api_key(row)

    async def list(self, org_id: str, workspace_ids: set[str] | None = None) -> list[ApiKey]:
        """The org's keys, oldest first; with `workspace_ids`, only the keys restricted to one
        of them (an org-wide key is not a workspace's to see)."""
        table = schema.api_keys
        query = table.select().where(table.c.org_id == org_id)
        if workspace_ids is not None:
            query = query.where(table.c.workspace_id.in_(sorted(workspace_ids)))
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.created_at, table.c.id))
            return [_api_key(row) for row in rows]

    async def revoke(self, txn: WriteTxn, key: ApiKey) -> bool:
        """Delete the key; False when it was already gone (another revocation won).

        The change bumps the version of the key's scope (its workspace, or the whole org's
        `*`), so every process's cached keys and MCP admissions drop it at their next
        request: revocation is refused at once everywhere, with no TTL to wait out."""
        table = schema.api_keys
        deleted = await txn.conn.execute(
            table.delete().where(table.c.org_id == key.org_id, table.c.id == key.id)
        )
        if not deleted.rowcount:
            return False
        await txn.changed(
            org_id=key.org_id,
            workspace_id=key.workspace_id,
            target_type="api_key",
            target_id=key.id,
            change="deleted",
        )
        return True
