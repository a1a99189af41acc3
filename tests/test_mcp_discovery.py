"""DISCOVERY and AUTO modes over every transport and era: the three meta-tools list and
validate, search finds by task wording, alias and parameter, hidden tools never show, and
call_tool is a direct call (partials, approvals, activity); AUTO switches at its threshold and
tells connected clients; configuration changes reach search at once.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from test_mcp_resync import watching

from mcp_harness import ERAS, TRANSPORTS, McpEnv, subprocess_env
from tool_errors import refusal_fields

pytestmark = pytest.mark.anyio

META = {"search_tools", "describe_tools", "call_tool"}
ECHO_TOOLS = {"kit__echo", "kit__upstream_error", "kit__unreachable", "kit__wait"}


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result
    assert result.structured_content is not None, result
    return dict(result.structured_content)


async def search(client: Client, query: str, **extra: Any) -> list[str]:
    found = structured(await client.call_tool("search_tools", {"query": query, **extra}))
    return [tool["name"] for tool in found["tools"]]


async def kit_with_fixed_channel(mcp_env: McpEnv) -> None:
    """testkit as `kit` without `crash` (allowedActions), echo's channel enforced."""
    await mcp_env.configure(
        "testkit",
        integrationAlias="kit",
        allowedActions=["echo", "upstream_error", "unreachable", "wait"],
    )
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="fixed channel",
        values={"channel": "C1", "count": 3},
        enforcedKeys=["channel"],
        isDefault=True,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("era", ERAS)
async def test_discovery_lists_meta_tools_that_search_describe_and_call(
    mcp_env: McpEnv, transport: str, era: str
) -> None:
    await kit_with_fixed_channel(mcp_env)
    await mcp_env.create_server(mode="DISCOVERY")
    async with mcp_env.connect(transport, era) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(listed) == META
        assert listed["search_tools"].input_schema["required"] == ["query"]
        assert listed["search_tools"].output_schema is not None
        assert listed["describe_tools"].output_schema is not None
        search_marks = listed["search_tools"].annotations
        assert search_marks is not None
        assert search_marks.read_only_hint is True
        call_marks = listed["call_tool"].annotations
        assert call_marks is not None
        assert call_marks.read_only_hint is False

        # by task wording, by alias, by parameter; never the disallowed `crash`
        assert (await search(client, "echo some text back to me"))[0] == "kit__echo"
        assert set(await search(client, "kit", limit=50)) == ECHO_TOOLS
        assert (await search(client, "count"))[0] == "kit__echo"
        assert "kit__crash" not in await search(client, "crash", limit=50)
        assert await search(client, "echo", integration="no-such-alias") == []
        assert await search(client, "echo", integration="testkit") == ["kit__echo"]

        described = structured(
            await client.call_tool("describe_tools", {"names": ["kit__echo", "kit__crash"]})
        )
        (echo,) = described["tools"]
        assert echo["name"] == "kit__echo"
        assert "channel" not in echo["inputSchema"]["properties"]  # enforced: pruned
        assert echo["inputSchema"]["properties"]["count"]["default"] == 3
        assert echo["annotations"]["readOnlyHint"] is True
        assert "outputSchema" in echo
        assert [miss["name"] for miss in described["notFound"]] == ["kit__crash"]
        assert described["notFound"][0]["error"] == "NOT_FOUND"

        ran = await client.call_tool(
            "call_tool", {"name": "kit__echo", "arguments": {"text": "hi"}}
        )
        assert structured(ran) == {"text": "hi", "channel": "C1", "count": 3}

        refused = await client.call_tool(
            "call_tool", {"name": "kit__echo", "arguments": {"text": "hi", "channel": "C9"}}
        )
        assert refusal_fields(refused)["error"] == "VALIDATION_ERROR"
        assert refusal_fields(refused)["field"] == "channel"

        hidden = await client.call_tool("call_tool", {"name": "kit__crash", "arguments": {}})
        assert refusal_fields(hidden)["error"] == "NOT_FOUND"

        # The meta-tools validate their own arguments.
        for name, arguments in (
            ("search_tools", {"query": "echo", "limit": 0}),
            ("search_tools", {"query": ""}),
            ("search_tools", {"query": "echo", "extra": 1}),
            ("describe_tools", {"names": []}),
            ("describe_tools", {"names": [f"t{i}" for i in range(21)]}),
            ("call_tool", {"arguments": {}}),
            ("call_tool", {"name": "kit__echo", "arguments": "text"}),
        ):
            bad = await client.call_tool(name, arguments)
            assert refusal_fields(bad)["error"] == "VALIDATION_ERROR", (name, arguments)

        # A direct call to a tool that is not listed in this mode is a protocol error.
        with pytest.raises(MCPError):
            await client.call_tool("kit__echo", {"text": "direct"})

    records = await mcp_env.activity()
    assert {entry["source"] for entry in records} == {"mcp_tools"}
    assert sorted(entry["status"] for entry in records).count("succeeded") == 1


@pytest.mark.parametrize("era", ERAS)
async def test_describe_tools_is_exactly_the_tools_mode_listing(mcp_env: McpEnv, era: str) -> None:
    await kit_with_fixed_channel(mcp_env)
    await mcp_env.create_server(mode="TOOLS")
    async with mcp_env.connect("memory", era) as client:
        direct = {
            tool.name: tool.model_dump(mode="json", by_alias=True, exclude_none=True)
            for tool in (await client.list_tools()).tools
        }
    patched = await mcp_env.rest.patch(
        f"/api/v1/mcp/servers/{mcp_env.server_id}", json={"mode": "DISCOVERY"}
    )
    assert patched.status_code == 200, patched.text
    async with mcp_env.connect("memory", era) as client:
        described = structured(await client.call_tool("describe_tools", {"names": sorted(direct)}))
    assert {tool["name"]: tool for tool in described["tools"]} == direct


@pytest.mark.parametrize("era", ERAS)
async def test_call_tool_pauses_for_approval_like_a_direct_call(mcp_env: McpEnv, era: str) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    created = await mcp_env.rest.post(
        "/api/v1/approval-policies",
        json={
            "workspaceId": mcp_env.workspace_id,
            "name": "echo needs a person",
            "decision": "require_approval",
            "sources": ["mcp_tools"],
            "actionNames": ["echo"],
        },
    )
    assert created.status_code == 201, created.text
    await mcp_env.create_server(mode="DISCOVERY")
    call = {"name": "kit__echo", "arguments": {"text": "refund order 123", "channel": "C1"}}
    async with mcp_env.connect("memory", era) as client:
        first = structured(await client.call_tool("call_tool", call))
        assert first["status"] == "approval_required"
        again = structured(await client.call_tool("call_tool", call))
        assert again["approvalId"] == first["approvalId"]
        decided = await mcp_env.rest.post(
            f"/api/v1/approvals/{first['approvalId']}/approve", json={}
        )
        assert decided.status_code == 200, decided.text
        ran = structured(await client.call_tool("call_tool", call))
        assert ran == {"text": "refund order 123", "channel": "C1", "count": None}
    statuses = [entry["status"] for entry in await mcp_env.activity()]
    assert statuses.count("succeeded") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("era", ERAS)
async def test_auto_switches_at_its_threshold_and_notifies(
    mcp_env: McpEnv, transport: str, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")  # 5 tools
    await mcp_env.create_server(mode="AUTO", autoThreshold=5)
    async with watching(mcp_env, transport, era) as (client, watch):
        assert {t.name for t in (await client.list_tools()).tools} == ECHO_TOOLS | {"kit__crash"}
        await mcp_env.configure("testkit", integrationAlias="kat")  # 10 tools: past it
        await watch.wait(1)
        assert {t.name for t in (await client.list_tools()).tools} == META
        assert "kat__echo" in await search(client, "echo", limit=50)

        lowered = await mcp_env.rest.patch(
            f"/api/v1/mcp/servers/{mcp_env.server_id}", json={"autoThreshold": 10}
        )
        assert lowered.status_code == 200, lowered.text
        await watch.wait(2)
        assert len((await client.list_tools()).tools) == 10

        switched = await mcp_env.rest.patch(
            f"/api/v1/mcp/servers/{mcp_env.server_id}", json={"mode": "DISCOVERY"}
        )
        assert switched.status_code == 200, switched.text
        await watch.wait(3)
        assert {t.name for t in (await client.list_tools()).tools} == META


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("era", ERAS)
async def test_configuration_changes_reach_search_and_describe_at_once(
    mcp_env: McpEnv, transport: str, era: str
) -> None:
    kit = await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.create_server(mode="DISCOVERY")
    async with mcp_env.connect(transport, era) as client:
        assert not any(n.startswith("design") for n in await search(client, "design team"))
        # a new alias
        await mcp_env.configure("testkit", integrationAlias="design-team")
        assert (await search(client, "echo for the design team"))[0] == "design_team__echo"
        # a removed action
        assert "kit__wait" in await search(client, "wait until released")
        removed = await mcp_env.rest.patch(
            f"/api/v1/workspaces/{mcp_env.workspace_id}/integrations/{kit['id']}",
            json={"allowedActions": ["echo"]},
        )
        assert removed.status_code == 200, removed.text
        assert "kit__wait" not in await search(client, "wait until released")
        gone = structured(await client.call_tool("describe_tools", {"names": ["kit__wait"]}))
        assert gone["tools"] == []
        # a new partial: the enforced key leaves the description and the search
        assert "kit__echo" in await search(client, "channel", limit=50)
        await mcp_env.partial(
            integrationName="testkit",
            integrationAlias="kit",
            actionName="echo",
            name="fixed channel",
            values={"channel": "C1"},
            enforcedKeys=["channel"],
            isDefault=True,
        )
        assert "kit__echo" not in await search(client, "channel", limit=50)
        echo = structured(await client.call_tool("describe_tools", {"names": ["kit__echo"]}))
        assert "channel" not in echo["tools"][0]["inputSchema"]["properties"]


async def test_a_tool_hidden_by_the_server_is_never_found(mcp_env: McpEnv) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.create_server(
        mode="DISCOVERY",
        toolOverrides=[{"integrationAlias": "kit", "actionName": "echo", "enabled": False}],
    )
    async with mcp_env.connect("memory", "legacy") as client:
        assert "kit__echo" not in await search(client, "echo the text back", limit=50)
        found = structured(await client.call_tool("describe_tools", {"names": ["kit__echo"]}))
        assert found["tools"] == []
        refused = await client.call_tool("call_tool", {"name": "kit__echo", "arguments": {}})
        assert refusal_fields(refused)["error"] == "NOT_FOUND"


@pytest.mark.parametrize("era", ERAS)
async def test_stdio_mode_flag_overrides_the_record(mcp_env: McpEnv, era: str) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.create_server(mode="TOOLS")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "treadle", "stdio", "--server", mcp_env.server_id, "--mode", "DISCOVERY"],
        env=subprocess_env(mcp_env.data_dir),
    )
    async with Client(params, mode=era) as client:
        assert {t.name for t in (await client.list_tools()).tools} == META
        assert (await search(client, "echo text"))[0] == "kit__echo"


async def test_rest_validates_mode_and_threshold(mcp_env: McpEnv) -> None:
    for body in (
        {"mode": "SEARCH"},
        {"mode": "tools"},
        {"autoThreshold": -1},
        {"autoThreshold": "40"},
        {"autoThreshold": 1.5},
    ):
        created = await mcp_env.rest.post(
            "/api/v1/mcp/servers",
            json={"workspaceId": mcp_env.workspace_id, "name": "bad", **body},
        )
        assert created.status_code == 400, (body, created.text)
        assert created.json()["error"] == "VALIDATION_ERROR", created.text
    server_id = await mcp_env.create_server(mode="AUTO", autoThreshold=12)
    found = (await mcp_env.rest.get(f"/api/v1/mcp/servers/{server_id}")).json()["server"]
    assert (found["mode"], found["autoThreshold"]) == ("AUTO", 12)
    for body in ({"mode": None}, {"autoThreshold": None}, {"mode": "X"}):
        patched = await mcp_env.rest.patch(f"/api/v1/mcp/servers/{server_id}", json=body)
        assert patched.status_code == 400, (body, patched.text)
        assert patched.json()["error"] == "VALIDATION_ERROR"
    unchanged = (await mcp_env.rest.get(f"/api/v1/mcp/servers/{server_id}")).json()["server"]
    assert (unchanged["mode"], unchanged["autoThreshold"]) == ("AUTO", 12)
    default = await mcp_env.rest.post(
        "/api/v1/mcp/servers", json={"workspaceId": mcp_env.workspace_id, "name": "plain"}
    )
    assert default.json()["server"]["mode"] == "TOOLS"
    assert default.json()["server"]["autoThreshold"] == 40


async def test_a_pending_search_is_not_blocked_by_another_server(mcp_env: McpEnv) -> None:
    """Two DISCOVERY servers of one workspace search their own tools (per-server indexes)."""
    await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.create_server(
        mode="DISCOVERY",
        toolOverrides=[{"integrationAlias": "kit", "actionName": "wait", "enabled": False}],
    )
    first = mcp_env.server_id
    await mcp_env.create_server(mode="DISCOVERY")
    async with mcp_env.connect("memory", "legacy") as client:
        assert "kit__wait" in await search(client, "wait")
    mcp_env.server_id = first
    with anyio.fail_after(10):
        async with mcp_env.connect("memory", "legacy") as client:
            assert "kit__wait" not in await search(client, "wait")


def _returned(messages: list[Any]) -> list[Any]:
    from pydantic_ai.messages import ModelRequest, ToolReturnPart

    return [
        part.content
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    ]


def _as_object(content: Any) -> dict[str, Any]:
    if isinstance(content, dict):
        return content
    assert isinstance(content, str), content
    loaded: dict[str, Any] = json.loads(content)
    return loaded


@pytest.mark.parametrize("transport", ["http"])
async def test_pydantic_ai_agent_searches_describes_and_calls(
    mcp_env: McpEnv, transport: str
) -> None:
    """pydantic-ai's MCP client over HTTP, a scripted model doing what a real one would."""
    from pydantic_ai import Agent
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.configure("testkit", integrationAlias="ops")
    await mcp_env.create_server(mode="DISCOVERY")
    seen: list[str] = []

    def respond(messages: list[Any], info: AgentInfo) -> ModelResponse:
        offered = {tool.name for tool in info.function_tools}
        assert offered == META, offered
        returns = _returned(messages)
        if not returns:
            return ModelResponse(
                parts=[ToolCallPart("search_tools", {"query": "echo text with the ops kit"})]
            )
        if len(returns) == 1:
            name = _as_object(returns[0])["tools"][0]["name"]
            seen.append(name)
            return ModelResponse(parts=[ToolCallPart("describe_tools", {"names": [name]})])
        if len(returns) == 2:
            tool = _as_object(returns[1])["tools"][0]
            seen.append(",".join(sorted(tool["inputSchema"]["required"])))
            arguments = {"text": "hello from the agent", "channel": "C7"}
            return ModelResponse(
                parts=[ToolCallPart("call_tool", {"name": tool["name"], "arguments": arguments})]
            )
        return ModelResponse(parts=[TextPart(json.dumps(_as_object(returns[2])))])

    toolset: MCPToolset[Any] = MCPToolset(
        mcp_env.mcp_url, headers={"Authorization": f"Bearer {mcp_env.server_token}"}
    )
    agent = Agent(FunctionModel(respond), toolsets=[toolset])
    with anyio.fail_after(60):
        async with agent:
            result = await agent.run("Echo 'hello from the agent' with the ops kit.")
    assert seen == ["ops__echo", "channel,text"]
    assert json.loads(result.output)["text"] == "hello from the agent"
    records = await mcp_env.activity()
    assert [(r["source"], r["status"]) for r in records] == [("mcp_tools", "succeeded")]
