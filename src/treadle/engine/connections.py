"""Connection resolution by strategy (README, "Connection strategies")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from treadle.catalog.model import AuthKind, ConnectionCredentials, Integration
from treadle.engine.request import ExecuteRequest
from treadle.errors import ErrorCode, Refusal
from treadle.ids import is_uuid
from treadle.oauth import OAuth
from treadle.store.people import Connections
from treadle.store.records import Connection, ConnectionStrategy, WorkspaceIntegration


class ConnectionResolver:
    def __init__(self, connections: Connections, oauth: OAuth | None = None) -> None:
        self._connections = connections
        self._oauth = oauth

    async def resolve(
        self,
        request: ExecuteRequest,
        integration: Integration,
        configured: WorkspaceIntegration,
        before_refresh: Callable[[], Awaitable[None]] | None = None,
    ) -> ConnectionCredentials | None:
        """The credentials the call runs with. `before_refresh` is awaited before an OAuth
        token is refreshed (a request to the provider, and a write), where it may raise."""
        chosen = await self._choose(request, integration, configured)
        if chosen is None:
            return None
        if chosen.status != "active":
            url = await self._connect_url(request, chosen.end_user_id is not None)
            raise Refusal(
                ErrorCode.CONNECTION_ERROR,
                f"Connection '{chosen.external_id}' needs to be re-authenticated"
                + (f" at {url}" if url else ""),
                **({"connectUrl": url} if url else {}),
            )
        # The query that chose it read its secret too: no second query here.
        credentials = await self._connections.credentials(chosen)
        if self._oauth is not None:
            # An access token about to expire is refreshed before the action runs.
            refresher = self._oauth.refresher
            if before_refresh is not None and refresher.refreshes_before_run(credentials):
                await before_refresh()
            credentials = await refresher.before_run(chosen, credentials)
        return credentials

    async def _connect_url(self, request: ExecuteRequest, per_user: bool) -> str | None:
        """Where the calling end user can connect (or re-connect) their account, if known."""
        if self._oauth is None or not per_user:
            return None
        return await self._oauth.links.url_for_external(
            request.org_id, request.workspace_id, request.end_user_id
        )

    async def _choose(
        self,
        request: ExecuteRequest,
        integration: Integration,
        configured: WorkspaceIntegration,
    ) -> Connection | None:
        explicit = await self._explicit(request, integration)
        if explicit is not None:
            return explicit
        strategy = configured.connection_strategy
        if strategy is not ConnectionStrategy.FIXED and request.end_user_id is not None:
            own = await self._connections.find(
                request.org_id,
                workspace_id=request.workspace_id,
                end_user_external_id=request.end_user_id,
                integration_name=integration.name,
                with_secret=True,
            )
            if own:
                return own[0]
        if strategy is not ConnectionStrategy.PER_USER and configured.connection_id is not None:
            fallback = await self._connections.find(
                request.org_id,
                workspace_id=request.workspace_id,
                connection_id=configured.connection_id,
                with_secret=True,
            )
            if fallback:
                return fallback[0]
            if integration.auth_kind is not AuthKind.NONE:
                raise Refusal(
                    ErrorCode.CONNECTION_NOT_FOUND,
                    f"The connection configured for '{configured.alias}' no longer exists",
                )
        if integration.auth_kind is AuthKind.NONE:
            return None
        who = f"end user '{request.end_user_id}'" if request.end_user_id else "this call"
        url = await self._connect_url(request, strategy is not ConnectionStrategy.FIXED)
        raise Refusal(
            ErrorCode.CONNECTION_REQUIRED,
            f"Action '{request.action_name}' requires an authenticated connection, "
            f"and none was found for {who} on '{configured.alias}'"
            + (f"; connect one at {url}" if url else ""),
            integrationAlias=configured.alias,
            endUserId=request.end_user_id,
            **({"connectUrl": url} if url else {}),
        )

    async def _explicit(
        self, request: ExecuteRequest, integration: Integration
    ) -> Connection | None:
        if request.connection_id is None and request.connection_external_id is None:
            return None
        by_id = (
            request.connection_id
            if request.connection_id and is_uuid(request.connection_id)
            else None
        )
        # Callers pass externalId-like values ("conn_slack_abc") as connectionId.
        external = request.connection_external_id or (
            request.connection_id if by_id is None else None
        )
        found = await self._connections.find(
            request.org_id,
            workspace_id=request.workspace_id,
            connection_id=by_id,
            external_id=external,
            integration_name=integration.name,
            with_secret=True,
        )
        # Another end user's personal connection is never selectable; among the rest the
        # caller's own comes first, then the workspace's shared one, then an org-wide one.
        usable = [
            c
            for c in found
            if c.end_user_id is None
            or (request.end_user_id is not None and c.end_user_external_id == request.end_user_id)
        ]
        if not usable:
            raise Refusal(
                ErrorCode.CONNECTION_NOT_FOUND,
                "Specified connection does not exist for this workspace and integration",
            )
        usable.sort(key=lambda c: (c.end_user_id is None, c.workspace_id is None))
        return usable[0]
