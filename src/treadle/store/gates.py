"""Human Gates storage: approval policies, approval requests, idempotency records."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from treadle.clock import iso, now_iso, utcnow
from treadle.ids import new_uuid
from treadle.store import schema
from treadle.store.database import Database, WriteTxn, bump_version

IDEMPOTENCY_TTL = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    id: str
    org_id: str
    workspace_id: str | None
    name: str
    description: str | None
    enabled: bool
    priority: int
    sources: tuple[str, ...] | None
    integration_names: tuple[str, ...] | None
    integration_aliases: tuple[str, ...] | None
    action_names: tuple[str, ...] | None
    connection_strategies: tuple[str, ...] | None
    mcp_server_ids: tuple[str, ...] | None
    end_user_mode: str
    rules: dict[str, Any] | None
    decision: str
    timeout_seconds: int
    default_on_timeout: str
    approval_access_mode: str
    allow_self_approval: bool
    reuse_window_seconds: int
    notify_webhook_url: str | None
    webhook_secret: str | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        def listed(value: tuple[str, ...] | None) -> list[str] | None:
            return None if value is None else list(value)

        return {
            "id": self.id,
            "orgId": self.org_id,
            "workspaceId": self.workspace_id,
            "name": self.name,
            "description": self.description,
            "enabled": self.enabled,
            "priority": self.priority,
            "sources": listed(self.sources),
            "integrationNames": listed(self.integration_names),
            "integrationAliases": listed(self.integration_aliases),
            "actionNames": listed(self.action_names),
            "connectionStrategies": listed(self.connection_strategies),
            "mcpServerIds": listed(self.mcp_server_ids),
            "endUserMode": self.end_user_mode,
            "rules": self.rules,
            "decision": self.decision,
            "timeoutSeconds": self.timeout_seconds,
            "defaultOnTimeout": self.default_on_timeout,
            "approvalAccessMode": self.approval_access_mode,
            "allowSelfApproval": self.allow_self_approval,
            "reuseWindowSeconds": self.reuse_window_seconds,
            "notifyWebhookUrl": self.notify_webhook_url,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


_LIST_COLUMNS = (
    "sources",
    "integration_names",
    "integration_aliases",
    "action_names",
    "connection_strategies",
    "mcp_server_ids",
)


def _policy(row: sa.Row[Any]) -> ApprovalPolicy:
    values = dict(row._mapping)
    for column in _LIST_COLUMNS:
        if values[column] is not None:
            values[column] = tuple(values[column])
    values["enabled"] = bool(values["enabled"])
    values["allow_self_approval"] = bool(values["allow_self_approval"])
    return ApprovalPolicy(**values)


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if k in _LIST_COLUMNS and v is not None else v for k, v in values.items()}


class ApprovalPolicies:
    """Policies change tool lists too (a gated tool declares no output schema), so every write
    bumps the version of each workspace it can govern."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _changed(
        self,
        txn: WriteTxn,
        policy_org: str,
        workspace_id: str | None,
        policy_id: str,
        change: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await txn.changed(
            org_id=policy_org,
            workspace_id=workspace_id,
            target_type="approval_policy",
            target_id=policy_id,
            change=change,
            detail=detail,
        )
        if workspace_id is None:
            table = schema.workspaces
            rows = await txn.conn.execute(sa.select(table.c.id).where(table.c.org_id == policy_org))
            for found in list(rows.scalars()):
                await bump_version(txn.conn, found)

    async def create(self, txn: WriteTxn, **fields: Any) -> ApprovalPolicy:
        now = now_iso()
        values = {"id": new_uuid(), "created_at": now, "updated_at": now, **fields}
        await txn.conn.execute(schema.approval_policies.insert().values(**_stored(values)))
        await self._changed(txn, values["org_id"], values["workspace_id"], values["id"], "created")
        return await self._get_in(txn, values["id"])

    async def _get_in(self, txn: WriteTxn, policy_id: str) -> ApprovalPolicy:
        table = schema.approval_policies
        row = (await txn.conn.execute(table.select().where(table.c.id == policy_id))).one()
        return _policy(row)

    async def update(
        self, txn: WriteTxn, current: ApprovalPolicy, changes: dict[str, Any]
    ) -> ApprovalPolicy:
        table = schema.approval_policies
        values = _stored({**changes, "updated_at": now_iso()})
        await txn.conn.execute(table.update().where(table.c.id == current.id).values(**values))
        await self._changed(
            txn,
            current.org_id,
            current.workspace_id,
            current.id,
            "updated",
            {"fields": sorted(changes)},
        )
        return await self._get_in(txn, current.id)

    async def delete(self, txn: WriteTxn, current: ApprovalPolicy) -> None:
        table = schema.approval_policies
        await txn.conn.execute(table.delete().where(table.c.id == current.id))
        await self._changed(txn, current.org_id, current.workspace_id, current.id, "deleted")

    async def get(self, org_id: str, policy_id: str) -> ApprovalPolicy | None:
        table = schema.approval_policies
        query = table.select().where(table.c.id == policy_id, table.c.org_id == org_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _policy(row)

    async def list(
        self, org_id: str, workspace_ids: set[str] | None = None
    ) -> list[ApprovalPolicy]:
        """Policies of the org; with workspace_ids, those of these workspaces and org-wide ones."""
        table = schema.approval_policies
        query = table.select().where(table.c.org_id == org_id)
        if workspace_ids is not None:
            query = query.where(
                sa.or_(table.c.workspace_id.in_(workspace_ids), table.c.workspace_id.is_(None))
            )
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(table.c.priority, table.c.id))
            return [_policy(row) for row in rows]


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    org_id: str
    workspace_id: str
    policy_id: str
    status: str
    source: str
    actor: str
    integration_name: str
    integration_alias: str
    action_name: str
    end_user_id: str | None
    approval_key: str
    fingerprint: str
    input_preview: dict[str, Any]
    reason: str | None
    decided_by: str | None
    decided_at: str | None
    consumed_at: str | None
    expires_at: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "workspaceId": self.workspace_id,
            "policyId": self.policy_id,
            "status": self.status,
            "source": self.source,
            "integrationName": self.integration_name,
            "integrationAlias": self.integration_alias,
            "actionName": self.action_name,
            "endUserId": self.end_user_id,
            "inputPreview": self.input_preview,
            "reason": self.reason,
            "decidedBy": self.decided_by,
            "decidedAt": self.decided_at,
            "executedAt": self.consumed_at,
            "expiresAt": self.expires_at,
            "createdAt": self.created_at,
        }


def _approval(row: sa.Row[Any]) -> Approval:
    return Approval(**dict(row._mapping))


class Approvals:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, txn: WriteTxn, approval: Approval) -> Approval:
        await txn.conn.execute(schema.approvals.insert().values(**dataclasses.asdict(approval)))
        return approval

    async def get(self, approval_id: str, org_id: str | None = None) -> Approval | None:
        table = schema.approvals
        query = table.select().where(table.c.id == approval_id)
        if org_id is not None:
            query = query.where(table.c.org_id == org_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _approval(row)

    async def latest_for_key(self, org_id: str, approval_key: str) -> Approval | None:
        table = schema.approvals
        query = (
            table.select()
            .where(table.c.org_id == org_id, table.c.approval_key == approval_key)
            .order_by(table.c.created_at.desc(), table.c.id.desc())
            .limit(1)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _approval(row)

    async def overdue(self, org_id: str, now: str, limit: int = 500) -> list[Approval]:
        """Pending approvals of the org whose time ran out by `now` (not yet settled)."""
        table = schema.approvals
        query = (
            table.select()
            .where(
                table.c.org_id == org_id,
                table.c.status == "pending",
                table.c.expires_at <= now,
            )
            .order_by(table.c.expires_at)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [_approval(row) for row in await conn.execute(query)]

    async def list(
        self,
        org_id: str,
        *,
        workspace_ids: set[str] | None = None,
        workspace_id: str | None = None,
        status: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: tuple[str, str] | None = None,
        limit: int = 50,
    ) -> tuple[list[Approval], tuple[str, str] | None]:
        table = schema.approvals
        query = table.select().where(table.c.org_id == org_id)
        if workspace_ids is not None:
            query = query.where(table.c.workspace_id.in_(workspace_ids))
        if workspace_id is not None:
            query = query.where(table.c.workspace_id == workspace_id)
        if status is not None:
            query = query.where(table.c.status == status)
        if since is not None:
            query = query.where(table.c.created_at >= since)
        if until is not None:
            query = query.where(table.c.created_at < until)
        if before is not None:
            created, approval_id = before
            query = query.where(
                sa.or_(
                    table.c.created_at < created,
                    sa.and_(table.c.created_at == created, table.c.id < approval_id),
                )
            )
        query = query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)
        async with self._db.read() as conn:
            rows = [_approval(row) for row in await conn.execute(query)]
        page = rows[:limit]
        cursor = (page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return page, cursor

    async def decide(
        self, txn: WriteTxn, approval_id: str, status: str, by: str, reason: str | None
    ) -> bool:
        """Record a decision on a pending approval; False if it was already decided."""
        table = schema.approvals
        done = await txn.conn.execute(
            table.update()
            .where(table.c.id == approval_id, table.c.status == "pending")
            .values(status=status, decided_by=by, decided_at=now_iso(), reason=reason)
        )
        return done.rowcount == 1

    async def consume(self, approval_id: str) -> bool:
        """Claim an approved request's single run; only one caller ever gets True."""
        table = schema.approvals
        async with self._db.write("system") as txn:
            done = await txn.conn.execute(
                table.update()
                .where(
                    table.c.id == approval_id,
                    table.c.status == "approved",
                    table.c.consumed_at.is_(None),
                )
                .values(consumed_at=now_iso())
            )
            return done.rowcount == 1

    async def release(self, approval_id: str) -> None:
        """Give a claimed run back (it was refused before the action started)."""
        table = schema.approvals
        async with self._db.write("system") as txn:
            await txn.conn.execute(
                table.update().where(table.c.id == approval_id).values(consumed_at=None)
            )


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    fingerprint: str
    state: str  # "in_progress" | "parked" | "completed"
    status_code: int | None
    body: Any


class IdempotencyRecords:
    """First completed response per (org, key), replayed for 24 h (Stripe / IETF draft)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def begin(self, org_id: str, key: str, fingerprint: str) -> IdempotencyRecord | None:
        """Claim the key. None: claimed now. Otherwise the record already holding it.

        A key parked by the same request (it waits for a person) is claimed again."""
        table = schema.idempotency_records
        mine = sa.and_(table.c.org_id == org_id, table.c.key == key)
        now = utcnow()
        async with self._db.write("system") as txn:
            row = (await txn.conn.execute(table.select().where(mine))).first()
            if row is not None and row.expires_at > iso(now):
                if row.state == "parked" and row.fingerprint == fingerprint:
                    await txn.conn.execute(table.update().where(mine).values(state="in_progress"))
                    return None
                return IdempotencyRecord(row.fingerprint, row.state, row.status_code, row.body)
            if row is not None:
                await txn.conn.execute(table.delete().where(mine))
            await txn.conn.execute(
                table.insert().values(
                    org_id=org_id,
                    key=key,
                    fingerprint=fingerprint,
                    state="in_progress",
                    created_at=iso(now),
                    expires_at=iso(now + IDEMPOTENCY_TTL),
                )
            )
        return None

    async def complete(self, org_id: str, key: str, status_code: int, body: Any) -> None:
        table = schema.idempotency_records
        async with self._db.write("system") as txn:
            await txn.conn.execute(
                table.update()
                .where(table.c.org_id == org_id, table.c.key == key)
                .values(state="completed", status_code=status_code, body=body)
            )

    async def park(self, org_id: str, key: str) -> None:
        """Nothing ran, but the key stays bound to its request (it waits for a person's
        decision): the same request claims it again, any other is refused."""
        table = schema.idempotency_records
        async with self._db.write("system") as txn:
            await txn.conn.execute(
                table.update()
                .where(table.c.org_id == org_id, table.c.key == key, table.c.state == "in_progress")
                .values(state="parked")
            )

    async def release(self, org_id: str, key: str) -> None:
        table = schema.idempotency_records
        async with self._db.write("system") as txn:
            await txn.conn.execute(
                table.delete().where(
                    table.c.org_id == org_id, table.c.key == key, table.c.state == "in_progress"
                )
            )
