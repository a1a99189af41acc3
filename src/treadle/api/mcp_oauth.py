"""`/api/v1/mcp/oauth-clients` and `/api/v1/mcp/oauth-grants`: who signed in to the MCP
endpoints through which client, and taking that back.

Revoking a grant stops every token of it at the next request, on every replica; revoking a
client ends all of the org's grants to it and refuses its next authorizations.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import workspace_query
from treadle.api.context import caller, path_param
from treadle.api.openapi import operation
from treadle.api.resources import OAuthClient, OAuthGrant, listing, one
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.auth.server.authority import Authority
from treadle.engine.end_user_ids import check_end_user_id
from treadle.errors import ErrorCode, NotFound, ValidationFailed


def _authority(request: Request, gateway: Gateway) -> Authority:
    found = getattr(request.app.state, "mcp_auth", None)
    return found if isinstance(found, Authority) else Authority(gateway)


class GrantFilter(BaseModel):
    workspaceId: str | None = None
    endUserId: str | None = None
    clientId: str | None = None
    includeRevoked: Literal["true", "false"] | None = None


@operation(
    "List the OAuth clients that signed in to the org's MCP servers",
    responses={200: listing("clients", OAuthClient)},
)
async def list_clients(request: Request) -> Response:
    gw, principal = await caller(request)
    clients = await _authority(request, gw).grants.seen_clients(principal.org_id)
    return ok({"clients": [c.to_json() for c in clients], "total": len(clients)})


@operation(
    "Revoke an OAuth client: its tokens are refused at once",
    responses={200: one("client", OAuthClient)},
)
async def revoke_client(request: Request) -> Response:
    gw, principal = await caller(request)
    principal.check_org_wide()
    client_id = request.path_params.get("client_id")
    if not isinstance(client_id, str) or not client_id or len(client_id) > 2000:
        raise NotFound("OAuth client")
    revoked = await _authority(request, gw).grants.revoke_client(
        principal.org_id, client_id, principal.actor
    )
    if revoked is None:
        raise NotFound("OAuth client")
    return ok({"client": revoked.to_json()})


@operation(
    "List OAuth grants (who signed in where)",
    query=GrantFilter,
    responses={200: listing("grants", OAuthGrant)},
    errors=[ErrorCode.NOT_FOUND],
)
async def list_grants(request: Request) -> Response:
    gw, principal = await caller(request)
    workspace_id = await workspace_query(gw.store, principal, request)
    end_user = request.query_params.get("endUserId")
    if end_user is not None:
        check_end_user_id(end_user)
    client_id = request.query_params.get("clientId")
    if client_id is not None and len(client_id) > 2000:
        raise ValidationFailed("clientId is too long", field="clientId")
    workspaces = {workspace_id} if workspace_id is not None else principal.workspace_ids
    grants = await _authority(request, gw).grants.find(
        principal.org_id,
        workspace_ids=workspaces,
        end_user_id=end_user,
        client_id=client_id,
        include_revoked=request.query_params.get("includeRevoked") == "true",
    )
    return ok({"grants": [g.to_json() for g in grants], "total": len(grants)})


@operation(
    "Revoke an OAuth grant: its tokens are refused at once",
    responses={200: one("grant", OAuthGrant)},
)
async def revoke_grant(request: Request) -> Response:
    gw, principal = await caller(request)
    authority = _authority(request, gw)
    grant = await authority.grants.get(
        principal.org_id, path_param(request, "grant_id", "OAuth grant")
    )
    if grant is None:
        raise NotFound("OAuth grant")
    principal.check_workspace(grant.workspace_id)
    await authority.grants.revoke(grant, principal.actor, "revoked over REST")
    found = await authority.grants.get(principal.org_id, grant.id)
    assert found is not None
    return ok({"grant": found.to_json()})


routes = [
    Route("/mcp/oauth-clients", list_clients, methods=["GET"]),
    Route("/mcp/oauth-clients/{client_id:path}", revoke_client, methods=["DELETE"]),
    Route("/mcp/oauth-grants", list_grants, methods=["GET"]),
    Route("/mcp/oauth-grants/{grant_id}", revoke_grant, methods=["DELETE"]),
]
