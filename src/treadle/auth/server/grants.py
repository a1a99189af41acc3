"""Grants, codes and tokens: the authorization server's records, on SQLite and PostgreSQL.

Single-use rules are enforced by conditional updates (`… WHERE used_at IS NULL`), so two
replicas racing to redeem one code or one refresh token cannot both win: the loser sees a
reuse and the grant is revoked, as RFC 9700 asks of a detected replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from treadle.auth.server.tables import (
    oauth_codes,
    oauth_grants,
    oauth_org_clients,
    oauth_tokens,
)
from treadle.clock import iso, now_iso, utcnow
from treadle.ids import hash_token, new_token
from treadle.store.database import Database, WriteTxn, insert_activity

ACCESS_PREFIX = "mcpat"
REFRESH_PREFIX = "mcprt"
CODE_PREFIX = "mcpac"


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    org_id: str
    workspace_id: str
    server_id: str
    client_id: str
    # The end user's externalId, None when the person signed in without acting as one.
    end_user_id: str | None
    signed_in_as: str
    scopes: list[str]
    resource: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "workspaceId": self.workspace_id,
            "serverId": self.server_id,
            "clientId": self.client_id,
            "endUserId": self.end_user_id,
            "signedInAs": self.signed_in_as,
            "scopes": self.scopes,
            "resource": self.resource,
            "createdAt": self.created_at,
            "lastUsedAt": self.last_used_at,
            "revokedAt": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class SeenClient:
    org_id: str
    client_id: str
    client_name: str | None
    kind: str
    first_seen_at: str
    last_seen_at: str
    revoked_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "clientId": self.client_id,
            "clientName": self.client_name,
            "kind": self.kind,
            "firstSeenAt": self.first_seen_at,
            "lastSeenAt": self.last_seen_at,
            "revokedAt": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class PendingCode:
    grant: Grant
    redirect_uri: str
    code_challenge: str


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    grant: Grant


class CodeReused(Exception):
    """A code or refresh token presented a second time: its grant is now revoked."""


def _grant(row: sa.Row[Any]) -> Grant:
    m = row._mapping
    return Grant(
        id=m["id"],
        org_id=m["org_id"],
        workspace_id=m["workspace_id"],
        server_id=m["server_id"],
        client_id=m["client_id"],
        end_user_id=m["end_user_id"],
        signed_in_as=m["signed_in_as"],
        scopes=list(m["scopes"]),
        resource=m["resource"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        revoked_at=m["revoked_at"],
    )


def _seen(row: sa.Row[Any]) -> SeenClient:
    m = row._mapping
    return SeenClient(**{c.name: m[c.name] for c in oauth_org_clients.c})


def _in(seconds: float) -> str:
    return iso(utcnow() + timedelta(seconds=seconds))


class Grants:
    def __init__(self, db: Database, access_seconds: int, refresh_seconds: int) -> None:
        self._db = db
        self.access_seconds = access_seconds
        self.refresh_seconds = refresh_seconds

    # -- consent --------------------------------------------------------------------------

    async def create(
        self,
        *,
        org_id: str,
        workspace_id: str,
        server_id: str,
        client_id: str,
        client_name: str | None,
        client_kind: str,
        end_user_id: str | None,
        signed_in_as: str,
        scopes: list[str],
        resource: str,
        redirect_uri: str,
        code_challenge: str,
        code_seconds: int = 60,
    ) -> tuple[Grant, str]:
        """A new grant and its authorization code (returned once, stored hashed)."""
        from treadle.ids import new_uuid

        now = now_iso()
        grant_id = f"grt_{new_uuid().replace('-', '')}"
        code = new_token(CODE_PREFIX)
        async with self._db.write(signed_in_as) as txn:
            await txn.conn.execute(
                oauth_grants.insert().values(
                    id=grant_id,
                    org_id=org_id,
                    workspace_id=workspace_id,
                    server_id=server_id,
                    client_id=client_id,
                    end_user_id=end_user_id,
                    signed_in_as=signed_in_as,
                    scopes=scopes,
                    resource=resource,
                    created_at=now,
                )
            )
            await txn.conn.execute(
                oauth_codes.insert().values(
                    code_hash=hash_token(code),
                    grant_id=grant_id,
                    client_id=client_id,
                    redirect_uri=redirect_uri,
                    code_challenge=code_challenge,
                    expires_at=_in(code_seconds),
                )
            )
            await self._saw_client(txn, org_id, client_id, client_name, client_kind, now)
            await self._record(
                txn,
                org_id,
                workspace_id,
                "oauth_consent",
                signed_in_as,
                end_user_id,
                target_id=grant_id,
                detail={"clientId": client_id, "serverId": server_id, "scopes": scopes},
            )
        grant = await self.get(org_id, grant_id)
        assert grant is not None
        return grant, code

    async def _saw_client(
        self, txn: WriteTxn, org_id: str, client_id: str, name: str | None, kind: str, now: str
    ) -> None:
        table = oauth_org_clients
        updated = await txn.conn.execute(
            table.update()
            .where(table.c.org_id == org_id, table.c.client_id == client_id)
            .values(last_seen_at=now, client_name=name)
        )
        if updated.rowcount == 0:
            await txn.conn.execute(
                table.insert().values(
                    org_id=org_id,
                    client_id=client_id,
                    client_name=name,
                    kind=kind,
                    first_seen_at=now,
                    last_seen_at=now,
                )
            )

    async def client_revoked(self, org_id: str, client_id: str) -> bool:
        table = oauth_org_clients
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(table.c.revoked_at).where(
                        table.c.org_id == org_id, table.c.client_id == client_id
                    )
                )
            ).first()
        return row is not None and row[0] is not None

    # -- codes and tokens -----------------------------------------------------------------

    async def redeem_code(self, code: str, client_id: str) -> PendingCode | None:
        """The code's grant, spending the code; None for an unknown or expired code or one
        of another client. A code spent before raises CodeReused and revokes its grant (and
        so every token it produced)."""
        table = oauth_codes
        async with self._db.write(f"oauth_client:{client_id}") as txn:
            row = (
                await txn.conn.execute(table.select().where(table.c.code_hash == hash_token(code)))
            ).first()
            if row is None or row.client_id != client_id:
                return None
            spent = await txn.conn.execute(
                table.update()
                .where(table.c.code_hash == row.code_hash, table.c.used_at.is_(None))
                .values(used_at=now_iso())
            )
            reused = spent.rowcount == 0
            if reused:
                await self._revoke_in(txn, row.grant_id, "authorization code reused")
            expired = row.expires_at <= now_iso()
        if reused:
            raise CodeReused
        if expired:
            return None
        grant = await self._live_grant(row.grant_id)
        if grant is None:
            return None
        return PendingCode(grant, row.redirect_uri, row.code_challenge)

    async def issue(self, grant: Grant, actor: str) -> IssuedTokens:
        access = new_token(ACCESS_PREFIX)
        refresh = new_token(REFRESH_PREFIX)
        now = now_iso()
        async with self._db.write(actor) as txn:
            await txn.conn.execute(
                oauth_tokens.insert(),
                [
                    {
                        "token_hash": hash_token(access),
                        "grant_id": grant.id,
                        "kind": "access",
                        "expires_at": _in(self.access_seconds),
                        "created_at": now,
                    },
                    {
                        "token_hash": hash_token(refresh),
                        "grant_id": grant.id,
                        "kind": "refresh",
                        "expires_at": _in(self.refresh_seconds),
                        "created_at": now,
                    },
                ],
            )
        return IssuedTokens(access, refresh, self.access_seconds, grant)

    async def rotate(self, refresh_token: str, client_id: str) -> Grant | None:
        """Spend a refresh token for a new pair (the caller issues it). A refresh token used
        twice raises CodeReused and revokes the whole grant."""
        table = oauth_tokens
        async with self._db.write(f"oauth_client:{client_id}") as txn:
            row = (
                await txn.conn.execute(
                    table.select().where(
                        table.c.token_hash == hash_token(refresh_token), table.c.kind == "refresh"
                    )
                )
            ).first()
            if row is None:
                return None
            grant_row = (
                await txn.conn.execute(
                    oauth_grants.select().where(oauth_grants.c.id == row.grant_id)
                )
            ).first()
            if grant_row is None or grant_row.client_id != client_id:
                return None
            spent = await txn.conn.execute(
                table.update()
                .where(
                    table.c.token_hash == row.token_hash,
                    table.c.used_at.is_(None),
                    table.c.revoked_at.is_(None),
                )
                .values(used_at=now_iso())
            )
            reused = spent.rowcount == 0 and row.revoked_at is None
            if reused:
                await self._revoke_in(txn, row.grant_id, "refresh token reused")
            live = (
                spent.rowcount == 1 and grant_row.revoked_at is None and row.expires_at > now_iso()
            )
            if live:
                grant = _grant(grant_row)
                await self._record(
                    txn,
                    grant.org_id,
                    grant.workspace_id,
                    "oauth_refresh",
                    f"oauth_client:{client_id}",
                    grant.end_user_id,
                    target_id=grant.id,
                )
        if reused:
            raise CodeReused
        return _grant(grant_row) if live else None

    async def access(self, token: str) -> Grant | None:
        """The live grant an access token stands for: None when unknown, expired, revoked
        (the token or its grant)."""
        t, g = oauth_tokens, oauth_grants
        query = (
            sa.select(g)
            .join(t, t.c.grant_id == g.c.id)
            .where(
                t.c.token_hash == hash_token(token),
                t.c.kind == "access",
                t.c.revoked_at.is_(None),
                t.c.expires_at > now_iso(),
                g.c.revoked_at.is_(None),
            )
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _grant(row)

    async def revoke_token(self, token: str, client_id: str) -> None:
        """RFC 7009: a client revokes one of its tokens. A refresh token takes its whole grant
        with it (RFC 7009 §2.1 allows, and a client dropping it wants out); an access token
        only itself. Unknown tokens are no error."""
        t = oauth_tokens
        async with self._db.write(f"oauth_client:{client_id}") as txn:
            row = (
                await txn.conn.execute(
                    sa.select(t, oauth_grants.c.client_id)
                    .join(oauth_grants, oauth_grants.c.id == t.c.grant_id)
                    .where(t.c.token_hash == hash_token(token))
                )
            ).first()
            if row is None or row.client_id != client_id:
                return
            if row.kind == "refresh":
                await self._revoke_in(txn, row.grant_id, "revoked by the client")
            else:
                await txn.conn.execute(
                    t.update().where(t.c.token_hash == row.token_hash).values(revoked_at=now_iso())
                )

    # -- grants ---------------------------------------------------------------------------

    async def _live_grant(self, grant_id: str) -> Grant | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    oauth_grants.select().where(
                        oauth_grants.c.id == grant_id, oauth_grants.c.revoked_at.is_(None)
                    )
                )
            ).first()
        return None if row is None else _grant(row)

    async def get(self, org_id: str, grant_id: str) -> Grant | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    oauth_grants.select().where(
                        oauth_grants.c.id == grant_id, oauth_grants.c.org_id == org_id
                    )
                )
            ).first()
        return None if row is None else _grant(row)

    async def find(
        self,
        org_id: str,
        *,
        workspace_ids: set[str] | None = None,
        end_user_id: str | None = None,
        client_id: str | None = None,
        include_revoked: bool = False,
    ) -> list[Grant]:
        g = oauth_grants
        query = g.select().where(g.c.org_id == org_id)
        if workspace_ids is not None:
            query = query.where(g.c.workspace_id.in_(workspace_ids))
        if end_user_id is not None:
            query = query.where(g.c.end_user_id == end_user_id)
        if client_id is not None:
            query = query.where(g.c.client_id == client_id)
        if not include_revoked:
            query = query.where(g.c.revoked_at.is_(None))
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(g.c.created_at.desc(), g.c.id))
        return [_grant(row) for row in rows]

    async def revoke(self, grant: Grant, actor: str, reason: str) -> bool:
        async with self._db.write(actor) as txn:
            return await self._revoke_in(txn, grant.id, reason)

    async def _revoke_in(self, txn: WriteTxn, grant_id: str, reason: str) -> bool:
        """Revoke a grant: every token of it fails from the next request on, on any replica
        (tokens are checked against the grant row on every request)."""
        g = oauth_grants
        done = await txn.conn.execute(
            g.update()
            .where(g.c.id == grant_id, g.c.revoked_at.is_(None))
            .values(revoked_at=now_iso(), revoked_reason=reason)
        )
        if done.rowcount == 0:
            return False
        row = (await txn.conn.execute(g.select().where(g.c.id == grant_id))).first()
        assert row is not None
        await self._record(
            txn,
            row.org_id,
            row.workspace_id,
            "oauth_revocation",
            txn.actor,
            row.end_user_id,
            target_id=grant_id,
            detail={"reason": reason, "clientId": row.client_id},
        )
        return True

    async def seen_clients(self, org_id: str) -> list[SeenClient]:
        table = oauth_org_clients
        async with self._db.read() as conn:
            rows = await conn.execute(
                table.select()
                .where(table.c.org_id == org_id)
                .order_by(table.c.last_seen_at.desc(), table.c.client_id)
            )
        return [_seen(row) for row in rows]

    async def revoke_client(self, org_id: str, client_id: str, actor: str) -> SeenClient | None:
        """The org stops trusting a client: its grants end and it may not ask again."""
        table = oauth_org_clients
        async with self._db.write(actor) as txn:
            found = (
                await txn.conn.execute(
                    table.select().where(table.c.org_id == org_id, table.c.client_id == client_id)
                )
            ).first()
            if found is None:
                return None
            if found.revoked_at is None:
                await txn.conn.execute(
                    table.update()
                    .where(table.c.org_id == org_id, table.c.client_id == client_id)
                    .values(revoked_at=now_iso())
                )
            grant_ids = (
                await txn.conn.execute(
                    sa.select(oauth_grants.c.id).where(
                        oauth_grants.c.org_id == org_id,
                        oauth_grants.c.client_id == client_id,
                        oauth_grants.c.revoked_at.is_(None),
                    )
                )
            ).scalars()
            for grant_id in list(grant_ids):
                await self._revoke_in(txn, grant_id, "client revoked by the org")
            row = (
                await txn.conn.execute(
                    table.select().where(table.c.org_id == org_id, table.c.client_id == client_id)
                )
            ).first()
        assert row is not None
        return _seen(row)

    async def record_sign_in(
        self, org_id: str, workspace_id: str, actor: str, end_user_id: str | None, how: str
    ) -> None:
        async with self._db.write(actor) as txn:
            await self._record(
                txn,
                org_id,
                workspace_id,
                "oauth_sign_in",
                actor,
                end_user_id,
                target_id=None,
                detail={"method": how},
            )

    @staticmethod
    async def _record(
        txn: WriteTxn,
        org_id: str,
        workspace_id: str | None,
        kind: str,
        actor: str,
        end_user_id: str | None,
        *,
        target_id: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await insert_activity(
            txn.conn,
            org_id=org_id,
            workspace_id=workspace_id,
            type=kind,
            source="oauth",
            actor=actor,
            status="ok",
            end_user_id=end_user_id,
            target_type="oauth_grant" if target_id else None,
            target_id=target_id,
            input=detail,
        )
