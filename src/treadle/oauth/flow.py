"""The authorization-code flow with PKCE (S256): start → provider → callback → connection.

`start` records a single-use `state` (10 minutes) bound to the org, workspace, integration,
optional end user and the connection to create, and answers the provider's authorize URL.
`finish` claims the state (once), exchanges the code with the stored verifier at the token
URL and creates the connection, or refreshes the secret of the one it names.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

from treadle.errors import ErrorCode, Refusal, TreadleError
from treadle.oauth.client import GrantRefused, TokenClient, challenge_for, new_verifier
from treadle.oauth.providers import defaults_for
from treadle.oauth.repository import OAuthApps, OAuthStates, StateProblem
from treadle.oauth.upstream_clients import UpstreamClients
from treadle.store import Store
from treadle.store.records import Connection, EndUser

STATE_LIFETIME = timedelta(minutes=10)
CALLBACK_PATH = "/oauth/callback"


_STATE_PROBLEMS = {
    StateProblem.UNKNOWN: "This sign-in link is not valid. Start again.",
    StateProblem.USED: "This sign-in link was already used. Start again.",
    StateProblem.EXPIRED: "This sign-in link has expired. Start again.",
}


class FlowFailed(TreadleError):
    """The callback cannot finish: shown to the person as a page with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Finished:
    connection: Connection
    created: bool
    redirect_to: str | None


class OAuthFlow:
    def __init__(
        self,
        store: Store,
        apps: OAuthApps,
        states: OAuthStates,
        tokens: TokenClient,
        public_url: str,
        upstreams: UpstreamClients | None = None,
    ) -> None:
        self._store = store
        self._upstreams = upstreams
        self._apps = apps
        self._states = states
        self._tokens = tokens
        self._public_url = public_url.rstrip("/")

    @property
    def redirect_uri(self) -> str:
        return f"{self._public_url}{CALLBACK_PATH}"

    def safe_redirect(self, target: str | None) -> str | None:
        """Where a caller may send the person afterwards: a path here or the public URL's
        origin, never elsewhere (an open redirect would hand the page to anyone)."""
        if not target:
            return None
        parts = urlsplit(target)
        public = urlsplit(self._public_url)
        if parts.scheme == "" and parts.netloc == "" and target.startswith("/"):
            if target.startswith("//") or "\\" in target:
                return None
            return target
        if (parts.scheme, parts.netloc) == (public.scheme, public.netloc):
            return target
        return None

    async def start(
        self,
        *,
        org_id: str,
        workspace_id: str,
        integration_name: str,
        end_user: EndUser | None,
        external_id: str | None,
        display_name: str | None,
        redirect_to: str | None,
        actor: str,
    ) -> str:
        """Records a state and returns the provider's authorize URL to send the person to."""
        app = None
        if self._upstreams is not None:
            # An OAuth upstream MCP server: its client is discovered and registered first.
            app = await self._upstreams.app_for(org_id, integration_name, actor)
        if app is None:
            app = await self._apps.get(org_id, integration_name)
        if app is None:
            raise Refusal(
                ErrorCode.NOT_FOUND,
                f"No OAuth app is configured for '{integration_name}'; "
                f"PUT /api/v1/oauth-apps/{integration_name} first",
            )
        who = end_user.external_id if end_user is not None else None
        state = secrets.token_urlsafe(32)
        verifier = new_verifier()
        await self._states.create(
            state=state,
            org_id=org_id,
            workspace_id=workspace_id,
            integration_name=integration_name,
            end_user_id=None if end_user is None else end_user.id,
            external_id=external_id or (f"oauth_{integration_name}" + (f"_{who}" if who else "")),
            display_name=display_name
            or (f"{integration_name} ({who})" if who else f"{integration_name} (OAuth)"),
            redirect_to=redirect_to,
            code_verifier=verifier,
            actor=actor,
            lifetime=STATE_LIFETIME,
        )
        defaults = defaults_for(integration_name)
        separator = defaults.scope_separator if defaults is not None else " "
        params = {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": self.redirect_uri,
            "state": state,
            "code_challenge": challenge_for(verifier),
            "code_challenge_method": "S256",
        }
        if app.scopes:
            params["scope"] = separator.join(app.scopes)
        if app.resource is not None:
            params["resource"] = app.resource
        if defaults is not None:
            params.update(defaults.extra_authorize_params)
        joiner = "&" if urlsplit(app.authorize_url).query else "?"
        return f"{app.authorize_url}{joiner}{urlencode(params)}"

    async def finish(self, code: str, state: str) -> Finished:
        if not state or len(state) > 200:
            raise FlowFailed(400, "This sign-in link is not valid. Start again.")
        claimed = await self._states.claim(state)
        if isinstance(claimed, StateProblem):
            raise FlowFailed(400, _STATE_PROBLEMS[claimed])
        if not code or len(code) > 2000:
            raise FlowFailed(400, "The provider sent no authorization code. Start again.")
        app = await self._apps.get(claimed.org_id, claimed.integration_name)
        if app is None:
            raise FlowFailed(400, "The OAuth app was removed in the meantime.")
        secret = await self._apps.client_secret(app)
        try:
            grant = await self._tokens.exchange(
                app,
                secret,
                code=code,
                redirect_uri=self.redirect_uri,
                verifier=claimed.code_verifier,
            )
        except GrantRefused as refused:
            if refused.unreachable:
                raise FlowFailed(502, "The provider could not be reached. Try again.") from None
            raise FlowFailed(400, "The provider refused the authorization. Start again.") from None
        values = grant.values()
        connection, created = await self._save(
            claimed.org_id,
            claimed.workspace_id,
            claimed.end_user_id,
            claimed.integration_name,
            claimed.external_id,
            claimed.display_name,
            values,
            app.api_base_url,
            claimed.actor,
        )
        return Finished(connection, created, claimed.redirect_to)

    async def _save(
        self,
        org_id: str,
        workspace_id: str,
        end_user_id: str | None,
        integration_name: str,
        external_id: str,
        display_name: str,
        values: dict[str, str],
        base_url: str | None,
        actor: str,
    ) -> tuple[Connection, bool]:
        existing = [
            c
            for c in await self._store.connections.find(
                org_id, workspace_id=workspace_id, external_id=external_id
            )
            if c.workspace_id == workspace_id
        ]
        async with self._store.db.write(actor) as txn:
            if not existing:
                created = await self._store.connections.create(
                    txn,
                    org_id=org_id,
                    workspace_id=workspace_id,
                    end_user_id=end_user_id,
                    integration_name=integration_name,
                    type="oauth2",
                    display_name=display_name,
                    external_id=external_id,
                    values=values,
                    base_url=base_url,
                )
                return created, True
            current = existing[0]
            if (
                current.integration_name != integration_name
                or current.end_user_id != end_user_id
                or current.type != "oauth2"
            ):
                raise FlowFailed(
                    409, "A different connection already uses this name; pick another externalId."
                )
            await self._store.connections.replace_secret(txn, current, values, status="active")
            await txn.changed(
                org_id=org_id,
                workspace_id=workspace_id,
                target_type="connection",
                target_id=current.id,
                change="updated",
                detail={
                    "integrationName": integration_name,
                    "externalId": external_id,
                    "reconnected": True,
                },
            )
        refreshed = await self._store.connections.get(org_id, current.id)
        assert refreshed is not None
        return refreshed, False
