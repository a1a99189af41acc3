"""`POST /api/v1/actions/execute`, accepting both documented dialects.

One dialect: integrationName, workspaceId, workspaceIntegrationId, integrationAlias,
connectionExternalId, endUserId, partialIds, idempotencyKey. The other: pieceName, projectId,
connectionId. When both names of a field are sent they must agree. Without a workspace, the
key's own workspace or the org's only workspace is used.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Annotated, Any

import anyio
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_config, authenticate
from treadle.api.bodies import Body, parse, read_json_object
from treadle.api.context import gateway
from treadle.api.fields import (
    ActionName,
    EndUserId,
    ExternalId,
    IdempotencyKey,
    Identifier,
    Slug,
)
from treadle.api.openapi import operation
from treadle.api.resources import ApprovalRequired, Executed
from treadle.api.responses import JSON
from treadle.app import Gateway
from treadle.engine import (
    ApprovalPending,
    ExecuteRequest,
    Outcome,
    Refused,
    Source,
    Succeeded,
    UpstreamFailed,
)
from treadle.engine.approvals import canonical
from treadle.errors import ErrorCode, Refusal, StaleConfiguration, ValidationFailed
from treadle.observability.logs import note
from treadle.store.config_cache import WorkspaceConfig
from treadle.store.gates import IdempotencyRecord
from treadle.store.records import Workspace


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
    endUserId: EndUserId | None = None
    partialIds: Annotated[list[Identifier], Field(max_length=100)] | None = None
    idempotencyKey: IdempotencyKey | None = None


def _one_of(first: str | None, second: str | None, names: str) -> str | None:
    if first is not None and second is not None and first != second:
        raise ValidationFailed(f"{names} disagree; send one of them", field=names.split(" ")[0])
    return first if first is not None else second


# Listed in the error up to this many: enough to pick from, bounded for an org with hundreds.
_LISTED_WORKSPACES = 20


def _workspace_needed(workspaces: list[Workspace]) -> ValidationFailed:
    """The call named no workspace and the org has several (or none): say so, and which."""
    if not workspaces:
        return ValidationFailed("Missing required field: workspaceId", field="workspaceId")
    shown = workspaces[:_LISTED_WORKSPACES]
    named = ", ".join(f"{w.id} ({w.name})" for w in shown)
    more = f" and {len(workspaces) - len(shown)} more" if len(workspaces) > len(shown) else ""
    return ValidationFailed(
        f"This org has {len(workspaces)} workspaces, so the call must name one in "
        f"workspaceId: {named}{more}",
        field="workspaceId",
        workspaces=[{"id": w.id, "name": w.name} for w in shown],
    )


async def _workspace_config(
    gw: Gateway, principal: Principal, body: ExecuteBody
) -> WorkspaceConfig:
    chosen = _one_of(body.workspaceId, body.projectId, "workspaceId and projectId")
    if chosen is None:
        chosen = principal.key.workspace_id
    if chosen is None:
        workspaces = await gw.store.workspaces.list(principal.org_id)
        if len(workspaces) != 1:
            raise _workspace_needed(workspaces)
        chosen = workspaces[0].id
    return await accessible_config(gw.store, principal, chosen)


@operation(
    "Run an action of an installed integration",
    description=(
        "Both dialects are accepted: integrationName/workspaceId/connectionExternalId and "
        "pieceName/projectId/connectionId; when both names of a field are sent they must "
        "agree. Without a workspace, the key's own or the org's only workspace is used. With "
        "an idempotencyKey the first completed answer is replayed for 24 hours "
        "(`Idempotent-Replayed: true`). A call a policy pauses answers 202 with its approval."
    ),
    body=ExecuteBody,
    responses={200: Executed, 202: ApprovalRequired},
    errors=[
        ErrorCode.NOT_FOUND,
        ErrorCode.INTEGRATION_NOT_FOUND,
        ErrorCode.ACTION_NOT_ALLOWED,
        ErrorCode.ACTION_FAILED,
        ErrorCode.ACTION_BLOCKED,
        ErrorCode.CONNECTION_REQUIRED,
        ErrorCode.CONNECTION_NOT_FOUND,
        ErrorCode.CONNECTION_ERROR,
        ErrorCode.RATE_LIMITED,
        ErrorCode.QUOTA_EXCEEDED,
        ErrorCode.APPROVAL_REJECTED,
        ErrorCode.APPROVAL_EXPIRED,
        ErrorCode.APPROVAL_NOT_PENDING,
        ErrorCode.IDEMPOTENCY_KEY_MISMATCH,
        ErrorCode.IDEMPOTENCY_KEY_IN_USE,
    ],
)
async def execute(request: Request) -> Response:
    gw = gateway(request)
    # At the newest configuration version seen here, not read for this request where the
    # pipeline confirms it as it counts the call (`ConfigCache.assumed_snapshot`): a refusal
    # before that is only given once the version is confirmed, and a call that finds it
    # moved is served again, from the key on, at the newer one.
    principal = await authenticate(gw.store, request, await gw.store.config.assumed_snapshot())
    try:
        raw = await read_json_object(request)
        body = parse(ExecuteBody, raw)
        integration_name = _one_of(
            body.integrationName, body.pieceName, "integrationName and pieceName"
        )
        if integration_name is None:
            raise ValidationFailed(
                "Missing required field: integrationName", field="integrationName"
            )
        if body.idempotencyKey is not None:
            # Claiming the key is a write: made at the current version only.
            principal = await _confirmed(gw, request, principal)
    except Refusal:
        await _confirmed(gw, request, principal)  # 401 instead, if the key is gone by now
        raise
    while True:
        try:
            return await _execute_at(gw, principal, body, raw, integration_name)
        except StaleConfiguration as moved:
            fresh = gw.store.config.snapshot_at(moved.version)
            principal = await authenticate(gw.store, request, fresh)
        except Refusal:
            assumed = principal.config
            if assumed is None or assumed.confirmed:
                raise
            principal = await _confirmed(gw, request, principal)
            if principal.config is not None and principal.config.version == assumed.version:
                raise  # refused by the current configuration


async def _confirmed(gw: Gateway, request: Request, principal: Principal) -> Principal:
    """The caller at a confirmed snapshot: as it is when its snapshot was read for this
    request, else authenticated again at the version now (401 if the key is gone)."""
    snapshot = principal.config
    if snapshot is None or snapshot.confirmed:
        return principal
    fresh = await snapshot.confirm()
    if fresh.version == snapshot.version:
        return replace(principal, config=fresh)
    return await authenticate(gw.store, request, fresh)


async def _execute_at(
    gw: Gateway, principal: Principal, body: ExecuteBody, raw: dict[str, Any], integration_name: str
) -> Response:
    # Looked up at the key's snapshot (no read of its own) and handed to the pipeline.
    config = await _workspace_config(gw, principal, body)
    call = ExecuteRequest(
        org_id=principal.org_id,
        workspace_id=config.workspace.id,
        config=config,
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
        approval_key=body.idempotencyKey,
        assumed_version=None if principal.config is None else principal.config.assumed_version,
    )
    if body.idempotencyKey is None:
        return _respond(*render(await gw.executor.execute(call)))
    return await _idempotent(gw, principal.org_id, body.idempotencyKey, raw, call)


async def _idempotent(
    gw: Gateway, org_id: str, key: str, raw: dict[str, Any], call: ExecuteRequest
) -> Response:
    """Stripe's semantics: the first completed response per key is replayed for 24 h; the same
    key with another request is 422; while the first is still running, 409."""
    request_print = hashlib.sha256(
        canonical({k: v for k, v in raw.items() if k != "idempotencyKey"}).encode()
    ).hexdigest()
    held = await gw.store.idempotency.begin(org_id, key, request_print)
    if isinstance(held, IdempotencyRecord):
        if held.fingerprint != request_print:
            raise Refusal(
                ErrorCode.IDEMPOTENCY_KEY_MISMATCH,
                "This idempotency key was used with a different request",
            )
        if held.state != "completed" or held.status_code is None:
            raise Refusal(
                ErrorCode.IDEMPOTENCY_KEY_IN_USE,
                "A request with this idempotency key is still running; retry later",
            )
        return _respond(held.status_code, held.body, {"Idempotent-Replayed": "true"})
    outcome: Outcome | None = None
    try:
        outcome = await gw.executor.execute(call)
    finally:
        with anyio.CancelScope(shield=True):
            if outcome is not None and _ran(outcome):
                status, payload, _headers = render(outcome)
                await gw.store.idempotency.complete(org_id, key, status, payload)
            elif outcome is not None and _gated(outcome):
                # A person decides (or decided) this request: the key stays bound to it.
                await gw.store.idempotency.park(org_id, key)
            else:
                # Nothing ran and nobody decides: the key is free for a corrected request.
                await gw.store.idempotency.release(org_id, key)
    status, payload, headers = render(outcome)
    if held.rerun:
        # The earlier attempt's process stopped before it answered: this ran the request
        # again (at least once, not exactly once). Tell the caller.
        headers["Idempotent-Rerun"] = "true"
    return _respond(status, payload, headers)


_GATE_REFUSALS = frozenset(
    {ErrorCode.APPROVAL_REJECTED, ErrorCode.APPROVAL_EXPIRED, ErrorCode.APPROVAL_NOT_PENDING}
)


def _gated(outcome: Outcome) -> bool:
    match outcome:
        case ApprovalPending():
            return True
        case Refused():
            return outcome.code in _GATE_REFUSALS
        case _:
            return False


def _ran(outcome: Outcome) -> bool:
    match outcome:
        case Succeeded() | UpstreamFailed():
            return True
        case Refused(code=ErrorCode.ACTION_FAILED):
            return True
        case _:
            return False


def _respond(status: int, payload: Any, headers: dict[str, str]) -> Response:
    return JSON(payload, status_code=status, headers=headers)


def render(outcome: Outcome) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of an outcome (the `execute` operation of /api/v1/openapi.json)."""
    headers = outcome.rate.headers() if outcome.rate is not None else {}
    match outcome:
        case Succeeded():
            body = {"success": True, "output": outcome.output, "duration": outcome.duration_ms}
            return 200, body, headers
        case UpstreamFailed():
            body = {
                "success": False,
                "output": {"error": outcome.error, "detail": outcome.detail},
                "duration": outcome.duration_ms,
            }
            return 200, body, headers
        case ApprovalPending():
            approval = outcome.approval
            body = {
                "success": False,
                "status": "approval_required",
                "approval": {
                    "id": approval.id,
                    "status": approval.status,
                    "approvalUrl": outcome.approval_url,
                    "hostedApprovalUrl": outcome.approval_url,
                    "expiresAt": approval.expires_at,
                    "retry": {"idempotencyKey": outcome.retry_key},
                },
            }
            return 202, body, headers
        case Refused():
            note(error=outcome.code.value)
            if outcome.code is ErrorCode.RATE_LIMITED:
                headers["Retry-After"] = str(outcome.extra.get("retryAfter", 1))
            body = {**outcome.extra, "error": outcome.code.value, "message": outcome.message}
            return outcome.code.status, body, headers


routes = [Route("/actions/execute", execute, methods=["POST"])]
