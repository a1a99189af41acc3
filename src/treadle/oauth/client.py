"""Calls to a provider's token endpoint: the code exchange and the refresh grant.

Client authentication is `client_secret_post` (Slack, GitHub and Google all accept it). The
answer may be RFC 6749 JSON, Slack's `{"ok": false, "error": …}` or GitHub's 200 with an
`error`; all of them come out as `TokenGrant` or `GrantRefused`. Tokens never reach a log.
"""

from __future__ import annotations

import base64
import hashlib
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


class GrantRefused(TreadleError):
    """The provider refused the grant (`invalid_grant`, …) or answered with no token.

    `error` is the provider's short code, never a token or the response body.
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
            code = error if isinstance(error, str) and len(error) < 100 else "invalid_response"
            raise GrantRefused(code, unreachable=response.is_server_error)
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
