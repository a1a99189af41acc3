"""`/api/v1/mcp/servers`: MCP server records (README, "MCP").

A server exposes one workspace's tools at `/mcp/{id}`. Its bearer token is returned once, on
create and on rotation, as `token`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_workspace, workspace_query
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.fields import ActionName, EndUserId, Identifier, Name, Slug
from treadle.api.openapi import operation
from treadle.api.query import WorkspaceFilter
from treadle.api.resources import Deleted, listing, one
from treadle.api.resources import McpServer as ServerOut
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.errors import ErrorCode, NotFound, Refusal, ValidationFailed
from treadle.store.mcp_servers import DEFAULT_AUTO_THRESHOLD, McpServer, ToolOverride

ToolDescription = Annotated[str, StringConstraints(max_length=2000)]
ToolName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Mode = Literal["TOOLS", "DISCOVERY", "AUTO"]
# AUTO lists the tools while there are at most this many (0: always the meta-tools).
AutoThreshold = Annotated[int, Field(ge=0, le=100_000, strict=True)]


class Override(Body):
    integrationAlias: Slug
    actionName: ActionName
    partialIds: Annotated[list[Identifier], Field(max_length=50)] | None = None
    description: ToolDescription | None = None
    enabled: bool = True
    name: ToolName | None = None


Overrides = Annotated[list[Override], Field(max_length=1000)]


class CreateServer(Body):
    workspaceId: Identifier
    name: Name
    mode: Mode = "TOOLS"
    autoThreshold: AutoThreshold = DEFAULT_AUTO_THRESHOLD
    endUserId: EndUserId | None = None
    toolOverrides: Overrides = []


class UpdateServer(Body):
    name: Name | None = None
    mode: Mode | None = None
    autoThreshold: AutoThreshold | None = None
    endUserId: EndUserId | None = None
    toolOverrides: Overrides | None = None


async def _overrides(
    gw: Gateway, principal: Principal, workspace_id: str, given: list[Override]
) -> tuple[ToolOverride, ...]:
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    for index, item in enumerate(given):
        pair = (item.integrationAlias, item.actionName)
        if pair in seen:
            raise ValidationFailed(
                "Two overrides name the same tool", field=f"toolOverrides[{index}]"
            )
        seen.add(pair)
        if item.name is not None:
            if item.name in names:
                raise ValidationFailed(
                    "Two overrides give tools the same name",
                    field=f"toolOverrides[{index}].name",
                )
            names.add(item.name)
        for position, partial_id in enumerate(item.partialIds or []):
            partial = await gw.store.partials.get(principal.org_id, partial_id)
            if partial is None or partial.workspace_id != workspace_id:
                raise ValidationFailed(
                    f"Partial '{partial_id}' not found in this workspace",
                    field=f"toolOverrides[{index}].partialIds[{position}]",
                )
    return tuple(
        ToolOverride(
            integration_alias=item.integrationAlias,
            action_name=item.actionName,
            partial_ids=None if item.partialIds is None else tuple(item.partialIds),
            description=item.description,
            enabled=item.enabled,
            name=item.name,
        )
        for item in given
    )


@operation(
    "Create an MCP server over a workspace; its token is answered this once",
    body=CreateServer,
    responses={201: one("server", ServerOut, token=str)},
    errors=[ErrorCode.NOT_FOUND],
)
async def create_server(request: Request) -> Response:
    gw, principal = await caller(request)
    body = await read_body(request, CreateServer)
    workspace = await accessible_workspace(gw.store, principal, body.workspaceId)
    overrides = await _overrides(gw, principal, workspace.id, body.toolOverrides)
    async with gw.store.db.write(principal.actor) as txn:
        server, token = await gw.store.mcp_servers.create(
            txn,
            org_id=principal.org_id,
            workspace_id=workspace.id,
            name=body.name,
            mode=body.mode,
            auto_threshold=body.autoThreshold,
            end_user_id=body.endUserId,
            tool_overrides=overrides,
        )
    return ok({"server": server.to_json(), "token": token}, status=201)


@operation(
    "List MCP servers",
    query=WorkspaceFilter,
    responses={200: listing("servers", ServerOut)},
    errors=[ErrorCode.NOT_FOUND],
)
async def list_servers(request: Request) -> Response:
    gw, principal = await caller(request)
    workspace_id = await workspace_query(gw.store, principal, request)
    found = await gw.store.mcp_servers.list(
        principal.org_id, {workspace_id} if workspace_id else principal.workspace_ids
    )
    return ok({"servers": [s.to_json() for s in found], "total": len(found)})


async def _server(request: Request) -> tuple[Gateway, Principal, McpServer]:
    gw, principal = await caller(request)
    found = await gw.store.mcp_servers.get(
        path_param(request, "server_id", "MCP server"), principal.org_id
    )
    if found is None:
        raise NotFound("MCP server")
    principal.check_workspace(found.workspace_id)
    return gw, principal, found


@operation("Get an MCP server", responses={200: one("server", ServerOut)})
async def get_server(request: Request) -> Response:
    _gw, _principal, found = await _server(request)
    return ok({"server": found.to_json()})


@operation(
    "Update an MCP server (its clients are told the tools changed)",
    body=UpdateServer,
    responses={200: one("server", ServerOut)},
    errors=[ErrorCode.NO_UPDATES],
)
async def update_server(request: Request) -> Response:
    gw, principal, current = await _server(request)
    body = await read_body(request, UpdateServer)
    given = body.model_fields_set
    if not given:
        raise Refusal(ErrorCode.NO_UPDATES, "No fields provided to update")
    changes: dict[str, Any] = {}
    if "name" in given:
        if body.name is None:
            raise ValidationFailed("name cannot be null", field="name")
        changes["name"] = body.name
    for field, column in (("mode", "mode"), ("autoThreshold", "auto_threshold")):
        if field in given:
            value = getattr(body, field)
            if value is None:
                raise ValidationFailed(f"{field} cannot be null", field=field)
            changes[column] = value
    if "endUserId" in given:
        changes["end_user_id"] = body.endUserId
    if "toolOverrides" in given:
        changes["tool_overrides"] = await _overrides(
            gw, principal, current.workspace_id, body.toolOverrides or []
        )
    async with gw.store.db.write(principal.actor) as txn:
        updated = await gw.store.mcp_servers.update(txn, current, changes)
    return ok({"server": updated.to_json()})


@operation(
    "Replace an MCP server's token; the old one is refused at once",
    responses={200: one("server", ServerOut, token=str)},
)
async def rotate_token(request: Request) -> Response:
    gw, principal, current = await _server(request)
    async with gw.store.db.write(principal.actor) as txn:
        updated, token = await gw.store.mcp_servers.rotate_token(txn, current)
    return ok({"server": updated.to_json(), "token": token})


@operation("Delete an MCP server", responses={200: Deleted})
async def delete_server(request: Request) -> Response:
    gw, principal, current = await _server(request)
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.mcp_servers.delete(txn, current)
    return ok({"deleted": True, "id": current.id})


routes = [
    Route("/mcp/servers", list_servers, methods=["GET"]),
    Route("/mcp/servers", create_server, methods=["POST"]),
    Route("/mcp/servers/{server_id}", get_server, methods=["GET"]),
    Route("/mcp/servers/{server_id}", update_server, methods=["PATCH"]),
    Route("/mcp/servers/{server_id}", delete_server, methods=["DELETE"]),
    Route("/mcp/servers/{server_id}/rotate-token", rotate_token, methods=["POST"]),
]
