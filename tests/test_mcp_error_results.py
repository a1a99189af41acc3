"""Error results a client accepts on tools that declare an `outputSchema`.

Clients validate any `structuredContent` against the tool's output schema, error or not (the
TypeScript SDK, so the MCP Inspector, rejects the whole result with -32602 otherwise, and the
model never sees the message). So an error result of such a tool carries the message as text
and no structured content that would not conform; the SDK client's own validator checks it
here, without Node (tests/interop/test_inspector.py runs the Inspector itself).
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult

from mcp_harness import ERAS, McpEnv
from tool_errors import refusal_fields, result_text

pytestmark = pytest.mark.anyio

# Inputs that fail, per tool with an output schema: refused before the action runs, or
# failed while it ran (the loopback address is refused by the outbound guard).
FAILING: dict[str, list[tuple[dict[str, Any], str]]] = {
    "notes__get": [({}, "VALIDATION_ERROR")],
    "notes__list_keys": [({"limit": 0}, "VALIDATION_ERROR")],
    "web__send_request": [
        ({}, "VALIDATION_ERROR"),
        ({"url": "http://127.0.0.1:9/"}, "ACTION_FAILED"),
    ],
    "kit__echo": [({"text": "no channel"}, "VALIDATION_ERROR")],
}


async def accepted_as_a_client_would(client: Client, name: str, result: CallToolResult) -> None:
    """The rule clients apply to an error result: structured content, if any, must conform
    to the listed output schema (the SDK client skips error results, so ask it directly)."""
    if result.structured_content is not None:
        await client.session.validate_tool_result(name, result)


@pytest.mark.parametrize("era", ERAS)
async def test_every_error_result_of_a_tool_with_an_output_schema_is_one_a_client_accepts(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure(
        "kv-store", integrationAlias="notes", settings={"persistence": {"scope": "workspace"}}
    )
    await mcp_env.configure("http", integrationAlias="web")
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    async with mcp_env.connect("memory", era) as client:
        tools = (await client.list_tools()).tools
        declaring = {tool.name for tool in tools if tool.output_schema is not None}
        # Every tool that declares one is exercised (a new one must be added above).
        assert declaring == set(FAILING)
        for name, calls in FAILING.items():
            for arguments, code in calls:
                result = await client.call_tool(name, arguments)
                assert result.is_error, (name, result)
                await accepted_as_a_client_would(client, name, result)
                assert result.structured_content is None, (name, result)
                assert result_text(result).startswith(f"{code}: "), (name, result)
                assert refusal_fields(result)["error"] == code


@pytest.mark.parametrize("era", ERAS)
async def test_a_tool_without_an_output_schema_keeps_the_fields_for_programs(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure(
        "kv-store", integrationAlias="notes", settings={"persistence": {"scope": "workspace"}}
    )
    async with mcp_env.connect("memory", era) as client:
        result = await client.call_tool("notes__put", {"key": "k"})

    assert result.structured_content is not None
    assert result.structured_content["error"] == "VALIDATION_ERROR"
    assert result.structured_content["field"] == "value"
    assert refusal_fields(result)["field"] == "value"  # and the text says the same
