"""`/api/v1/integrations`: the catalog, with each action's input definitions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.context import caller, path_param
from treadle.api.openapi import operation
from treadle.api.resources import Integration as IntegrationOut
from treadle.api.resources import listing, one
from treadle.api.responses import ok
from treadle.catalog.model import Action, Integration
from treadle.errors import NotFound


class IntegrationFilter(BaseModel):
    name: str | None = None


def action_json(action: Action) -> dict[str, Any]:
    schema = action.input_schema
    marks = action.annotations
    return {
        "name": action.name,
        "displayName": action.display_name,
        "description": action.description,
        "props": schema.get("properties", {}),
        "required": schema.get("required", []),
        "inputSchema": schema,
        "outputSchema": action.output_schema,
        "annotations": {
            "readOnly": marks.read_only,
            "destructive": marks.destructive,
            "idempotent": marks.idempotent,
            "openWorld": marks.open_world,
        },
    }


def integration_json(integration: Integration) -> dict[str, Any]:
    return {
        "name": integration.name,
        "displayName": integration.display_name,
        "description": integration.description,
        "authKind": integration.auth_kind.value,
        "settingsSchema": integration.settings_schema,
        "actions": {action.name: action_json(action) for action in integration.actions},
    }


@operation(
    "List the integrations the org may install, with their actions",
    query=IntegrationFilter,
    responses={200: listing("integrations", IntegrationOut)},
)
async def list_integrations(request: Request) -> Response:
    gw, principal = await caller(request)
    name = request.query_params.get("name")
    chosen = [i for i in gw.catalog.for_org(principal.org_id) if name is None or i.name == name]
    return ok({"integrations": [integration_json(i) for i in chosen], "total": len(chosen)})


@operation(
    "Get an integration and its actions",
    responses={200: one("integration", IntegrationOut)},
)
async def get_integration(request: Request) -> Response:
    gw, principal = await caller(request)
    found = gw.catalog.get(path_param(request, "name", "Integration"), principal.org_id)
    if found is None:
        raise NotFound("Integration")
    return ok({"integration": integration_json(found)})


routes = [
    Route("/integrations", list_integrations, methods=["GET"]),
    Route("/integrations/{name}", get_integration, methods=["GET"]),
]
