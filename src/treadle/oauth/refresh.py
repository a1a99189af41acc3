"""Keeps oauth2 connections' access tokens fresh, refreshing each connection at most once.

Called by the pipeline before an action runs (a token expiring within `EARLY` is refreshed)
and after an action's 401 (`ConnectionCredentialsError`), when the stored token is the one
that was refused. A connection is refreshed once, however many callers in however many
processes find it expiring: they queue on an in-process lock, then on a database lock held
from re-reading the stored token to committing the new one (an advisory lock on PostgreSQL;
on SQLite the write transaction, so other writes wait for the provider's answer, at most
`TOKEN_TIMEOUT`). A caller that waited finds the token its predecessor stored and uses it;
providers that rotate refresh tokens would refuse a second refresh with the old one. A
refused refresh (`invalid_grant`, a revoked app) marks the connection `needs_reauth`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio

from treadle.catalog.model import ConnectionCredentials
from treadle.clock import parse_iso, utcnow
from treadle.errors import ErrorCode, Refusal
from treadle.oauth.client import GrantRefused, TokenClient
from treadle.oauth.connect_links import ConnectLinks
from treadle.oauth.repository import OAuthApps
from treadle.store import Store, WriteTxn
from treadle.store.portable import serialise
from treadle.store.records import Connection

log = logging.getLogger(__name__)

EARLY = timedelta(seconds=60)
NEEDS_REAUTH = "needs_reauth"


def expires_soon(values: dict[str, str] | None, early: timedelta = EARLY) -> bool:
    if not values or not values.get("expiresAt"):
        return False
    try:
        return parse_iso(values["expiresAt"]) - utcnow() <= early
    except ValueError:
        return True


class _Locks:
    """One lock per connection id, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (anyio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class TokenRefresher:
    def __init__(
        self, store: Store, apps: OAuthApps, tokens: TokenClient, links: ConnectLinks
    ) -> None:
        self._store = store
        self._apps = apps
        self._tokens = tokens
        self._links = links
        self._locks = _Locks()

    @staticmethod
    def can_refresh(credentials: ConnectionCredentials | None) -> bool:
        return (
            credentials is not None
            and credentials.type == "oauth2"
            and bool(credentials.values.get("refreshToken"))
        )

    def refreshes_before_run(self, credentials: ConnectionCredentials) -> bool:
        """Whether `before_run` would refresh these credentials (their token expires soon)."""
        return self.can_refresh(credentials) and expires_soon(dict(credentials.values))

    async def before_run(
        self, connection: Connection, credentials: ConnectionCredentials
    ) -> ConnectionCredentials:
        """The credentials to run with: refreshed first when the access token is about to expire."""
        if not self.refreshes_before_run(credentials):
            return credentials
        return await self._refresh(connection, credentials, rejected=False)

    async def after_rejection(self, credentials: ConnectionCredentials) -> ConnectionCredentials:
        """The provider refused `credentials` (401): refresh, unless someone already did."""
        connection = await self._store.connections.by_id(credentials.id)
        if connection is None:
            raise Refusal(ErrorCode.CONNECTION_NOT_FOUND, "The connection no longer exists")
        return await self._refresh(connection, credentials, rejected=True)

    async def _refresh(
        self, connection: Connection, seen: ConnectionCredentials, *, rejected: bool
    ) -> ConnectionCredentials:
        # Callers in this process queue here, so only one of them holds a database
        # transaction (and, on SQLite, the write lock) while the provider answers.
        async with self._locks.hold(connection.id):
            async with self._store.db.write("oauth_refresh") as txn:
                # Refreshers of this connection in every process take turns from here to the
                # commit of the new token (PostgreSQL: an advisory lock; SQLite: the write
                # transaction already holds the file's only write lock).
                await serialise(txn.conn, "oauth refresh", connection.id)
                outcome = await self._refresh_in(txn, connection.id, seen, rejected=rejected)
            # Raised only now: a needs_reauth mark made in the transaction is committed.
            if isinstance(outcome, Refusal):
                raise outcome
            return outcome

    async def _refresh_in(
        self, txn: WriteTxn, connection_id: str, seen: ConnectionCredentials, *, rejected: bool
    ) -> ConnectionCredentials | Refusal:
        now = await self._store.connections.by_id(connection_id)
        if now is None:
            return Refusal(ErrorCode.CONNECTION_NOT_FOUND, "The connection no longer exists")
        if now.status != "active":
            return await self._failed(txn, now, "it needs to be re-authenticated", mark=False)
        current = await self._store.connections.credentials(now)
        stored = dict(current.values)
        if stored.get("accessToken") != seen.values.get("accessToken"):
            return current  # refreshed by whoever held the lock before us, in any process
        if not rejected and not expires_soon(stored):
            return current
        refresh_token = stored.get("refreshToken")
        if not refresh_token:
            return await self._failed(txn, now, "it has no refresh token")
        app = await self._apps.get(now.org_id, now.integration_name)
        if app is None:
            return await self._failed(
                txn, now, "no OAuth app is configured for its integration", mark=False
            )
        secret = await self._apps.client_secret(app)
        try:
            grant = await self._tokens.refresh(app, secret, refresh_token)
        except GrantRefused as refused:
            # `refused.error` is a recognised OAuth code or treadle's own, never the
            # provider's text (which may quote the refresh token it was sent).
            log.warning("refreshing connection %s failed: %s", now.id, refused.error)
            if refused.unreachable:
                return Refusal(
                    ErrorCode.CONNECTION_ERROR,
                    f"Connection '{now.external_id}' could not be refreshed: the provider "
                    "did not answer; try again later",
                    connectionId=now.id,
                    providerError=refused.error,
                )
            return await self._failed(
                txn, now, "the provider refused to refresh its token", provider_error=refused.error
            )
        values = {**stored, **grant.values(refresh_token)}
        if grant.expires_at is None:
            values.pop("expiresAt", None)
        await self._store.connections.replace_secret(txn, now, values, status="active")
        return ConnectionCredentials(
            id=current.id,
            external_id=current.external_id,
            type=current.type,
            values=values,
            base_url=current.base_url,
        )

    async def _failed(
        self,
        txn: WriteTxn,
        connection: Connection,
        why: str,
        *,
        mark: bool = True,
        provider_error: str | None = None,
    ) -> Refusal:
        """CONNECTION_ERROR asking for a re-authentication (with the connect link when the
        connection belongs to an end user, and the provider's OAuth error code when it gave
        one); `mark` sets the connection to needs_reauth."""
        if mark:
            await self._store.connections.set_status(txn, connection, NEEDS_REAUTH)
        extra: dict[str, str] = {"connectionId": connection.id}
        if provider_error is not None:
            extra["providerError"] = provider_error
        url = await self._links.url_for_id(connection.org_id, connection.end_user_id)
        if url is not None:
            extra["connectUrl"] = url
        where = f" at {url}" if url else ""
        return Refusal(
            ErrorCode.CONNECTION_ERROR,
            f"Connection '{connection.external_id}' could not be refreshed ({why}); "
            f"re-authenticate it{where}",
            **extra,
        )
