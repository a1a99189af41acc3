"""`/oauth/start` and `/oauth/callback`: the browser legs of the authorization-code flow.

`/oauth/start` is for API-key holders (an admin connecting a workspace account, or a backend
sending its user on): it records a state and redirects to the provider. End users start from
the connect page instead. `/oauth/callback` answers pages, never JSON and never a 500: an
unknown, replayed or expired state is a 400 page. `/oauth/client-metadata.json` is treadle's
client ID metadata document for upstream MCP servers' authorization servers.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from treadle.api.auth import accessible_workspace, authenticate
from treadle.api.context import gateway as gateway_of
from treadle.api.responses import refusal
from treadle.errors import NotFound, Refusal, ValidationFailed
from treadle.oauth.flow import FlowFailed
from treadle.oauth.upstream_clients import METADATA_PATH
from treadle.web.connect_page import HEADERS, page

_MAX_PARAM = 255


def _param(request: Request, name: str, *, required: bool = False) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise ValidationFailed(f"{name} is required", field=name)
        return None
    if len(value) > (2048 if name == "redirect" else _MAX_PARAM) or any(
        ord(c) < 32 or ord(c) == 127 for c in value
    ):
        raise ValidationFailed(f"{name} is not valid", field=name)
    return value


async def start(request: Request) -> Response:
    gateway = gateway_of(request)
    try:
        principal = await authenticate(gateway.store, request)
        workspace_id = _param(request, "workspaceId", required=True) or ""
        integration_name = _param(request, "integrationName", required=True) or ""
        workspace = await accessible_workspace(gateway.store, principal, workspace_id)
        # The org's own integrations (upstream MCP servers) too.
        if gateway.catalog.get(integration_name, principal.org_id) is None:
            raise NotFound("Integration")
        end_user = None
        external_user = _param(request, "endUserId")
        if external_user is not None:
            users = await gateway.store.end_users.list(principal.org_id, workspace.id, None)
            end_user = next((u for u in users if u.external_id == external_user), None)
            if end_user is None:
                raise ValidationFailed("No end user with this externalId", field="endUserId")
        redirect = _param(request, "redirect")
        safe = gateway.oauth.flow.safe_redirect(redirect)
        if redirect is not None and safe is None:
            raise ValidationFailed(
                "redirect must be a path on this gateway or its public URL", field="redirect"
            )
        location = await gateway.oauth.flow.start(
            org_id=principal.org_id,
            workspace_id=workspace.id,
            integration_name=integration_name,
            end_user=end_user,
            external_id=_param(request, "externalId"),
            display_name=_param(request, "displayName"),
            redirect_to=safe,
            actor=principal.actor,
        )
    except Refusal as refused:
        return refusal(refused)
    return RedirectResponse(location, status_code=302, headers=HEADERS)


async def callback(request: Request) -> Response:
    gateway = gateway_of(request)
    state = request.query_params.get("state", "")
    if request.query_params.get("error"):
        # The person declined (or the provider failed): the state is spent either way.
        if 0 < len(state) <= 200:
            await gateway.oauth.states.claim(state)
        return page(
            "Not connected",
            "<h1>Not connected</h1><p>The provider did not grant access. "
            "Start again if you want to connect.</p>",
            400,
        )
    try:
        finished = await gateway.oauth.flow.finish(request.query_params.get("code", ""), state)
    except FlowFailed as failed:
        return page(
            "Not connected",
            f"<h1>Not connected</h1><p>{html.escape(failed.message)}</p>",
            failed.status,
        )
    if finished.redirect_to:
        return RedirectResponse(finished.redirect_to, status_code=303, headers=HEADERS)
    connection = finished.connection
    return page(
        "Connected",
        "<h1>Connected</h1>"
        f"<p class=status>{html.escape(connection.display_name)} is connected to "
        f"{html.escape(connection.integration_name)}.</p>"
        "<p>You can close this page.</p>",
    )


async def client_metadata(request: Request) -> Response:
    """treadle's client ID metadata document, fetched by upstream MCP servers' authorization
    servers that accept a URL as client id (only when the public URL is https)."""
    upstreams = gateway_of(request).oauth.upstreams
    if upstreams.metadata_url is None:
        return JSONResponse({"error": "NOT_FOUND", "message": "Not found"}, status_code=404)
    return JSONResponse(
        upstreams.metadata_document(), headers={"Cache-Control": "public, max-age=3600"}
    )


routes = [
    Route("/oauth/start", start, methods=["GET"]),
    Route("/oauth/callback", callback, methods=["GET"]),
    Route(METADATA_PATH, client_metadata, methods=["GET"]),
]
