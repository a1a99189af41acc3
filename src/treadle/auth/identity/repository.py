"""SQL for identity providers and the sign-ins in flight at them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from treadle.auth.identity.records import IdentityProvider, IdpKind, PendingSignIn, SignedIn
from treadle.auth.identity.tables import identity_provider_servers, identity_providers, idp_sign_ins
from treadle.clock import iso, now_iso, parse_iso, utcnow
from treadle.errors import ErrorCode, Refusal
from treadle.ids import hash_token, new_uuid
from treadle.store import schema
from treadle.store.database import Database, WriteTxn
from treadle.store.portable import serialise
from treadle.vault import Vault


@dataclass(frozen=True, slots=True)
class IdpFields:
    """Everything a provider is configured with, as a create or an update sets it. A None
    `client_secret` on an update keeps the stored one."""

    name: str
    kind: IdpKind
    issuer: str
    client_id: str | None
    client_secret: str | None
    scopes: tuple[str, ...]
    claim: str
    allow_create_end_users: bool
    audience: str | None
    allow_private_network: bool
    server_ids: tuple[str, ...]


def _provider(row: sa.Row[Any], server_ids: tuple[str, ...]) -> IdentityProvider:
    return IdentityProvider(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        kind=IdpKind(row.kind),
        issuer=row.issuer,
        client_id=row.client_id,
        has_client_secret=row.client_secret is not None,
        scopes=tuple(row.scopes),
        claim=row.claim,
        allow_create_end_users=bool(row.allow_create_end_users),
        audience=row.audience,
        allow_private_network=bool(row.allow_private_network),
        server_ids=server_ids,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class IdentityProviders:
    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self._vault = vault

    async def create(self, txn: WriteTxn, org_id: str, fields: IdpFields) -> IdentityProvider:
        if fields.kind is IdpKind.OIDC and fields.client_secret is None:
            raise ValueError("an oidc provider needs a client secret")
        idp_id = new_uuid()
        now = now_iso()
        await self._check_name(txn, org_id, fields.name, None)
        await txn.conn.execute(
            identity_providers.insert().values(
                id=idp_id, org_id=org_id, created_at=now, **self._values(fields, now)
            )
        )
        await self._claim_servers(txn, org_id, idp_id, fields.server_ids)
        await txn.changed(
            org_id=org_id,
            workspace_id=None,
            target_type="identity_provider",
            target_id=idp_id,
            change="created",
            detail={"name": fields.name, "kind": fields.kind.value, "issuer": fields.issuer},
        )
        found = await self._get_in(txn, org_id, idp_id)
        assert found is not None
        return found

    async def update(
        self, txn: WriteTxn, current: IdentityProvider, fields: IdpFields
    ) -> IdentityProvider:
        now = now_iso()
        await self._check_name(txn, current.org_id, fields.name, current.id)
        await txn.conn.execute(
            identity_providers.update()
            .where(identity_providers.c.id == current.id)
            .values(**self._values(fields, now))
        )
        await txn.conn.execute(
            identity_provider_servers.delete().where(
                identity_provider_servers.c.idp_id == current.id
            )
        )
        await self._claim_servers(txn, current.org_id, current.id, fields.server_ids)
        await txn.changed(
            org_id=current.org_id,
            workspace_id=None,
            target_type="identity_provider",
            target_id=current.id,
            change="updated",
            detail={"name": fields.name, "kind": fields.kind.value, "issuer": fields.issuer},
        )
        found = await self._get_in(txn, current.org_id, current.id)
        assert found is not None
        return found

    async def delete(self, txn: WriteTxn, idp: IdentityProvider) -> None:
        await txn.conn.execute(
            identity_provider_servers.delete().where(identity_provider_servers.c.idp_id == idp.id)
        )
        await txn.conn.execute(identity_providers.delete().where(identity_providers.c.id == idp.id))
        await txn.changed(
            org_id=idp.org_id,
            workspace_id=None,
            target_type="identity_provider",
            target_id=idp.id,
            change="deleted",
            detail={"name": idp.name, "kind": idp.kind.value},
        )

    def _values(self, fields: IdpFields, now: str) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": fields.name,
            "kind": fields.kind.value,
            "issuer": fields.issuer,
            "client_id": fields.client_id,
            "scopes": list(fields.scopes),
            "claim": fields.claim,
            "allow_create_end_users": fields.allow_create_end_users,
            "audience": fields.audience,
            "allow_private_network": fields.allow_private_network,
            "updated_at": now,
        }
        if fields.client_secret is not None:
            values["client_secret"] = self._vault.seal({"clientSecret": fields.client_secret})
        if fields.kind is not IdpKind.OIDC:
            values["client_secret"] = None
        return values

    @staticmethod
    async def _check_name(txn: WriteTxn, org_id: str, name: str, own_id: str | None) -> None:
        # Until commit, no concurrent write (any process) passes this check for the org.
        await serialise(txn.conn, "identity providers", org_id)
        query = sa.select(identity_providers.c.id).where(
            identity_providers.c.org_id == org_id, identity_providers.c.name == name
        )
        found = (await txn.conn.execute(query)).scalar()
        if found is not None and found != own_id:
            raise Refusal(ErrorCode.DUPLICATE, "An identity provider with this name exists")

    @staticmethod
    async def _claim_servers(
        txn: WriteTxn, org_id: str, idp_id: str, server_ids: tuple[str, ...]
    ) -> None:
        if not server_ids:
            return
        table = identity_provider_servers
        taken = (
            await txn.conn.execute(
                sa.select(table.c.server_id).where(table.c.server_id.in_(server_ids))
            )
        ).first()
        if taken is not None:
            raise Refusal(
                ErrorCode.DUPLICATE,
                "An MCP server is already authorized by another identity provider",
                field="mcpServerIds",
                mcpServerId=taken.server_id,
            )
        try:
            # A savepoint: a lost race ends as a 409, not as a failed transaction.
            async with txn.conn.begin_nested():
                await txn.conn.execute(
                    table.insert(),
                    [{"server_id": s, "idp_id": idp_id, "org_id": org_id} for s in server_ids],
                )
        except IntegrityError:
            raise Refusal(
                ErrorCode.DUPLICATE,
                "An MCP server is already authorized by another identity provider",
                field="mcpServerIds",
            ) from None

    async def _get_in(self, txn: WriteTxn, org_id: str, idp_id: str) -> IdentityProvider | None:
        row = (
            await txn.conn.execute(
                identity_providers.select().where(
                    identity_providers.c.id == idp_id, identity_providers.c.org_id == org_id
                )
            )
        ).first()
        if row is None:
            return None
        servers = await txn.conn.execute(
            sa.select(identity_provider_servers.c.server_id)
            .where(identity_provider_servers.c.idp_id == idp_id)
            .order_by(identity_provider_servers.c.server_id)
        )
        return _provider(row, tuple(servers.scalars()))

    async def get(self, org_id: str, idp_id: str) -> IdentityProvider | None:
        found = await self.list(org_id, idp_id=idp_id)
        return found[0] if found else None

    async def list(self, org_id: str, *, idp_id: str | None = None) -> list[IdentityProvider]:
        query = identity_providers.select().where(identity_providers.c.org_id == org_id)
        # Joined to the servers: a deleted MCP server drops out of its provider's list.
        servers = (
            sa.select(identity_provider_servers.c.idp_id, identity_provider_servers.c.server_id)
            .join(
                schema.mcp_servers,
                schema.mcp_servers.c.id == identity_provider_servers.c.server_id,
            )
            .where(identity_provider_servers.c.org_id == org_id)
        )
        if idp_id is not None:
            query = query.where(identity_providers.c.id == idp_id)
            servers = servers.where(identity_provider_servers.c.idp_id == idp_id)
        async with self._db.read() as conn:
            rows = list(
                await conn.execute(
                    query.order_by(identity_providers.c.created_at, identity_providers.c.id)
                )
            )
            by_idp: dict[str, list[str]] = {}
            for link in await conn.execute(servers.order_by(identity_provider_servers.c.server_id)):
                by_idp.setdefault(link.idp_id, []).append(link.server_id)
        return [_provider(row, tuple(by_idp.get(row.id, ()))) for row in rows]

    async def find(self, idp_id: str) -> IdentityProvider | None:
        """By id alone (a sign-in names its provider; the provider names its org)."""
        query = sa.select(identity_providers.c.org_id).where(identity_providers.c.id == idp_id)
        async with self._db.read() as conn:
            org_id = (await conn.execute(query)).scalar()
        return None if org_id is None else await self.get(org_id, idp_id)

    async def for_server(self, server_id: str) -> IdentityProvider | None:
        """The `external_as` provider that authorizes this MCP server, if one does."""
        query = sa.select(identity_provider_servers.c.idp_id, identity_provider_servers.c.org_id)
        async with self._db.read() as conn:
            link = (
                await conn.execute(query.where(identity_provider_servers.c.server_id == server_id))
            ).first()
        if link is None:
            return None
        return await self.get(link.org_id, link.idp_id)

    async def client_secret(self, idp: IdentityProvider) -> str:
        query = sa.select(identity_providers.c.client_secret).where(
            identity_providers.c.id == idp.id
        )
        async with self._db.read() as conn:
            sealed = (await conn.execute(query)).scalar()
        if not isinstance(sealed, str):
            raise Refusal(ErrorCode.NOT_FOUND, "The identity provider has no client secret")
        return self._vault.open_sealed(sealed)["clientSecret"]


class TicketProblem(StrEnum):
    UNKNOWN = "ticket_unknown"
    USED = "ticket_used"
    EXPIRED = "ticket_expired"


class StateProblem(StrEnum):
    UNKNOWN = "state_unknown"
    USED = "state_used"
    EXPIRED = "state_expired"


class SignIns:
    """Sign-ins in flight: a state claimed once at the callback, then a ticket used once."""

    def __init__(self, db: Database, vault: Vault) -> None:
        self._db = db
        self._vault = vault

    async def begin(
        self,
        *,
        state: str,
        nonce: str,
        verifier: str,
        idp: IdentityProvider,
        workspace_id: str | None,
        return_to: str,
        lifetime: timedelta,
        browser: str | None,
    ) -> None:
        now = utcnow()
        async with self._db.write("oidc_sign_in") as txn:
            # Housekeeping: sign-ins a day past their expiry can only ever be refused.
            await txn.conn.execute(
                idp_sign_ins.delete().where(
                    idp_sign_ins.c.expires_at < iso(now - timedelta(days=1))
                )
            )
            await txn.conn.execute(
                idp_sign_ins.insert().values(
                    state_hash=hash_token(state),
                    org_id=idp.org_id,
                    idp_id=idp.id,
                    workspace_id=workspace_id,
                    nonce_hash=hash_token(nonce),
                    code_verifier=self._vault.seal({"verifier": verifier}),
                    return_to=return_to,
                    browser_hash=None if browser is None else hash_token(browser),
                    created_at=iso(now),
                    expires_at=iso(now + lifetime),
                )
            )

    async def claim(self, state: str) -> tuple[str, PendingSignIn] | StateProblem:
        """Marks the state used, once: a replayed (or concurrent second) callback is refused.
        Returns the state's hash (the sign-in's key) and what it was started with."""
        key = hash_token(state)
        async with self._db.write("oidc_callback") as txn:
            row = (
                await txn.conn.execute(
                    idp_sign_ins.select().where(idp_sign_ins.c.state_hash == key)
                )
            ).first()
            if row is None:
                return StateProblem.UNKNOWN
            if row.used_at is not None:
                return StateProblem.USED
            if parse_iso(row.expires_at) <= utcnow():
                return StateProblem.EXPIRED
            claimed = await txn.conn.execute(
                idp_sign_ins.update()
                .where(idp_sign_ins.c.state_hash == key, idp_sign_ins.c.used_at.is_(None))
                .values(used_at=now_iso())
            )
            if claimed.rowcount != 1:
                return StateProblem.USED
        return key, PendingSignIn(
            org_id=row.org_id,
            idp_id=row.idp_id,
            workspace_id=row.workspace_id,
            nonce_hash=row.nonce_hash,
            code_verifier=self._vault.open_sealed(row.code_verifier)["verifier"],
            return_to=row.return_to,
            browser_hash=row.browser_hash,
        )

    async def issue_ticket(
        self,
        txn: WriteTxn,
        key: str,
        *,
        ticket: str,
        external_id: str,
        end_user_id: str | None,
        lifetime: timedelta,
    ) -> None:
        await txn.conn.execute(
            idp_sign_ins.update()
            .where(idp_sign_ins.c.state_hash == key)
            .values(
                ticket_hash=hash_token(ticket),
                ticket_expires_at=iso(utcnow() + lifetime),
                external_id=external_id,
                end_user_id=end_user_id,
            )
        )

    async def peek(self, ticket: str) -> SignedIn | TicketProblem:
        """What a ticket names while it is still redeemable, without spending it (a consent
        page shows who signed in; the decision redeems the ticket)."""
        query = idp_sign_ins.select().where(idp_sign_ins.c.ticket_hash == hash_token(ticket))
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.ticket_expires_at is None:
            return TicketProblem.UNKNOWN
        if row.ticket_used_at is not None:
            return TicketProblem.USED
        if parse_iso(row.ticket_expires_at) <= utcnow():
            return TicketProblem.EXPIRED
        return SignedIn(row.org_id, row.idp_id, row.external_id, row.end_user_id)

    async def redeem(self, ticket: str) -> SignedIn | TicketProblem:
        key = hash_token(ticket)
        async with self._db.write("oidc_ticket") as txn:
            row = (
                await txn.conn.execute(
                    idp_sign_ins.select().where(idp_sign_ins.c.ticket_hash == key)
                )
            ).first()
            if row is None or row.ticket_expires_at is None:
                return TicketProblem.UNKNOWN
            if row.ticket_used_at is not None:
                return TicketProblem.USED
            if parse_iso(row.ticket_expires_at) <= utcnow():
                return TicketProblem.EXPIRED
            used = await txn.conn.execute(
                idp_sign_ins.update()
                .where(idp_sign_ins.c.ticket_hash == key, idp_sign_ins.c.ticket_used_at.is_(None))
                .values(ticket_used_at=now_iso())
            )
            if used.rowcount != 1:
                return TicketProblem.USED
        return SignedIn(row.org_id, row.idp_id, row.external_id, row.end_user_id)
