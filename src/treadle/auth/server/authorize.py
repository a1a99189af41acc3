"""The authorization request (RFC 6749 §4.1.1 with PKCE, RFC 8707 and RFC 9207), checked.

Until the client and its redirect URI are known, a problem is shown to the person (sending
them to an unverified URI would make treadle an open redirector); after that it goes back to
the client as `error=…` with `state` and `iss`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from treadle.auth.server.authority import Authority
from treadle.auth.server.clients import ClientRefused, OAuthClient
from treadle.auth.server.config import SCOPE_MCP, SCOPES_SUPPORTED, resource_url
from treadle.store.mcp_servers import McpServer

PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "scope",
)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: OAuthClient
    redirect_uri: str
    state: str | None
    code_challenge: str
    server: McpServer
    resource: str
    scopes: list[str]
    issuer: str

    def params(self) -> dict[str, str]:
        """What the consent form posts back (checked again there, as if new)."""
        values = {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
            "resource": self.resource,
            "scope": " ".join(self.scopes),
        }
        if self.state is not None:
            values["state"] = self.state
        return values

    def answer(self, **values: str) -> str:
        """The redirect back to the client with `values`, its `state` and our `iss`."""
        extra = dict(values)
        if self.state is not None:
            extra["state"] = self.state
        extra["iss"] = self.issuer
        return with_query(self.redirect_uri, extra)


@dataclass(frozen=True, slots=True)
class ShownError:
    """Refused before the redirect URI is trusted: a page for the person."""

    error: str
    description: str


@dataclass(frozen=True, slots=True)
class RedirectedError:
    location: str
    error: str


def with_query(uri: str, values: Mapping[str, str]) -> str:
    parts = urlsplit(uri)
    query = "&".join(filter(None, [parts.query, urlencode(values)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


async def check(
    authority: Authority, issuer: str, params: Mapping[str, str]
) -> AuthorizationRequest | ShownError | RedirectedError:
    if any(len(params.get(name, "")) > 2000 for name in PARAMS):
        return ShownError("invalid_request", "A parameter is too long")
    try:
        client = await authority.client(params.get("client_id", ""))
    except ClientRefused as refused:
        return ShownError(refused.error, refused.description)
    redirect_uri = client.redirect_uri(params.get("redirect_uri") or None)
    if redirect_uri is None:
        return ShownError("invalid_request", "The redirect_uri is not one this client registered")
    state = params.get("state") or None

    def back(error: str, description: str) -> RedirectedError:
        values = {"error": error, "error_description": description, "iss": issuer}
        if state is not None:
            values["state"] = state
        return RedirectedError(with_query(redirect_uri, values), error)

    if params.get("response_type") != "code":
        return back("unsupported_response_type", "response_type must be code")
    challenge = params.get("code_challenge", "")
    if params.get("code_challenge_method") != "S256" or not 43 <= len(challenge) <= 128:
        return back("invalid_request", "PKCE with code_challenge_method=S256 is required")
    server = await authority.resource_server(issuer, params.get("resource"))
    if server is None:
        return back("invalid_target", "resource must name one of this gateway's MCP endpoints")
    asked = (params.get("scope") or SCOPE_MCP).split()
    if not set(asked) <= set(SCOPES_SUPPORTED):
        return back("invalid_scope", f"Scopes offered: {' '.join(SCOPES_SUPPORTED)}")
    if await authority.grants.client_revoked(server.org_id, client.client_id):
        return back("access_denied", "This organization revoked this client")
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=challenge,
        server=server,
        resource=resource_url(issuer, server.id),
        scopes=sorted(set(asked)),
        issuer=issuer,
    )
