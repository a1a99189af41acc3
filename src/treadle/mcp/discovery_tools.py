"""The three meta-tools a server lists in DISCOVERY mode, and when a server is in it.

Their names and schemas are fixed (clients and agent prompts rely on them): `search_tools`
finds tools by what they do, `describe_tools` gives their full definitions exactly as TOOLS
mode lists them, `call_tool` calls one exactly as a direct call would.
"""

from __future__ import annotations

from typing import Any, Literal

from mcp.types import Tool, ToolAnnotations

from treadle.store.mcp_servers import DEFAULT_AUTO_THRESHOLD

SEARCH_TOOLS = "search_tools"
DESCRIBE_TOOLS = "describe_tools"
CALL_TOOL = "call_tool"
META_NAMES = frozenset((SEARCH_TOOLS, DESCRIBE_TOOLS, CALL_TOOL))
MAX_LIMIT = 50
DEFAULT_LIMIT = 10
MAX_DESCRIBE = 20
MAX_QUERY = 500

ListedMode = Literal["TOOLS", "DISCOVERY"]


def listed_mode(mode: str, auto_threshold: int, tool_count: int) -> ListedMode:
    """What a server lists: AUTO is TOOLS up to `auto_threshold` tools, DISCOVERY past it."""
    if mode == "DISCOVERY":
        return "DISCOVERY"
    if mode == "AUTO" and tool_count > auto_threshold:
        return "DISCOVERY"
    return "TOOLS"


_HIT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "integrationAlias": {"type": "string"},
        "score": {"type": "number"},
    },
    "required": ["name", "title", "description", "integrationAlias", "score"],
}

SEARCH_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_QUERY,
            "description": "What you want to do, in plain words (e.g. 'append a row to the "
            "budget sheet'), or a tool, alias, integration or parameter name.",
        },
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LIMIT,
            "default": DEFAULT_LIMIT,
            "description": "How many tools to return, best first.",
        },
        "integration": {
            "type": "string",
            "description": "Only tools of this integration alias (e.g. 'design-slack') or "
            "integration (e.g. 'slack').",
        },
    },
    "required": ["query"],
    "additionalProperties": False,
}
SEARCH_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tools": {"type": "array", "items": _HIT},
        "total": {"type": "integer", "description": "How many tools matched in all."},
    },
    "required": ["tools", "total"],
}

DESCRIBE_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "names": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "maxItems": MAX_DESCRIBE,
            "description": "Tool names from search_tools.",
        }
    },
    "required": ["names"],
    "additionalProperties": False,
}
DESCRIBE_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tools": {
            "type": "array",
            "description": "Each found tool's definition, as a tools/list would give it.",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "inputSchema": {"type": "object"}},
                "required": ["name", "inputSchema"],
            },
        },
        "notFound": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                },
                "required": ["name", "error", "message"],
            },
        },
    },
    "required": ["tools", "notFound"],
}

CALL_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "The tool's name, from search_tools."},
        "arguments": {
            "type": "object",
            "default": {},
            "description": "The tool's arguments, as its inputSchema (describe_tools) says.",
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}

META_TOOLS: tuple[Tool, ...] = (
    Tool(
        name=SEARCH_TOOLS,
        title="Search tools",
        description="Find the tools of this workspace that can do a task: ranked by how "
        "well their name, integration, alias, description and parameters match the query. "
        "Start here; then describe_tools for a tool's inputs and call_tool to run it.",
        input_schema=SEARCH_INPUT,
        output_schema=SEARCH_OUTPUT,
        annotations=ToolAnnotations(
            title="Search tools",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    ),
    Tool(
        name=DESCRIBE_TOOLS,
        title="Describe tools",
        description="The full definitions (input schema, output schema, annotations) of up "
        f"to {MAX_DESCRIBE} tools by name, exactly as they would be listed; unknown names "
        "are reported in notFound.",
        input_schema=DESCRIBE_INPUT,
        output_schema=DESCRIBE_OUTPUT,
        annotations=ToolAnnotations(
            title="Describe tools",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    ),
    # No output schema: the result is the called tool's own (structured only when that tool
    # declares one), and a client would reject every unstructured result against a schema.
    Tool(
        name=CALL_TOOL,
        title="Call a tool",
        description="Run one tool found with search_tools, with arguments matching its "
        "inputSchema from describe_tools. The result is exactly the tool's own result.",
        input_schema=CALL_INPUT,
        annotations=ToolAnnotations(
            title="Call a tool",
            # What it does is the called tool's: it may write, delete and reach outside.
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    ),
)

__all__ = ["DEFAULT_AUTO_THRESHOLD", "META_TOOLS", "listed_mode"]
