"""Ready-to-paste client configurations for one MCP server, in each client's own format
(docs/clients.md has the same snippets, and which test runs each).

Claude Desktop starts treadle over stdio (its config file takes local commands; remote
servers are added as connectors by URL instead); Claude Code, Cursor and VS Code reach the
streamable HTTP endpoint with the server's bearer token. Without a fresh token (it is shown
only when created or rotated) the snippets carry the placeholder `mcp_…`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from treadle.demo import claude_desktop_entry, client_name
from treadle.store.mcp_servers import McpServer

PLACEHOLDER = "mcp_…"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    id: str  # the element id of its text, and of its copy button's target
    client: str
    where: str  # the file (or shell) it goes into
    text: str


def client_configs(
    server: McpServer,
    endpoint: str,
    token: str | None,
    data_dir: Path,
    database_url: str | None,
) -> list[ClientConfig]:
    bearer = f"Bearer {token or PLACEHOLDER}"
    name = client_name(server)
    desktop = claude_desktop_entry(server, data_dir, database_url=database_url)
    words = ["claude", "mcp", "add", "--transport", "http", name, endpoint, "--header"]
    code = shlex.join([*words, f"Authorization: {bearer}"])
    cursor = {"mcpServers": {name: {"url": endpoint, "headers": {"Authorization": bearer}}}}
    vscode = {
        "servers": {
            name: {
                "type": "http",
                "url": endpoint,
                "headers": {"Authorization": "Bearer ${input:treadle-token}"},
            }
        },
        "inputs": [
            {
                "type": "promptString",
                "id": "treadle-token",
                "description": "treadle MCP token",
                "password": True,
            }
        ],
    }
    return [
        ClientConfig(
            "config-claude-desktop",
            "Claude Desktop",
            "claude_desktop_config.json (stdio)",
            json.dumps(desktop, indent=2),
        ),
        ClientConfig("config-claude-code", "Claude Code", "a terminal", code),
        ClientConfig(
            "config-cursor",
            "Cursor",
            "~/.cursor/mcp.json or .cursor/mcp.json",
            json.dumps(cursor, indent=2),
        ),
        ClientConfig(
            "config-vscode",
            "VS Code",
            ".vscode/mcp.json (asks for the token on first start)",
            json.dumps(vscode, indent=2),
        ),
    ]
