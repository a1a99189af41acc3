"""`GET /api/v1/activity`: executions and configuration changes, newest first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_workspace
from treadle.api.context import caller
from treadle.api.openapi import operation
from treadle.api.query import bounded_int, choice, timestamp
from treadle.api.resources import ActivityPage
from treadle.api.responses import ok
from treadle.errors import ErrorCode
from treadle.store import ActivityFilter, Store

TYPES = {"action_execution", "config_change", "approval_decision"}
STATUSES = {
    "succeeded",
    "upstream_failed",
    "failed",
    "refused",
    "approval_pending",
    "ok",
    "approved",
    "rejected",
    "expired",
}


class ActivityQuery(BaseModel):
    workspaceId: str | None = None
    type: Literal["action_execution", "config_change", "approval_decision"] | None = None
    status: str | None = Field(None, description=", ".join(sorted(STATUSES)))
    source: str | None = None
    integrationName: str | None = None
    integrationAlias: str | None = None
    actionName: str | None = None
    since: str | None = Field(None, description="ISO 8601")
    until: str | None = Field(None, description="ISO 8601")
    cursor: str | None = Field(None, description="nextCursor of the previous page")
    limit: Annotated[int, Field(ge=1, le=200)] | None = None


async def activity_filter(
    store: Store, principal: Principal, query: Mapping[str, str]
) -> ActivityFilter:
    """The log's filters from query parameters, checked (REST and the console read the log
    through this one function)."""
    workspace_id = query.get("workspaceId")
    if workspace_id is not None:
        await accessible_workspace(store, principal, workspace_id)
    return ActivityFilter(
        org_id=principal.org_id,
        workspace_ids=principal.workspace_ids,
        workspace_id=workspace_id,
        type=choice(query.get("type"), "type", TYPES),
        status=choice(query.get("status"), "status", STATUSES),
        source=query.get("source"),
        integration_name=query.get("integrationName"),
        integration_alias=query.get("integrationAlias"),
        action_name=query.get("actionName"),
        since=timestamp(query.get("since"), "since"),
        until=timestamp(query.get("until"), "until"),
        before_seq=bounded_int(query.get("cursor"), "cursor", 1, 2**62),
        limit=bounded_int(query.get("limit"), "limit", 1, 200) or 50,
    )


@operation(
    "The activity log, newest first (calls, refusals, approvals and changes)",
    query=ActivityQuery,
    responses={200: ActivityPage},
    errors=[ErrorCode.NOT_FOUND],
)
async def list_activity(request: Request) -> Response:
    gw, principal = await caller(request)
    entries, cursor = await gw.store.activity.list(
        await activity_filter(gw.store, principal, request.query_params)
    )
    return ok(
        {
            "activity": [entry.to_json() for entry in entries],
            "nextCursor": None if cursor is None else str(cursor),
        }
    )


routes = [Route("/activity", list_activity, methods=["GET"])]
