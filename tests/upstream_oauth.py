"""An upstream MCP server that requires OAuth, and the authorization server that issues its tokens.

Both run on loopback, each on a port of its own. The authorization server is the Python SDK's
(`mcp.server.auth.routes.create_auth_routes`: RFC 8414 metadata, dynamic client registration,
`/authorize` with PKCE S256, `/token`, revocation) over an in-memory provider whose `/authorize`
sends the person to a sign-in form (`/login`, plain form posts; the user name is who signs in).
The upstream is `upstream_fixture.Upstream` behind the SDK's resource-server side: 401 with
`WWW-Authenticate: Bearer resource_metadata=…` without a valid token, RFC 9728 metadata at its
well-known URL, and only tokens issued for its own URL (RFC 8707 `resource`) accepted.

Tests steer it: `expire(subject)` kills a person's access tokens (the upstream answers 401),
`refuse_refreshes` makes `/token` refuse the refresh grant, `revoke(subject)` drops a person's
refresh tokens; `subject_of(token)` says whose a token is, `refreshes` counts refresh grants.
It can also accept client ID metadata documents (a URL as client id, fetched on first use).
"""

from __future__ import annotations

import html
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import uvicorn
from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    IdentityAssertionParams,
    ProviderTokenVerifier,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_metadata, create_auth_routes
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from upstream_fixture import Upstream

SCOPE = "mcp"


@dataclass
class _Pending:
    client_id: str
    params: AuthorizationParams


@dataclass
class AuthServer:
    """The in-memory provider behind the SDK's authorization server routes."""

    issuer: str
    access_lifetime: int = 3600
    refuse_refreshes: bool = False
    refreshes: int = 0
    registered: list[OAuthClientInformationFull] = field(default_factory=list)
    clients: dict[str, OAuthClientInformationFull] = field(default_factory=dict)
    pending: dict[str, _Pending] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)
    refresh: dict[str, RefreshToken] = field(default_factory=dict)
    # Every token ever issued, with its subject: secrets the tests look for in answers.
    issued: dict[str, str] = field(default_factory=dict)
    # Client ID metadata documents: how to fetch one (a URL as client id), and those fetched.
    fetch_document: Callable[[str], Awaitable[dict[str, Any]]] | None = None
    documents_fetched: list[str] = field(default_factory=list)

    # -- what tests steer and read ---------------------------------------------------------

    def subject_of(self, token: str | None) -> str | None:
        if token is None:
            return None
        return self.issued.get(token.removeprefix("Bearer "))

    def expire(self, subject: str) -> None:
        for token in [t for t, a in self.access.items() if a.subject == subject]:
            del self.access[token]

    def revoke(self, subject: str) -> None:
        self.expire(subject)
        for token in [t for t, r in self.refresh.items() if r.subject == subject]:
            del self.refresh[token]

    # -- the provider protocol -------------------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        known = self.clients.get(client_id)
        if known is not None or self.fetch_document is None:
            return known
        if not client_id.startswith("https://"):
            return None
        document = await self.fetch_document(client_id)
        self.documents_fetched.append(client_id)
        # The document must name itself as the client id.
        if document.get("client_id") != client_id:
            return None
        # What it may ask for is this server's policy (the document serves every server).
        return OAuthClientInformationFull.model_validate({**document, "scope": SCOPE})

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.clients[str(client_info.client_id)] = client_info
        self.registered.append(client_info)

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        request_id = secrets.token_urlsafe(16)
        self.pending[request_id] = _Pending(str(client.client_id), params)
        return f"{self.issuer}/login?request={request_id}"

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        code = self.codes.get(authorization_code)
        return code if code is not None and code.client_id == client.client_id else None

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        del self.codes[authorization_code.code]
        return self._issue(
            str(client.client_id),
            authorization_code.scopes,
            authorization_code.resource,
            authorization_code.subject,
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        found = self.refresh.get(refresh_token)
        return found if found is not None and found.client_id == client.client_id else None

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        self.refreshes += 1
        if self.refuse_refreshes:
            raise TokenError("invalid_grant", "refresh refused")
        # Rotation: the refresh token used is spent.
        del self.refresh[refresh_token.token]
        return self._issue(
            str(client.client_id),
            scopes or refresh_token.scopes,
            refresh_token.resource,
            refresh_token.subject,
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or (found.expires_at is not None and found.expires_at < time.time()):
            return None
        return found

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)

    async def exchange_identity_assertion(
        self, client: OAuthClientInformationFull, params: IdentityAssertionParams
    ) -> OAuthToken:
        raise TokenError("unsupported_grant_type", "no identity assertions here")

    def _issue(
        self, client_id: str, scopes: list[str], resource: str | None, subject: str | None
    ) -> OAuthToken:
        access = f"at_{secrets.token_urlsafe(24)}"
        refresh = f"rt_{secrets.token_urlsafe(24)}"
        expires = int(time.time()) + self.access_lifetime
        self.access[access] = AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=expires,
            resource=resource,
            subject=subject,
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject=subject
        )
        self.issued[access] = self.issued[refresh] = subject or ""
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.access_lifetime,
            refresh_token=refresh,
            scope=" ".join(scopes),
        )

    # -- the person's pages ----------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        request_id = request.query_params.get("request", "")
        if request_id not in self.pending:
            return HTMLResponse("<p>unknown request</p>", status_code=400)
        return HTMLResponse(
            "<form method=post action=/login>"
            f'<input type=hidden name=request value="{html.escape(request_id)}">'
            "<input name=username><button>Sign in</button></form>"
        )

    async def login(self, request: Request) -> Response:
        form = await request.form()
        pending = self.pending.pop(str(form.get("request", "")), None)
        subject = str(form.get("username", ""))
        if pending is None or not subject:
            return HTMLResponse("<p>unknown request</p>", status_code=400)
        params = pending.params
        code = f"code_{secrets.token_urlsafe(24)}"
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [SCOPE],
            expires_at=time.time() + 300,
            client_id=pending.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=subject,
        )
        target = construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)
        return RedirectResponse(target, status_code=302)


def auth_server_app(
    server: AuthServer, registration: bool = True, client_metadata: bool = False
) -> ASGIApp:
    registrations = ClientRegistrationOptions(
        enabled=registration, valid_scopes=[SCOPE], default_scopes=[SCOPE]
    )
    revocation = RevocationOptions(enabled=True)
    routes = create_auth_routes(
        provider=server,
        issuer_url=AnyHttpUrl(server.issuer),
        client_registration_options=registrations,
        revocation_options=revocation,
    )
    if client_metadata:
        # The SDK's server does not advertise client ID metadata documents: this route,
        # first, answers its metadata with the flag set.
        metadata = build_metadata(AnyHttpUrl(server.issuer), None, registrations, revocation)
        metadata.client_id_metadata_document_supported = True
        handler = MetadataHandler(metadata).handle
        routes.insert(0, Route("/.well-known/oauth-authorization-server", handler))
    routes.append(Route("/login", server.login_form, methods=["GET"]))
    routes.append(Route("/login", server.login, methods=["POST"]))
    return Starlette(routes=routes)


def protected_app(upstream: Upstream, server: AuthServer, url: str) -> ASGIApp:
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"], allowed_origins=[]
    )
    app: ASGIApp = upstream.server.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=security,
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(server.issuer),
            resource_server_url=AnyHttpUrl(url),
            required_scopes=[SCOPE],
            validate_token_resource=True,
        ),
        token_verifier=ProviderTokenVerifier(server),
    )
    return app


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


def _bound() -> tuple[socket.socket, int]:
    """A socket on an ephemeral loopback port, bound before the app that names it is built."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    return sock, port


@dataclass
class Protected:
    upstream: Upstream
    auth: AuthServer
    url: str


@asynccontextmanager
async def protected_upstream(
    registration: bool = True, client_metadata: bool = False
) -> AsyncIterator[Protected]:
    """`registration`: whether the authorization server offers dynamic registration;
    `client_metadata`: whether it accepts client ID metadata documents (set
    `auth.fetch_document` then)."""
    as_socket, as_port = _bound()
    rs_socket, rs_port = _bound()
    server = AuthServer(issuer=f"http://127.0.0.1:{as_port}")
    upstream = Upstream()
    url = f"http://127.0.0.1:{rs_port}/mcp"
    servers: list[_Server] = []
    options: dict[str, Any] = {"log_config": None, "http": "h11"}
    async with anyio.create_task_group() as tasks:
        pairs: tuple[tuple[ASGIApp, socket.socket, Literal["on", "off"]], ...] = (
            (auth_server_app(server, registration, client_metadata), as_socket, "off"),
            (protected_app(upstream, server, url), rs_socket, "on"),
        )
        for app, sock, lifespan in pairs:
            running = _Server(
                uvicorn.Config(app, lifespan=lifespan, timeout_graceful_shutdown=1, **options)
            )
            servers.append(running)
            tasks.start_soon(running.serve, [sock])
        with anyio.fail_after(5):
            for running in servers:
                await running.listening.wait()
        try:
            yield Protected(upstream, server, url)
        finally:
            for running in servers:
                running.should_exit = True
