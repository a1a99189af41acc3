"""Calls to a provider's token endpoint: the code exchange and the refresh grant.

Client authentication is `client_secret_post` (Slack, GitHub and Google all accept it; a
public client registered with an upstream MCP server's authorization server sends none). The
answer may be RFC 6749 JSON, Slack's `{"ok": false, "error": …}` or GitHub's 200 with an
`error`; all of them come out as `TokenGrant` or `GrantRefused`. Tokens never reach a log:
a provider's `error` is free text that may quote what it was sent (the refresh token, the
code), so only a recognised error code is ever carried further.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx2

from treadle.clock import iso, utcnow
from treadle.errors import TreadleError
from treadle.net import BlockedDestination, allow_private_network
from treadle.oauth.records import OAuthApp

TOKEN_TIMEOUT = 30.0

# RFC 6749 §5.2 (token endpoint) and §4.1.2.1 (server_error, temporarily_unavailable), plus the
# codes Slack and GitHub answer instead, for the providers treadle ships integrations for.
KNOWN_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
        "server_error",
        "temporarily_unavailable",
        # RFC 8707 (a resource the server does not serve) and RFC 6750
        "invalid_target",
        "invalid_token",
        # Slack (oauth.v2.access)
        "invalid_client_id",
        "bad_client_secret",
        "invalid_code",
        "code_already_used",
        "invalid_grant_type",
        "invalid_refresh_token",
        "bad_redirect_uri",
        "ratelimited",
        # GitHub (login/oauth/access_token)
        "bad_verification_code",
        "incorrect_client_credentials",
        "redirect_uri_mismatch",
        "bad_refresh_token",
        "unverified_user_email",
    }
)
UNRECOGNISED_ERROR = "unrecognised_error"
_LEADING_CODE = re.compile(r"[A-Za-z_]+")


class GrantRefused(TreadleError):
    """The provider refused the grant (`invalid_grant`, …) or answered with no token.

    `error` is one of `KNOWN_ERRORS` or treadle's own (`unrecognised_error`, `http_502`,
    `no_access_token`, a transport error's class name): never the provider's text.
    """

    def __init__(self, error: str, *, unreachable: bool = False) -> None:
        super().__init__(f"the token endpoint refused the grant: {error}")
        self.error = error
        self.unreachable = unreachable


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    refresh_token: str | None
    expires_at: str | None

    def values(self, previous_refresh_token: str | None = None) -> dict[str, str]:
        """Secret values in the oauth2 convention (`catalog.credentials`). A provider that does
        not rotate refresh tokens omits it from a refresh answer: the old one stays valid."""
        values = {"accessToken": self.access_token}
        refresh = self.refresh_token or previous_refresh_token
        if refresh:
            values["refreshToken"] = refresh
        if self.expires_at:
            values["expiresAt"] = self.expires_at
        return values


def new_verifier() -> str:
    """A PKCE code verifier: 43 characters of [A-Za-z0-9-_] (RFC 7636 §4.1)."""
    return secrets.token_urlsafe(32)


def challenge_for(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class TokenClient:
    def __init__(self, http: httpx2.AsyncClient) -> None:
        self._http = http

    async def exchange(
        self, app: OAuthApp, secret: str, *, code: str, redirect_uri: str, verifier: str
    ) -> TokenGrant:
        return await self._grant(
            app,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": app.client_id,
                "client_secret": secret,
            },
        )

    async def refresh(self, app: OAuthApp, secret: str, refresh_token: str) -> TokenGrant:
        return await self._grant(
            app,
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": app.client_id,
                "client_secret": secret,
            },
        )

    async def _grant(self, app: OAuthApp, form: dict[str, str]) -> TokenGrant:
        if app.resource is not None:
            # RFC 8707: the token is for this resource (an upstream MCP server) only.
            form["resource"] = app.resource
        if not form["client_secret"]:
            # A public client (registered with token_endpoint_auth_method "none").
            del form["client_secret"]
        try:
            # Loopback or intranet token URLs only when an admin said so on the OAuth app.
            with allow_private_network(app.allow_private_network):
                response = await self._http.post(
                    app.token_url,
                    data=form,
                    headers={"Accept": "application/json"},
                    timeout=TOKEN_TIMEOUT,
                )
        except (httpx2.HTTPError, BlockedDestination) as exc:
            raise GrantRefused(type(exc).__name__, unreachable=True) from None
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise GrantRefused(f"http_{response.status_code}", unreachable=response.is_server_error)
        error = body.get("error")
        if response.is_error or error or body.get("ok") is False:
            raise GrantRefused(error_code(error), unreachable=response.is_server_error)
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise GrantRefused("no_access_token")
        refresh = body.get("refresh_token")
        expires_in = body.get("expires_in")
        expires_at = (
            iso(utcnow() + timedelta(seconds=expires_in))
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else None
        )
        return TokenGrant(access, refresh if isinstance(refresh, str) else None, expires_at)


def error_code(error: object) -> str:
    """The recognised OAuth error code `error` starts with, or `unrecognised_error`.

    `{"error": "invalid_grant <the refresh token>"}` gives `invalid_grant`: the code survives,
    whatever text the provider put after it does not.
    """
    if not isinstance(error, str):
        return "invalid_response" if error is None else UNRECOGNISED_ERROR
    leading = _LEADING_CODE.match(error.strip())
    if leading is not None and leading.group() in KNOWN_ERRORS:
        return leading.group()
    return UNRECOGNISED_ERROR
