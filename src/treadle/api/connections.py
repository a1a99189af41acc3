"""`/api/v1/connections`: credentials for an integration. Secret values go in, never out."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_workspace, workspace_query
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.fields import EndUserId, ExternalId, Identifier, Name, Slug
from treadle.api.openapi import operation
from treadle.api.query import WorkspaceFilter
from treadle.api.resources import Connection as ConnectionOut
from treadle.api.resources import Deleted, listing, one
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.engine.connection_records import NewConnection
from treadle.engine.connection_records import create_connection as store_connection
from treadle.errors import ErrorCode, NotFound
from treadle.store.records import Connection

SecretKey = Annotated[str, StringConstraints(min_length=1, max_length=100)]
SecretValue = Annotated[str, StringConstraints(max_length=16384)]
BaseUrl = Annotated[
    str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")
]


class CreateConnection(Body):
    integrationName: Slug
    type: Literal["api_key", "bearer", "basic", "oauth2", "custom"]
    displayName: Name
    externalId: ExternalId
    values: Annotated[dict[SecretKey, SecretValue], Field(max_length=50)]
    workspaceId: Identifier | None = None
    endUserId: EndUserId | None = None
    baseUrl: BaseUrl | None = None


@operation(
    "Store credentials for an integration (values go in, never out)",
    body=CreateConnection,
    responses={201: one("connection", ConnectionOut)},
    errors=[ErrorCode.NOT_FOUND, ErrorCode.DUPLICATE],
)
async def create_connection(request: Request) -> Response:
    gw, principal = await caller(request)
    body = await read_body(request, CreateConnection)
    if body.workspaceId is None:
        principal.check_org_wide()
    else:
        await accessible_workspace(gw.store, principal, body.workspaceId)
    created = await store_connection(
        gw.store,
        gw.catalog,
        principal.actor,
        principal.org_id,
        NewConnection(
            integration_name=body.integrationName,
            type=body.type,
            display_name=body.displayName,
            external_id=body.externalId,
            values=dict(body.values),
            workspace_id=body.workspaceId,
            end_user_external_id=body.endUserId,
            base_url=body.baseUrl,
        ),
    )
    return ok({"connection": created.to_json()}, status=201)


@operation(
    "List connections",
    query=WorkspaceFilter,
    responses={200: listing("connections", ConnectionOut)},
    errors=[ErrorCode.NOT_FOUND],
)
async def list_connections(request: Request) -> Response:
    gw, principal = await caller(request)
    workspace_id = await workspace_query(gw.store, principal, request)
    found = await gw.store.connections.list(principal.org_id, workspace_id, principal.workspace_ids)
    return ok({"connections": [c.to_json() for c in found], "total": len(found)})


async def _connection(request: Request) -> tuple[Gateway, Principal, Connection]:
    gw, principal = await caller(request)
    found = await gw.store.connections.get(
        principal.org_id, path_param(request, "connection_id", "Connection")
    )
    if found is None:
        raise NotFound("Connection")
    principal.check_read(found.workspace_id)
    return gw, principal, found


@operation("Get a connection", responses={200: one("connection", ConnectionOut)})
async def get_connection(request: Request) -> Response:
    _gw, _principal, found = await _connection(request)
    return ok({"connection": found.to_json()})


@operation("Delete a connection", responses={200: Deleted})
async def delete_connection(request: Request) -> Response:
    gw, principal, found = await _connection(request)
    principal.check_scope(found.workspace_id)
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.connections.delete(txn, found)
    return ok({"deleted": True, "id": found.id})


routes = [
    Route("/connections", list_connections, methods=["GET"]),
    Route("/connections", create_connection, methods=["POST"]),
    Route("/connections/{connection_id}", get_connection, methods=["GET"]),
    Route("/connections/{connection_id}", delete_connection, methods=["DELETE"]),
]
