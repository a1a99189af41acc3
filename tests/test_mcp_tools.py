"""Tools over every transport and era: names, pruned schemas, calls and refusals.

Outcomes over every transport live in test_mcp_calls.py, listings in test_mcp_schemas.py.
"""

from __future__ import annotations

import pytest

from mcp_harness import ERAS, TRANSPORTS, McpEnv
from tool_errors import refusal_fields

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("transport", TRANSPORTS),
    pytest.mark.parametrize("era", ERAS),
]


async def test_tools_are_named_alias_action_and_hide_enforced_keys(
    mcp_env: McpEnv, transport: str, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="fixed channel",
        values={"channel": "C1", "count": 3},
        enforcedKeys=["channel"],
        isDefault=True,
    )
    async with mcp_env.connect(transport, era) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {
            "kit__echo",
            "kit__upstream_error",
            "kit__crash",
            "kit__unreachable",
            "kit__wait",
        }
        schema = tools["kit__echo"].input_schema
        assert "channel" not in schema["properties"]
        assert schema["required"] == ["text"]
        assert schema["properties"]["count"]["default"] == 3
        assert "additionalProperties" not in schema  # echo's own rule: extra keys allowed
        assert tools["kit__echo"].annotations is not None
        assert tools["kit__echo"].annotations.read_only_hint is True

        result = await client.call_tool("kit__echo", {"text": "hi"})
        assert not result.is_error
        assert result.structured_content == {"text": "hi", "channel": "C1", "count": 3}

        refused = await client.call_tool("kit__echo", {"text": "hi", "channel": "C9"})
        assert refusal_fields(refused)["error"] == "VALIDATION_ERROR"
        assert refusal_fields(refused)["field"] == "channel"
        # echo declares an outputSchema, which a refusal's fields would not satisfy.
        assert refused.structured_content is None
