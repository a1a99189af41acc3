"""Console pages for one MCP server: its endpoint and client configurations, the token's
rotation (the new one shown once), its mode, its tool overrides and the live tool list.

The tool list is the MCP face's own: the process's tool-set cache builds it for the server's
binding exactly as `tools/list` does (overrides, partials, the mode's meta-tools). Overrides
are checked by the REST API's own model and rules (`treadle.api.mcp_servers`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from mcp.types import Tool
from starlette.requests import Request
from starlette.responses import Response

from treadle.api.auth import accessible_workspace
from treadle.api.bodies import parse
from treadle.api.mcp_servers import Override, UpdateServer, _overrides
from treadle.errors import NotFound, Refusal, ValidationFailed
from treadle.mcp.binding import Binding
from treadle.mcp.discovery_tools import listed_mode
from treadle.mcp.toolset import ToolSet, ToolTarget
from treadle.store.mcp_servers import DEFAULT_AUTO_THRESHOLD, McpServer
from treadle.web.console.client_configs import client_configs
from treadle.web.console.pages import (
    _back,
    _one,
    _servers_view,
    _workspace_names,
    form_page,
    page,
    render,
)
from treadle.web.console.session import SignedIn

MODES = ("TOOLS", "DISCOVERY", "AUTO")
MAX_TOOL_ROWS = 1000  # the overrides REST takes at most this many


async def _server(request: Request, me: SignedIn) -> McpServer:
    found = await me.gateway.store.mcp_servers.get(
        str(request.path_params["server_id"])[:100], me.principal.org_id
    )
    if found is None:
        raise NotFound("MCP server")
    me.principal.check_workspace(found.workspace_id)
    return found


async def _toolset(request: Request, server: McpServer) -> ToolSet:
    """What `tools/list` answers this server's clients right now."""
    runtime = request.app.state.mcp
    binding = Binding(server.org_id, server.workspace_id, server, server.end_user_id, "console")
    found: ToolSet = await runtime.toolsets.get(binding)
    return found


def _schema(tool: Tool) -> str:
    return json.dumps(tool.input_schema, indent=2, ensure_ascii=False)


def _rows(full: ToolSet) -> list[ToolTarget]:
    return sorted(full.targets.values(), key=lambda t: (t.configured.alias, t.action.name))[
        :MAX_TOOL_ROWS
    ]


async def server_view(
    request: Request,
    me: SignedIn,
    server: McpServer,
    *,
    token: str | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    flash: str | None = None,
) -> Response:
    gw = me.gateway
    listed = await _toolset(request, server)
    full = listed.full or listed
    endpoint = f"{gw.settings.public_url.rstrip('/')}/mcp/{server.id}"
    configs = client_configs(
        server, endpoint, token, gw.settings.data_dir, os.environ.get("TREADLE_DATABASE_URL")
    )
    return await render(
        request,
        "server.html",
        me,
        title=server.name,
        section="servers",
        server=server,
        token=token,
        endpoint=endpoint,
        configs=configs,
        listed=list(listed.tools),
        listed_mode=listed_mode(server.mode, server.auto_threshold, len(full.tools)),
        full_count=len(full.tools),
        rows=_rows(full),
        overrides={(o.integration_alias, o.action_name): o for o in server.tool_overrides},
        schema=_schema,
        modes=MODES,
        workspaces=await _workspace_names(me),
        errors=errors or {},
        error=next(iter((errors or {}).values()), None),
        status=status,
        flash=flash or request.query_params.get("done"),
    )


async def _detail(request: Request, me: SignedIn) -> Response:
    return await server_view(request, me, await _server(request, me))


server_page = page(_detail)


async def _rotate(request: Request, me: SignedIn, _fields: dict[str, list[str]]) -> Response:
    current = await _server(request, me)
    async with me.gateway.store.db.write(me.principal.actor) as txn:
        updated, token = await me.gateway.store.mcp_servers.rotate_token(txn, current)
    # The one time the new token is shown (Cache-Control: no-store); the old one is refused.
    return await server_view(
        request, me, updated, token=token, flash="New token made: the old one no longer works."
    )


rotate_page = form_page(_rotate)


async def _mode(request: Request, me: SignedIn, fields: dict[str, list[str]]) -> Response:
    current = await _server(request, me)
    threshold = _one(fields, "autoThreshold")
    try:
        body: dict[str, Any] = {"mode": _one(fields, "mode")}
        if threshold:
            if not threshold.isdigit() or len(threshold) > 7:
                raise ValidationFailed("autoThreshold is a whole number", field="autoThreshold")
            body["autoThreshold"] = int(threshold)
        parsed = parse(UpdateServer, body)
    except Refusal as refused:
        field = str(refused.extra.get("field") or "mode")
        errors = {field: f"{refused.message} ({refused.code.value})"}
        return await server_view(request, me, current, errors=errors, status=refused.code.status)
    changes: dict[str, Any] = {"mode": parsed.mode}
    if parsed.autoThreshold is not None:
        changes["auto_threshold"] = parsed.autoThreshold
    async with me.gateway.store.db.write(me.principal.actor) as txn:
        await me.gateway.store.mcp_servers.update(txn, current, changes)
    return _back(f"/console/servers/{current.id}?done=Mode+saved.#mode")


mode_page = form_page(_mode)


async def _save_overrides(request: Request, me: SignedIn, fields: dict[str, list[str]]) -> Response:
    """Every tool row of the form: an override is kept where it differs from the default
    (disabled, renamed, described) or already chose partials (kept as they were)."""
    gw, principal = me.gateway, me.principal
    current = await _server(request, me)
    given: list[Override] = []
    try:
        count = len(fields.get("row", []))
        if count > MAX_TOOL_ROWS:
            raise ValidationFailed("Too many tools in one form", field="row")
        for index in range(count):
            alias, action = _one(fields, f"alias.{index}"), _one(fields, f"action.{index}")
            enabled = _one(fields, f"enabled.{index}") == "on"
            name = _one(fields, f"name.{index}")
            description = _one(fields, f"description.{index}")
            kept = current.override_for(alias, action)
            partial_ids = None if kept is None else kept.partial_ids
            if enabled and not name and not description and partial_ids is None:
                continue
            item: dict[str, Any] = {
                "integrationAlias": alias,
                "actionName": action,
                "enabled": enabled,
            }
            if name:
                item["name"] = name
            if description:
                item["description"] = description
            if partial_ids is not None:
                item["partialIds"] = list(partial_ids)
            try:
                given.append(parse(Override, item))
            except ValidationFailed as refused:
                field = str(refused.extra.get("field") or "name").split(".", 1)[0]
                raise ValidationFailed(
                    refused.message,
                    field=f"{field if field in ('name', 'description') else 'name'}.{index}",
                ) from None
        overrides = await _overrides(gw, principal, current.workspace_id, given)
    except Refusal as refused:
        field = str(refused.extra.get("field") or "overrides")
        if field.startswith("toolOverrides["):
            field = "overrides"
        errors = {field: f"{refused.message} ({refused.code.value})"}
        return await server_view(request, me, current, errors=errors, status=refused.code.status)
    async with gw.store.db.write(principal.actor) as txn:
        await gw.store.mcp_servers.update(txn, current, {"tool_overrides": overrides})
    return _back(f"/console/servers/{current.id}?done=Tools+saved.#tools")


overrides_page = form_page(_save_overrides)


async def _delete(request: Request, me: SignedIn, _fields: dict[str, list[str]]) -> Response:
    current = await _server(request, me)
    async with me.gateway.store.db.write(me.principal.actor) as txn:
        await me.gateway.store.mcp_servers.delete(txn, current)
    return _back(f"/console/servers?done=Deleted+{current.id}.")


delete_page = form_page(_delete)


async def _create(request: Request, me: SignedIn, fields: dict[str, list[str]]) -> Response:
    gw, principal = me.gateway, me.principal
    form = {name: _one(fields, name) for name in ("name", "workspaceId", "mode")}
    if not form["name"] or len(form["name"]) > 100:
        errors = {"name": "Give the server a name of at most 100 characters. (VALIDATION_ERROR)"}
        return await _servers_view(request, me, form=form, errors=errors, status=400)
    if form["mode"] not in MODES:
        errors = {"mode": "Choose a mode: TOOLS, DISCOVERY or AUTO. (VALIDATION_ERROR)"}
        return await _servers_view(request, me, form=form, errors=errors, status=400)
    workspace = await accessible_workspace(gw.store, principal, form["workspaceId"][:100])
    async with gw.store.db.write(principal.actor) as txn:
        server, token = await gw.store.mcp_servers.create(
            txn,
            org_id=principal.org_id,
            workspace_id=workspace.id,
            name=form["name"],
            mode=form["mode"],
            auto_threshold=DEFAULT_AUTO_THRESHOLD,
            end_user_id=None,
            tool_overrides=(),
        )
    # The one time its token is shown: the page is never cached (Cache-Control: no-store).
    return await server_view(
        request, me, server, token=token, status=201, flash=f"Created {server.name}."
    )


create_server = form_page(_create)
