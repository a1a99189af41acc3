"""Human Gates inside MCP tool calls: each path a client can support, in both eras.

The reviewer here is the workspace admin deciding through the REST API (another principal
than the MCP server that asked). In URL mode the client's elicitation callback plays the
person who opened the link: it decides, then answers.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.types import (
    ClientCapabilities,
    ElicitationCapability,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitRequestURLParams,
    ElicitResult,
    FormElicitationCapability,
)

from mcp_harness import ERAS, McpEnv
from tool_errors import refusal_fields

pytestmark = pytest.mark.anyio

ECHO = {"text": "refund order 123", "channel": "C1"}


async def gate(mcp_env: McpEnv, *, self_approval: bool = False, **extra: Any) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    created = await mcp_env.rest.post(
        "/api/v1/approval-policies",
        json={
            "workspaceId": mcp_env.workspace_id,
            "name": "echo needs a person",
            "decision": "require_approval",
            "sources": ["mcp_tools"],
            "actionNames": ["echo"],
            "allowSelfApproval": self_approval,
            **extra,
        },
    )
    assert created.status_code == 201, created.text


async def decide(mcp_env: McpEnv, approval_id: str, decision: str) -> None:
    done = await mcp_env.rest.post(f"/api/v1/approvals/{approval_id}/{decision}", json={})
    assert done.status_code == 200, done.text


async def runs(mcp_env: McpEnv) -> list[str]:
    return [entry["status"] for entry in await mcp_env.activity()]


def approval_id_of(url: str) -> str:
    return url.split("/approve/", 1)[1].split("?", 1)[0]


@pytest.mark.parametrize("era", ERAS)
async def test_url_elicitation_waits_for_the_reviewer_and_returns_the_result(
    mcp_env: McpEnv, era: str
) -> None:
    await gate(mcp_env)
    asked: list[str] = []

    async def person(_context: Any, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        asked.append(params.url)
        await decide(mcp_env, approval_id_of(params.url), "approve")
        return ElicitResult(action="accept")

    async with mcp_env.connect("memory", era, elicitation_callback=person) as client:
        with anyio.fail_after(15):
            result = await client.call_tool("kit__echo", ECHO)
    assert not result.is_error
    assert result.structured_content == {**ECHO, "count": None}
    assert len(asked) == 1
    assert "/approve/apr_" in asked[0]
    assert "token=apr_link_v1_" in asked[0]
    assert (await runs(mcp_env)).count("succeeded") == 1


@pytest.mark.parametrize("era", ERAS)
async def test_a_rejection_while_waiting_is_an_error_result(mcp_env: McpEnv, era: str) -> None:
    await gate(mcp_env)

    async def person(_context: Any, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        await decide(mcp_env, approval_id_of(params.url), "reject")
        return ElicitResult(action="accept")

    async with mcp_env.connect("memory", era, elicitation_callback=person) as client:
        with anyio.fail_after(15):
            result = await client.call_tool("kit__echo", ECHO)
    assert refusal_fields(result)["error"] == "APPROVAL_REJECTED"
    assert "succeeded" not in await runs(mcp_env)


@pytest.mark.parametrize("era", ERAS)
async def test_self_approval_by_form_runs_the_action(mcp_env: McpEnv, era: str) -> None:
    """2026-07-28 prefers the form when self-approval is allowed; a handshake client that can
    open URLs gets the link, so here it declares form mode only."""
    await gate(mcp_env, self_approval=True)
    forms: list[str] = []

    async def person(_context: Any, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestFormParams)
        forms.append(params.message)
        return ElicitResult(action="accept", content={"approve": True})

    with pytest.MonkeyPatch.context() as patch:
        if era == "legacy":
            patch.setattr(ClientSession, "_build_capabilities", _form_only)
        async with mcp_env.connect("memory", era, elicitation_callback=person) as client:
            with anyio.fail_after(15):
                result = await client.call_tool("kit__echo", ECHO)
    assert not result.is_error
    assert result.structured_content == {**ECHO, "count": None}
    assert len(forms) == 1
    assert "kit.echo" in forms[0]


@pytest.mark.parametrize("era", ERAS)
async def test_declining_the_form_rejects_the_request(mcp_env: McpEnv, era: str) -> None:
    await gate(mcp_env, self_approval=True)

    async def person(_context: Any, _params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"approve": False})

    with pytest.MonkeyPatch.context() as patch:
        if era == "legacy":
            patch.setattr(ClientSession, "_build_capabilities", _form_only)
        async with mcp_env.connect("memory", era, elicitation_callback=person) as client:
            with anyio.fail_after(15):
                result = await client.call_tool("kit__echo", ECHO)
    assert refusal_fields(result)["error"] == "APPROVAL_REJECTED"


def _form_only(_session: ClientSession, _version: str) -> ClientCapabilities:
    return ClientCapabilities(elicitation=ElicitationCapability(form=FormElicitationCapability()))


@pytest.mark.parametrize("era", ERAS)
async def test_without_elicitation_the_model_is_told_to_call_again_and_it_runs_once(
    mcp_env: McpEnv, era: str
) -> None:
    await gate(mcp_env)
    async with mcp_env.connect("memory", era) as client:
        first = await client.call_tool("kit__echo", ECHO)
        assert not first.is_error
        status = first.structured_content
        assert status is not None
        assert status["status"] == "approval_required"
        assert "token=apr_link_v1_" in status["approvalUrl"]
        text = first.content[0].text  # type: ignore[union-attr]
        assert status["approvalId"] in text

        again = await client.call_tool("kit__echo", ECHO)
        assert again.structured_content is not None
        assert again.structured_content["approvalId"] == status["approvalId"]

        other = await client.call_tool("kit__echo", {**ECHO, "text": "another"})
        assert other.structured_content is not None
        assert other.structured_content["approvalId"] != status["approvalId"]

        await decide(mcp_env, status["approvalId"], "approve")
        ran = await client.call_tool("kit__echo", ECHO)
        assert not ran.is_error
        assert ran.structured_content == {**ECHO, "count": None}

        fresh = await client.call_tool("kit__echo", ECHO)
        assert fresh.structured_content is not None
        assert fresh.structured_content["status"] == "approval_required"
        assert fresh.structured_content["approvalId"] != status["approvalId"]
    assert (await runs(mcp_env)).count("succeeded") == 1


async def test_a_cancelled_wait_leaves_the_approval_usable_by_a_later_call(
    mcp_env: McpEnv,
) -> None:
    await gate(mcp_env)
    link: list[str] = []
    opened = anyio.Event()

    async def person(_context: Any, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        link.append(params.url)
        opened.set()
        return ElicitResult(action="accept")

    async with mcp_env.connect("memory", "legacy", elicitation_callback=person) as client:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await client.call_tool("kit__echo", ECHO)

            tg.start_soon(call)
            with anyio.fail_after(10):
                await opened.wait()
            tg.cancel_scope.cancel()
        approval = approval_id_of(link[0])
        pending = await mcp_env.rest.get(f"/api/v1/approvals/{approval}")
        assert pending.json()["approval"]["status"] == "pending"
        await decide(mcp_env, approval, "approve")
    async with mcp_env.connect("memory", "legacy") as client:
        ran = await client.call_tool("kit__echo", ECHO)
    assert not ran.is_error
    assert ran.structured_content == {**ECHO, "count": None}


async def test_a_blocked_tool_is_an_error_result_not_a_protocol_error(mcp_env: McpEnv) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit")
    await mcp_env.rest.post(
        "/api/v1/approval-policies",
        json={
            "workspaceId": mcp_env.workspace_id,
            "name": "never",
            "decision": "block",
            "actionNames": ["echo"],
        },
    )
    async with mcp_env.connect("memory", "legacy") as client:
        result = await client.call_tool("kit__echo", ECHO)
    # echo declares an outputSchema: the refusal's fields are in the text only.
    assert refusal_fields(result)["error"] == "ACTION_BLOCKED"
