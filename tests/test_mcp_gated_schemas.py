"""A tool a require-approval policy may gate declares no output schema: its paused answer is a
status object, which SDK clients would otherwise reject against the action's schema."""

from __future__ import annotations

import pytest

from mcp_harness import McpEnv

pytestmark = pytest.mark.anyio


async def _output_schemas(mcp_env: McpEnv) -> dict[str, object]:
    async with mcp_env.connect("memory", "legacy") as client:
        return {t.name: t.output_schema for t in (await client.list_tools()).tools}


async def test_only_tools_a_policy_may_pause_lose_their_output_schema(mcp_env: McpEnv) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.configure(
        "kv-store", integrationAlias="notes", settings={"persistence": {"scope": "workspace"}}
    )
    assert (await _output_schemas(mcp_env))["kit__echo"] is not None

    created = await mcp_env.rest.post(
        "/api/v1/approval-policies",
        json={
            "workspaceId": mcp_env.workspace_id,
            "name": "review echoes",
            "decision": "require_approval",
            "integrationAliases": ["kit"],
            "actionNames": ["echo"],
        },
    )
    assert created.status_code == 201, created.text
    schemas = await _output_schemas(mcp_env)
    assert schemas["kit__echo"] is None
    assert schemas["notes__get"] is not None  # not governed by the policy

    policy_id = created.json()["policy"]["id"]
    await mcp_env.rest.patch(f"/api/v1/approval-policies/{policy_id}", json={"sources": ["rest"]})
    assert (await _output_schemas(mcp_env))["kit__echo"] is not None


async def test_a_gated_call_without_elicitation_is_a_status_result_the_client_accepts(
    mcp_env: McpEnv,
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    created = await mcp_env.rest.post(
        "/api/v1/approval-policies",
        json={
            "workspaceId": mcp_env.workspace_id,
            "name": "all echoes",
            "decision": "require_approval",
            "actionNames": ["echo"],
        },
    )
    assert created.status_code == 201, created.text
    async with mcp_env.connect("memory", "legacy") as client:
        await client.list_tools()
        result = await client.call_tool("kit__echo", {"text": "hi", "channel": "C"})
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["status"] == "approval_required"
        assert result.structured_content["approvalId"].startswith("apr_")
