"""`/api/v1/partials` (described in the OpenAPI document, `/docs`).

Partials are scoped to (workspace, integration, optional alias, optional action). Without
`integrationAlias` a partial applies to every alias of its integration; with it, only to calls
that target that alias.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_workspace
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.fields import ActionName, Description, Identifier, Name, Slug
from treadle.api.openapi import operation
from treadle.api.resources import Deleted, listing, one
from treadle.api.resources import Partial as PartialOut
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.engine.partials import check_values
from treadle.errors import ErrorCode, NotFound, ValidationFailed
from treadle.store.records import Partial

Values = Annotated[dict[str, Any], Field(max_length=200)]
Keys = Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=200)]


class CreatePartial(Body):
    workspaceId: Identifier
    integrationName: Slug
    name: Name
    values: Values
    integrationAlias: Slug | None = None
    actionName: ActionName | None = None
    description: Description | None = None
    enforcedKeys: Keys = []
    isDefault: bool = False


class UpdatePartial(Body):
    name: Name | None = None
    description: Description | None = None
    values: Values | None = None
    enforcedKeys: Keys | None = None
    isDefault: bool | None = None


class SetDefault(Body):
    isDefault: bool


class PartialFilter(BaseModel):
    workspaceId: str
    integrationName: str | None = None
    actionName: str | None = None


@operation(
    "Create a partial: preset (and optionally enforced) input values for an action",
    body=CreatePartial,
    responses={201: one("partial", PartialOut)},
    errors=[ErrorCode.NOT_FOUND, ErrorCode.DUPLICATE],
)
async def create_partial(request: Request) -> Response:
    gw, principal = await caller(request)
    created = await new_partial(gw, principal, await read_body(request, CreatePartial))
    return ok({"partial": created.to_json()}, status=201)


async def new_partial(gw: Gateway, principal: Principal, body: CreatePartial) -> Partial:
    """Create the partial `body` describes (for every face: REST and the console)."""
    workspace = await accessible_workspace(gw.store, principal, body.workspaceId)
    integration = gw.catalog.get(body.integrationName, principal.org_id)
    if integration is None:
        raise ValidationFailed(
            f"Unknown integration '{body.integrationName}'", field="integrationName"
        )
    if body.actionName is not None and integration.action(body.actionName) is None:
        raise ValidationFailed(
            f"'{integration.name}' has no action '{body.actionName}'", field="actionName"
        )
    check_values(integration, body.actionName, body.values, body.enforcedKeys)
    async with gw.store.db.write(principal.actor) as txn:
        return await gw.store.partials.create(
            txn,
            org_id=principal.org_id,
            workspace_id=workspace.id,
            integration_name=integration.name,
            integration_alias=body.integrationAlias,
            action_name=body.actionName,
            name=body.name,
            description=body.description,
            values=body.values,
            enforced_keys=tuple(dict.fromkeys(body.enforcedKeys)),
            is_default=body.isDefault,
        )


@operation(
    "List a workspace's partials",
    query=PartialFilter,
    responses={200: listing("partials", PartialOut)},
    errors=[ErrorCode.NOT_FOUND],
)
async def list_partials(request: Request) -> Response:
    gw, principal = await caller(request)
    query = request.query_params
    workspace_id = query.get("workspaceId")
    if not workspace_id:
        raise ValidationFailed("Missing required field: workspaceId", field="workspaceId")
    workspace = await accessible_workspace(gw.store, principal, workspace_id)
    found = await gw.store.partials.list(
        workspace.id,
        integration_name=query.get("integrationName"),
        action_name=query.get("actionName"),
    )
    return ok({"partials": [p.to_json() for p in found], "total": len(found)})


async def _partial(request: Request) -> tuple[Gateway, Principal, Partial]:
    gw, principal = await caller(request)
    found = await gw.store.partials.get(principal.org_id, path_param(request, "id", "Partial"))
    if found is None:
        raise NotFound("Partial")
    principal.check_workspace(found.workspace_id)
    return gw, principal, found


@operation("Get a partial", responses={200: one("partial", PartialOut)})
async def get_partial(request: Request) -> Response:
    _gw, _principal, found = await _partial(request)
    return ok({"partial": found.to_json()})


@operation(
    "Update a partial",
    body=UpdatePartial,
    responses={200: one("partial", PartialOut)},
    errors=[ErrorCode.DUPLICATE],
)
async def update_partial(request: Request) -> Response:
    gw, principal, current = await _partial(request)
    updated = await changed_partial(gw, principal, current, await read_body(request, UpdatePartial))
    return ok({"partial": updated.to_json()})


async def changed_partial(
    gw: Gateway, principal: Principal, current: Partial, body: UpdatePartial
) -> Partial:
    """Apply `body`'s fields to `current` (for every face: REST and the console)."""
    principal.check_workspace(current.workspace_id)
    given = body.model_fields_set
    if not given:
        raise ValidationFailed("No updates provided")
    changes: dict[str, Any] = {}
    for field, column in (
        ("name", "name"),
        ("description", "description"),
        ("values", "values"),
        ("enforcedKeys", "enforced_keys"),
        ("isDefault", "is_default"),
    ):
        if field in given:
            value = getattr(body, field)
            if value is None and field != "description":
                raise ValidationFailed(f"{field} cannot be null", field=field)
            changes[column] = value
    values = changes.get("values", current.values)
    enforced = list(changes.get("enforced_keys", current.enforced_keys))
    integration = gw.catalog.get(current.integration_name, principal.org_id)
    if integration is not None:
        check_values(integration, current.action_name, values, enforced)
    if "enforced_keys" in changes:
        changes["enforced_keys"] = tuple(dict.fromkeys(enforced))
    async with gw.store.db.write(principal.actor) as txn:
        return await gw.store.partials.update(txn, current, changes)


@operation("Delete a partial", responses={200: Deleted})
async def delete_partial(request: Request) -> Response:
    gw, principal, current = await _partial(request)
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.partials.delete(txn, current)
    return ok({"deleted": True, "id": current.id})


@operation(
    "Make a partial its action's default (or not)",
    body=SetDefault,
    responses={200: one("partial", PartialOut)},
)
async def set_default(request: Request) -> Response:
    gw, principal, current = await _partial(request)
    body = await read_body(request, SetDefault)
    async with gw.store.db.write(principal.actor) as txn:
        updated = await gw.store.partials.update(txn, current, {"is_default": body.isDefault})
    return ok({"partial": updated.to_json()})


routes = [
    Route("/partials", list_partials, methods=["GET"]),
    Route("/partials", create_partial, methods=["POST"]),
    Route("/partials/{id}", get_partial, methods=["GET"]),
    Route("/partials/{id}", update_partial, methods=["PATCH"]),
    Route("/partials/{id}", delete_partial, methods=["DELETE"]),
    Route("/partials/{id}/set-default", set_default, methods=["POST"]),
]
