"""`/connect?token=…`: where an end user connects their own accounts, on any phone.

The signed link (`POST /api/v1/end-users/{id}/connect-token`) names one end user of one
workspace and expires after 30 minutes. The page lists the workspace's integrations that use
per-user connections; each gets an OAuth button (when the org configured an OAuth app for it,
or "Sign in to …" for an upstream MCP server that signs in with OAuth) and, for API-key and
bearer integrations, a key form. Forms carry a double-submit CSRF cookie
(SameSite=Strict) and are checked against the Origin. Pages are never cached or framed and
send no referrer (the URL carries the token).
"""

from __future__ import annotations

import html
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from treadle.api.context import gateway as gateway_of
from treadle.app import Gateway
from treadle.catalog.model import AuthKind
from treadle.errors import Refusal
from treadle.oauth.connect_links import ConnectClaims
from treadle.oauth.upstream_clients import SignInUnavailable, is_oauth
from treadle.store.records import ConnectionStrategy, EndUser, WorkspaceIntegration
from treadle.web.layout import render_page, security_headers, verified_form

CSRF_COOKIE = "treadle_connect_csrf"
MAX_FORM_BYTES = 32 * 1024
MAX_KEY_LENGTH = 8192
# The OAuth button posts to the gateway, which redirects to the provider; Chrome applies
# form-action to that redirect too, so the provider's origin must be allowed.
HEADERS = security_headers("'self' https: http:")
_PER_USER = (ConnectionStrategy.PER_USER, ConnectionStrategy.PER_USER_WITH_FALLBACK)
_KEY_KINDS = {AuthKind.API_KEY: ("api_key", "apiKey"), AuthKind.BEARER: ("bearer", "token")}

_STYLE = """
h2{font-size:1.05rem;margin:0 0 .25rem}
section{border-top:1px solid #e3e6ea;padding:1rem 0}
.state{color:#5b6473;margin:0 0 .6rem}.connected{color:#137333;font-weight:600}
label{display:block;margin:.4rem 0 .2rem}
input[type=password]{width:100%;box-sizing:border-box;font:inherit;padding:.6rem;
border:1px solid #c9ced6;border-radius:8px}
button{width:100%;margin-top:.5rem;background:#1a56db;color:#fff}
"""


def page(title: str, body: str, status: int = 200, cookie: str | None = None) -> Response:
    return render_page(
        title,
        body,
        style=_STYLE,
        headers=HEADERS,
        status=status,
        csrf_cookie=None if cookie is None else (CSRF_COOKIE, cookie, "/connect"),
    )


def _refused(message: str, status: int = 403) -> Response:
    return page("Not available", f"<h1>Not available</h1><p>{html.escape(message)}</p>", status)


async def _open(gateway: Gateway, token: str) -> tuple[ConnectClaims, EndUser] | Response:
    claims = gateway.oauth.links.verify(token)
    if claims is None:
        return _refused("This link is not valid, or it has expired. Ask for a new one.")
    user = await gateway.store.end_users.get(claims.org_id, claims.end_user_id)
    if user is None or user.workspace_id != claims.workspace_id:
        return _refused("This link is no longer valid.", 404)
    return claims, user


async def _choices(gateway: Gateway, user: EndUser) -> list[WorkspaceIntegration]:
    configured = await gateway.store.integrations.list(user.workspace_id)
    return [c for c in configured if c.connection_strategy in _PER_USER]


async def show(request: Request) -> Response:
    gateway = gateway_of(request)
    token = request.query_params.get("token", "")
    opened = await _open(gateway, token)
    if isinstance(opened, Response):
        return opened
    claims, user = opened
    csrf = secrets.token_urlsafe(24)
    sections = []
    for configured in await _choices(gateway, user):
        sections.append(await _section(gateway, claims, user, configured, token, csrf))
    who = html.escape(user.display_name or user.external_id)
    listing = "".join(sections) or "<p>Nothing here needs your account.</p>"
    body = f"<h1>Connect your accounts</h1><p>Signed in as {who}.</p>{listing}"
    return page("Connect your accounts", body, cookie=csrf)


async def _section(
    gateway: Gateway,
    claims: ConnectClaims,
    user: EndUser,
    configured: WorkspaceIntegration,
    token: str,
    csrf: str,
) -> str:
    integration = gateway.catalog.get(configured.integration_name, configured.org_id)
    if integration is None:
        return ""
    own = await gateway.store.connections.find(
        claims.org_id,
        workspace_id=user.workspace_id,
        end_user_external_id=user.external_id,
        integration_name=integration.name,
    )
    if own and own[0].status == "active":
        state = "<p class='state connected'>Connected</p>"
    elif own:
        state = "<p class=state>Needs to be connected again</p>"
    else:
        state = "<p class=state>Not connected</p>"
    hidden = (
        f'<input type=hidden name=token value="{html.escape(token)}">'
        f'<input type=hidden name=csrf value="{csrf}">'
        f'<input type=hidden name=integration value="{html.escape(configured.id)}">'
    )
    forms = []
    upstream = gateway.federation.named(claims.org_id, integration.name)
    if upstream is not None and is_oauth(upstream):
        # Its OAuth client is discovered and registered when the button is first pressed.
        forms.append(
            f"<form method=post action=/connect/oauth>{hidden}"
            f"<button type=submit class=oauth>Sign in to {html.escape(integration.display_name)}"
            "</button></form>"
        )
    elif await gateway.oauth.apps.get(claims.org_id, integration.name) is not None:
        forms.append(
            f"<form method=post action=/connect/oauth>{hidden}"
            f"<button type=submit class=oauth>Connect with {html.escape(integration.display_name)}"
            "</button></form>"
        )
    if integration.auth_kind in _KEY_KINDS:
        field = f"key-{html.escape(configured.id)}"
        forms.append(
            f"<form method=post action=/connect>{hidden}"
            f"<label for={field}>API key</label>"
            f"<input type=password id={field} name=key autocomplete=off required "
            f"maxlength={MAX_KEY_LENGTH}>"
            "<button type=submit class=save-key>Save key</button></form>"
        )
    title = f"{integration.display_name} ({configured.alias})"
    return f"<section><h2>{html.escape(title)}</h2>{state}{''.join(forms)}</section>"


async def _verified_form(
    request: Request,
) -> tuple[dict[str, str], ConnectClaims, EndUser, WorkspaceIntegration] | Response:
    form = await verified_form(
        request, csrf_cookie=CSRF_COOKIE, max_bytes=MAX_FORM_BYTES, refused=_refused
    )
    if isinstance(form, Response):
        return form
    gateway = gateway_of(request)
    opened = await _open(gateway, form.get("token", ""))
    if isinstance(opened, Response):
        return opened
    claims, user = opened
    chosen = next(
        (c for c in await _choices(gateway, user) if c.id == form.get("integration")), None
    )
    if chosen is None:
        return _refused("This integration does not take personal connections.", 400)
    return form, claims, user, chosen


async def save_key(request: Request) -> Response:
    verified = await _verified_form(request)
    if isinstance(verified, Response):
        return verified
    form, claims, user, configured = verified
    gateway = gateway_of(request)
    integration = gateway.catalog.get(configured.integration_name, configured.org_id)
    if integration is None or integration.auth_kind not in _KEY_KINDS:
        return _refused("This integration does not take a key.", 400)
    key = form.get("key", "").strip()
    if not key or len(key) > MAX_KEY_LENGTH or any(ord(c) < 32 for c in key):
        return _refused("Enter the key.", 400)
    kind, value_name = _KEY_KINDS[integration.auth_kind]
    external_id = f"user_{user.external_id}_{integration.name}"[:255]
    existing = [
        c
        for c in await gateway.store.connections.find(
            claims.org_id,
            workspace_id=user.workspace_id,
            end_user_external_id=user.external_id,
            integration_name=integration.name,
        )
    ]
    actor = f"end_user:{user.id}"
    try:
        async with gateway.store.db.write(actor) as txn:
            if existing:
                await gateway.store.connections.replace_secret(
                    txn, existing[0], {value_name: key}, status="active"
                )
                await txn.changed(
                    org_id=claims.org_id,
                    workspace_id=user.workspace_id,
                    target_type="connection",
                    target_id=existing[0].id,
                    change="updated",
                    detail={"integrationName": integration.name, "reconnected": True},
                )
            else:
                await gateway.store.connections.create(
                    txn,
                    org_id=claims.org_id,
                    workspace_id=user.workspace_id,
                    end_user_id=user.id,
                    integration_name=integration.name,
                    type=kind,
                    display_name=f"{integration.display_name} ({user.external_id})"[:100],
                    external_id=external_id,
                    values={value_name: key},
                    base_url=None,
                )
    except Refusal:
        return _refused("A connection with this name already exists.", 409)
    body = (
        "<h1>Saved</h1>"
        f"<p class=status>Your {html.escape(integration.display_name)} key is saved.</p>"
        "<p>You can close this page, or go back to connect more accounts.</p>"
    )
    return page("Connection saved", body)


async def start_oauth(request: Request) -> Response:
    verified = await _verified_form(request)
    if isinstance(verified, Response):
        return verified
    _form, claims, user, configured = verified
    gateway = gateway_of(request)
    try:
        location = await gateway.oauth.flow.start(
            org_id=claims.org_id,
            workspace_id=user.workspace_id,
            integration_name=configured.integration_name,
            end_user=user,
            external_id=None,
            display_name=None,
            redirect_to=None,
            actor=f"end_user:{user.id}",
        )
    except SignInUnavailable:
        return _refused(
            "Signing in to this server is not possible right now. Try again later.", 502
        )
    except Refusal:
        return _refused("This integration cannot be connected with OAuth here.", 400)
    return RedirectResponse(location, status_code=303, headers=HEADERS)


routes = [
    Route("/connect", show, methods=["GET"]),
    Route("/connect", save_key, methods=["POST"]),
    Route("/connect/oauth", start_oauth, methods=["POST"]),
]
