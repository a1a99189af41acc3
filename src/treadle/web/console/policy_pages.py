"""The org's approval policies in the console: list, create, edit, delete.

A posted form becomes the body the REST API would take (`CreatePolicy`, or a full
`UpdatePolicy`), checked by those models and saved by the functions the REST handlers call,
so a refusal is the documented one, shown beside the field it names.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from treadle.api.approval_policies import (
    CreatePolicy,
    UpdatePolicy,
    changed_policy,
    new_policy,
)
from treadle.api.bodies import parse
from treadle.engine.policies import OPERATORS
from treadle.errors import ErrorCode, NotFound, Refusal
from treadle.store.gates import ApprovalPolicy
from treadle.web.console.forms import STYLE, Fields, back, field_error, many, one, path_id
from treadle.web.console.pages import form_page, page, render
from treadle.web.console.session import SignedIn

DECISIONS = ("require_approval", "notify_only", "block", "auto_approve")
ACCESS_MODES = {
    "dashboard_and_hosted_link": "In this console or through the approval link sent out",
    "dashboard_only": "Only here in the console (or the REST API), never through a link",
    "hosted_link_only": "Only through the approval link, not in the console",
}
SOURCES = ("rest", "mcp_tools")
STRATEGIES = ("fixed", "per_user", "per_user_with_fallback")
END_USER_MODES = ("any", "end_user_present", "no_end_user")
TIMEOUT_OUTCOMES = ("expire", "reject")
# Condition rows the form offers beyond the policy's own.
_SPARE_ROWS = 2
_MAX_ROWS = 50
_LISTS = ("sources", "integrationNames", "connectionStrategies", "mcpServerIds")
_TEXT_LISTS = ("integrationAliases", "actionNames")
_NUMBERS = ("priority", "timeoutSeconds", "reuseWindowSeconds")


def _listed(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _number(text: str) -> int | str | None:
    # Not a number: passed on as text for the body model to refuse at its field.
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _conditions(fields: Fields) -> list[dict[str, Any]]:
    rows = []
    for index in range(_MAX_ROWS + _SPARE_ROWS):
        path = one(fields, f"condition-{index}-path", 200)
        if not path:
            continue
        op = one(fields, f"condition-{index}-op", 20)
        value = one(fields, f"condition-{index}-value")
        rows.append(
            {
                "path": path,
                "op": op,
                "value": None if value == "" else _json_or_text(value),
                "row": index,
            }
        )
    return rows


def _body(fields: Fields, *, creating: bool) -> tuple[dict[str, Any], list[int]]:
    """The REST body the form stands for, and the form row of each condition (for errors)."""
    body: dict[str, Any] = {
        "name": one(fields, "name", 200),
        "description": one(fields, "description", 1000) or None,
        "decision": one(fields, "decision", 40) or None,
        "enabled": bool(one(fields, "enabled")),
        "endUserMode": one(fields, "endUserMode", 40) or None,
        "defaultOnTimeout": one(fields, "defaultOnTimeout", 40) or None,
        "approvalAccessMode": one(fields, "approvalAccessMode", 40) or None,
        "allowSelfApproval": bool(one(fields, "allowSelfApproval")),
        "notifyWebhookUrl": one(fields, "notifyWebhookUrl", 4000) or None,
    }
    for name in _NUMBERS:
        body[name] = _number(one(fields, name, 40))
    for name in _LISTS:
        body[name] = many(fields, name) or None
    for name in _TEXT_LISTS:
        body[name] = _listed(one(fields, name)) or None
    rows = _conditions(fields)
    body["rules"] = (
        {
            "match": one(fields, "match", 10) or "all",
            "conditions": [{k: v for k, v in r.items() if k != "row"} for r in rows],
        }
        if rows
        else None
    )
    if creating:
        body["workspaceId"] = one(fields, "workspaceId", 100) or None
        # Left empty on a new policy: the REST defaults.
        body = {k: v for k, v in body.items() if v is not None}
    return body, [r["row"] for r in rows]


def _placed(refused: Refusal, rows: list[int]) -> dict[str, str]:
    """`rules.conditions.2.op` is shown at the third condition's row; `sources.0` at sources."""
    errors = field_error(refused, "name", {ErrorCode.DUPLICATE: "name"})
    ((field, message),) = errors.items()
    parts = field.split(".")
    if parts[0] == "rules":
        if len(parts) > 2 and parts[1] == "conditions" and parts[2].isdigit():
            index = int(parts[2])
            return {f"condition-{rows[index] if index < len(rows) else 0}": message}
        return {"match": message}
    return {parts[0]: message}


def _shown(policy: ApprovalPolicy | None) -> dict[str, Any]:
    """The form's fields for a stored policy (None: a new one with the REST defaults)."""
    if policy is None:
        return {
            "decision": "require_approval",
            "enabled": "on",
            "priority": "100",
            "endUserMode": "any",
            "timeoutSeconds": "3600",
            "defaultOnTimeout": "expire",
            "approvalAccessMode": "dashboard_and_hosted_link",
            "reuseWindowSeconds": "3600",
            "match": "all",
            "lists": {},
            "conditions": [],
        }
    rules = policy.rules or {}
    return {
        "name": policy.name,
        "description": policy.description or "",
        "decision": policy.decision,
        "enabled": "on" if policy.enabled else "",
        "priority": str(policy.priority),
        "endUserMode": policy.end_user_mode,
        "timeoutSeconds": str(policy.timeout_seconds),
        "defaultOnTimeout": policy.default_on_timeout,
        "approvalAccessMode": policy.approval_access_mode,
        "allowSelfApproval": "on" if policy.allow_self_approval else "",
        "reuseWindowSeconds": str(policy.reuse_window_seconds),
        "notifyWebhookUrl": policy.notify_webhook_url or "",
        "integrationAliases": ", ".join(policy.integration_aliases or ()),
        "actionNames": ", ".join(policy.action_names or ()),
        "workspaceId": policy.workspace_id or "",
        "match": rules.get("match", "all"),
        "lists": {
            "sources": list(policy.sources or ()),
            "integrationNames": list(policy.integration_names or ()),
            "connectionStrategies": list(policy.connection_strategies or ()),
            "mcpServerIds": list(policy.mcp_server_ids or ()),
        },
        "conditions": [
            {
                "path": c.get("path", ""),
                "op": c.get("op", "equals"),
                "value": "" if c.get("value") is None else json.dumps(c.get("value")),
            }
            for c in rules.get("conditions", [])
        ],
    }


def _posted(fields: Fields) -> dict[str, Any]:
    """The form as posted, to show it again beside its errors."""
    shown: dict[str, Any] = {
        name: one(fields, name)
        for name in (
            "name",
            "description",
            "decision",
            "enabled",
            "endUserMode",
            "defaultOnTimeout",
            "approvalAccessMode",
            "allowSelfApproval",
            "notifyWebhookUrl",
            "workspaceId",
            "match",
            *_NUMBERS,
            *_TEXT_LISTS,
        )
    }
    shown["lists"] = {name: many(fields, name) for name in _LISTS}
    rows = []
    for index in range(_MAX_ROWS + _SPARE_ROWS):
        row = {
            "path": one(fields, f"condition-{index}-path", 200),
            "op": one(fields, f"condition-{index}-op", 20),
            "value": one(fields, f"condition-{index}-value"),
        }
        if row["path"] or row["value"]:
            rows.append(row)
    shown["conditions"] = rows
    return shown


async def _view(
    request: Request,
    me: SignedIn,
    *,
    policy: ApprovalPolicy | None,
    form: dict[str, Any],
    errors: dict[str, str] | None = None,
    secret: str | None = None,
    status: int = 200,
) -> Response:
    gw, principal = me.gateway, me.principal
    workspaces = {
        w.id: w.name
        for w in await gw.store.workspaces.list(principal.org_id)
        if principal.may_read(w.id)
    }
    servers = await gw.store.mcp_servers.list(principal.org_id, principal.workspace_ids)
    conditions = list(form.get("conditions", []))
    conditions += [{"path": "", "op": "equals", "value": ""}] * _SPARE_ROWS
    errors = errors or {}
    return await render(
        request,
        "policy.html",
        me,
        title=f"Policy {policy.name}" if policy is not None else "New policy",
        section="policies",
        extra_style=STYLE,
        policy=policy,
        may_change=policy is None or _may_change(me, policy),
        org_wide=principal.key.workspace_id is None,
        workspaces=workspaces,
        integrations=gw.catalog.for_org(principal.org_id),
        servers=servers,
        decisions=DECISIONS,
        access_modes=ACCESS_MODES,
        sources=SOURCES,
        strategies=STRATEGIES,
        end_user_modes=END_USER_MODES,
        timeout_outcomes=TIMEOUT_OUTCOMES,
        operators=sorted(OPERATORS),
        conditions=conditions[: _MAX_ROWS + _SPARE_ROWS],
        form=form,
        errors=errors,
        error=next(iter(errors.values()), None),
        secret=secret,
        flash=request.query_params.get("done"),
        status=status,
    )


def _may_change(me: SignedIn, policy: ApprovalPolicy) -> bool:
    key_workspace = me.principal.key.workspace_id
    return key_workspace is None or policy.workspace_id == key_workspace


async def _policy(me: SignedIn, request: Request) -> ApprovalPolicy:
    found = await me.gateway.store.approval_policies.get(
        me.principal.org_id, path_id(request, "policy_id")
    )
    if found is None:
        raise NotFound("Approval policy")
    me.principal.check_read(found.workspace_id)
    return found


async def _list(request: Request, me: SignedIn) -> Response:
    gw, principal = me.gateway, me.principal
    policies = await gw.store.approval_policies.list(principal.org_id, principal.workspace_ids)
    policies.sort(key=lambda p: (p.priority, p.name, p.id))
    workspaces = {w.id: w.name for w in await gw.store.workspaces.list(principal.org_id)}
    return await render(
        request,
        "policies.html",
        me,
        title="Approval policies",
        section="policies",
        policies=policies,
        workspaces=workspaces,
        access_modes=ACCESS_MODES,
        flash=request.query_params.get("done"),
    )


policies_page = page(_list)


async def _new(request: Request, me: SignedIn) -> Response:
    form = _shown(None)
    form["workspaceId"] = request.query_params.get("workspaceId", "")[:100]
    return await _view(request, me, policy=None, form=form)


new_page = page(_new)


async def _show(request: Request, me: SignedIn) -> Response:
    policy = await _policy(me, request)
    return await _view(request, me, policy=policy, form=_shown(policy))


policy_page = page(_show)


async def _create(request: Request, me: SignedIn, fields: Fields) -> Response:
    body, rows = _body(fields, creating=True)
    try:
        policy, secret = await new_policy(me.gateway, me.principal, parse(CreatePolicy, body))
    except Refusal as refused:
        return await _view(
            request,
            me,
            policy=None,
            form=_posted(fields),
            errors=_placed(refused, rows),
            status=refused.code.status,
        )
    if secret is not None:
        # The signing secret is answered once, as REST does: shown now, never again.
        return await _view(
            request, me, policy=policy, form=_shown(policy), secret=secret, status=201
        )
    return back(f"/console/policies/{policy.id}?" + urlencode({"done": f"Created {policy.name}."}))


create = form_page(_create)


async def _update(request: Request, me: SignedIn, fields: Fields) -> Response:
    current = await _policy(me, request)
    body, rows = _body(fields, creating=False)
    try:
        me.principal.check_scope(current.workspace_id)
        policy, secret = await changed_policy(
            me.gateway, me.principal, current, parse(UpdatePolicy, body)
        )
    except Refusal as refused:
        if refused.code is ErrorCode.SCOPE_DENIED:
            raise
        return await _view(
            request,
            me,
            policy=current,
            form=_posted(fields),
            errors=_placed(refused, rows),
            status=refused.code.status,
        )
    if secret is not None:
        return await _view(request, me, policy=policy, form=_shown(policy), secret=secret)
    return back(f"/console/policies/{policy.id}?" + urlencode({"done": f"Saved {policy.name}."}))


update = form_page(_update)


async def _delete(request: Request, me: SignedIn, _fields: Fields) -> Response:
    current = await _policy(me, request)
    me.principal.check_scope(current.workspace_id)
    async with me.gateway.store.db.write(me.principal.actor) as txn:
        await me.gateway.store.approval_policies.delete(txn, current)
    return back("/console/policies?" + urlencode({"done": f"Deleted {current.name}."}))


delete = form_page(_delete)

routes: list[BaseRoute] = [
    Route("/console/policies", policies_page, methods=["GET"]),
    Route("/console/policies", create, methods=["POST"]),
    Route("/console/policies/new", new_page, methods=["GET"]),
    Route("/console/policies/{policy_id}", policy_page, methods=["GET"]),
    Route("/console/policies/{policy_id}", update, methods=["POST"]),
    Route("/console/policies/{policy_id}/delete", delete, methods=["POST"]),
]
