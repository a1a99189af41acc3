"""SQL for OAuth app settings and pending authorizations (`state` rows).

Client secrets and PKCE verifiers are sealed with the vault; a `state` is stored only as its
SHA-256, so a database dump cannot finish somebody's authorization.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from treadle.clock import iso, now_iso, parse_iso, utcnow
from treadle.ids import hash_token, new_uuid
from treadle.oauth.records import OAuthApp, PendingAuthorization
from treadle.store import schema
from treadle.store.database import Database, WriteTxn
from treadle.store.portable import serialise
from treadle.vault import Vault


def _app(row: sa.Row[Any]) -> OAuthApp:
    return OAuthApp(
        id=row.id,
        org_id=row.org_id,
        integration_name=row.integration_name,
        client_id=row.client_id,
        scopes=tuple(row.scopes),
        authorize_url=row.authorize_url,
        token_url=row.token_url,
        api_base_url=row.api_base_url,
        allow_private_network=bool(row.allow_private_network),
        created_at=row.created_at,
        updated_at=row.updated_at,
        resource=row.resource,
    )


class OAuthApps:
    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self._vault = vault

    async def put(
        self,
        txn: WriteTxn,
        *,
        org_id: str,
        integration_name: str,
        client_id: str,
        client_secret: str | None,
        scopes: tuple[str, ...],
        authorize_url: str,
        token_url: str,
        api_base_url: str | None,
        allow_private_network: bool,
        resource: str | None = None,
    ) -> tuple[OAuthApp, bool]:
        """Create or replace; a None secret keeps the stored one. Returns (app, created)."""
        table = schema.oauth_apps
        now = now_iso()
        # Create-or-replace reads first: concurrent puts (any process) take turns.
        await serialise(txn.conn, "oauth apps", org_id, integration_name)
        current = (
            await txn.conn.execute(
                sa.select(table.c.id, table.c.client_secret).where(
                    table.c.org_id == org_id, table.c.integration_name == integration_name
                )
            )
        ).first()
        values: dict[str, Any] = {
            "client_id": client_id,
            "scopes": list(scopes),
            "authorize_url": authorize_url,
            "token_url": token_url,
            "api_base_url": api_base_url,
            "allow_private_network": allow_private_network,
            "resource": resource,
            "updated_at": now,
        }
        if client_secret is not None:
            values["client_secret"] = self._vault.seal({"clientSecret": client_secret})
        if current is None:
            if client_secret is None:
                raise ValueError("a new OAuth app needs a client secret")
            app_id = new_uuid()
            await txn.conn.execute(
                table.insert().values(
                    id=app_id,
                    org_id=org_id,
                    integration_name=integration_name,
                    created_at=now,
                    **values,
                )
            )
        else:
            app_id = current.id
            await txn.conn.execute(table.update().where(table.c.id == app_id).values(**values))
        row = (await txn.conn.execute(table.select().where(table.c.id == app_id))).one()
        await txn.changed(
            org_id=org_id,
            workspace_id=None,
            target_type="oauth_app",
            target_id=app_id,
            change="created" if current is None else "updated",
            detail={"integrationName": integration_name, "clientId": client_id},
        )
        return _app(row), current is None

    async def get(self, org_id: str, integration_name: str) -> OAuthApp | None:
        table = schema.oauth_apps
        query = table.select().where(
            table.c.org_id == org_id, table.c.integration_name == integration_name
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _app(row)

    async def list(self, org_id: str) -> list[OAuthApp]:
        table = schema.oauth_apps
        query = table.select().where(table.c.org_id == org_id).order_by(table.c.integration_name)
        async with self._db.read() as conn:
            return [_app(row) for row in await conn.execute(query)]

    async def client_secret(self, app: OAuthApp) -> str:
        table = schema.oauth_apps
        async with self._db.read() as conn:
            query = sa.select(table.c.client_secret).where(table.c.id == app.id)
            sealed = (await conn.execute(query)).scalar_one()
        return self._vault.open_sealed(sealed)["clientSecret"]

    async def delete(self, txn: WriteTxn, app: OAuthApp) -> None:
        table = schema.oauth_apps
        await txn.conn.execute(table.delete().where(table.c.id == app.id))
        await txn.changed(
            org_id=app.org_id,
            workspace_id=None,
            target_type="oauth_app",
            target_id=app.id,
            change="deleted",
            detail={"integrationName": app.integration_name},
        )


class StateProblem(StrEnum):
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


def _pending(row: sa.Row[Any], verifier: str) -> PendingAuthorization:
    return PendingAuthorization(
        state_hash=row.state_hash,
        org_id=row.org_id,
        workspace_id=row.workspace_id,
        integration_name=row.integration_name,
        end_user_id=row.end_user_id,
        external_id=row.external_id,
        display_name=row.display_name,
        redirect_to=row.redirect_to,
        code_verifier=verifier,
        actor=row.actor,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )


class OAuthStates:
    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self._vault = vault

    async def create(
        self,
        *,
        state: str,
        org_id: str,
        workspace_id: str,
        integration_name: str,
        end_user_id: str | None,
        external_id: str,
        display_name: str,
        redirect_to: str | None,
        code_verifier: str,
        actor: str,
        lifetime: timedelta,
    ) -> None:
        table = schema.oauth_states
        now = utcnow()
        async with self._db.write(actor) as txn:
            # Housekeeping: states a day past their expiry can only ever be refused.
            await txn.conn.execute(
                table.delete().where(table.c.expires_at < iso(now - timedelta(days=1)))
            )
            await txn.conn.execute(
                table.insert().values(
                    state_hash=hash_token(state),
                    org_id=org_id,
                    workspace_id=workspace_id,
                    integration_name=integration_name,
                    end_user_id=end_user_id,
                    external_id=external_id,
                    display_name=display_name,
                    redirect_to=redirect_to,
                    code_verifier=self._vault.seal({"verifier": code_verifier}),
                    actor=actor,
                    expires_at=iso(now + lifetime),
                    used_at=None,
                    created_at=iso(now),
                )
            )

    async def claim(self, state: str) -> PendingAuthorization | StateProblem:
        """Marks the state used, once: a replay (or a concurrent second callback) is refused."""
        table = schema.oauth_states
        key = hash_token(state)
        async with self._db.write("oauth_callback") as txn:
            row = (await txn.conn.execute(table.select().where(table.c.state_hash == key))).first()
            if row is None:
                return StateProblem.UNKNOWN
            if row.used_at is not None:
                return StateProblem.USED
            if parse_iso(row.expires_at) <= utcnow():
                return StateProblem.EXPIRED
            claimed = await txn.conn.execute(
                table.update()
                .where(table.c.state_hash == key, table.c.used_at.is_(None))
                .values(used_at=now_iso())
            )
            if claimed.rowcount != 1:
                return StateProblem.USED
        return _pending(row, self._vault.open_sealed(row.code_verifier)["verifier"])
