"""The resource side: what an MCP request's bearer token stands for.

`mcp/http.py` asks `admit` about every token that is one of ours (`mcpat_…`); it never reads
the token itself. Tokens are checked against their grant on every request, not remembered
between requests, so a revocation stops them at once on every replica.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.types import Scope

from treadle.auth.server.authority import Authority
from treadle.auth.server.config import SCOPE_MCP, resource_metadata_url
from treadle.auth.server.grants import ACCESS_PREFIX, Grant
from treadle.errors import TreadleError
from treadle.store.mcp_servers import McpServer

_PREFIX = f"{ACCESS_PREFIX}_"
_SERVER_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


class InsufficientScope(TreadleError):
    """A valid token without the scope the endpoint needs: 403, naming the scope to ask for."""

    def __init__(self, needed: str) -> None:
        super().__init__(f"This token lacks the {needed} scope")
        self.needed = needed


@dataclass(frozen=True, slots=True)
class OAuthPrincipal:
    grant: Grant
    server: McpServer

    @property
    def actor(self) -> str:
        return f"oauth_grant:{self.grant.id}"

    @property
    def end_user_id(self) -> str | None:
        # A server pinned to one end user acts as that one, whoever signed in.
        return self.server.end_user_id or self.grant.end_user_id


def is_oauth_token(token: str) -> bool:
    return token.startswith(_PREFIX)


async def admit(authority: Authority, server: McpServer, token: str) -> OAuthPrincipal | None:
    """The principal of a live access token issued for exactly this endpoint; None for any
    other (unknown, expired, revoked, or bound to another endpoint: RFC 8707 audience)."""
    grant = await authority.grants.access(token)
    if grant is None or grant.server_id != server.id or grant.org_id != server.org_id:
        return None
    if SCOPE_MCP not in grant.scopes:
        raise InsufficientScope(SCOPE_MCP)
    return OAuthPrincipal(grant, server)


def challenge(
    authority: Authority, scope: Scope, *, error: str | None = None
) -> list[tuple[bytes, bytes]]:
    """The `WWW-Authenticate` header of a 401 or 403 at `/mcp/{serverId}` (RFC 9728 §5.1)."""
    from starlette.requests import Request

    request = Request(scope)
    server_id = str(scope.get("path_params", {}).get("server_id", ""))
    if not _SERVER_ID.fullmatch(server_id):
        server_id = "unknown"  # never echo a forged path into a header
    metadata = resource_metadata_url(authority.config.base_url(request), server_id)
    value = f'Bearer resource_metadata="{metadata}", scope="{SCOPE_MCP}"'
    if error is not None:
        value += f', error="{error}"'
    return [(b"www-authenticate", value.encode())]
