"""An external authorization server as far as a resource server sees it: RFC 8414 metadata and
a JWKS on loopback (a real HTTP server, so fetches go through treadle's outbound guard), and
JWT access tokens (RFC 9068) signed with its keys by the test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from loopback import serve


@dataclass
class AuthorizationServer:
    port: int = 0
    keys: list[RSAKey] = field(
        default_factory=lambda: [RSAKey.generate_key(2048, parameters={"kid": "k1"})]
    )
    jwks_fetches: int = 0
    # Fields the metadata document says instead (a misconfigured or hostile server).
    metadata_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(
        self,
        *,
        aud: str | list[str],
        sub: str = "alice",
        scope: str | None = "mcp",
        lifetime: int = 300,
        key: RSAKey | None = None,
        name_the_key: bool = True,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "client_id": "some-mcp-client",
            **claims,
        }
        if scope is not None:
            body["scope"] = scope
        signer = key or self.keys[0]
        header: dict[str, Any] = {"alg": "RS256", "typ": "at+jwt"}
        if name_the_key:  # some providers leave `kid` out of the header
            header["kid"] = signer.kid
        return jwt.encode(header, body, signer)


@asynccontextmanager
async def authorization_server() -> AsyncIterator[AuthorizationServer]:
    server = AuthorizationServer()

    async def metadata(_request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": server.issuer,
                "authorization_endpoint": f"{server.issuer}/authorize",
                "token_endpoint": f"{server.issuer}/token",
                "jwks_uri": f"{server.issuer}/jwks",
                "response_types_supported": ["code"],
                **server.metadata_overrides,
            }
        )

    async def jwks(_request: Request) -> Response:
        server.jwks_fetches += 1
        return JSONResponse(KeySet(list(server.keys)).as_dict(private=False))

    app = Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", metadata),
            Route("/jwks", jwks),
        ]
    )
    async with serve(app) as port:
        server.port = port
        yield server
