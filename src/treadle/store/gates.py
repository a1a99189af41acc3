"""Human Gates storage: approval policies, approval requests, idempotency records."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import sqlalchemy as sa

from treadle.clock import iso, now_iso, utcnow
from treadle.ids import new_uuid
from treadle.store import schema
from treadle.store.database import Database, WriteTxn, bump_version
from treadle.store.portable import serialise

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL = timedelta(hours=24)
# How long a running claim stays valid unless its owner renews it (every third of it).
IDEMPOTENCY_LEASE = timedelta(seconds=30)


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


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """The key is this call's to run. `rerun`: an earlier attempt with the same request held
    it and was abandoned (its process stopped before finishing), so the action may already
    have run once; this call runs it again."""

    rerun: bool


class IdempotencyRecords:
    """First completed response per (org, key), replayed for 24 h (Stripe / IETF draft).

    A running claim is leased: it names its owner (this object, one per process) and an
    expiry that the owner renews (`keep_leases`) while it holds claims. A claim whose lease ran
    out belongs to a process that stopped (crash, `kill -9`): the next request with the same
    key and input takes it over and runs again, instead of answering "in use" for 24 hours.
    A lease is a row in the shared database, so this holds for several processes too."""

    def __init__(
        self,
        db: Database,
        *,
        lease: timedelta = IDEMPOTENCY_LEASE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._lease = lease
        self._clock = clock
        self.owner = new_uuid()
        self._held = 0  # claims this process holds now; leases are renewed while there are any

    async def begin(
        self, org_id: str, key: str, fingerprint: str
    ) -> IdempotencyClaim | IdempotencyRecord:
        """Claim the key, or return the record that holds it (a replay, a mismatch or a run
        still in progress; the caller tells which). The same request claims it again when it
        was parked (it waits for a person) or abandoned (its process stopped)."""
        table = schema.idempotency_records
        mine = sa.and_(table.c.org_id == org_id, table.c.key == key)
        now = self._clock()
        leased = {
            "state": "in_progress",
            "owner": self.owner,
            "lease_expires_at": iso(now + self._lease),
        }
        async with self._db.write("system") as txn:
            # The same key from two processes at once: one claims it, the other then reads
            # the claim (IDEMPOTENCY_KEY_IN_USE), never a duplicate-row failure.
            await serialise(txn.conn, "idempotency", org_id, key)
            row = (await txn.conn.execute(table.select().where(mine))).first()
            if row is not None and row.expires_at > iso(now):
                held = IdempotencyRecord(row.fingerprint, row.state, row.status_code, row.body)
                if row.fingerprint != fingerprint or row.state == "completed":
                    return held
                abandoned = row.state == "in_progress" and _lease_over(row, now)
                if row.state == "in_progress" and not abandoned:
                    return held
                await txn.conn.execute(table.update().where(mine).values(**leased))
            else:
                abandoned = False
                if row is not None:
                    await txn.conn.execute(table.delete().where(mine))
                await txn.conn.execute(
                    table.insert().values(
                        org_id=org_id,
                        key=key,
                        fingerprint=fingerprint,
                        created_at=iso(now),
                        expires_at=iso(now + IDEMPOTENCY_TTL),
                        **leased,
                    )
                )
        self._held += 1
        return IdempotencyClaim(rerun=abandoned)

    def _claimed(self, org_id: str, key: str) -> sa.ColumnElement[bool]:
        """The row, while this process still holds its claim (not taken over after a lease
        this process failed to renew in time)."""
        table = schema.idempotency_records
        return sa.and_(
            table.c.org_id == org_id,
            table.c.key == key,
            table.c.state == "in_progress",
            table.c.owner == self.owner,
        )

    async def complete(self, org_id: str, key: str, status_code: int, body: Any) -> None:
        table = schema.idempotency_records
        try:
            async with self._db.write("system") as txn:
                await txn.conn.execute(
                    table.update()
                    .where(self._claimed(org_id, key))
                    .values(
                        state="completed",
                        status_code=status_code,
                        body=body,
                        owner=None,
                        lease_expires_at=None,
                    )
                )
        finally:
            self._held -= 1

    async def park(self, org_id: str, key: str) -> None:
        """Nothing ran, but the key stays bound to its request (it waits for a person's
        decision): the same request claims it again, any other is refused."""
        table = schema.idempotency_records
        try:
            async with self._db.write("system") as txn:
                await txn.conn.execute(
                    table.update()
                    .where(self._claimed(org_id, key))
                    .values(state="parked", owner=None, lease_expires_at=None)
                )
        finally:
            self._held -= 1

    async def release(self, org_id: str, key: str) -> None:
        table = schema.idempotency_records
        try:
            async with self._db.write("system") as txn:
                await txn.conn.execute(table.delete().where(self._claimed(org_id, key)))
        finally:
            self._held -= 1

    async def renew(self) -> None:
        """Extend the lease of every claim this process holds: the live owner's heartbeat,
        one statement however many calls run."""
        if self._held <= 0:
            return
        table = schema.idempotency_records
        async with self._db.write("system") as txn:
            await txn.conn.execute(
                table.update()
                .where(table.c.owner == self.owner, table.c.state == "in_progress")
                .values(lease_expires_at=iso(self._clock() + self._lease))
            )

    async def keep_leases(self) -> None:
        """Renew every third of the lease until cancelled, so one late or failed renewal
        never lets a live claim lapse."""
        interval = self._lease.total_seconds() / 3
        while True:
            await anyio.sleep(interval)
            try:
                await self.renew()
            except Exception:
                log.exception("could not renew idempotency leases; will retry")


def _lease_over(row: sa.Row[Any], now: datetime) -> bool:
    # No lease at all: a claim written before leases existed, whose process is gone.
    return row.lease_expires_at is None or row.lease_expires_at <= iso(now)
