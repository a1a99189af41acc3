"""A server's tool overrides can give a tool an exact name (as fixtures and suites expect)."""

from __future__ import annotations

import pytest

from mcp_harness import ERAS, McpEnv

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("era", ERAS)]


async def test_an_override_can_name_a_tool_exactly(mcp_env: McpEnv, era: str) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.create_server(
        toolOverrides=[{"integrationAlias": "kit", "actionName": "echo", "name": "test_echo"}]
    )
    async with mcp_env.connect("memory", era) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "test_echo" in names
        assert "kit__echo" not in names
        result = await client.call_tool("test_echo", {"text": "hi", "channel": "C"})
        assert result.structured_content == {"text": "hi", "channel": "C", "count": None}


async def test_two_overrides_cannot_share_a_name(mcp_env: McpEnv, era: str) -> None:
    response = await mcp_env.rest.post(
        "/api/v1/mcp/servers",
        json={
            "workspaceId": mcp_env.workspace_id,
            "name": "dup",
            "toolOverrides": [
                {"integrationAlias": "kit", "actionName": "echo", "name": "same"},
                {"integrationAlias": "kit", "actionName": "crash", "name": "same"},
            ],
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"
