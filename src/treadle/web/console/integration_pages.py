"""Console pages for a workspace integration's settings, its partials and the org's approval
policies. Their routes join the console's through `routes` (see `treadle.web.console`).

Editing an integration sends the whole form as one REST PATCH body would (every field named),
checked by the same body model and applied by the same engine function.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from treadle.api.bodies import parse
from treadle.api.workspace_integrations import UpdateWorkspaceIntegration, reconfiguration
from treadle.engine.installs import reconfigure
from treadle.errors import ErrorCode, Refusal, ValidationFailed
from treadle.web.console import partial_pages, policy_pages
from treadle.web.console.forms import (
    STYLE,
    Fields,
    Installed,
    back,
    field_error,
    installed,
    many,
    one,
)
from treadle.web.console.pages import form_page, page, render
from treadle.web.console.session import SignedIn

_NAMED = {ErrorCode.ALIAS_CONFLICT: "integrationAlias", ErrorCode.DUPLICATE: "integrationAlias"}


async def _view(
    request: Request,
    me: SignedIn,
    found: Installed,
    *,
    form: dict[str, str] | None = None,
    checked: list[str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    gw, configured = me.gateway, found.configured
    if form is None:
        form = {
            "integrationAlias": configured.alias,
            "connectionStrategy": configured.connection_strategy.value,
            "connectionId": configured.connection_id or "",
            "settings": json.dumps(configured.settings, indent=2) if configured.settings else "",
        }
        checked = list(configured.allowed_actions or ())
    connections = [
        c
        for c in await gw.store.connections.find(
            me.principal.org_id,
            workspace_id=found.workspace.id,
            integration_name=configured.integration_name,
        )
        if c.end_user_id is None
    ]
    partials = [
        p
        for p in await gw.store.partials.list(
            found.workspace.id, integration_name=configured.integration_name
        )
        if p.integration_alias in (None, configured.alias)
    ]
    return await render(
        request,
        "integration.html",
        me,
        title=f"{configured.alias} · {found.workspace.name}",
        section="workspaces",
        extra_style=STYLE,
        workspace=found.workspace,
        configured=configured,
        integration=found.integration,
        connections=connections,
        partials=partials,
        form=form,
        checked=checked or [],
        errors=errors or {},
        error=next(iter((errors or {}).values()), None),
        flash=request.query_params.get("done"),
        status=status,
    )


async def _integration(request: Request, me: SignedIn) -> Response:
    return await _view(request, me, await installed(request, me))


integration_page = page(_integration)


async def _save(request: Request, me: SignedIn, fields: Fields) -> Response:
    found = await installed(request, me, changing=True)
    form = {
        name: one(fields, name)
        for name in ("integrationAlias", "connectionStrategy", "connectionId", "settings")
    }
    checked = many(fields, "allowedActions")
    body: dict[str, Any] = {
        "integrationAlias": form["integrationAlias"] or None,
        "connectionStrategy": form["connectionStrategy"] or None,
        "connectionId": form["connectionId"] or None,
        # None ticked: every action, as when adding.
        "allowedActions": checked or None,
    }
    try:
        try:
            body["settings"] = json.loads(form["settings"]) if form["settings"] else {}
        except ValueError:
            raise ValidationFailed("Settings must be a JSON object", field="settings") from None
        change = reconfiguration(parse(UpdateWorkspaceIntegration, body))
        updated = await reconfigure(
            me.gateway.store,
            me.gateway.catalog,
            me.principal.actor,
            found.workspace,
            found.configured,
            change,
        )
    except Refusal as refused:
        ((field, message),) = field_error(refused, "integrationAlias", _NAMED).items()
        # `settings.persistence.scope`: the settings are one JSON field here.
        errors = {field.split(".", 1)[0]: message}
        return await _view(
            request,
            me,
            found,
            form=form,
            checked=checked,
            errors=errors,
            status=refused.code.status,
        )
    where = f"/console/workspaces/{found.workspace.id}/integrations/{updated.id}"
    return back(where + "?" + urlencode({"done": f"Saved {updated.alias}."}))


save_integration = form_page(_save)

_ONE = "/console/workspaces/{workspace_id}/integrations/{id}"
routes: list[BaseRoute] = [
    Route(_ONE, integration_page, methods=["GET"]),
    Route(_ONE, save_integration, methods=["POST"]),
    *partial_pages.routes,
    *policy_pages.routes,
]
