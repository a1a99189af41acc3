"""Where the authorization server lives and how long its codes and tokens last.

The issuer and the resource URLs are `TREADLE_PUBLIC_URL` when it is set (behind a proxy the
browser's origin is the public one), else the origin the request reached: an MCP client on
`http://127.0.0.1:8400` must see that very origin in the metadata, or it refuses the server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from starlette.requests import Request

SCOPE_MCP = "mcp"
SCOPES_SUPPORTED = (SCOPE_MCP, "offline_access")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    public_url: str | None
    access_seconds: int
    refresh_seconds: int
    code_seconds: int
    # Development and tests only: client metadata documents may be on non-public addresses.
    metadata_private_allowed: bool

    @classmethod
    def from_env(cls) -> AuthConfig:
        return cls(
            public_url=(os.environ.get("TREADLE_PUBLIC_URL") or "").rstrip("/") or None,
            access_seconds=_int("TREADLE_OAUTH_ACCESS_TOKEN_SECONDS", 900),
            refresh_seconds=_int("TREADLE_OAUTH_REFRESH_TOKEN_SECONDS", 30 * 24 * 3600),
            code_seconds=60,
            metadata_private_allowed=(
                os.environ.get("TREADLE_CLIENT_METADATA_ALLOW_PRIVATE") == "1"
            ),
        )

    def base_url(self, request: Request) -> str:
        if self.public_url is not None:
            return self.public_url
        return f"{request.url.scheme}://{request.url.netloc}"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        return default
    return value if value > 0 else default


def resource_url(base: str, server_id: str) -> str:
    return f"{base}/mcp/{server_id}"


def resource_metadata_url(base: str, server_id: str) -> str:
    return f"{base}/.well-known/oauth-protected-resource/mcp/{server_id}"
