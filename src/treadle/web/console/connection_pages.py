"""Console pages for connections and end users: list, create (a key form, or the OAuth
authorization-code flow), delete. A secret goes into the form and never comes out: the
pages show a connection's name, type, scope and status, nothing it holds.

The fields are parsed by the REST bodies' own models, and created by the engine function
the REST API calls, so a documented refusal (VALIDATION_ERROR naming its field, DUPLICATE,
NOT_FOUND, SCOPE_DENIED) is the same here, shown beside the field it names.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from treadle.api.auth import accessible_workspace
from treadle.api.bodies import parse
from treadle.api.connections import CreateConnection
from treadle.api.end_users import CreateEndUser
from treadle.engine.connection_records import NewConnection, create_connection
from treadle.errors import ErrorCode, NotFound, Refusal, ValidationFailed
from treadle.oauth.refresh import NEEDS_REAUTH
from treadle.store.records import Connection
from treadle.web.console.pages import (
    HEADERS,
    _back,
    _one,
    _workspace_names,
    form_page,
    page,
    render,
)
from treadle.web.console.session import SignedIn

# The secret's name in `values` for each type a person fills in by hand (the conventions of
# treadle.catalog.credentials); basic takes a username and a password instead.
SECRET_NAMES = {"api_key": "apiKey", "bearer": "token"}
TYPES = ("api_key", "bearer", "basic", "custom")
_MAX_FIELD = 16384
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    # Only what a CSP source may hold: nothing of a URL could add a directive.
    return origin if _ORIGIN.fullmatch(origin) else ""


def status_label(connection: Connection) -> str:
    """What the list says: an active connection is healthy; one whose token could not be
    refreshed (or any other state) needs a person to connect it again."""
    if connection.status == "active":
        return "healthy"
    if connection.status == NEEDS_REAUTH:
        return "needs re-authentication"
    return f"needs re-authentication ({connection.status})"


async def _view(
    request: Request,
    me: SignedIn,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    gw, principal = me.gateway, me.principal
    connections = await gw.store.connections.list(principal.org_id, None, principal.workspace_ids)
    users = await gw.store.end_users.list(principal.org_id, None, principal.workspace_ids)
    apps = await gw.oauth.apps.list(principal.org_id)
    catalog = sorted(gw.catalog.for_org(principal.org_id), key=lambda c: c.name)
    return await render(
        request,
        "connections.html",
        me,
        title="Connections",
        section="connections",
        connections=connections,
        end_users=users,
        oauth_integrations=sorted(a.integration_name for a in apps),
        form_origins=tuple(sorted({_origin(a.authorize_url) for a in apps} - {""})),
        integrations=[c.name for c in catalog],
        types=TYPES,
        status_label=status_label,
        workspaces=await _workspace_names(me),
        form=form or {},
        errors=errors or {},
        error=next(iter((errors or {}).values()), None),
        status=status,
        flash=request.query_params.get("done"),
    )


async def _connections(request: Request, me: SignedIn) -> Response:
    return await _view(request, me)


connections_page = page(_connections)


def _field_of(refused: Refusal, default: str) -> str:
    field = str(refused.extra.get("field") or default)
    # `values.apiKey` is the secret field of the form; `values` alone too.
    return "secret" if field.startswith("values") else field.split(".", 1)[0]


def _values(kind: str, fields: dict[str, list[str]]) -> dict[str, str]:
    if kind == "basic":
        return {"username": _one(fields, "username"), "password": _one(fields, "password")}
    name = SECRET_NAMES.get(kind) or _one(fields, "secretName")
    if not name:
        raise ValidationFailed("Name the secret of a custom connection", field="secretName")
    return {name: _one(fields, "secret")}


async def _create(request: Request, me: SignedIn, fields: dict[str, list[str]]) -> Response:
    gw, principal = me.gateway, me.principal
    shown = ("integrationName", "type", "displayName", "externalId", "workspaceId", "endUserId")
    form = {name: _one(fields, name)[:200] for name in (*shown, "baseUrl", "secretName")}
    try:
        kind = form["type"]
        if kind not in TYPES:
            raise ValidationFailed("Choose a connection type", field="type")
        if any(len(v) > _MAX_FIELD for values in fields.values() for v in values):
            raise ValidationFailed("A field is too long", field="secret")
        # The fields as given (the echo in `form` is shortened): too long is refused, not cut.
        body: dict[str, Any] = {
            "integrationName": _one(fields, "integrationName"),
            "type": kind,
            "displayName": _one(fields, "displayName"),
            "externalId": _one(fields, "externalId"),
            "values": _values(kind, fields),
        }
        for name in ("workspaceId", "endUserId", "baseUrl"):
            if _one(fields, name):
                body[name] = _one(fields, name)
        parsed = parse(CreateConnection, body)
        # The scope check of the REST face: an org-level connection needs an org-wide key.
        if parsed.workspaceId is None:
            principal.check_org_wide()
        else:
            await accessible_workspace(gw.store, principal, parsed.workspaceId)
        created = await create_connection(
            gw.store,
            gw.catalog,
            principal.actor,
            principal.org_id,
            NewConnection(
                integration_name=parsed.integrationName,
                type=parsed.type,
                display_name=parsed.displayName,
                external_id=parsed.externalId,
                values=dict(parsed.values),
                workspace_id=parsed.workspaceId,
                end_user_external_id=parsed.endUserId,
                base_url=parsed.baseUrl,
            ),
        )
    except Refusal as refused:
        errors = {
            _field_of(
                refused, "externalId" if refused.code is ErrorCode.DUPLICATE else "integrationName"
            ): f"{refused.message} ({refused.code.value})"
        }
        return await _view(request, me, form=form, errors=errors, status=refused.code.status)
    return _back(
        "/console/connections?" + urlencode({"done": f"Connected {created.display_name}."})
    )


create_connection_page = form_page(_create)


async def _delete(request: Request, me: SignedIn, _fields: dict[str, list[str]]) -> Response:
    gw, principal = me.gateway, me.principal
    found = await gw.store.connections.get(principal.org_id, str(request.path_params["id"])[:100])
    if found is None:
        raise NotFound("Connection")
    principal.check_read(found.workspace_id)
    principal.check_scope(found.workspace_id)
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.connections.delete(txn, found)
    return _back("/console/connections?" + urlencode({"done": f"Deleted {found.display_name}."}))


delete_connection_page = form_page(_delete)


async def _start_oauth(request: Request, me: SignedIn, fields: dict[str, list[str]]) -> Response:
    """The OAuth button: the same flow as `/oauth/start`, back to this page when done."""
    gw, principal = me.gateway, me.principal
    form = {name: _one(fields, name)[:200] for name in ("oauthIntegration", "oauthWorkspace")}
    form["oauthEndUser"] = _one(fields, "oauthEndUser")[:200]
    try:
        workspace = await accessible_workspace(gw.store, principal, form["oauthWorkspace"])
        principal.check_scope(workspace.id)
        if gw.catalog.get(form["oauthIntegration"], principal.org_id) is None:
            raise ValidationFailed("Choose an integration", field="oauthIntegration")
        end_user = None
        if form["oauthEndUser"]:
            users = await gw.store.end_users.list(principal.org_id, workspace.id, None)
            end_user = next((u for u in users if u.external_id == form["oauthEndUser"]), None)
            if end_user is None:
                raise ValidationFailed("No end user with this externalId", field="oauthEndUser")
        location = await gw.oauth.flow.start(
            org_id=principal.org_id,
            workspace_id=workspace.id,
            integration_name=form["oauthIntegration"],
            end_user=end_user,
            external_id=None,
            display_name=None,
            redirect_to="/console/connections?" + urlencode({"done": "Connected."}),
            actor=principal.actor,
        )
    except Refusal as refused:
        errors = {
            _field_of(refused, "oauthIntegration"): f"{refused.message} ({refused.code.value})"
        }
        return await _view(request, me, form=form, errors=errors, status=refused.code.status)
    return RedirectResponse(location, status_code=303, headers=HEADERS)


start_oauth_page = form_page(_start_oauth)


async def _create_end_user(
    request: Request, me: SignedIn, fields: dict[str, list[str]]
) -> Response:
    gw, principal = me.gateway, me.principal
    names = ("userWorkspace", "userExternalId", "userDisplayName", "userEmail")
    form = {name: _one(fields, name)[:400] for name in names}
    body: dict[str, Any] = {
        "workspaceId": _one(fields, "userWorkspace"),
        "externalId": _one(fields, "userExternalId"),
    }
    if form["userDisplayName"]:
        body["displayName"] = _one(fields, "userDisplayName")
    if form["userEmail"]:
        body["email"] = _one(fields, "userEmail")
    rename = {
        "workspaceId": "userWorkspace",
        "externalId": "userExternalId",
        "displayName": "userDisplayName",
        "email": "userEmail",
    }
    try:
        parsed = parse(CreateEndUser, body)
        workspace = await accessible_workspace(gw.store, principal, parsed.workspaceId)
        async with gw.store.db.write(principal.actor) as txn:
            user = await gw.store.end_users.create(
                txn,
                org_id=principal.org_id,
                workspace_id=workspace.id,
                external_id=parsed.externalId,
                display_name=parsed.displayName,
                email=parsed.email,
                metadata=None,
            )
    except Refusal as refused:
        field = rename.get(_field_of(refused, "externalId"), "userExternalId")
        errors = {field: f"{refused.message} ({refused.code.value})"}
        return await _view(request, me, form=form, errors=errors, status=refused.code.status)
    return _back("/console/connections?" + urlencode({"done": f"Added {user.external_id}."}))


create_end_user_page = form_page(_create_end_user)


async def _delete_end_user(
    request: Request, me: SignedIn, _fields: dict[str, list[str]]
) -> Response:
    gw, principal = me.gateway, me.principal
    user = await gw.store.end_users.get(principal.org_id, str(request.path_params["id"])[:100])
    if user is None:
        raise NotFound("End user")
    principal.check_workspace(user.workspace_id)
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.end_users.delete(txn, user)
    return _back("/console/connections?" + urlencode({"done": f"Deleted {user.external_id}."}))


delete_end_user_page = form_page(_delete_end_user)
