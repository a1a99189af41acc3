"""What the consent page of treadle's authorization server needs from the identity providers:
a sign-in link per `oidc` provider of the server's org, and the person a returned ticket
names, checked against the MCP server the consent is for."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from treadle.app import Gateway
from treadle.auth.identity import tickets
from treadle.auth.identity.records import IdpKind, SignedIn
from treadle.auth.identity.signin import START_PATH, providers
from treadle.errors import ErrorCode, Refusal
from treadle.store.mcp_servers import McpServer


@dataclass(frozen=True, slots=True)
class SignInLink:
    idp_id: str
    name: str
    url: str  # a path on this gateway: `/auth/oidc/start?…`


async def sign_in_links(gateway: Gateway, server: McpServer, return_to: str) -> list[SignInLink]:
    """One link per `oidc` provider of the server's org; each comes back to `return_to` (a
    path on this gateway, such as the authorization request's own URL) with a `ticket`."""
    found = await providers(gateway).list(server.org_id)
    return [
        SignInLink(
            idp.id,
            idp.name,
            f"{START_PATH}?"
            + urlencode({"idp": idp.id, "workspace": server.workspace_id, "return_to": return_to}),
        )
        for idp in found
        if idp.kind is IdpKind.OIDC
    ]


async def signed_in_for(
    gateway: Gateway, server: McpServer, ticket: str, *, redeem: bool
) -> SignedIn:
    """The person `ticket` names, for a consent to `server`: `redeem=False` to show who signed
    in, `redeem=True` when the person decides (then the ticket is spent). Refused with
    `TicketRefused`, or FORBIDDEN `ticket_for_another_server` when the sign-in was for another
    org or workspace, or names no end user there."""
    signed = await (tickets.verify if redeem else tickets.peek)(gateway, ticket)
    user = (
        None
        if signed.end_user_id is None
        else await gateway.store.end_users.get(server.org_id, signed.end_user_id)
    )
    if signed.org_id != server.org_id or user is None or user.workspace_id != server.workspace_id:
        raise Refusal(
            ErrorCode.FORBIDDEN,
            "This sign-in was not for this MCP server",
            reason="ticket_for_another_server",
        )
    return signed
