"""The MCP parts one gateway process shares: the tool-set cache and the resync hub."""

from __future__ import annotations

from typing import Any

from mcp.server import ServerRequestContext

from treadle.app import Gateway
from treadle.catalog.upstream.content import UpstreamContent
from treadle.mcp.binding import Binding
from treadle.mcp.discovery import SearchIndexes
from treadle.mcp.resync import ResyncHub
from treadle.mcp.server import (
    PAGE_SIZE,
    PROGRESS_INTERVAL_SECONDS,
    BindingResolver,
    McpFace,
    SchemaLookup,
    SnapshotMover,
    SnapshotSource,
)
from treadle.mcp.toolset import ToolsetCache
from treadle.mcp.upstream_content import ContentRelay


class McpRuntime:
    def __init__(
        self,
        gateway: Gateway,
        *,
        poll_seconds: float | None = None,  # None: as the gateway's change bus needs
        progress_seconds: float = PROGRESS_INTERVAL_SECONDS,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.gateway = gateway
        self.progress_seconds = progress_seconds
        self.page_size = page_size
        self.request_state_key = gateway.request_state_key
        self.toolsets = ToolsetCache(gateway.store, gateway.catalog)
        # DISCOVERY mode's search indexes, shared by every face of the process as tool sets are.
        self.search = SearchIndexes(gateway.settings.tool_search)
        self.content = UpstreamContent(gateway.store, gateway.federation, gateway.oauth)
        self.hub = ResyncHub(gateway.store, self.toolsets, poll_seconds=poll_seconds)
        gateway.federation.content_listeners.append(ContentRelay(self.hub).changed)

    def face(
        self,
        resolve: BindingResolver,
        schema_lookup: SchemaLookup,
        snapshot: SnapshotSource | None = None,
        move_to: SnapshotMover | None = None,
    ) -> McpFace:
        """A server over this runtime's tool sets and hub, its bindings found by `resolve`
        (and each request's configuration snapshot by `snapshot`; None: read per request)."""
        return McpFace(
            self.gateway.executor,
            self.toolsets,
            self.hub,
            resolve,
            page_size=self.page_size,
            progress_seconds=self.progress_seconds,
            schema_lookup=schema_lookup,
            approvals=self.gateway.approvals,
            request_state_key=self.request_state_key,
            snapshot=snapshot,
            search=self.search,
            content=self.content,
            move_to=move_to,
        )

    def bound_face(self, binding: Binding) -> McpFace:
        """A server for one binding: stdio, in-memory clients, agent frameworks in-process."""

        async def resolve(_ctx: ServerRequestContext[Any, Any]) -> Binding:
            return binding

        def schema(name: str) -> dict[str, Any] | None:
            return self.toolsets.cached_schema(binding.cache_key, name)

        return self.face(resolve, schema)
