"""`/approve/{id}?token=…`: a plain page a reviewer opens from a link, on any phone.

The token opens only its own approval, expires with it and stops working once the approval
is decided. The form is protected by a double-submit CSRF cookie (SameSite=Strict) and an
Origin check. Responses are never cached and never framed; the referrer (which would carry
the token) is never sent.
"""

from __future__ import annotations

import html
import json
import secrets

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.context import gateway as gateway_of
from treadle.app import Gateway
from treadle.store.gates import Approval
from treadle.web.layout import render_page, security_headers, verified_form

CSRF_COOKIE = "treadle_csrf"
MAX_FORM_BYTES = 16 * 1024
HEADERS = security_headers()

_STYLE = """
h2{font-size:1rem;margin:1.25rem 0 .5rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem .9rem;margin:0 0 1rem}
dt{color:#5b6473}dd{margin:0;overflow-wrap:anywhere}
pre{background:#f1f3f6;padding:.75rem;border-radius:8px;overflow:auto;font-size:.85rem;
white-space:pre-wrap;overflow-wrap:anywhere}
.actions{display:flex;gap:.75rem;margin-top:1rem}
button{flex:1}
.approve{background:#137333;color:#fff}.reject{background:#b3261e;color:#fff}
textarea{width:100%;box-sizing:border-box;border:1px solid #c9ced6;border-radius:8px;
padding:.5rem;font:inherit}
@media (max-width:30rem){dl{grid-template-columns:1fr;gap:0}dt{margin-top:.5rem;font-size:.85rem}}
"""


def _page(title: str, body: str, status: int = 200, cookie: str | None = None) -> Response:
    return render_page(
        title,
        body,
        style=_STYLE,
        headers=HEADERS,
        status=status,
        csrf_cookie=None if cookie is None else (CSRF_COOKIE, cookie, "/approve"),
    )


def _refused(message: str, status: int = 403) -> Response:
    return _page("Not available", f"<h1>Not available</h1><p>{html.escape(message)}</p>", status)


async def _details(gateway: Gateway, approval: Approval) -> str:
    workspace = await gateway.store.workspaces.get(approval.org_id, approval.workspace_id)
    rows = [
        ("Workspace", approval.workspace_id if workspace is None else workspace.name),
        ("Integration", approval.integration_name),
        ("Account (alias)", approval.integration_alias),
        ("Action", approval.action_name),
        ("End user", approval.end_user_id or "none"),
        ("Asked by", f"{approval.source} ({approval.actor})"),
        ("Asked at", approval.created_at),
        ("Expires at", approval.expires_at),
    ]
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
    preview = json.dumps(approval.input_preview, indent=2, ensure_ascii=False)
    return f"<dl>{items}</dl><h2>Input</h2><pre>{html.escape(preview)}</pre>"


async def _open(request: Request, token: str) -> tuple[Gateway, Approval] | Response:
    gateway = gateway_of(request)
    approval_id = request.path_params.get("approval_id", "")
    if not isinstance(approval_id, str) or not gateway.approvals.verify_link(token, approval_id):
        return _refused("This link is not valid, or it has expired.")
    found = await gateway.store.approvals.get(approval_id)
    if found is None:
        return _refused("This approval does not exist.", 404)
    policy = await gateway.store.approval_policies.get(found.org_id, found.policy_id)
    if policy is not None and policy.approval_access_mode == "dashboard_only":
        # The policy was switched to dashboard-only after this link went out.
        return _refused("This request can only be decided in the dashboard.")
    found = await gateway.approvals.settle(found, policy)
    if found.status != "pending":
        return _refused(f"This request was already decided: {found.status}.")
    return gateway, found


async def show(request: Request) -> Response:
    token = request.query_params.get("token", "")
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    gateway, approval = opened
    csrf = secrets.token_urlsafe(24)
    form = (
        f'<form method=post action="/approve/{html.escape(approval.id)}">'
        f'<input type=hidden name=token value="{html.escape(token)}">'
        f'<input type=hidden name=csrf value="{csrf}">'
        "<label for=reason>Note (optional)</label>"
        "<textarea id=reason name=reason rows=2 maxlength=1000></textarea>"
        "<div class=actions>"
        "<button class=approve name=decision value=approve type=submit>Approve</button>"
        "<button class=reject name=decision value=reject type=submit>Reject</button>"
        "</div></form>"
    )
    body = f"<h1>Approve this action?</h1>{await _details(gateway, approval)}{form}"
    return _page("Approval request", body, cookie=csrf)


async def decide(request: Request) -> Response:
    form = await verified_form(
        request, csrf_cookie=CSRF_COOKIE, max_bytes=MAX_FORM_BYTES, refused=_refused
    )
    if isinstance(form, Response):
        return form
    opened = await _open(request, form.get("token", ""))
    if isinstance(opened, Response):
        return opened
    gateway, approval = opened
    decision = form.get("decision")
    if decision not in ("approve", "reject"):
        return _refused("Choose Approve or Reject.", 400)
    status = "approved" if decision == "approve" else "rejected"
    reason = (form.get("reason") or "").strip()[:1000] or None
    if not await gateway.approvals.decide(approval, status, "hosted_link", reason):
        return _refused("This request was already decided.")
    message = "Approved: the action will run." if status == "approved" else "Rejected."
    details = await _details(gateway, approval)
    body = f"<h1>Thank you</h1><p class=status>{html.escape(message)}</p>{details}"
    return _page("Decision recorded", body)


routes = [
    Route("/approve/{approval_id}", show, methods=["GET"]),
    Route("/approve/{approval_id}", decide, methods=["POST"]),
]
