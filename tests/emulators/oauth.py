"""An OAuth 2.0 authorization server (RFC 6749 + PKCE, RFC 7636) for the flow and refresh tests.

`/authorize` approves at once: with the registered client id and redirect URI and an S256
challenge it redirects back with a code. `/token` serves `authorization_code` (verifying the
PKCE verifier, the redirect URI and the client secret) and `refresh_token` (rotating: the old
refresh token dies). Tests can make refreshes fail (`fail_refresh = "invalid_grant"`), hold
the token endpoint until an event is set (`hold`, with `entered` set on arrival), count
refreshes, and learn each new access token (`on_token`, e.g. to update a resource emulator).
A failure may echo what the client sent, as careless providers do: `fail_refresh` and
`fail_exchange` are formatted with the request's form (`"invalid_grant {refresh_token}"`),
and `errors_sent` keeps every error string answered.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urlencode

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


def _error(error: str, status: int = 400) -> Response:
    return JSONResponse({"error": error}, status_code=status)


@dataclass
class _Code:
    challenge: str
    redirect_uri: str


@dataclass
class OAuthServer:
    client_id: str
    client_secret: str
    redirect_uri: str
    access_lifetime: int = 3600
    on_token: Callable[[str], None] | None = None
    fail_refresh: str | None = None
    fail_exchange: str | None = None
    errors_sent: list[str] = field(default_factory=list)
    hold: anyio.Event | None = None
    entered: anyio.Event = field(default_factory=anyio.Event)
    refresh_calls: int = 0
    exchanges: int = 0
    access_tokens: list[str] = field(default_factory=list)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _refresh_tokens: set[str] = field(default_factory=set)
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    @cached_property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/authorize", self._authorize, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        if (
            query.get("client_id") != self.client_id
            or query.get("redirect_uri") != self.redirect_uri
        ):
            return _error("invalid_client")
        if query.get("response_type") != "code":
            return _error("unsupported_response_type")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return _error("invalid_request")
        code = f"code-{secrets.token_urlsafe(12)}"
        self._codes[code] = _Code(query["code_challenge"], query["redirect_uri"])
        target = urlencode({"code": code, "state": query.get("state", "")})
        return RedirectResponse(f"{self.redirect_uri}?{target}", status_code=302)

    def _fail(self, template: str, form: object) -> Response:
        assert hasattr(form, "items")
        error = template.format(**{key: str(value) for key, value in form.items()})
        self.errors_sent.append(error)
        return _error(error)

    async def _token(self, request: Request) -> Response:
        form = await request.form()
        if self.hold is not None:
            self.entered.set()
            await self.hold.wait()
        if form.get("client_id") != self.client_id or form.get("client_secret") != (
            self.client_secret
        ):
            return _error("invalid_client", 401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._exchange(form)
        if grant == "refresh_token":
            return self._refresh(form)
        return _error("unsupported_grant_type")

    def _exchange(self, form: object) -> Response:
        assert hasattr(form, "get")
        if self.fail_exchange is not None:
            return self._fail(self.fail_exchange, form)
        code = self._codes.pop(str(form.get("code", "")), None)
        if code is None or form.get("redirect_uri") != code.redirect_uri:
            return _error("invalid_grant")
        verifier = str(form.get("code_verifier", ""))
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).decode().rstrip("=") != code.challenge:
            return _error("invalid_grant")
        self.exchanges += 1
        return self._issue()

    def _refresh(self, form: object) -> Response:
        assert hasattr(form, "get")
        self.refresh_calls += 1
        if self.fail_refresh is not None:
            return self._fail(self.fail_refresh, form)
        token = str(form.get("refresh_token", ""))
        if token not in self._refresh_tokens:
            return _error("invalid_grant")
        self._refresh_tokens.discard(token)  # rotation: a refresh token works once
        return self._issue()

    def _issue(self) -> Response:
        serial = next(self._serial)
        access = f"access-{serial}-{secrets.token_urlsafe(16)}"
        refresh = f"refresh-{serial}-{secrets.token_urlsafe(16)}"
        self._refresh_tokens.add(refresh)
        self.access_tokens.append(access)
        if self.on_token is not None:
            self.on_token(access)
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": self.access_lifetime,
                "refresh_token": refresh,
            }
        )
