"""The console's pages: each reads and changes through the same engine and store functions
as the REST API, and turns a documented refusal into a message beside the field it names."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from treadle.api.activity import STATUSES as ACTIVITY_STATUSES
from treadle.api.activity import TYPES as ACTIVITY_TYPES
from treadle.api.activity import activity_filter
from treadle.api.auth import accessible_workspace
from treadle.api.bodies import BodyTooLarge, read_bounded
from treadle.api.context import gateway
from treadle.auth.identity.records import IdpKind
from treadle.auth.identity.signin import providers as identity_providers
from treadle.clock import iso, parse_iso, utcnow
from treadle.engine.api_keys import create_key, expiry, manageable_key, revoke_key
from treadle.engine.installs import install
from treadle.errors import ErrorCode, NotFound, Refusal, ValidationFailed
from treadle.store.records import ConnectionStrategy
from treadle.web.console.activity_chart import activity_chart
from treadle.web.console.session import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SignedIn,
    clear_cookies,
    csrf_for,
    sessions,
    set_cookie,
    signed_in,
)
from treadle.web.layout import _own_origins, security_headers

MAX_FORM_BYTES = 32 * 1024
# The pages' headers, plus the vendored htmx (served from the package) and its requests.
_BASE = security_headers()
HEADERS = {
    **_BASE,
    "Content-Security-Policy": _BASE["Content-Security-Policy"]
    + "; script-src 'self'; connect-src 'self'",
}
_HTMX = (Path(__file__).parent / "static" / "htmx.min.js").read_bytes()
_SCRIPT = (Path(__file__).parent / "static" / "console.js").read_bytes()
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_STYLE = (Path(__file__).parent / "console.css").read_text()
# A field named by a store refusal without one (the alias is what collides).
_CODE_FIELDS = {
    ErrorCode.ALIAS_CONFLICT: "integrationAlias",
    ErrorCode.DUPLICATE: "integrationAlias",
}


def _ago(text: str) -> str:
    try:
        seconds = int((utcnow() - parse_iso(text)).total_seconds())
    except ValueError:
        return text
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


async def _pending(me: SignedIn) -> int:
    await me.gateway.approvals.settle_overdue(me.principal.org_id)
    found, _cursor = await me.gateway.store.approvals.list(
        me.principal.org_id, workspace_ids=me.principal.workspace_ids, status="pending", limit=200
    )
    return len(found)


async def render(
    request: Request,
    template: str,
    me: SignedIn | None,
    *,
    title: str,
    section: str = "",
    status: int = 200,
    form_origins: tuple[str, ...] = (),
    **values: Any,
) -> Response:
    """`form_origins`: where a form's answer may redirect besides here (Chrome applies the
    CSP's form-action to the redirect after a submission, e.g. to an OAuth provider)."""
    page = _TEMPLATES.get_template(template).render(
        title=title,
        section=section,
        style=_STYLE,
        me=None if me is None else me.principal,
        csrf=values.pop("csrf", None) or ("" if me is None else me.csrf),
        pending=0 if me is None else await _pending(me),
        ago=_ago,
        pretty=_pretty,
        errors=values.pop("errors", {}),
        form=values.pop("form", {}),
        **values,
    )
    headers = HEADERS
    if form_origins:
        policy = HEADERS["Content-Security-Policy"].replace(
            "form-action 'self'", "form-action 'self' " + " ".join(form_origins)
        )
        headers = {**HEADERS, "Content-Security-Policy": policy}
    return Response(page, status_code=status, media_type="text/html", headers=headers)


def _to_signin() -> Response:
    response = RedirectResponse("/console/signin", status_code=303, headers=HEADERS)
    return response


Page = Callable[[Request, SignedIn], Awaitable[Response]]
FormPage = Callable[[Request, SignedIn, dict[str, list[str]]], Awaitable[Response]]


def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A page for the signed-in only; a refusal is shown as a page, never as a stack trace."""

    async def endpoint(request: Request) -> Response:
        me = await signed_in(request)
        if me is None:
            return _to_signin()
        try:
            return await handler(request, me)
        except Refusal as refused:
            return await _refusal_page(request, me, refused)

    return endpoint


async def _refusal_page(request: Request, me: SignedIn | None, refused: Refusal) -> Response:
    return await render(
        request,
        "message.html",
        me,
        title="Not available",
        message=f"{refused.message} ({refused.code.value})",
        status=refused.code.status,
    )


async def _form(request: Request, expected_csrf: str | None) -> dict[str, list[str]] | None:
    """The posted fields, or None unless the form came from our origin and carries the CSRF
    token both in its double-submit cookie and, when signed in, bound to the session."""
    try:
        raw = await read_bounded(request, MAX_FORM_BYTES)
    except BodyTooLarge:
        return None
    fields = parse_qs(raw.decode("utf-8", "replace"))
    given = (fields.get("csrf") or [""])[0]
    origin = request.headers.get("origin")
    if origin not in (None, "null") and origin not in _own_origins(request):
        return None
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), given.encode()):
        return None
    if expected_csrf is not None and not hmac.compare_digest(
        given.encode(), expected_csrf.encode()
    ):
        return None
    return fields


def form_page(handler: FormPage) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        me = await signed_in(request)
        if me is None:
            return _to_signin()
        fields = await _form(request, me.csrf)
        if fields is None:
            return await render(
                request,
                "message.html",
                me,
                title="Not accepted",
                message="The form could not be verified. Open the page again and resubmit.",
                status=403,
            )
        try:
            return await handler(request, me, fields)
        except Refusal as refused:
            return await _refusal_page(request, me, refused)

    return endpoint


def _one(fields: dict[str, list[str]], name: str) -> str:
    return (fields.get(name) or [""])[0].strip()


def _back(path: str) -> Response:
    return RedirectResponse(path, status_code=303, headers=HEADERS)


# Sign-in and sign-out ------------------------------------------------------------------------


async def signin_form(request: Request, error: str | None = None, status: int = 200) -> Response:
    if await signed_in(request) is not None and error is None:
        return _back("/console/approvals")
    csrf = secrets.token_urlsafe(24)
    response = await render(
        request,
        "signin.html",
        None,
        title="Sign in",
        csrf=csrf,
        error=error,
        status=status,
        providers=await _oidc_links(request),
        idp=request.query_params.get("idp", "")[:100],
    )
    set_cookie(request, response, CSRF_COOKIE, csrf)
    return response


async def _oidc_links(request: Request) -> list[tuple[str, str]]:
    """(start URL, provider name) for the sign-in page's `?idp=…`, when that names an OIDC
    provider: a link an admin shares, so the page lists no org's providers to strangers."""
    idp_id = request.query_params.get("idp", "")
    if not 0 < len(idp_id) <= 100:
        return []
    found = await identity_providers(gateway(request)).find(idp_id)
    if found is None or found.kind is not IdpKind.OIDC:
        return []
    return [(f"/console/signin/oidc/start?{urlencode({'idp': found.id})}", found.name)]


async def signin(request: Request) -> Response:
    fields = await _form(request, None)
    if fields is None:
        return await signin_form(request, "The form could not be verified. Try again.", 403)
    token = _one(fields, "api_key")
    gw = gateway(request)
    key = await gw.store.config.api_key(token) if 0 < len(token) <= 200 else None
    if key is None:
        return await signin_form(request, "This API key is not valid.", 401)
    session = await sessions(request).open(key.org_id, key.id)
    response = _back("/console/approvals")
    set_cookie(request, response, SESSION_COOKIE, session.token)
    set_cookie(request, response, CSRF_COOKIE, csrf_for(session.token))
    return response


async def _signout(request: Request, me: SignedIn, _fields: dict[str, list[str]]) -> Response:
    await sessions(request).close(me.session.token)
    response = _back("/console/signin")
    clear_cookies(response)
    return response


signout = form_page(_signout)


async def htmx(_request: Request) -> Response:
    """htmx 2 (0BSD, static/htmx.LICENSE.txt): it only refreshes the pending count; every page
    reads and works without it."""
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(_HTMX, media_type="text/javascript", headers=headers)


async def console_script(_request: Request) -> Response:
    """The copy buttons (static/console.js): shown only where script runs."""
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(_SCRIPT, media_type="text/javascript", headers=headers)


async def pending_badge(request: Request) -> Response:
    """The header's pending count, for htmx to swap in; 401 when signed out."""
    me = await signed_in(request)
    if me is None:
        return Response(status_code=401, headers=HEADERS)
    fragment = _TEMPLATES.get_template("pending.html").render(pending=await _pending(me))
    return Response(fragment, media_type="text/html", headers=HEADERS)


async def home(request: Request) -> Response:
    return _back("/console/approvals" if await signed_in(request) else "/console/signin")


# Approvals -------------------------------------------------------------------------------------


async def _workspace_names(me: SignedIn) -> dict[str, str]:
    found = await me.gateway.store.workspaces.list(me.principal.org_id)
    return {w.id: w.name for w in found if me.principal.may_read(w.id)}


async def _approvals(request: Request, me: SignedIn, flash: str | None = None) -> Response:
    gw, principal = me.gateway, me.principal
    await gw.approvals.settle_overdue(principal.org_id)
    found, _cursor = await gw.store.approvals.list(
        principal.org_id, workspace_ids=principal.workspace_ids, status="pending", limit=200
    )
    return await render(
        request,
        "approvals.html",
        me,
        title="Approvals",
        section="approvals",
        approvals=found,
        workspaces=await _workspace_names(me),
        flash=flash or request.query_params.get("done"),
    )


approvals_page = page(_approvals)


async def _decide(request: Request, me: SignedIn, fields: dict[str, list[str]]) -> Response:
    gw, principal = me.gateway, me.principal
    approval_id = str(request.path_params["approval_id"])
    found = await gw.store.approvals.get(approval_id, principal.org_id)
    if found is None:
        raise NotFound("Approval")
    principal.check_workspace(found.workspace_id)
    found = await gw.approvals.settle(found)
    decision = _one(fields, "decision")
    if decision not in ("approve", "reject"):
        return await _approvals(request, me, "Choose Approve or Reject.")
    status = "approved" if decision == "approve" else "rejected"
    reason = _one(fields, "reason")[:1000] or None
    await gw.approvals.decide_by_key(found, status, principal.actor, reason)
    done = "Approved: the action will run." if status == "approved" else "Rejected."
    return _back("/console/approvals?" + urlencode({"done": done}))


decide = form_page(_decide)


# Workspaces and integrations ---------------------------------------------------------------


async def _workspaces(request: Request, me: SignedIn) -> Response:
    found = await me.gateway.store.workspaces.list(me.principal.org_id)
    visible = [w for w in found if me.principal.may_read(w.id)]
    return await render(
        request, "workspaces.html", me, title="Workspaces", section="workspaces", workspaces=visible
    )


workspaces_page = page(_workspaces)


async def _workspace_view(
    request: Request,
    me: SignedIn,
    *,
    chosen_name: str | None = None,
    form: dict[str, str] | None = None,
    checked: list[str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    flash: str | None = None,
) -> Response:
    gw, principal = me.gateway, me.principal
    workspace = await accessible_workspace(
        gw.store, principal, str(request.path_params["workspace_id"])
    )
    q = request.query_params.get("q", "")[:100].lower()
    catalog = [
        c
        for c in sorted(gw.catalog.for_org(principal.org_id), key=lambda c: c.name)
        if q in c.name.lower() or q in c.display_name.lower() or q in c.description.lower()
    ]
    name = chosen_name or request.query_params.get("integration")
    chosen = gw.catalog.get(name, principal.org_id) if name else None
    return await render(
        request,
        "workspace.html",
        me,
        title=workspace.name,
        section="workspaces",
        workspace=workspace,
        installed=await gw.store.integrations.list(workspace.id),
        catalog=catalog,
        q=q,
        chosen=chosen,
        form=form or {},
        checked=checked or [],
        errors=errors or {},
        error=next(iter((errors or {}).values()), None),
        status=status,
        flash=flash or request.query_params.get("done"),
    )


async def _workspace(request: Request, me: SignedIn) -> Response:
    return await _workspace_view(request, me)


workspace_page = page(_workspace)


async def _add_integration(
    request: Request, me: SignedIn, fields: dict[str, list[str]]
) -> Response:
    gw, principal = me.gateway, me.principal
    workspace = await accessible_workspace(
        gw.store, principal, str(request.path_params["workspace_id"])
    )
    principal.check_scope(workspace.id)
    form = {
        name: _one(fields, name)
        for name in ("integrationAlias", "connectionStrategy", "connectionId")
    }
    name = _one(fields, "integrationName")
    checked = [a for a in fields.get("allowedActions", []) if a]
    try:
        strategy = ConnectionStrategy(form["connectionStrategy"])
    except ValueError:
        errors = {"connectionStrategy": "Choose a connection strategy."}
        return await _workspace_view(
            request, me, chosen_name=name, form=form, checked=checked, errors=errors, status=400
        )
    try:
        created = await install(
            gw.store,
            gw.catalog,
            principal.actor,
            workspace,
            integration_name=name,
            strategy=strategy,
            alias=form["integrationAlias"] or None,
            connection_id=form["connectionId"] or None,
            allowed=checked or None,
        )
    except Refusal as refused:
        field = str(refused.extra.get("field") or _CODE_FIELDS.get(refused.code, "integrationName"))
        field = field.split("[", 1)[0]
        errors = {field: f"{refused.message} ({refused.code.value})"}
        return await _workspace_view(
            request,
            me,
            chosen_name=name,
            form=form,
            checked=checked,
            errors=errors,
            status=refused.code.status,
        )
    done = f"Added {created.alias}."
    return _back(f"/console/workspaces/{workspace.id}?" + urlencode({"done": done}))


add_integration = form_page(_add_integration)


async def _delete_integration(
    request: Request, me: SignedIn, _fields: dict[str, list[str]]
) -> Response:
    gw, principal = me.gateway, me.principal
    workspace = await accessible_workspace(
        gw.store, principal, str(request.path_params["workspace_id"])
    )
    principal.check_scope(workspace.id)
    found = await gw.store.integrations.get(principal.org_id, str(request.path_params["id"]))
    if found is None or found.workspace_id != workspace.id:
        raise NotFound("Workspace integration")
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.integrations.delete(txn, found)
    return _back(
        f"/console/workspaces/{workspace.id}?" + urlencode({"done": f"Deleted {found.alias}."})
    )


delete_integration = form_page(_delete_integration)


# Activity ------------------------------------------------------------------------------------


# The time range menu of the activity page: a name for "since now minus this".
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
RANGES["30d"] = timedelta(days=30)
_ACTIVITY_FIELDS = (
    "workspaceId",
    "integrationName",
    "integrationAlias",
    "actionName",
    "type",
    "status",
    "source",
    "since",
    "until",
    "range",
    "cursor",
    "limit",
)


async def _activity(request: Request, me: SignedIn) -> Response:
    # Empty filter fields of the form mean "any"; unknown parameters are not carried along.
    query = {k: v[:100] for k, v in request.query_params.items() if v and k in _ACTIVITY_FIELDS}
    chosen = query.get("range")
    if chosen is not None and chosen not in RANGES:
        raise ValidationFailed("range is one of 1h, 24h, 7d, 30d", field="range")
    asked = dict(query)
    asked.pop("range", None)
    if chosen is not None and "since" not in asked:
        asked["since"] = iso(utcnow() - RANGES[chosen])
    where = await activity_filter(me.gateway.store, me.principal, asked)
    entries, cursor = await me.gateway.store.activity.list(where)
    next_url = None
    if cursor is not None:
        next_url = "/console/activity?" + urlencode({**query, "cursor": str(cursor)})
    return await render(
        request,
        "activity.html",
        me,
        title="Activity",
        section="activity",
        entries=entries,
        query=query,
        next_url=next_url,
        first_url=(
            "/console/activity?" + urlencode({k: v for k, v in query.items() if k != "cursor"})
            if "cursor" in query
            else None
        ),
        chart=await activity_chart(me.gateway.store, where),
        ranges=list(RANGES),
        types=sorted(ACTIVITY_TYPES),
        statuses=sorted(ACTIVITY_STATUSES),
        workspaces=await _workspace_names(me),
    )


activity_page = page(_activity)


async def _activity_detail(request: Request, me: SignedIn) -> Response:
    found = await me.gateway.store.activity.get(
        me.principal.org_id, str(request.path_params["entry_id"])[:100]
    )
    if found is None or not me.principal.may_read(found.workspace_id):
        raise NotFound("Activity record")
    return await render(
        request,
        "detail.html",
        me,
        title="Activity record",
        section="activity",
        entry=found,
        record=found.to_json(),
        workspaces=await _workspace_names(me),
    )


activity_detail = page(_activity_detail)


# API keys ----------------------------------------------------------------------------------


async def _keys_view(
    request: Request,
    me: SignedIn,
    *,
    token: str | None = None,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    keys = await me.gateway.store.api_keys.list(me.principal.org_id, me.principal.workspace_ids)
    idps = [
        p
        for p in await identity_providers(me.gateway).list(me.principal.org_id)
        if p.kind is IdpKind.OIDC
    ]
    return await render(
        request,
        "keys.html",
        me,
        title="API keys",
        section="keys",
        keys=keys,
        idps=idps,
        signin_url=me.gateway.settings.public_url.rstrip("/") + "/console/signin?idp=",
        token=token,
        form=form or {},
        errors=errors or {},
        error=next(iter((errors or {}).values()), None),
        workspaces=await _workspace_names(me),
        status=status,
        flash=request.query_params.get("done"),
    )


async def _keys(request: Request, me: SignedIn) -> Response:
    return await _keys_view(request, me)


keys_page = page(_keys)


async def _create_key(request: Request, me: SignedIn, fields: dict[str, list[str]]) -> Response:
    form = {name: _one(fields, name) for name in ("name", "workspaceId", "expiresAt")}
    if not form["name"] or len(form["name"]) > 100:
        errors = {"name": "Give the key a name of at most 100 characters. (VALIDATION_ERROR)"}
        return await _keys_view(request, me, form=form, errors=errors, status=400)
    workspace_id = form["workspaceId"] or None
    try:
        me.principal.check_scope(workspace_id)
        expires_at = expiry(form["expiresAt"] or None)
        _key, token = await create_key(
            me.gateway.store,
            me.principal.actor,
            me.principal.org_id,
            name=form["name"],
            workspace_id=workspace_id,
            expires_at=expires_at,
        )
    except Refusal as refused:
        field = str(refused.extra.get("field") or "name")
        errors = {field: f"{refused.message} ({refused.code.value})"}
        return await _keys_view(request, me, form=form, errors=errors, status=refused.code.status)
    # The one time the secret is shown: the page is never cached (Cache-Control: no-store).
    return await _keys_view(request, me, token=token, status=201)


create_key_page = form_page(_create_key)


async def _revoke_key(request: Request, me: SignedIn, _fields: dict[str, list[str]]) -> Response:
    key = await manageable_key(
        me.gateway.store,
        me.principal.org_id,
        me.principal.workspace_ids,
        str(request.path_params["key_id"])[:100],
    )
    await revoke_key(me.gateway.store, me.principal.actor, key)
    return _back("/console/keys?" + urlencode({"done": f"Revoked {key.name}."}))


revoke_key_page = form_page(_revoke_key)


# MCP servers -------------------------------------------------------------------------------


async def _servers_view(
    request: Request,
    me: SignedIn,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    gw = me.gateway
    servers = await gw.store.mcp_servers.list(me.principal.org_id, me.principal.workspace_ids)
    return await render(
        request,
        "servers.html",
        me,
        title="MCP servers",
        section="servers",
        servers=servers,
        workspaces=await _workspace_names(me),
        form=form or {},
        errors=errors or {},
        error=next(iter((errors or {}).values()), None),
        status=status,
        flash=request.query_params.get("done"),
    )


async def _servers(request: Request, me: SignedIn) -> Response:
    return await _servers_view(request, me)


servers_page = page(_servers)
