"""JWT access tokens of an external authorization server ("bring your own AS").

An org points MCP servers at its own authorization server by an identity provider of kind
`external_as` that lists them (`mcpServerIds`; one provider per server). A request to such a
server's endpoint may then carry that server's JWT access tokens (RFC 9068), which treadle
checks here: the signature against the issuer's JWKS (found by its discovery document,
fetched through the outbound guard and cached), `iss`, `aud` (the endpoint's URL, or the
provider's configured `audience`), `exp`/`nbf`, and the provider's required scopes. The
configured claim (default `sub`) names the end user in the server's workspace, created on
first use when the provider allows it.

Refusals are `ExternalTokenRefused` (401 `UNAUTHORIZED`, or 403 `SCOPE_DENIED` with the scope
to ask for) or `NoEndUser` (403 `FORBIDDEN`), each with a stable `reason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from treadle.app import Gateway
from treadle.auth.identity.discovery import ProviderUnavailable, provider_metadata
from treadle.auth.identity.end_users import NoEndUser, resolve_end_user
from treadle.auth.identity.jwts import JwtRefused, audiences, check_times, verified_claims
from treadle.auth.identity.records import IdentityProvider, IdpKind
from treadle.auth.identity.repository import IdentityProviders
from treadle.errors import ErrorCode, Refusal
from treadle.store.mcp_servers import McpServer

__all__ = [
    "ExternalClaims",
    "ExternalTokenRefused",
    "NoEndUser",
    "authorization_server_for",
    "validate",
]


@dataclass(frozen=True, slots=True)
class ExternalClaims:
    end_user_external_id: str
    scopes: tuple[str, ...]
    issuer: str
    end_user_id: str | None = None
    idp_id: str | None = None


class ExternalTokenRefused(Refusal):
    """`reason`: `no_external_as`, `malformed`, `algorithm_not_allowed`, `unknown_key`,
    `bad_signature`, `wrong_issuer`, `wrong_audience`, `expired`, `not_yet_valid`,
    `no_expiry`, `claim_missing`, `insufficient_scope` (403, with `scope`) or
    `provider_unavailable` (502 `IDENTITY_PROVIDER_UNAVAILABLE`)."""

    def __init__(self, reason: str, *, scope: str | None = None) -> None:
        if reason == "insufficient_scope":
            super().__init__(
                ErrorCode.SCOPE_DENIED,
                "The token lacks a required scope",
                reason=reason,
                scope=scope,
            )
        elif reason == "provider_unavailable":
            super().__init__(
                ErrorCode.IDENTITY_PROVIDER_UNAVAILABLE,
                "The authorization server's keys could not be read",
                reason=reason,
            )
        else:
            super().__init__(ErrorCode.UNAUTHORIZED, "The access token is not valid", reason=reason)
        self.reason = reason
        self.scope = scope


async def external_provider(gateway: Gateway, server: McpServer) -> IdentityProvider | None:
    found = await IdentityProviders(gateway.store.db, gateway.vault).for_server(server.id)
    if found is None or found.kind is not IdpKind.EXTERNAL_AS or found.org_id != server.org_id:
        return None
    return found


async def authorization_server_for(gateway: Gateway, server: McpServer) -> str | None:
    """The issuer the protected-resource metadata of `server` names, when an external
    authorization server authorizes it (None: treadle's own)."""
    found = await external_provider(gateway, server)
    return None if found is None else found.issuer


def endpoint_url(gateway: Gateway, server: McpServer) -> str:
    return f"{gateway.settings.public_url.rstrip('/')}/mcp/{server.id}"


def token_scopes(claims: dict[str, Any]) -> tuple[str, ...]:
    """`scope` as RFC 9068 has it (space-separated), or `scp` as Okta and Entra ID send it."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return tuple(value.split())
        if isinstance(value, list):
            return tuple(v for v in value if isinstance(v, str))
    return ()


async def validate(
    gateway: Gateway, server: McpServer, token: str, *, resource: str | None = None
) -> ExternalClaims:
    """Checks `token` for `server`. `resource` is the endpoint's URL as the client reached it
    (the protected resource's identifier); by default the one under TREADLE_PUBLIC_URL."""
    idp = await external_provider(gateway, server)
    if idp is None:
        raise ExternalTokenRefused("no_external_as")
    try:
        metadata = await provider_metadata(gateway.http, idp.issuer, idp.allow_private_network)
        claims = await verified_claims(
            gateway.http, metadata.jwks_uri, idp.allow_private_network, token
        )
    except ProviderUnavailable:
        raise ExternalTokenRefused("provider_unavailable") from None
    except JwtRefused as refused:
        raise ExternalTokenRefused(refused.reason) from None
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer.rstrip("/") != idp.issuer.rstrip("/"):
        raise ExternalTokenRefused("wrong_issuer")
    accepted = {(resource or endpoint_url(gateway, server)).rstrip("/")}
    if idp.audience:
        accepted.add(idp.audience.rstrip("/"))
    if not any(aud.rstrip("/") in accepted for aud in audiences(claims)):
        raise ExternalTokenRefused("wrong_audience")
    try:
        check_times(claims)
    except JwtRefused as refused:
        raise ExternalTokenRefused(refused.reason) from None
    external_id = claims.get(idp.claim)
    if not isinstance(external_id, str) or not external_id:
        raise ExternalTokenRefused("claim_missing")
    scopes = token_scopes(claims)
    missing = [s for s in idp.scopes if s not in scopes]
    if missing:
        raise ExternalTokenRefused("insufficient_scope", scope=" ".join(idp.scopes))
    email = claims.get("email")
    resolved = await resolve_end_user(
        gateway.store,
        org_id=server.org_id,
        workspace_id=server.workspace_id,
        external_id=external_id,
        email=email if isinstance(email, str) and len(email) <= 320 else None,
        allow_create=idp.allow_create_end_users,
        actor=f"idp:{idp.id}",
    )
    return ExternalClaims(
        end_user_external_id=external_id,
        scopes=scopes,
        issuer=issuer,
        end_user_id=None if resolved.end_user is None else resolved.end_user.id,
        idp_id=idp.id,
    )
