"""`treadle demo` and `treadle mcp-config`: a ready-to-try workspace and client config.

The demo workspace shows every idea at once: two aliases of one integration (`notes` and
`scratch`, both kv-store), an `allowedActions` subset (notes cannot delete), a partial with an
enforced key (the `web` alias of `http` may only GET), and an MCP server over all of it.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treadle.bootstrap import initialise
from treadle.store import Store
from treadle.store.mcp_servers import McpServer
from treadle.store.records import ConnectionStrategy

DEMO_WORKSPACE = "demo"
DEMO_SERVER = "demo"


@dataclass(frozen=True, slots=True)
class Demo:
    workspace_id: str
    server: McpServer
    token: str


async def ensure_demo(store: Store, data_dir: Path) -> Demo:
    init = await initialise(store, data_dir)
    org_id = init.org_id
    workspace = await store.workspaces.by_name(org_id, DEMO_WORKSPACE)
    if workspace is None:
        async with store.db.write("cli") as txn:
            workspace = await store.workspaces.create(txn, org_id, DEMO_WORKSPACE)
            for alias, scope, allowed in (
                ("notes", "workspace", ("put", "get", "list_keys", "add_to_list")),
                ("scratch", "workspace", None),
            ):
                await store.integrations.create(
                    txn,
                    org_id=org_id,
                    workspace_id=workspace.id,
                    integration_name="kv-store",
                    alias=alias,
                    strategy=ConnectionStrategy.FIXED,
                    connection_id=None,
                    allowed_actions=allowed,
                    settings={"persistence": {"scope": scope}},
                )
            await store.integrations.create(
                txn,
                org_id=org_id,
                workspace_id=workspace.id,
                integration_name="http",
                alias="web",
                strategy=ConnectionStrategy.FIXED,
                connection_id=None,
                allowed_actions=None,
                settings={},
            )
            await store.partials.create(
                txn,
                org_id=org_id,
                workspace_id=workspace.id,
                integration_name="http",
                integration_alias="web",
                action_name="send_request",
                name="read only",
                description="The web tool may only send GET requests",
                values={"method": "GET"},
                enforced_keys=("method",),
                is_default=True,
            )
    servers = [
        s for s in await store.mcp_servers.list(org_id, {workspace.id}) if s.name == DEMO_SERVER
    ]
    async with store.db.write("cli") as txn:
        if servers:
            # Tokens are stored hashed: a re-run hands out a fresh one.
            server, token = await store.mcp_servers.rotate_token(txn, servers[0])
        else:
            server, token = await store.mcp_servers.create(
                txn,
                org_id=org_id,
                workspace_id=workspace.id,
                name=DEMO_SERVER,
                mode="TOOLS",
                end_user_id=None,
                tool_overrides=(),
            )
    return Demo(workspace.id, server, token)


def modes_hint(server: McpServer, base_url: str) -> str:
    """How to choose what the server lists (README "Many tools: DISCOVERY and AUTO modes")."""
    return f"""
  Modes (this server: {server.mode}): TOOLS lists every tool. With hundreds of tools, list
  three meta-tools instead (search_tools, describe_tools, call_tool): DISCOVERY always,
  AUTO once there are more tools than autoThreshold (default 40). To switch, PATCH
  {base_url}/api/v1/mcp/servers/{server.id} with "mode": "DISCOVERY" or "AUTO"
  (connected clients are told to list again), or for one stdio client only:
    treadle stdio --server {server.id} --mode DISCOVERY"""


def treadle_command() -> str:
    """An absolute path: Claude Desktop does not start clients inside our virtualenv."""
    found = shutil.which("treadle")
    if found:
        return str(Path(found).resolve())
    return str(Path(sys.argv[0]).resolve())


def claude_desktop_entry(
    server: McpServer,
    data_dir: Path,
    name: str | None = None,
    *,
    database_url: str | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    """`database_url`: the TREADLE_DATABASE_URL this gateway runs on, if any (a PostgreSQL
    database lives outside the data dir, and the stdio process must open the same one)."""
    entry: dict[str, Any] = {
        "command": treadle_command(),
        "args": ["stdio", "--server", server.id, "--data-dir", str(data_dir)],
    }
    if mode is not None:
        entry["args"] += ["--mode", mode]
    if database_url:
        entry["env"] = {"TREADLE_DATABASE_URL": database_url}
    return {"mcpServers": {name or client_name(server): entry}}


def client_name(server: McpServer) -> str:
    """The key a client config names the server by: `treadle-` and the server's name in
    `[A-Za-z0-9_-]` (Claude Code refuses others), runs of anything else as one `-`."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", server.name).strip("-")[:48]
    return f"treadle-{slug}" if slug else f"treadle-{server.id}"
