"""`/api/v1/workspaces`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import accessible_workspace
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.fields import Name
from treadle.api.openapi import operation
from treadle.api.resources import Deleted, Workspace, listing, one
from treadle.api.responses import ok
from treadle.errors import ErrorCode, Refusal


class CreateWorkspace(Body):
    name: Name


class UpdateWorkspace(Body):
    name: Name | None = None


@operation("List the workspaces the key reaches", responses={200: listing("workspaces", Workspace)})
async def list_workspaces(request: Request) -> Response:
    gw, principal = await caller(request)
    found = await gw.store.workspaces.list(principal.org_id, principal.workspace_ids)
    return ok({"workspaces": [w.to_json() for w in found], "total": len(found)})


@operation(
    "Create a workspace (org-wide key)",
    body=CreateWorkspace,
    responses={201: one("workspace", Workspace)},
    errors=[ErrorCode.DUPLICATE],
)
async def create_workspace(request: Request) -> Response:
    gw, principal = await caller(request)
    principal.check_org_wide()
    body = await read_body(request, CreateWorkspace)
    async with gw.store.db.write(principal.actor) as txn:
        created = await gw.store.workspaces.create(txn, principal.org_id, body.name)
    return ok({"workspace": created.to_json()}, status=201)


@operation("Get a workspace", responses={200: one("workspace", Workspace)})
async def get_workspace(request: Request) -> Response:
    gw, principal = await caller(request)
    workspace_id = path_param(request, "workspace_id", "Workspace")
    workspace = await accessible_workspace(gw.store, principal, workspace_id)
    return ok({"workspace": workspace.to_json()})


@operation(
    "Rename a workspace",
    body=UpdateWorkspace,
    responses={200: one("workspace", Workspace)},
    errors=[ErrorCode.NO_UPDATES, ErrorCode.DUPLICATE],
)
async def update_workspace(request: Request) -> Response:
    gw, principal = await caller(request)
    workspace_id = path_param(request, "workspace_id", "Workspace")
    workspace = await accessible_workspace(gw.store, principal, workspace_id)
    body = await read_body(request, UpdateWorkspace)
    if body.name is None:
        raise Refusal(ErrorCode.NO_UPDATES, "No fields provided to update")
    async with gw.store.db.write(principal.actor) as txn:
        updated = await gw.store.workspaces.rename(txn, workspace, body.name)
    return ok({"workspace": updated.to_json()})


@operation(
    "Delete a workspace with its MCP servers and its own approval policies",
    responses={200: Deleted},
)
async def delete_workspace(request: Request) -> Response:
    gw, principal = await caller(request)
    workspace_id = path_param(request, "workspace_id", "Workspace")
    workspace = await accessible_workspace(gw.store, principal, workspace_id)
    principal.check_org_wide()
    # Its MCP servers and its own approval policies go with it: left behind, they stayed
    # listed and served a workspace that no longer exists.
    servers = await gw.store.mcp_servers.list(principal.org_id, {workspace.id})
    policies = [
        policy
        for policy in await gw.store.approval_policies.list(principal.org_id, {workspace.id})
        if policy.workspace_id == workspace.id
    ]
    async with gw.store.db.write(principal.actor) as txn:
        for server in servers:
            await gw.store.mcp_servers.delete(txn, server)
        for policy in policies:
            await gw.store.approval_policies.delete(txn, policy)
        await gw.store.workspaces.delete(txn, workspace)
    return ok({"deleted": True, "id": workspace.id})


routes = [
    Route("/workspaces", list_workspaces, methods=["GET"]),
    Route("/workspaces", create_workspace, methods=["POST"]),
    Route("/workspaces/{workspace_id}", get_workspace, methods=["GET"]),
    Route("/workspaces/{workspace_id}", update_workspace, methods=["PATCH"]),
    Route("/workspaces/{workspace_id}", delete_workspace, methods=["DELETE"]),
]
