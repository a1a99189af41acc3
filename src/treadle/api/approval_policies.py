"""`/api/v1/approval-policies` (Human Gates; the path and fields of Weavz's API reference).

`rules` is `{"match": "all" | "any", "conditions": [{"path", "op", "value"}]}` (see
treadle.engine.policies). A policy with `notifyWebhookUrl` gets a signing secret, returned
once as `webhookSecret` on create.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, StringConstraints, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.auth import Principal, accessible_workspace, workspace_query
from treadle.api.bodies import Body, read_body
from treadle.api.context import caller, path_param
from treadle.api.fields import ActionName, Description, Identifier, Name, Slug
from treadle.api.openapi import operation
from treadle.api.query import WorkspaceFilter
from treadle.api.resources import ApprovalPolicy as PolicyOut
from treadle.api.resources import Deleted, listing, one
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.engine.policies import OPERATORS
from treadle.errors import ErrorCode, NotFound, Refusal, ValidationFailed
from treadle.store.gates import ApprovalPolicy

Source = Literal["rest", "mcp_tools"]
Strategy = Literal["fixed", "per_user", "per_user_with_fallback"]
Url = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")]
KeyPath = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")
]


Item = TypeVar("Item")
NonEmpty = Annotated[list[Item], Field(min_length=1, max_length=100)]


class Condition(Body):
    path: KeyPath
    op: str
    value: Any = None

    @model_validator(mode="after")
    def _check(self) -> Condition:
        if self.op not in OPERATORS:
            raise ValueError(f"op must be one of {', '.join(sorted(OPERATORS))}")
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"'{self.op}' needs a list value")
        if self.op in ("gt", "gte", "lt", "lte") and (
            isinstance(self.value, bool) or not isinstance(self.value, int | float)
        ):
            # A threshold that is not a number would never match: refuse it, do not ignore it.
            raise ValueError(f"'{self.op}' needs a number value")
        if self.op == "regex":
            if not isinstance(self.value, str) or len(self.value) > 500:
                raise ValueError("'regex' needs a pattern of at most 500 characters")
            try:
                re.compile(self.value)
            except re.error as bad:
                raise ValueError(f"invalid regex: {bad}") from None
        return self


class Rules(Body):
    match: Literal["all", "any"] = "all"
    conditions: Annotated[list[Condition], Field(max_length=50)] = []


class PolicyFields(Body):
    description: Description | None = None
    enabled: bool = True
    priority: Annotated[int, Field(ge=0, le=1_000_000)] = 100
    sources: NonEmpty[Source] | None = None
    integrationNames: NonEmpty[Slug] | None = None
    integrationAliases: NonEmpty[Slug] | None = None
    actionNames: NonEmpty[ActionName] | None = None
    connectionStrategies: NonEmpty[Strategy] | None = None
    mcpServerIds: NonEmpty[Identifier] | None = None
    endUserMode: Literal["any", "end_user_present", "no_end_user"] = "any"
    rules: Rules | None = None
    timeoutSeconds: Annotated[int, Field(ge=1, le=7 * 86400)] = 3600
    defaultOnTimeout: Literal["reject", "expire"] = "expire"
    approvalAccessMode: Literal[
        "dashboard_only", "dashboard_and_hosted_link", "hosted_link_only"
    ] = "dashboard_and_hosted_link"
    allowSelfApproval: bool = False
    reuseWindowSeconds: Annotated[int, Field(ge=0, le=86400)] = 3600
    notifyWebhookUrl: Url | None = None


class CreatePolicy(PolicyFields):
    name: Name
    decision: Literal["require_approval", "notify_only", "block", "auto_approve"]
    workspaceId: Identifier | None = None


class UpdatePolicy(PolicyFields):
    name: Name | None = None
    decision: Literal["require_approval", "notify_only", "block", "auto_approve"] | None = None


_COLUMNS = {
    "name": "name",
    "description": "description",
    "enabled": "enabled",
    "priority": "priority",
    "sources": "sources",
    "integrationNames": "integration_names",
    "integrationAliases": "integration_aliases",
    "actionNames": "action_names",
    "connectionStrategies": "connection_strategies",
    "mcpServerIds": "mcp_server_ids",
    "endUserMode": "end_user_mode",
    "rules": "rules",
    "decision": "decision",
    "timeoutSeconds": "timeout_seconds",
    "defaultOnTimeout": "default_on_timeout",
    "approvalAccessMode": "approval_access_mode",
    "allowSelfApproval": "allow_self_approval",
    "reuseWindowSeconds": "reuse_window_seconds",
    "notifyWebhookUrl": "notify_webhook_url",
}
_REQUIRED = {"name", "decision", "enabled", "priority", "endUserMode", "timeoutSeconds"}


def _columns(body: PolicyFields, fields: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in fields:
        column = _COLUMNS.get(field)
        if column is None:
            continue
        value = getattr(body, field)
        if value is None and field in _REQUIRED:
            raise ValidationFailed(f"{field} cannot be null", field=field)
        if isinstance(value, Rules):
            value = value.model_dump()
        elif isinstance(value, list):
            value = tuple(value)
        values[column] = value
    return values


@operation(
    "Create an approval policy (answers its webhookSecret once when it notifies a webhook)",
    body=CreatePolicy,
    responses={201: one("policy", PolicyOut)},
    errors=[ErrorCode.NOT_FOUND, ErrorCode.DUPLICATE],
)
async def create_policy(request: Request) -> Response:
    gw, principal = await caller(request)
    policy, secret = await new_policy(gw, principal, await read_body(request, CreatePolicy))
    payload: dict[str, Any] = {"policy": policy.to_json()}
    if secret is not None:
        payload["webhookSecret"] = secret
    return ok(payload, status=201)


async def new_policy(
    gw: Gateway, principal: Principal, body: CreatePolicy
) -> tuple[ApprovalPolicy, str | None]:
    """Create the policy `body` describes, and its webhook secret if it notifies one (for
    every face: REST and the console)."""
    if body.workspaceId is None:
        principal.check_org_wide()
    else:
        await accessible_workspace(gw.store, principal, body.workspaceId)
    values = _columns(body, set(CreatePolicy.model_fields) - {"workspaceId"})
    secret = f"whsec_{secrets.token_urlsafe(24)}" if body.notifyWebhookUrl else None
    async with gw.store.db.write(principal.actor) as txn:
        policy = await gw.store.approval_policies.create(
            txn,
            org_id=principal.org_id,
            workspace_id=body.workspaceId,
            webhook_secret=secret,
            **values,
        )
    return policy, secret


@operation(
    "List approval policies",
    query=WorkspaceFilter,
    responses={200: listing("policies", PolicyOut)},
    errors=[ErrorCode.NOT_FOUND],
)
async def list_policies(request: Request) -> Response:
    gw, principal = await caller(request)
    workspace_id = await workspace_query(gw.store, principal, request)
    scope = {workspace_id} if workspace_id else principal.workspace_ids
    found = await gw.store.approval_policies.list(principal.org_id, scope)
    return ok({"policies": [p.to_json() for p in found], "total": len(found)})


async def _policy(request: Request) -> tuple[Gateway, Principal, ApprovalPolicy]:
    gw, principal = await caller(request)
    found = await gw.store.approval_policies.get(
        principal.org_id, path_param(request, "id", "Approval policy")
    )
    if found is None:
        raise NotFound("Approval policy")
    principal.check_read(found.workspace_id)
    return gw, principal, found


@operation("Get an approval policy", responses={200: one("policy", PolicyOut)})
async def get_policy(request: Request) -> Response:
    _gw, _principal, found = await _policy(request)
    return ok({"policy": found.to_json()})


@operation(
    "Update an approval policy",
    body=UpdatePolicy,
    responses={200: one("policy", PolicyOut)},
    errors=[ErrorCode.NO_UPDATES, ErrorCode.DUPLICATE],
)
async def update_policy(request: Request) -> Response:
    gw, principal, current = await _policy(request)
    principal.check_scope(current.workspace_id)
    body = await read_body(request, UpdatePolicy)
    updated, secret = await changed_policy(gw, principal, current, body)
    payload: dict[str, Any] = {"policy": updated.to_json()}
    if secret is not None:
        payload["webhookSecret"] = secret
    return ok(payload)


async def changed_policy(
    gw: Gateway, principal: Principal, current: ApprovalPolicy, body: UpdatePolicy
) -> tuple[ApprovalPolicy, str | None]:
    """Apply `body`'s fields to `current`; a first webhook URL gets a new secret (for every
    face: REST and the console)."""
    principal.check_scope(current.workspace_id)
    if not body.model_fields_set:
        raise Refusal(ErrorCode.NO_UPDATES, "No fields provided to update")
    changes = _columns(body, body.model_fields_set)
    secret = None
    if changes.get("notify_webhook_url") and current.webhook_secret is None:
        secret = changes["webhook_secret"] = f"whsec_{secrets.token_urlsafe(24)}"
    async with gw.store.db.write(principal.actor) as txn:
        updated = await gw.store.approval_policies.update(txn, current, changes)
    return updated, secret


@operation("Delete an approval policy", responses={200: Deleted})
async def delete_policy(request: Request) -> Response:
    gw, principal, current = await _policy(request)
    principal.check_scope(current.workspace_id)
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.approval_policies.delete(txn, current)
    return ok({"deleted": True, "id": current.id})


routes = [
    Route("/approval-policies", list_policies, methods=["GET"]),
    Route("/approval-policies", create_policy, methods=["POST"]),
    Route("/approval-policies/{id}", get_policy, methods=["GET"]),
    Route("/approval-policies/{id}", update_policy, methods=["PATCH"]),
    Route("/approval-policies/{id}", delete_policy, methods=["DELETE"]),
]
