"""Who a MCP request is for: which workspace's tools, acting as whom."""

from __future__ import annotations

from dataclasses import dataclass

from treadle.store.mcp_servers import McpServer


@dataclass(frozen=True, slots=True)
class Binding:
    org_id: str
    workspace_id: str
    # None: an implicit server over the whole workspace (`treadle stdio --workspace`).
    server: McpServer | None
    end_user_id: str | None
    actor: str
    # `treadle stdio --mode`: what this process lists, instead of the server record's mode.
    mode: str | None = None

    @property
    def cache_key(self) -> str:
        key = self.server.id if self.server is not None else f"workspace:{self.workspace_id}"
        return key if self.mode is None else f"{key}:{self.mode}"
