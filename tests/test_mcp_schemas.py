"""What `tools/list` advertises: one tool per allowed action, pruned schemas, metadata,
order, pagination and a server's tool overrides.

The listing does not depend on the transport (the same handler serves all three; the
transport-by-era matrix lives in test_mcp_tools.py), so these run in memory, in both eras.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import Tool

from treadle.catalog.model import Action, ActionContext, AuthKind, Integration
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime

from mcp_harness import ERAS, McpEnv

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("era", ERAS)]

KIT_ACTIONS = ("crash", "echo", "unreachable", "upstream_error", "wait")
VALID_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


async def _noop(_ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    return dict(data)


# Actions that state their own rule for extra keys: the tool must keep it, not close it.
OPEN_KIT = Integration(
    name="openkit",
    display_name="Open Kit",
    description="Schemas that say what extra keys may be.",
    auth_kind=AuthKind.NONE,
    actions=(
        Action(
            "open",
            "Open",
            "Takes any extra key.",
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": True,
            },
            _noop,
        ),
        Action(
            "typed_extras",
            "Typed extras",
            "Extra keys must be numbers.",
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": {"type": "number"},
            },
            _noop,
        ),
        Action(
            "patterned",
            "Patterned",
            "Extra keys must start with x_.",
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "patternProperties": {"^x_": {"type": "string"}},
            },
            _noop,
        ),
    ),
)


async def _tools(client: Client) -> dict[str, Tool]:
    return {tool.name: tool for tool in (await client.list_tools()).tools}


async def _all_pages(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools


@asynccontextmanager
async def _paged_client(mcp_env: McpEnv, era: str, page_size: int) -> AsyncIterator[Client]:
    if not mcp_env.server_id:
        await mcp_env.create_server()
    runtime = McpRuntime(mcp_env.runtime.gateway, page_size=page_size)
    binding = await bind_server(runtime.gateway.store, mcp_env.server_id, None)
    async with Client(runtime.bound_face(binding).server, mode=era) as client:
        yield client


async def _patch_server(mcp_env: McpEnv, **fields: Any) -> dict[str, Any]:
    response = await mcp_env.rest.patch(f"/api/v1/mcp/servers/{mcp_env.server_id}", json=fields)
    assert response.status_code == 200, response.text
    server: dict[str, Any] = response.json()["server"]
    return server


# -- one tool per allowed action -------------------------------------------------------------


async def test_each_allowed_action_of_each_workspace_integration_is_one_tool(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="team-kit")
    await mcp_env.configure("kv-store", integrationAlias="notes", allowedActions=["get", "put"])
    async with mcp_env.connect("memory", era) as client:
        names = set(await _tools(client))

    assert names == {f"team_kit__{action}" for action in KIT_ACTIONS} | {
        "notes__get",
        "notes__put",
    }


async def test_a_workspace_without_integrations_lists_no_tools(mcp_env: McpEnv, era: str) -> None:
    async with mcp_env.connect("memory", era) as client:
        listed = await client.list_tools()

    assert listed.tools == []
    assert listed.next_cursor is None


async def test_tools_of_another_workspace_are_not_listed(mcp_env: McpEnv, era: str) -> None:
    store = mcp_env.runtime.gateway.store
    async with store.db.write("test") as txn:
        other = await store.workspaces.create(txn, mcp_env.org_id, f"other-{mcp_env.workspace_id}")
    response = await mcp_env.rest.post(
        f"/api/v1/workspaces/{other.id}/integrations",
        json={
            "integrationName": "testkit",
            "integrationAlias": "elsewhere",
            "connectionStrategy": "fixed",
        },
    )
    assert response.status_code == 201, response.text
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    async with mcp_env.connect("memory", era) as client:
        assert set(await _tools(client)) == {"kit__echo"}


# -- input schemas: the action's schema after the applicable partials ------------------------


async def test_an_enforced_key_leaves_properties_and_required(mcp_env: McpEnv, era: str) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="fixed text",
        values={"text": "fixed"},
        enforcedKeys=["text"],
        isDefault=True,
    )
    async with mcp_env.connect("memory", era) as client:
        schema = (await _tools(client))["kit__echo"].input_schema

    assert set(schema["properties"]) == {"channel", "count"}
    assert schema["required"] == ["channel"]


async def test_required_disappears_when_every_required_key_is_enforced(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="all fixed",
        values={"text": "t", "channel": "C1"},
        enforcedKeys=["text", "channel"],
        isDefault=True,
    )
    async with mcp_env.connect("memory", era) as client:
        schema = (await _tools(client))["kit__echo"].input_schema

    assert set(schema["properties"]) == {"count"}
    assert not schema.get("required")


async def test_a_partial_value_that_is_not_enforced_becomes_a_default_and_is_not_required(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="usual channel",
        values={"channel": "C-general"},
        isDefault=True,
    )
    async with mcp_env.connect("memory", era) as client:
        schema = (await _tools(client))["kit__echo"].input_schema

    assert schema["properties"]["channel"]["default"] == "C-general"
    assert schema["properties"]["channel"]["type"] == "string"
    assert schema["required"] == ["text"]
    assert "default" not in schema["properties"]["text"]


async def test_integration_wide_and_action_partials_both_shape_the_schema(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        name="whole integration",
        values={"count": 1},
        enforcedKeys=["count"],
        isDefault=True,
    )
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="echo channel",
        values={"channel": "C7"},
        isDefault=True,
    )
    async with mcp_env.connect("memory", era) as client:
        schema = (await _tools(client))["kit__echo"].input_schema

    assert set(schema["properties"]) == {"text", "channel"}
    assert schema["properties"]["channel"]["default"] == "C7"
    assert schema["required"] == ["text"]


async def test_a_partial_scoped_to_one_alias_shapes_only_that_alias_tool(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit-a", allowedActions=["echo"])
    await mcp_env.configure("testkit", integrationAlias="kit-b", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        integrationAlias="kit-a",
        actionName="echo",
        name="a only",
        values={"channel": "CA"},
        enforcedKeys=["channel"],
        isDefault=True,
    )
    async with mcp_env.connect("memory", era) as client:
        tools = await _tools(client)

    assert "channel" not in tools["kit_a__echo"].input_schema["properties"]
    assert "channel" in tools["kit_b__echo"].input_schema["properties"]
    assert tools["kit_b__echo"].input_schema["required"] == ["text", "channel"]


async def test_a_partial_that_is_not_default_does_not_shape_the_schema(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="opt-in",
        values={"channel": "C1"},
        enforcedKeys=["channel"],
    )
    async with mcp_env.connect("memory", era) as client:
        schema = (await _tools(client))["kit__echo"].input_schema

    assert "channel" in schema["properties"]
    assert schema["required"] == ["text", "channel"]


async def test_pruning_a_schema_leaves_the_action_schema_untouched(
    mcp_env: McpEnv, era: str
) -> None:
    integration = mcp_env.runtime.gateway.catalog.get("testkit")
    assert integration is not None
    echo = integration.action("echo")
    assert echo is not None
    before = repr(echo.input_schema)
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="both",
        values={"channel": "C1", "count": 2},
        enforcedKeys=["channel"],
        isDefault=True,
    )
    async with mcp_env.connect("memory", era) as client:
        await client.list_tools()

    assert repr(echo.input_schema) == before


async def test_a_tool_keeps_the_action_rule_for_extra_keys_and_adds_none(
    mcp_env: McpEnv, era: str
) -> None:
    mcp_env.runtime.gateway.catalog.add(OPEN_KIT)
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo", "wait"])
    await mcp_env.configure("openkit", integrationAlias="open")
    async with mcp_env.connect("memory", era) as client:
        tools = await _tools(client)

    # Unspecified stays unspecified (JSON Schema: extra keys allowed), as the pipeline reads it.
    assert "additionalProperties" not in tools["kit__echo"].input_schema
    assert tools["kit__wait"].input_schema["additionalProperties"] is False
    assert tools["open__open"].input_schema["additionalProperties"] is True
    assert tools["open__typed_extras"].input_schema["additionalProperties"] == {"type": "number"}
    assert "additionalProperties" not in tools["open__patterned"].input_schema
    assert tools["open__patterned"].input_schema["patternProperties"] == {"^x_": {"type": "string"}}


# -- metadata ------------------------------------------------------------------------------


async def test_an_output_schema_is_advertised_only_where_the_action_declares_one(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    integration = mcp_env.runtime.gateway.catalog.get("testkit")
    assert integration is not None
    async with mcp_env.connect("memory", era) as client:
        tools = await _tools(client)

    echo = integration.action("echo")
    assert echo is not None
    assert tools["kit__echo"].output_schema == echo.output_schema
    for action in ("crash", "unreachable", "upstream_error", "wait"):
        assert tools[f"kit__{action}"].output_schema is None


async def test_annotations_and_title_come_from_the_action_metadata(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo", "crash"])
    async with mcp_env.connect("memory", era) as client:
        tools = await _tools(client)

    echo, crash = tools["kit__echo"], tools["kit__crash"]
    assert echo.title == "Echo"
    assert echo.description == "Echo the text back."
    assert echo.annotations is not None
    assert (
        echo.annotations.read_only_hint,
        echo.annotations.destructive_hint,
        echo.annotations.idempotent_hint,
        echo.annotations.open_world_hint,
    ) == (True, False, True, False)
    assert crash.title == "Crash"
    assert crash.annotations is not None
    assert (
        crash.annotations.read_only_hint,
        crash.annotations.destructive_hint,
        crash.annotations.idempotent_hint,
        crash.annotations.open_world_hint,
    ) == (False, True, False, True)


async def test_the_description_names_the_alias_when_an_integration_has_several_aliases(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit-red", allowedActions=["echo"])
    await mcp_env.configure("testkit", integrationAlias="kit-blue", allowedActions=["echo"])
    await mcp_env.configure("kv-store", integrationAlias="notes", allowedActions=["get"])
    async with mcp_env.connect("memory", era) as client:
        tools = await _tools(client)

    red, blue = tools["kit_red__echo"], tools["kit_blue__echo"]
    assert red.description is not None
    assert blue.description is not None
    assert "kit-red" in red.description
    assert "kit-blue" not in red.description
    assert "kit-blue" in blue.description
    # One alias only: the action's own description, nothing added.
    assert tools["notes__get"].description == (
        "Read the value stored under a key; `found` is false when there is none."
    )


# -- order and pagination -------------------------------------------------------------------


async def test_tools_are_listed_in_the_same_order_whatever_the_configuration_order(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="zulu", allowedActions=["echo", "crash"])
    await mcp_env.configure("kv-store", integrationAlias="alpha", allowedActions=["put", "get"])
    await mcp_env.configure("testkit", integrationAlias="mike", allowedActions=["wait"])
    async with mcp_env.connect("memory", era) as client:
        first = [tool.name for tool in (await client.list_tools()).tools]
        second = [tool.name for tool in (await client.list_tools()).tools]

    assert first == second
    assert first == sorted(first)
    assert len(first) == 5


async def test_pages_of_tools_follow_the_cursor_to_the_full_list(mcp_env: McpEnv, era: str) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.configure("kv-store", integrationAlias="notes")
    async with mcp_env.connect("memory", era) as client:
        unpaged = [tool.name for tool in (await client.list_tools()).tools]
    async with _paged_client(mcp_env, era, page_size=2) as client:
        first = await client.list_tools()
        paged = [tool.name for tool in await _all_pages(client)]

    assert len(first.tools) == 2
    assert first.next_cursor is not None
    assert len(unpaged) == 11
    assert paged == unpaged


async def test_a_list_that_fits_one_page_has_no_next_cursor(mcp_env: McpEnv, era: str) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo", "wait"])
    async with _paged_client(mcp_env, era, page_size=2) as client:
        listed = await client.list_tools()

    assert [tool.name for tool in listed.tools] == ["kit__echo", "kit__wait"]
    assert listed.next_cursor is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "e30=",  # {}
        "eyJvIjogLTF9",  # {"o": -1}
        "eyJvIjogIjEifQ==",  # {"o": "1"}
        "eyJvIjogdHJ1ZX0=",  # {"o": true}
        "WzFd",  # [1]
    ],
)
async def test_an_invalid_cursor_is_a_protocol_error(
    mcp_env: McpEnv, era: str, cursor: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    async with _paged_client(mcp_env, era, page_size=2) as client:
        with pytest.raises(MCPError) as raised:
            await client.list_tools(cursor=cursor)

    assert raised.value.error.code == -32602


# -- tool overrides on the server record ----------------------------------------------------


async def test_override_partial_ids_choose_the_partials_that_shape_a_tool(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.configure("testkit", integrationAlias="other", allowedActions=["echo"])
    opt_in = await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="opt-in",
        values={"channel": "C-opt", "count": 5},
        enforcedKeys=["channel"],
    )
    await mcp_env.create_server(
        toolOverrides=[
            {"integrationAlias": "kit", "actionName": "echo", "partialIds": [opt_in["id"]]}
        ]
    )
    async with mcp_env.connect("memory", era) as client:
        tools = await _tools(client)
        result = await client.call_tool("kit__echo", {"text": "hi"})

    chosen = tools["kit__echo"].input_schema
    assert "channel" not in chosen["properties"]
    assert chosen["properties"]["count"]["default"] == 5
    assert "channel" in tools["other__echo"].input_schema["properties"]
    assert result.structured_content == {"text": "hi", "channel": "C-opt", "count": 5}


async def test_empty_override_partial_ids_turn_default_partials_off_for_that_tool(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="default",
        values={"channel": "C-default"},
        enforcedKeys=["channel"],
        isDefault=True,
    )
    await mcp_env.create_server(
        toolOverrides=[{"integrationAlias": "kit", "actionName": "echo", "partialIds": []}]
    )
    async with mcp_env.connect("memory", era) as client:
        schema = (await _tools(client))["kit__echo"].input_schema
        result = await client.call_tool("kit__echo", {"text": "hi", "channel": "C-mine"})

    assert schema["required"] == ["text", "channel"]
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["channel"] == "C-mine"


async def test_an_override_description_replaces_the_action_description(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo", "wait"])
    await mcp_env.create_server(
        toolOverrides=[
            {"integrationAlias": "kit", "actionName": "echo", "description": "Say it back."}
        ]
    )
    async with mcp_env.connect("memory", era) as client:
        tools = await _tools(client)

    assert tools["kit__echo"].description == "Say it back."
    assert tools["kit__wait"].description == "Waits until released."


async def test_an_override_with_enabled_false_hides_the_tool(mcp_env: McpEnv, era: str) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo", "wait"])
    await mcp_env.create_server(
        toolOverrides=[{"integrationAlias": "kit", "actionName": "wait", "enabled": False}]
    )
    async with mcp_env.connect("memory", era) as client:
        names = set(await _tools(client))
        called = await client.call_tool("kit__wait", {})

    assert names == {"kit__echo"}
    assert called.is_error
    assert called.structured_content is not None
    assert called.structured_content["error"] == "ACTION_NOT_ALLOWED"


async def test_overrides_only_change_the_server_they_are_set_on(mcp_env: McpEnv, era: str) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo", "wait"])
    plain = await mcp_env.create_server()
    await mcp_env.create_server(
        toolOverrides=[{"integrationAlias": "kit", "actionName": "wait", "enabled": False}]
    )
    async with mcp_env.connect("memory", era) as client:
        assert set(await _tools(client)) == {"kit__echo"}
    mcp_env.server_id = plain
    async with mcp_env.connect("memory", era) as client:
        assert set(await _tools(client)) == {"kit__echo", "kit__wait"}


async def test_an_updated_override_changes_the_next_listing(mcp_env: McpEnv, era: str) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo", "wait"])
    await mcp_env.create_server()
    async with mcp_env.connect("memory", era) as client:
        assert set(await _tools(client)) == {"kit__echo", "kit__wait"}
        await _patch_server(
            mcp_env,
            toolOverrides=[
                {"integrationAlias": "kit", "actionName": "wait", "enabled": False},
                {"integrationAlias": "kit", "actionName": "echo", "description": "New words."},
            ],
        )
        # A 2026-07-28 client keeps a listing for its TTL unless a list_changed event evicts
        # it (test_mcp_resync.py); ask the server again.
        refreshed = await client.list_tools(cache_mode="refresh")

    tools = {tool.name: tool for tool in refreshed.tools}
    assert set(tools) == {"kit__echo"}
    assert tools["kit__echo"].description == "New words."


# -- names end to end -----------------------------------------------------------------------


async def test_aliases_that_differ_only_by_dash_and_underscore_get_distinct_callable_tools(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="my-bot", allowedActions=["echo"])
    await mcp_env.configure("testkit", integrationAlias="my_bot", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        integrationAlias="my-bot",
        actionName="echo",
        name="dashed",
        values={"channel": "C-dashed"},
        enforcedKeys=["channel"],
        isDefault=True,
    )
    async with mcp_env.connect("memory", era) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        dashed = next(name for name in names if name != "my_bot__echo")
        plain = await client.call_tool("my_bot__echo", {"text": "hi", "channel": "C-own"})
        shortened = await client.call_tool(dashed, {"text": "hi"})

    assert len(names) == 2
    assert "my_bot__echo" in names
    assert VALID_NAME.match(dashed)
    assert plain.structured_content == {
        "text": "hi",
        "channel": "C-own",
        "count": None,
    }
    assert shortened.structured_content == {
        "text": "hi",
        "channel": "C-dashed",
        "count": None,
    }


async def test_a_tool_whose_name_would_pass_64_characters_is_listed_shortened_and_callable(
    mcp_env: McpEnv, era: str
) -> None:
    alias = "a" + "-long" * 11 + "-alias"
    assert len(alias) == 62
    await mcp_env.configure("testkit", integrationAlias=alias, allowedActions=["echo", "wait"])
    async with mcp_env.connect("memory", era) as client:
        tools = (await client.list_tools()).tools
        names = [tool.name for tool in tools]
        echo = next(tool.name for tool in tools if tool.title == "Echo")
        result = await client.call_tool(echo, {"text": "hi", "channel": "C"})

    assert len(names) == 2
    assert len(set(names)) == 2
    assert all(VALID_NAME.match(name) for name in names)
    assert not result.is_error
    assert result.structured_content == {"text": "hi", "channel": "C", "count": None}
