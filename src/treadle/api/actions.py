"""`POST /api/v1/actions/execute`, accepting both documented dialects.

Doc 000: integrationName, workspaceId, workspaceIntegrationId, integrationAlias,
connectionExternalId, endUserId, partialIds, idempotencyKey. Doc 001: pieceName, projectId,
connectionId. When both names of a field are sent they must agree. Without a workspace, the
key's own workspace or the org's only workspace is used.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_workspace
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller
from treadle.api.fields import ActionName, ExternalId, IdempotencyKey, Identifier, Slug
from treadle.api.responses import error, ok
from treadle.app import Gateway
from treadle.engine import ExecuteRequest, Outcome, Refused, Source, Succeeded, UpstreamFailed
from treadle.errors import ErrorCode, ValidationFailed


class ExecuteBody(Body):
    actionName: ActionName
    integrationName: Slug | None = None
    pieceName: Slug | None = None
    input: dict[str, Any] = {}
    workspaceId: Identifier | None = None
    projectId: Identifier | None = None
    workspaceIntegrationId: Identifier | None = None
    integrationAlias: Slug | None = None
    connectionExternalId: ExternalId | None = None
    connectionId: ExternalId | None = None
    endUserId: ExternalId | None = None
    partialIds: Annotated[list[Identifier], Field(max_length=100)] | None = None
    idempotencyKey: IdempotencyKey | None = None


def _one_of(first: str | None, second: str | None, names: str) -> str | None:
    if first is not None and second is not None and first != second:
        raise ValidationFailed(f"{names} disagree; send one of them", field=names.split(" ")[0])
    return first if first is not None else second


async def _workspace_id(gw: Gateway, principal: Principal, body: ExecuteBody) -> str:
    chosen = _one_of(body.workspaceId, body.projectId, "workspaceId and projectId")
    if chosen is None:
        chosen = principal.key.workspace_id
    if chosen is None:
        workspaces = await gw.store.workspaces.list(principal.org_id)
        if len(workspaces) != 1:
            raise ValidationFailed("Missing required field: workspaceId", field="workspaceId")
        chosen = workspaces[0].id
    return (await accessible_workspace(gw.store, principal, chosen)).id


async def execute(request: Request) -> Response:
    gw, principal = await caller(request)
    body = await read_body(request, ExecuteBody)
    integration_name = _one_of(
        body.integrationName, body.pieceName, "integrationName and pieceName"
    )
    if integration_name is None:
        raise ValidationFailed("Missing required field: integrationName", field="integrationName")
    outcome = await gw.executor.execute(
        ExecuteRequest(
            org_id=principal.org_id,
            workspace_id=await _workspace_id(gw, principal, body),
            integration_name=integration_name,
            action_name=body.actionName,
            source=Source.REST,
            actor=principal.actor,
            input=body.input,
            workspace_integration_id=body.workspaceIntegrationId,
            integration_alias=body.integrationAlias,
            connection_external_id=body.connectionExternalId,
            connection_id=body.connectionId,
            end_user_id=body.endUserId,
            partial_ids=None if body.partialIds is None else tuple(body.partialIds),
            idempotency_key=body.idempotencyKey,
        )
    )
    return outcome_response(outcome)


def outcome_response(outcome: Outcome) -> Response:
    headers = outcome.rate.headers() if outcome.rate is not None else {}
    match outcome:
        case Succeeded():
            return ok(
                {"success": True, "output": outcome.output, "duration": outcome.duration_ms},
                headers=headers,
            )
        case UpstreamFailed():
            body = {
                "success": False,
                "output": {"error": outcome.error, "detail": outcome.detail},
                "duration": outcome.duration_ms,
            }
            return ok(body, headers=headers)
        case Refused():
            if outcome.code is ErrorCode.RATE_LIMITED:
                headers["Retry-After"] = str(outcome.extra.get("retryAfter", 1))
            return error(outcome.code, outcome.message, outcome.extra, headers=headers)


routes = [Route("/actions/execute", execute, methods=["POST"])]
