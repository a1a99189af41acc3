"""`/api/v1/end-users`: the people an integration may act for (per-user connections)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_workspace, workspace_query
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.fields import EndUserId, Identifier, Name
from treadle.api.openapi import operation
from treadle.api.query import WorkspaceFilter
from treadle.api.resources import ConnectLink, Deleted, listing, one
from treadle.api.resources import EndUser as EndUserOut
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.errors import ErrorCode, NotFound
from treadle.store.records import EndUser

Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class CreateEndUser(Body):
    workspaceId: Identifier
    externalId: EndUserId
    displayName: Name | None = None
    email: Email | None = None
    metadata: Annotated[dict[str, Any], Field(max_length=50)] | None = None


@operation(
    "Create an end user of a workspace",
    body=CreateEndUser,
    responses={201: one("endUser", EndUserOut)},
    errors=[ErrorCode.NOT_FOUND, ErrorCode.DUPLICATE],
)
async def create_end_user(request: Request) -> Response:
    gw, principal = await caller(request)
    body = await read_body(request, CreateEndUser)
    workspace = await accessible_workspace(gw.store, principal, body.workspaceId)
    async with gw.store.db.write(principal.actor) as txn:
        user = await gw.store.end_users.create(
            txn,
            org_id=principal.org_id,
            workspace_id=workspace.id,
            external_id=body.externalId,
            display_name=body.displayName,
            email=body.email,
            metadata=body.metadata,
        )
    return ok({"endUser": user.to_json()}, status=201)


@operation(
    "List end users",
    query=WorkspaceFilter,
    responses={200: listing("endUsers", EndUserOut)},
    errors=[ErrorCode.NOT_FOUND],
)
async def list_end_users(request: Request) -> Response:
    gw, principal = await caller(request)
    workspace_id = await workspace_query(gw.store, principal, request)
    found = await gw.store.end_users.list(principal.org_id, workspace_id, principal.workspace_ids)
    return ok({"endUsers": [u.to_json() for u in found], "total": len(found)})


async def _end_user(request: Request) -> tuple[Gateway, Principal, EndUser]:
    gw, principal = await caller(request)
    user = await gw.store.end_users.get(
        principal.org_id, path_param(request, "end_user_id", "End user")
    )
    if user is None:
        raise NotFound("End user")
    principal.check_workspace(user.workspace_id)
    return gw, principal, user


@operation("Get an end user", responses={200: one("endUser", EndUserOut)})
async def get_end_user(request: Request) -> Response:
    _gw, _principal, user = await _end_user(request)
    return ok({"endUser": user.to_json()})


@operation("Delete an end user", responses={200: Deleted})
async def delete_end_user(request: Request) -> Response:
    gw, principal, user = await _end_user(request)
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.end_users.delete(txn, user)
    return ok({"deleted": True, "id": user.id})


@operation(
    "A short-lived link where the end user connects their accounts",
    responses={201: ConnectLink},
)
async def create_connect_token(request: Request) -> Response:
    """A short-lived link to the connect page where this end user connects their accounts."""
    gw, _principal, user = await _end_user(request)
    url, expires_at = gw.oauth.links.url(user.org_id, user.workspace_id, user.id)
    return ok({"connectUrl": url, "expiresAt": expires_at, "endUserId": user.external_id}, 201)


routes = [
    Route("/end-users", list_end_users, methods=["GET"]),
    Route("/end-users/{end_user_id}/connect-token", create_connect_token, methods=["POST"]),
    Route("/end-users", create_end_user, methods=["POST"]),
    Route("/end-users/{end_user_id}", get_end_user, methods=["GET"]),
    Route("/end-users/{end_user_id}", delete_end_user, methods=["DELETE"]),
]
