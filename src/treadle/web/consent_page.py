"""`/oauth/authorize`: where a person signs in and lets an MCP client use an MCP server.

The page names the client (and, for a metadata-document client, the host its id lives on),
the MCP server and the tools the client will get. The person signs in either with an API key
that may use the server's workspace, optionally acting as one of the workspace's end users,
or by one of the org's OpenID Connect providers (`treadle.auth.identity`), which sends the
browser back here with a ticket naming the end user; the ticket is only looked at to show
who signed in, and spent when the person decides. The form is
checked as every form here (double-submit CSRF cookie, Origin), and the whole authorization
request is checked again on submit, as if new: hidden fields are never trusted.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from treadle.auth.identity import consent as identity
from treadle.auth.identity.records import SignedIn
from treadle.auth.server import authorize
from treadle.auth.server.authority import Authority
from treadle.auth.server.authorize import AuthorizationRequest, RedirectedError, ShownError
from treadle.auth.server.metadata import AUTHORIZE_PATH
from treadle.engine.end_user_ids import end_user_id_problem
from treadle.errors import Refusal
from treadle.mcp.binding import Binding
from treadle.web.layout import render_page, security_headers, verified_form

CSRF_COOKIE = "treadle_oauth_csrf"
MAX_FORM_BYTES = 32 * 1024
MAX_TOOLS_SHOWN = 50

_STYLE = """
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem .9rem;margin:0 0 1rem}
dt{color:#5b6473}dd{margin:0;overflow-wrap:anywhere}
ul{margin:.25rem 0 1rem;padding-left:1.2rem}li{overflow-wrap:anywhere}
label{display:block;margin:.6rem 0 .2rem}
input{width:100%;box-sizing:border-box;font:inherit;padding:.6rem;border:1px solid #c9ced6;
border-radius:8px}
.hint{color:#5b6473;font-size:.9rem;margin:.2rem 0 0}
.actions{display:flex;gap:.75rem;margin-top:1rem}button{flex:1}
.allow{background:#137333;color:#fff}.deny{background:#e3e6ea;color:#1d2430}
.error{color:#b3261e;font-weight:600}
a.idp{display:block;text-align:center;margin:.5rem 0;padding:.8rem;border-radius:8px;
background:#1a56db;color:#fff;text-decoration:none;font-size:1.05rem}
.or{text-align:center;color:#5b6473;margin:1rem 0 0}
@media (max-width:30rem){dl{grid-template-columns:1fr;gap:0}dt{margin-top:.5rem}}
"""


def _form_action(redirect_uri: str) -> str:
    # The consent form's answer is a redirect to the client; Chrome applies form-action to it.
    parts = urlsplit(redirect_uri)
    target = f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"
    return f"'self' {target}"


def _page(
    title: str, body: str, status: int = 200, cookie: str | None = None, form_action: str = ""
) -> Response:
    return render_page(
        title,
        body,
        style=_STYLE,
        headers=security_headers(form_action or "'self'"),
        status=status,
        csrf_cookie=None if cookie is None else (CSRF_COOKIE, cookie, "/oauth"),
    )


def _shown(error: str, description: str, status: int = 400) -> Response:
    return _page(
        "Not available",
        "<h1>This sign-in cannot go on</h1>"
        f"<p>{html.escape(description)}</p>"
        f"<p class=hint>Error: <code id=error>{html.escape(error)}</code></p>",
        status,
    )


def _refused(message: str, status: int) -> Response:
    return _shown("invalid_request", message, status)


def _authority(request: Request) -> Authority:
    found = request.app.state.mcp_auth
    assert isinstance(found, Authority)
    return found


async def _tools(request: Request, auth: AuthorizationRequest) -> list[str]:
    server = auth.server
    binding = Binding(
        org_id=server.org_id,
        workspace_id=server.workspace_id,
        server=server,
        end_user_id=server.end_user_id,
        actor="oauth_consent",
    )
    toolset = await request.app.state.mcp.toolsets.get(binding)
    return [tool.name for tool in toolset.tools]


async def _consent(
    request: Request,
    auth: AuthorizationRequest,
    error: str | None = None,
    status: int = 200,
    signed_in: tuple[str, SignedIn] | None = None,
) -> Response:
    client = auth.client
    who = html.escape(client.display_name)
    rows = [("Client", client.display_name)]
    if client.kind == "metadata_document":
        rows.append(("Client's site", urlsplit(client.client_id).hostname or ""))
    rows += [
        ("MCP server", auth.server.name),
        ("Returns to", auth.redirect_uri),
        ("Access", ", ".join(auth.scopes)),
    ]
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
    tools = await _tools(request, auth)
    shown = "".join(f"<li>{html.escape(name)}</li>" for name in tools[:MAX_TOOLS_SHOWN])
    if len(tools) > MAX_TOOLS_SHOWN:
        shown += f"<li>and {len(tools) - MAX_TOOLS_SHOWN} more</li>"
    tool_list = f"<ul id=tools>{shown}</ul>" if tools else "<p>No tools yet.</p>"
    csrf = secrets.token_urlsafe(24)
    hidden = "".join(
        f'<input type=hidden name="{name}" value="{html.escape(value)}">'
        for name, value in auth.params().items()
    )
    if signed_in is not None:
        ticket, person = signed_in
        sign_in = (
            f"<p>Signed in as <strong id=signed_in>{html.escape(person.external_id)}</strong>; "
            "tools use that person's own connections.</p>"
            f'<input type=hidden name=ticket value="{html.escape(ticket)}">'
        )
    elif auth.server.end_user_id is not None:
        end_user = (
            f"<p class=hint>Acts as end user {html.escape(auth.server.end_user_id)} "
            "(set on the server).</p>"
        )
    else:
        end_user = (
            "<label for=end_user>Act as end user (optional)</label>"
            "<input id=end_user name=end_user autocomplete=off maxlength=255>"
            "<p class=hint>The externalId of one of the workspace's end users: tools then use "
            "that person's own connections.</p>"
        )
    if signed_in is None:
        sign_in = (
            await _identity_links(request, auth) + "<label for=api_key>API key</label>"
            "<input id=api_key name=api_key type=password autocomplete=off required>"
            "<p class=hint>A treadle API key that may use this server's workspace.</p>"
            f"{end_user}"
        )
    problem = f"<p class=error role=alert>{html.escape(error)}</p>" if error else ""
    body = (
        f"<h1>{who} wants to use an MCP server</h1><dl>{items}</dl>"
        f"<h2>Tools it will get</h2>{tool_list}{problem}"
        '<form method=post action="/oauth/authorize">'
        f"{hidden}<input type=hidden name=csrf value={csrf}>"
        f"{sign_in}"
        "<div class=actions>"
        "<button class=allow name=decision value=allow type=submit>Allow</button>"
        "<button class=deny name=decision value=deny type=submit formnovalidate>Deny</button>"
        "</div></form>"
    )
    return _page("Sign in", body, status, cookie=csrf, form_action=_form_action(auth.redirect_uri))


async def _identity_links(request: Request, auth: AuthorizationRequest) -> str:
    """A sign-in link per OpenID Connect provider of the org; each comes back to this very
    authorization request with a ticket."""
    return_to = f"{AUTHORIZE_PATH}?{urlencode(auth.params())}"
    links = await identity.sign_in_links(_authority(request).gateway, auth.server, return_to)
    if not links:
        return ""
    shown = "".join(
        f'<a class=idp href="{html.escape(link.url)}">Sign in with {html.escape(link.name)}</a>'
        for link in links
    )
    return f"{shown}<p class=or>or with an API key</p>"


async def _signed_in(
    request: Request, auth: AuthorizationRequest, ticket: str, *, redeem: bool
) -> SignedIn | Response:
    try:
        return await identity.signed_in_for(
            _authority(request).gateway, auth.server, ticket, redeem=redeem
        )
    except Refusal as refused:
        reason = str(refused.extra.get("reason", refused.code.value.lower()))
        return _shown(
            reason, "The sign-in is not valid any more. Start again.", refused.code.status
        )


def _issuer(request: Request) -> str:
    return _authority(request).config.base_url(request)


async def _checked(request: Request, params: Mapping[str, str]) -> AuthorizationRequest | Response:
    checked = await authorize.check(_authority(request), _issuer(request), params)
    if isinstance(checked, ShownError):
        return _shown(checked.error, checked.description)
    if isinstance(checked, RedirectedError):
        return RedirectResponse(checked.location, status_code=303)
    return checked


async def show(request: Request) -> Response:
    params = {k: v for k, v in request.query_params.items() if k in authorize.PARAMS}
    checked = await _checked(request, params)
    if isinstance(checked, Response):
        return checked
    ticket = request.query_params.get("ticket")
    if ticket:
        person = await _signed_in(request, checked, ticket, redeem=False)
        if isinstance(person, Response):
            return person
        return await _consent(request, checked, signed_in=(ticket, person))
    return await _consent(request, checked)


async def decide(request: Request) -> Response:
    form = await verified_form(
        request, csrf_cookie=CSRF_COOKIE, max_bytes=MAX_FORM_BYTES, refused=_refused
    )
    if isinstance(form, Response):
        return form
    checked = await _checked(request, form)
    if isinstance(checked, Response):
        return checked
    if form.get("decision") != "allow":
        return RedirectResponse(
            checked.answer(error="access_denied", error_description="The person declined"),
            status_code=303,
        )
    authority = _authority(request)
    if form.get("ticket"):
        person = await _signed_in(request, checked, form["ticket"], redeem=True)
        if isinstance(person, Response):
            return person
        acting_as = checked.server.end_user_id or person.external_id
        return await _grant(authority, checked, f"idp:{person.idp_id}", acting_as, "oidc")
    gateway = authority.gateway
    server = checked.server
    key = await gateway.store.config.api_key(form.get("api_key", "").strip())
    if (
        key is None
        or key.org_id != server.org_id
        or key.workspace_id not in (None, server.workspace_id)
    ):
        return await _consent(
            request, checked, "This API key cannot use this MCP server's workspace.", 400
        )
    end_user = server.end_user_id
    asked = (form.get("end_user") or "").strip() or None
    if end_user is None and asked is not None:
        users = (
            []
            if end_user_id_problem(asked)
            else await gateway.store.end_users.list(server.org_id, server.workspace_id, None)
        )
        if not any(user.external_id == asked for user in users):
            return await _consent(
                request, checked, "No end user with this externalId in the workspace.", 400
            )
        end_user = asked
    return await _grant(authority, checked, f"api_key:{key.id}", end_user, "api_key")


async def _grant(
    authority: Authority,
    checked: AuthorizationRequest,
    actor: str,
    end_user: str | None,
    method: str,
) -> Response:
    """The person signed in and allowed: a grant, and its code back to the client."""
    server = checked.server
    grants = authority.grants
    await grants.record_sign_in(server.org_id, server.workspace_id, actor, end_user, method)
    _granted, code = await grants.create(
        org_id=server.org_id,
        workspace_id=server.workspace_id,
        server_id=server.id,
        client_id=checked.client.client_id,
        client_name=checked.client.name,
        client_kind=checked.client.kind,
        end_user_id=end_user,
        signed_in_as=actor,
        scopes=checked.scopes,
        resource=checked.resource,
        redirect_uri=checked.redirect_uri,
        code_challenge=checked.code_challenge,
        code_seconds=authority.config.code_seconds,
    )
    return RedirectResponse(checked.answer(code=code), status_code=303)
