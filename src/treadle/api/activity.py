"""`GET /api/v1/activity`: executions and configuration changes, newest first."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import accessible_workspace
from treadle.api.context import caller
from treadle.api.responses import ok
from treadle.clock import iso, parse_iso
from treadle.errors import ValidationFailed
from treadle.store import ActivityFilter

TYPES = {"action_execution", "config_change"}
STATUSES = {"succeeded", "upstream_failed", "failed", "refused", "ok"}
# ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,19}")


def _time(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return iso(parse_iso(value))
    except ValueError:
        raise ValidationFailed(f"{name} must be an ISO 8601 timestamp", field=name) from None


def _choice(value: str | None, name: str, allowed: set[str]) -> str | None:
    if value is not None and value not in allowed:
        raise ValidationFailed(f"{name} must be one of {', '.join(sorted(allowed))}", field=name)
    return value


def _int(value: str | None, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if not _WHOLE_NUMBER.fullmatch(value) or not low <= int(value) <= high:
        raise ValidationFailed(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(value)


async def list_activity(request: Request) -> Response:
    gw, principal = await caller(request)
    query = request.query_params
    workspace_id = query.get("workspaceId")
    if workspace_id is not None:
        await accessible_workspace(gw.store, principal, workspace_id)
    entries, cursor = await gw.store.activity.list(
        ActivityFilter(
            org_id=principal.org_id,
            workspace_ids=principal.workspace_ids,
            workspace_id=workspace_id,
            type=_choice(query.get("type"), "type", TYPES),
            status=_choice(query.get("status"), "status", STATUSES),
            source=query.get("source"),
            since=_time(query.get("since"), "since"),
            until=_time(query.get("until"), "until"),
            before_seq=_int(query.get("cursor"), "cursor", 1, 2**62),
            limit=_int(query.get("limit"), "limit", 1, 200) or 50,
        )
    )
    return ok(
        {
            "activity": [entry.to_json() for entry in entries],
            "nextCursor": None if cursor is None else str(cursor),
        }
    )


routes = [Route("/activity", list_activity, methods=["GET"])]
