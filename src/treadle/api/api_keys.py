"""`/api/v1/api-keys`: list (never a secret), create (the secret shown once), revoke.

A key restricted to a workspace sees and manages only the keys of its workspace; org-wide
keys are listed, created and revoked with an org-wide key.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import workspace_query
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.fields import Identifier, Name
from treadle.api.openapi import operation
from treadle.api.query import WorkspaceFilter
from treadle.api.resources import ApiKey, Deleted, listing, one
from treadle.api.responses import ok
from treadle.engine.api_keys import create_key, expiry, manageable_key, revoke_key
from treadle.errors import ErrorCode


class CreateApiKey(Body):
    name: Name
    # None: org-wide. A key restricted to a workspace may only create keys for it.
    workspaceId: Identifier | None = None
    # ISO 8601; the key is refused from then on. None: it never expires.
    expiresAt: Identifier | None = None


@operation(
    "List API keys (prefixes, never secrets)",
    query=WorkspaceFilter,
    responses={200: listing("apiKeys", ApiKey)},
    errors=[ErrorCode.NOT_FOUND],
)
async def list_api_keys(request: Request) -> Response:
    gw, principal = await caller(request)
    workspace_id = await workspace_query(gw.store, principal, request)
    scope = principal.workspace_ids
    if workspace_id is not None:
        scope = {workspace_id}
    found = await gw.store.api_keys.list(principal.org_id, scope)
    return ok({"apiKeys": [key.to_json() for key in found], "total": len(found)})


@operation(
    "Create an API key; its secret is answered this once",
    body=CreateApiKey,
    responses={201: one("apiKey", ApiKey, token=str)},
    errors=[ErrorCode.NOT_FOUND],
)
async def create_api_key(request: Request) -> Response:
    gw, principal = await caller(request)
    body = await read_body(request, CreateApiKey)
    principal.check_scope(body.workspaceId)
    expires_at = expiry(body.expiresAt)
    key, token = await create_key(
        gw.store,
        principal.actor,
        principal.org_id,
        name=body.name,
        workspace_id=body.workspaceId,
        expires_at=expires_at,
    )
    # The one time the secret is sent: only its hash is kept.
    return ok({"apiKey": key.to_json(), "token": token}, status=201)


@operation(
    "Revoke an API key: refused at once on every path",
    responses={200: Deleted},
)
async def revoke_api_key(request: Request) -> Response:
    gw, principal = await caller(request)
    key_id = path_param(request, "key_id", "API key")
    key = await manageable_key(gw.store, principal.org_id, principal.workspace_ids, key_id)
    await revoke_key(gw.store, principal.actor, key)
    return ok({"deleted": True, "id": key.id})


routes = [
    Route("/api-keys", list_api_keys, methods=["GET"]),
    Route("/api-keys", create_api_key, methods=["POST"]),
    Route("/api-keys/{key_id}", revoke_api_key, methods=["DELETE"]),
]
