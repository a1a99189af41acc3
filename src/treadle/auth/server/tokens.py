"""The resource side: what an MCP request's bearer token stands for.

`mcp/http.py` asks `admit` about every token that is not one of its own (`mcp_…` server
tokens, `trd_…` API keys); it never reads such a token itself. Two kinds are answered here:
access tokens of treadle's own authorization server (`mcpat_…`), checked against their grant,
and, for a server that an org pointed at its own authorization server, that server's JWTs
(`treadle.auth.external_jwt`). Neither is remembered between requests: a revocation or an
expiry stops a token at once, on every replica.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from treadle.auth import external_jwt
from treadle.auth.server.authority import Authority
from treadle.auth.server.config import SCOPE_MCP, resource_metadata_url, resource_url
from treadle.auth.server.grants import ACCESS_PREFIX
from treadle.errors import ErrorCode, Refusal, TreadleError
from treadle.store.mcp_servers import McpServer

_PREFIX = f"{ACCESS_PREFIX}_"
_SERVER_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
# Credentials mcp/http.py checks itself (and may remember per configuration version).
_OWN_PREFIXES = ("mcp_", "trd_")


class InsufficientScope(TreadleError):
    """A valid token without the scope the endpoint needs: 403, naming the scope to ask for."""

    def __init__(self, needed: str) -> None:
        super().__init__(f"This token lacks the {needed} scope")
        self.needed = needed


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who an OAuth token acts as: the actor recorded for its calls and the end user."""

    actor: str
    end_user_id: str | None


def is_oauth_token(token: str) -> bool:
    """Whether `token` is for this module (and so never remembered by the endpoint)."""
    return not token.startswith(_OWN_PREFIXES)


async def admit(
    authority: Authority, server: McpServer, token: str, scope: Scope
) -> SignedIn | None:
    """The principal of a live token for exactly this endpoint; None for any other token
    (unknown, expired, revoked, or bound to another endpoint: RFC 8707 audience). Raises
    InsufficientScope, or the external server's refusal (`ExternalTokenRefused`, `NoEndUser`)."""
    if token.startswith(_PREFIX):
        grant = await authority.grants.access(token)
        if grant is None or grant.server_id != server.id or grant.org_id != server.org_id:
            return None
        if SCOPE_MCP not in grant.scopes:
            raise InsufficientScope(SCOPE_MCP)
        # A server pinned to one end user acts as that one, whoever signed in.
        return SignedIn(f"oauth_grant:{grant.id}", server.end_user_id or grant.end_user_id)
    if await external_jwt.external_provider(authority.gateway, server) is None:
        return None
    base = authority.config.base_url(Request(scope))
    claims = await external_jwt.validate(
        authority.gateway, server, token, resource=resource_url(base, server.id)
    )
    end_user = server.end_user_id or claims.end_user_external_id
    return SignedIn(f"idp:{claims.idp_id}", end_user)


async def challenge(
    authority: Authority,
    scope: Scope,
    *,
    error: str | None = None,
    needed: str | None = None,
) -> list[tuple[bytes, bytes]]:
    """The `WWW-Authenticate` header of a 401 or 403 at `/mcp/{serverId}` (RFC 9728 §5.1),
    with the scope to ask for: `mcp` for treadle's own server, the external one's scopes."""
    server_id = str(scope.get("path_params", {}).get("server_id", ""))
    if not _SERVER_ID.fullmatch(server_id):
        server_id = "unknown"  # never echo a forged path into a header
    metadata = resource_metadata_url(authority.config.base_url(Request(scope)), server_id)
    if needed is None:
        needed = SCOPE_MCP
        server = await authority.gateway.store.config.mcp_server(server_id)
        if server is not None:
            provider = await external_jwt.external_provider(authority.gateway, server)
            if provider is not None:
                needed = " ".join(provider.scopes)
    value = f'Bearer resource_metadata="{metadata}"'
    if needed:
        value += f', scope="{needed}"'
    if error is not None:
        value += f', error="{error}"'
    return [(b"www-authenticate", value.encode())]


async def refused(
    authority: Authority, scope: Scope, refusal: InsufficientScope | Refusal
) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    """The HTTP answer (status, JSON body, headers) to a token `admit` refused: 401 and 403
    carry the challenge a client starts (or steps up) its sign-in from."""
    if isinstance(refusal, InsufficientScope):
        headers = await challenge(
            authority, scope, error="insufficient_scope", needed=refusal.needed
        )
        return 403, {"error": ErrorCode.FORBIDDEN.value, "message": str(refusal)}, headers
    body = {"error": refusal.code.value, "message": refusal.message, **refusal.extra}
    if refusal.code is ErrorCode.UNAUTHORIZED:
        return 401, body, await challenge(authority, scope, error="invalid_token")
    if refusal.code is ErrorCode.SCOPE_DENIED:
        needed = refusal.extra.get("scope")
        headers = await challenge(
            authority,
            scope,
            error="insufficient_scope",
            needed=needed if isinstance(needed, str) else None,
        )
        return 403, body, headers
    return refusal.code.status, body, []
