"""`/api/v1/approvals`: the approval inbox, and decisions by API key."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_workspace
from treadle.api.bodies import Body, parse, read_json_object
from treadle.api.context import caller, path_param
from treadle.api.openapi import operation
from treadle.api.query import bounded_int, choice, timestamp
from treadle.api.resources import Approval as ApprovalOut
from treadle.api.resources import ApprovalPage, one
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.errors import ErrorCode, NotFound, ValidationFailed
from treadle.store.gates import Approval

STATUSES = {"pending", "approved", "rejected", "expired"}
Reason = Annotated[str, StringConstraints(max_length=1000)]


class Decision(Body):
    reason: Reason | None = None


class ApprovalQuery(BaseModel):
    workspaceId: str | None = None
    status: Literal["pending", "approved", "rejected", "expired"] | None = None
    since: str | None = Field(None, description="ISO 8601")
    until: str | None = Field(None, description="ISO 8601")
    cursor: str | None = Field(None, description="nextCursor of the previous page")
    limit: Annotated[int, Field(ge=1, le=200)] | None = None


def _cursor(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    try:
        created, _, approval_id = base64.urlsafe_b64decode(value.encode()).decode().partition("|")
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("Invalid cursor", field="cursor") from None
    if not created or not approval_id:
        raise ValidationFailed("Invalid cursor", field="cursor")
    return created, approval_id


@operation(
    "List approvals, newest first",
    query=ApprovalQuery,
    responses={200: ApprovalPage},
    errors=[ErrorCode.NOT_FOUND],
)
async def list_approvals(request: Request) -> Response:
    gw, principal = await caller(request)
    query = request.query_params
    workspace_id = query.get("workspaceId")
    if workspace_id is not None:
        await accessible_workspace(gw.store, principal, workspace_id)
    status = choice(query.get("status"), "status", STATUSES)
    since = timestamp(query.get("since"), "since")
    until = timestamp(query.get("until"), "until")
    before = _cursor(query.get("cursor"))
    limit = bounded_int(query.get("limit"), "limit", 1, 200) or 50
    # Timed-out approvals are settled first: `status=pending` must not list expired ones.
    await gw.approvals.settle_overdue(principal.org_id)
    found, cursor = await gw.store.approvals.list(
        principal.org_id,
        workspace_ids=principal.workspace_ids,
        workspace_id=workspace_id,
        status=status,
        since=since,
        until=until,
        before=before,
        limit=limit,
    )
    found = [await gw.approvals.settle(a) for a in found]
    next_cursor = None
    if cursor is not None:
        next_cursor = base64.urlsafe_b64encode("|".join(cursor).encode()).decode()
    return ok({"approvals": [a.to_json() for a in found], "nextCursor": next_cursor})


async def _approval(request: Request, gw: Gateway, principal: Principal) -> Approval:
    found = await gw.store.approvals.get(path_param(request, "id", "Approval"), principal.org_id)
    if found is None:
        raise NotFound("Approval")
    principal.check_workspace(found.workspace_id)
    return await gw.approvals.settle(found)


@operation("Get an approval", responses={200: one("approval", ApprovalOut)})
async def get_approval(request: Request) -> Response:
    found = await _approval(request, *await caller(request))
    return ok({"approval": found.to_json()})


async def _decide(request: Request, status: str) -> Response:
    gw, principal = await caller(request)
    # Read (bounded) before the approval is looked up or settled: an oversized body costs no work.
    body = parse(Decision, await read_json_object(request, optional=True))
    found = await _approval(request, gw, principal)
    decided = await gw.approvals.decide_by_key(found, status, principal.actor, body.reason)
    return ok({"approval": decided.to_json()})


@operation(
    "Approve a pending call (the caller retries it with its idempotency key)",
    body=Decision,
    body_required=False,
    responses={200: one("approval", ApprovalOut)},
    errors=[ErrorCode.FORBIDDEN, ErrorCode.APPROVAL_NOT_PENDING],
)
async def approve(request: Request) -> Response:
    return await _decide(request, "approved")


@operation(
    "Reject a pending call",
    body=Decision,
    body_required=False,
    responses={200: one("approval", ApprovalOut)},
    errors=[ErrorCode.FORBIDDEN, ErrorCode.APPROVAL_NOT_PENDING],
)
async def reject(request: Request) -> Response:
    return await _decide(request, "rejected")


routes = [
    Route("/approvals", list_approvals, methods=["GET"]),
    Route("/approvals/{id}", get_approval, methods=["GET"]),
    Route("/approvals/{id}/approve", approve, methods=["POST"]),
    Route("/approvals/{id}/reject", reject, methods=["POST"]),
]
