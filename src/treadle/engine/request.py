"""What a face hands the pipeline: one typed request, whatever the wire format was."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from treadle.catalog.model import ClientInteraction
from treadle.store.config_cache import WorkspaceConfig
from treadle.store.mcp_servers import ToolOverride


class Source(StrEnum):
    REST = "rest"
    MCP_TOOLS = "mcp_tools"


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    org_id: str
    workspace_id: str
    integration_name: str
    action_name: str
    source: Source
    actor: str
    input: dict[str, Any] = field(default_factory=dict)
    workspace_integration_id: str | None = None
    integration_alias: str | None = None
    connection_external_id: str | None = None
    connection_id: str | None = None
    end_user_id: str | None = None
    # None: the alias's default partials apply; []: none do.
    partial_ids: tuple[str, ...] | None = None
    idempotency_key: str | None = None
    # Finds an earlier approval of the same call: REST's idempotency key, or for MCP a key
    # derived from the call, honoured only inside the policy's reuse window.
    approval_key: str | None = None
    approval_reuse_window: bool = False
    mcp_server_id: str | None = None
    # The MCP server's override of the called tool, as the face found it: the pipeline
    # refuses a tool the server disabled, and the override's partial ids (checked like a
    # caller's) choose the partials instead of `partial_ids`.
    tool_override: ToolOverride | None = None
    # An MCP tool's schema leaves out enforced keys, so an argument naming one is outside
    # what the caller was shown and is refused; REST callers see the action's whole schema
    # and the enforced value wins (the documented merge order).
    refuse_enforced_keys: bool = False
    # The MCP client of this call (progress, logging, elicitation, sampling); None elsewhere.
    client: ClientInteraction | None = None
    # The workspace's configuration as the face already resolved it for this request (the
    # MCP face builds the tool list from it): the pipeline uses it instead of reading it
    # again. None: the pipeline reads it. Never reuse one across requests: it is a snapshot.
    config: WorkspaceConfig | None = None
    # The version `config` was taken at when the face assumed it (the newest this process
    # knew) instead of reading it for this request: the pipeline confirms it before anything
    # depends on it, in the admission statement where it can, and raises
    # StaleConfiguration when it moved. None: `config` is current for this request.
    assumed_version: int | None = None
