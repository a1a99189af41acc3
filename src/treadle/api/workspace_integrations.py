"""`/api/v1/workspaces/{workspaceId}/integrations` (described in `/docs`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_workspace
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.fields import ActionList, Identifier, Slug
from treadle.api.openapi import operation
from treadle.api.resources import Deleted, listing, one
from treadle.api.resources import WorkspaceIntegration as InstalledOut
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.engine.installs import Reconfiguration, install, reconfigure
from treadle.errors import ErrorCode, NotFound
from treadle.store.records import ConnectionStrategy, Workspace, WorkspaceIntegration

Settings = Annotated[dict[str, Any], Field(max_length=100)]
Strategy = Literal["fixed", "per_user", "per_user_with_fallback"]


class CreateWorkspaceIntegration(Body):
    integrationName: Slug
    connectionStrategy: Strategy
    integrationAlias: Slug | None = None
    connectionId: Identifier | None = None
    allowedActions: ActionList | None = None
    settings: Settings | None = None


class UpdateWorkspaceIntegration(Body):
    connectionStrategy: Strategy | None = None
    connectionId: Identifier | None = None
    allowedActions: ActionList | None = None
    settings: Settings | None = None
    integrationAlias: Slug | None = None


def reconfiguration(body: UpdateWorkspaceIntegration) -> Reconfiguration:
    """The engine's change for a PATCH body: the fields it names, null included."""
    named = {
        "connectionStrategy": "strategy",
        "connectionId": "connection_id",
        "allowedActions": "allowed",
        "settings": "settings",
        "integrationAlias": "alias",
    }
    strategy = body.connectionStrategy
    return Reconfiguration(
        given=frozenset(named[f] for f in body.model_fields_set),
        strategy=None if strategy is None else ConnectionStrategy(strategy),
        connection_id=body.connectionId,
        allowed=body.allowedActions,
        settings=body.settings,
        alias=body.integrationAlias,
    )


async def _workspace(request: Request) -> tuple[Gateway, Principal, Workspace]:
    gw, principal = await caller(request)
    workspace_id = path_param(request, "workspace_id", "Workspace")
    return gw, principal, await accessible_workspace(gw.store, principal, workspace_id)


@operation(
    "List the integrations installed in a workspace",
    responses={200: listing("integrations", InstalledOut)},
)
async def list_workspace_integrations(request: Request) -> Response:
    gw, _principal, workspace = await _workspace(request)
    found = await gw.store.integrations.list(workspace.id)
    return ok({"integrations": [wi.to_json() for wi in found], "total": len(found)})


@operation(
    "Install an integration in a workspace",
    body=CreateWorkspaceIntegration,
    responses={201: one("integration", InstalledOut)},
    errors=[ErrorCode.ALIAS_CONFLICT, ErrorCode.DUPLICATE],
)
async def create_workspace_integration(request: Request) -> Response:
    gw, principal, workspace = await _workspace(request)
    body = await read_body(request, CreateWorkspaceIntegration)
    created = await install(
        gw.store,
        gw.catalog,
        principal.actor,
        workspace,
        integration_name=body.integrationName,
        strategy=ConnectionStrategy(body.connectionStrategy),
        alias=body.integrationAlias,
        connection_id=body.connectionId,
        allowed=body.allowedActions,
        settings=body.settings,
    )
    return ok({"integration": created.to_json()}, status=201)


async def _configured(
    gw: Gateway, principal: Principal, workspace: Workspace, request: Request
) -> WorkspaceIntegration:
    found = await gw.store.integrations.get(
        principal.org_id, path_param(request, "id", "Workspace integration")
    )
    if found is None or found.workspace_id != workspace.id:
        raise NotFound("Workspace integration")
    return found


@operation(
    "Get an installed integration",
    responses={200: one("integration", InstalledOut)},
)
async def get_workspace_integration(request: Request) -> Response:
    gw, principal, workspace = await _workspace(request)
    found = await _configured(gw, principal, workspace, request)
    return ok({"integration": found.to_json()})


@operation(
    "Update an installed integration",
    body=UpdateWorkspaceIntegration,
    responses={200: one("integration", InstalledOut)},
    errors=[ErrorCode.NO_UPDATES, ErrorCode.ALIAS_CONFLICT],
)
async def update_workspace_integration(request: Request) -> Response:
    gw, principal, workspace = await _workspace(request)
    current = await _configured(gw, principal, workspace, request)
    body = await read_body(request, UpdateWorkspaceIntegration)
    change = reconfiguration(body)
    updated = await reconfigure(gw.store, gw.catalog, principal.actor, workspace, current, change)
    return ok({"integration": updated.to_json()})


@operation("Uninstall an integration", responses={200: Deleted})
async def delete_workspace_integration(request: Request) -> Response:
    gw, principal, workspace = await _workspace(request)
    current = await _configured(gw, principal, workspace, request)
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.integrations.delete(txn, current)
    return ok({"deleted": True, "id": current.id})


_ONE = "/workspaces/{workspace_id}/integrations/{id}"
routes = [
    Route("/workspaces/{workspace_id}/integrations", list_workspace_integrations, methods=["GET"]),
    Route(
        "/workspaces/{workspace_id}/integrations", create_workspace_integration, methods=["POST"]
    ),
    Route(_ONE, get_workspace_integration, methods=["GET"]),
    Route(_ONE, update_workspace_integration, methods=["PATCH"]),
    Route(_ONE, delete_workspace_integration, methods=["DELETE"]),
]
