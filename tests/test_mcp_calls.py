"""Tool calls go through the execute pipeline: outcomes, refusals, end users, limits.

The core outcomes run over every transport and era; behaviours that live in the pipeline
(and so cannot differ per transport) run in memory.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.http_app import build_http_app
from treadle.mcp.runtime import McpRuntime
from treadle.settings import Settings

import mcp_harness
from databases import database_url
from mcp_harness import ERAS, TRANSPORTS, McpEnv
from tool_errors import refusal_fields, result_text

pytestmark = pytest.mark.anyio

every_transport = [
    pytest.mark.parametrize("transport", TRANSPORTS),
    pytest.mark.parametrize("era", ERAS),
]


_text = result_text
# Read from the text (what every client shows a model), checked against the structured
# content where the tool has one (kit__echo declares an outputSchema, so its errors do not).
_refusal = refusal_fields


def _code(result: CallToolResult) -> str:
    code: str = _refusal(result)["error"]
    return code


async def _activity(mcp_env: McpEnv, **query: str) -> list[dict[str, Any]]:
    return await mcp_env.activity(**query)


async def _end_user_with_key(mcp_env: McpEnv, external_id: str, connection: str) -> None:
    response = await mcp_env.rest.post(
        "/api/v1/end-users", json={"workspaceId": mcp_env.workspace_id, "externalId": external_id}
    )
    assert response.status_code == 201, response.text
    response = await mcp_env.rest.post(
        "/api/v1/connections",
        json={
            "integrationName": "keyed",
            "type": "api_key",
            "displayName": f"{external_id}'s key",
            "externalId": connection,
            "values": {"apiKey": f"secret-of-{external_id}"},
            "workspaceId": mcp_env.workspace_id,
            "endUserId": external_id,
        },
    )
    assert response.status_code == 201, response.text


# -- over every transport and era -----------------------------------------------------------


@every_transport[0]
@every_transport[1]
async def test_a_successful_call_returns_structured_content_and_text_and_is_logged_as_mcp(
    mcp_env: McpEnv, transport: str, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    async with mcp_env.connect(transport, era) as client:
        result = await client.call_tool("kit__echo", {"text": "hi", "channel": "C1", "count": 2})

    assert not result.is_error
    assert result.structured_content == {"text": "hi", "channel": "C1", "count": 2}
    assert json.loads(_text(result)) == {"text": "hi", "channel": "C1", "count": 2}
    entries = await _activity(mcp_env, source="mcp_tools")
    assert [(e["actionName"], e["integrationAlias"], e["status"]) for e in entries] == [
        ("echo", "kit", "succeeded")
    ]
    assert entries[0]["input"] == {"text": "hi", "channel": "C1", "count": 2}


@every_transport[0]
@every_transport[1]
async def test_failures_are_error_results_and_only_an_unknown_tool_is_a_protocol_error(
    mcp_env: McpEnv, transport: str, era: str
) -> None:
    await mcp_env.configure(
        "testkit",
        integrationAlias="kit",
        allowedActions=["echo", "crash", "unreachable", "upstream_error"],
    )
    async with mcp_env.connect(transport, era) as client:
        missing = await client.call_tool("kit__echo", {"text": "hi"})
        wrong_type = await client.call_tool(
            "kit__echo", {"text": "hi", "channel": "C1", "count": "many"}
        )
        not_allowed = await client.call_tool("kit__wait", {})
        crashed = await client.call_tool("kit__crash", {})
        unreachable = await client.call_tool("kit__unreachable", {})
        upstream = await client.call_tool("kit__upstream_error", {})
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("nope__echo", {"text": "x"})

    assert _code(missing) == "VALIDATION_ERROR"
    assert _refusal(missing)["field"] == "channel"
    assert _code(wrong_type) == "VALIDATION_ERROR"
    assert _refusal(wrong_type)["field"] == "count"
    # kit__echo declares an outputSchema: no structured content that would not conform to it;
    # the other tools declare none and keep the fields there for programs.
    assert missing.structured_content is None
    assert wrong_type.structured_content is None
    assert crashed.structured_content is not None
    assert _code(not_allowed) == "ACTION_NOT_ALLOWED"
    assert _code(crashed) == "ACTION_FAILED"
    assert _code(unreachable) == "ACTION_FAILED"
    assert _refusal(unreachable)["reason"] == "connect_failed"
    for leaked in ("boom", "internal detail", "RuntimeError", "Traceback"):
        assert leaked not in _text(crashed)
        assert leaked not in json.dumps(crashed.structured_content)
    assert upstream.is_error
    assert upstream.structured_content == {
        "error": "channel_not_found",
        "detail": {"channel": None},
    }
    assert unknown.value.error.code == -32602


@every_transport[0]
@every_transport[1]
async def test_calls_act_for_the_end_user_the_server_is_pinned_to(
    mcp_env: McpEnv, transport: str, era: str
) -> None:
    await mcp_env.configure("keyed", integrationAlias="keys", connectionStrategy="per_user")
    await _end_user_with_key(mcp_env, "alice", "conn-alice")
    await _end_user_with_key(mcp_env, "bob", "conn-bob")
    await mcp_env.create_server(endUserId="bob")
    async with mcp_env.connect(transport, era) as client:
        result = await client.call_tool("keys__whoami", {})

    assert not result.is_error, result
    assert result.structured_content == {"connection": "conn-bob", "endUser": "bob"}
    entries = await _activity(mcp_env, source="mcp_tools")
    assert [(e["actionName"], e["endUserId"], e["status"]) for e in entries] == [
        ("whoami", "bob", "succeeded")
    ]
    assert "secret-of-bob" not in json.dumps(entries)


# -- in memory: pipeline behaviour ----------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_an_argument_naming_an_enforced_key_is_refused_and_never_overrides(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.partial(
        integrationName="testkit",
        actionName="echo",
        name="fixed channel",
        values={"channel": "C-fixed"},
        enforcedKeys=["channel"],
        isDefault=True,
    )
    async with mcp_env.connect("memory", era) as client:
        other_value = await client.call_tool("kit__echo", {"text": "hi", "channel": "C-mine"})
        same_value = await client.call_tool("kit__echo", {"text": "hi", "channel": "C-fixed"})
        plain = await client.call_tool("kit__echo", {"text": "hi"})

    for refused in (other_value, same_value):
        assert _code(refused) == "VALIDATION_ERROR"
        assert _refusal(refused)["field"] == "channel"
    assert plain.structured_content == {"text": "hi", "channel": "C-fixed", "count": None}
    statuses = [e["status"] for e in await _activity(mcp_env, source="mcp_tools")]
    assert sorted(statuses) == ["refused", "refused", "succeeded"]


@pytest.mark.parametrize("era", ERAS)
async def test_an_argument_the_action_does_not_declare_follows_the_action_rule_for_extra_keys(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo", "wait"])
    async with mcp_env.connect("memory", era) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        echo = await client.call_tool("kit__echo", {"text": "hi", "channel": "C1", "bogus": 1})
        wait = await client.call_tool("kit__wait", {"bogus": 1})

    # echo says nothing about extra keys (JSON Schema: allowed), wait closes its object: the
    # tools advertise exactly that, and calls are held to it as REST calls are.
    assert "additionalProperties" not in tools["kit__echo"].input_schema
    assert tools["kit__wait"].input_schema["additionalProperties"] is False
    assert not echo.is_error, echo
    assert _code(wait) == "VALIDATION_ERROR"
    assert _refusal(wait)["field"] == "bogus"
    entries = await _activity(mcp_env, source="mcp_tools")
    assert sorted((e["actionName"], e["status"]) for e in entries) == [
        ("echo", "succeeded"),
        ("wait", "refused"),
    ]


@pytest.mark.parametrize("era", ERAS)
async def test_a_call_without_arguments_is_validated_like_an_empty_object(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    async with mcp_env.connect("memory", era) as client:
        result = await client.call_tool("kit__echo")

    assert _code(result) == "VALIDATION_ERROR"
    assert _refusal(result)["field"] == "text"


@pytest.mark.parametrize("era", ERAS)
async def test_a_third_party_error_carries_the_error_and_its_detail(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["upstream_error"])
    async with mcp_env.connect("memory", era) as client:
        result = await client.call_tool("kit__upstream_error", {})

    assert result.is_error
    assert result.structured_content == {"error": "channel_not_found", "detail": {"channel": None}}
    assert "channel_not_found" in _text(result)
    entries = await _activity(mcp_env, source="mcp_tools")
    assert [e["status"] for e in entries] == ["upstream_failed"]


@pytest.mark.parametrize("era", ERAS)
async def test_a_crash_is_logged_as_failed_without_its_internal_message(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["crash"])
    async with mcp_env.connect("memory", era) as client:
        result = await client.call_tool("kit__crash", {})

    assert _code(result) == "ACTION_FAILED"
    entries = await _activity(mcp_env, source="mcp_tools")
    assert [(e["status"], e["errorCode"]) for e in entries] == [("failed", "ACTION_FAILED")]
    assert "boom" not in json.dumps(entries)


@pytest.mark.parametrize("era", ERAS)
async def test_an_unpinned_server_has_no_end_user_so_a_per_user_integration_needs_one(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("keyed", integrationAlias="keys", connectionStrategy="per_user")
    await _end_user_with_key(mcp_env, "alice", "conn-alice")
    await mcp_env.create_server()
    async with mcp_env.connect("memory", era) as client:
        result = await client.call_tool("keys__whoami", {})

    assert _code(result) == "CONNECTION_REQUIRED"


@pytest.mark.parametrize("era", ERAS)
async def test_a_pinned_end_user_without_a_connection_gets_connection_required(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("keyed", integrationAlias="keys", connectionStrategy="per_user")
    await _end_user_with_key(mcp_env, "alice", "conn-alice")
    await mcp_env.create_server(endUserId="carol")
    async with mcp_env.connect("memory", era) as client:
        result = await client.call_tool("keys__whoami", {})

    assert _code(result) == "CONNECTION_REQUIRED"
    assert "secret-of-alice" not in _text(result)


@pytest.mark.parametrize("era", ERAS)
async def test_changing_the_pin_changes_whose_connection_the_next_call_uses(
    mcp_env: McpEnv, era: str
) -> None:
    await mcp_env.configure("keyed", integrationAlias="keys", connectionStrategy="per_user")
    await _end_user_with_key(mcp_env, "alice", "conn-alice")
    await _end_user_with_key(mcp_env, "bob", "conn-bob")
    await mcp_env.create_server(endUserId="alice")
    async with mcp_env.connect("memory", era) as client:
        first = await client.call_tool("keys__whoami", {})
    response = await mcp_env.rest.patch(
        f"/api/v1/mcp/servers/{mcp_env.server_id}", json={"endUserId": "bob"}
    )
    assert response.status_code == 200, response.text
    async with mcp_env.connect("memory", era) as client:
        second = await client.call_tool("keys__whoami", {})

    assert first.structured_content == {"connection": "conn-alice", "endUser": "alice"}
    assert second.structured_content == {"connection": "conn-bob", "endUser": "bob"}


# -- limits: an org of its own, so the shared database's org keeps its limits -----------------


@pytest.fixture
async def own_org(tmp_path: Path) -> AsyncIterator[McpEnv]:
    """An isolated gateway (own data dir, database, org and rate limiter), memory only."""
    data_dir = tmp_path / "limits"
    settings = Settings(data_dir=data_dir, database_url=database_url(data_dir), secret_key=None)
    gateway = await Gateway.open(settings, catalog=mcp_harness.test_catalog())
    try:
        result = await initialise(gateway.store, data_dir)
        assert result.api_key is not None
        runtime = McpRuntime(gateway)
        transport = httpx2.ASGITransport(app=build_http_app(gateway, runtime))
        async with httpx2.AsyncClient(
            transport=transport,
            base_url="http://treadle.test",
            headers={"Authorization": f"Bearer {result.api_key}"},
        ) as rest:
            yield McpEnv(
                data_dir=data_dir,
                serve=None,
                rest=rest,
                runtime=runtime,
                org_id=result.org_id,
                workspace_id=result.workspace_id,
                api_key=result.api_key,
            )
    finally:
        await gateway.close()


async def _set_limits(env: McpEnv, **limits: int) -> None:
    store = env.runtime.gateway.store
    async with store.db.write("test") as txn:
        await store.orgs.set_limits(txn, env.org_id, **limits)


async def _two_echoes(client: Client) -> tuple[CallToolResult, CallToolResult]:
    first = await client.call_tool("kit__echo", {"text": "1", "channel": "C"})
    second = await client.call_tool("kit__echo", {"text": "2", "channel": "C"})
    return first, second


@pytest.mark.parametrize("era", ERAS)
async def test_a_call_over_the_rate_limit_is_refused_with_retry_after(
    own_org: McpEnv, era: str
) -> None:
    await own_org.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await _set_limits(own_org, rate_limit=1, rate_window_seconds=3600)
    async with own_org.connect("memory", era) as client:
        first, second = await _two_echoes(client)

    assert not first.is_error
    assert _code(second) == "RATE_LIMITED"
    assert _refusal(second)["retryAfter"] >= 1


@pytest.mark.parametrize("era", ERAS)
async def test_a_call_over_the_monthly_quota_is_refused(own_org: McpEnv, era: str) -> None:
    await own_org.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await _set_limits(own_org, monthly_quota=1)
    async with own_org.connect("memory", era) as client:
        first, second = await _two_echoes(client)

    assert not first.is_error
    assert _code(second) == "QUOTA_EXCEEDED"
    assert _refusal(second)["limit"] == 1
    statuses = [e["status"] for e in await _activity(own_org, source="mcp_tools")]
    assert sorted(statuses) == ["refused", "succeeded"]
