"""Resolving who an MCP request is for, from a server record or a workspace."""

from __future__ import annotations

from treadle.errors import NotFound
from treadle.mcp.binding import Binding
from treadle.store import Store


async def bind_server(store: Store, server_id: str, end_user_id: str | None) -> Binding:
    server = await store.mcp_servers.get(server_id)
    if server is None:
        raise NotFound("MCP server")
    return Binding(
        org_id=server.org_id,
        workspace_id=server.workspace_id,
        server=server,
        end_user_id=server.end_user_id or end_user_id,
        actor=f"mcp_server:{server.id}",
    )


async def bind_workspace(store: Store, workspace_id: str, end_user_id: str | None) -> Binding:
    org = await store.orgs.first()
    workspace = None if org is None else await store.workspaces.get(org.id, workspace_id)
    if workspace is None:
        raise NotFound("Workspace")
    return Binding(
        org_id=workspace.org_id,
        workspace_id=workspace.id,
        server=None,
        end_user_id=end_user_id,
        actor=f"stdio:workspace:{workspace.id}",
    )
