"""The same call through REST execute and MCP tools/call: the same outcome, the same record.

Every refusal is the pipeline's, so both faces answer with its code and leave an activity
record (status, error code, their own source). The table spells out the only differences,
which follow from what each face's caller was shown: a key fixed by an enforced partial is
not in the MCP tool's schema (refused) but is in the action's (REST: the enforced value
wins), and an MCP server's tool override applies to calls through that server only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_harness import ERAS, McpEnv
from tool_errors import refusal_fields

pytestmark = pytest.mark.anyio

PROTOCOL_ERROR = "-32602"  # an unknown tool: a JSON-RPC error, not a tool result
STATUS = {None: "succeeded"}  # any refusal code of this table: "refused"


@dataclass(frozen=True)
class Seen:
    code: str | None  # None: the action ran and succeeded
    field: str | None = None
    recorded: bool = True


@dataclass(frozen=True)
class Case:
    name: str
    alias: str
    action: str
    input: dict[str, Any]
    rest: Seen
    mcp: Seen | None = None  # None: the same as REST
    rest_body: tuple[tuple[str, Any], ...] = ()


OK = Seen(None)
HI = {"text": "hi", "channel": "C1"}


def cases(picky_partial: str) -> list[Case]:
    return [
        Case("valid", "kit", "echo", HI, OK),
        Case(
            "missing required", "kit", "echo", {"text": "hi"}, Seen("VALIDATION_ERROR", "channel")
        ),
        Case(
            "wrong type", "kit", "echo", {**HI, "count": "many"}, Seen("VALIDATION_ERROR", "count")
        ),
        # echo says nothing about extra keys (JSON Schema: allowed); crash closes its object.
        Case("undeclared key, open action", "kit", "echo", {**HI, "bogus": 1}, OK),
        Case(
            "undeclared key, closed action",
            "kit",
            "crash",
            {"bogus": 1},
            Seen("VALIDATION_ERROR", "bogus"),
        ),
        Case(
            "enforced key overridden",
            "locked",
            "echo",
            {"text": "hi", "channel": "C-mine"},
            rest=OK,
            mcp=Seen("VALIDATION_ERROR", "channel"),
        ),
        Case("action not allowed", "kit", "wait", {}, Seen("ACTION_NOT_ALLOWED")),
        Case(
            "tool disabled by server override",
            "off",
            "echo",
            HI,
            rest=OK,
            mcp=Seen("ACTION_NOT_ALLOWED"),
        ),
        Case(
            "partial that does not apply",
            "picky",
            "echo",
            HI,
            rest=Seen("VALIDATION_ERROR", "partialIds[0]"),
            mcp=Seen("VALIDATION_ERROR", "toolOverrides.partialIds[0]"),
            rest_body=(("partialIds", [picky_partial]),),
        ),
        Case(
            "unknown alias",
            "nope",
            "echo",
            HI,
            rest=Seen("INTEGRATION_NOT_FOUND", recorded=False),
            mcp=Seen(PROTOCOL_ERROR, recorded=False),
        ),
    ]


async def _configure(env: McpEnv) -> str:
    """Four aliases of testkit and a server whose overrides touch two of them; returns the
    id of a partial that applies only to `kit`."""
    await env.configure("testkit", integrationAlias="kit", allowedActions=["echo", "crash"])
    for alias in ("locked", "off", "picky"):
        await env.configure("testkit", integrationAlias=alias, allowedActions=["echo"])
    await env.partial(
        integrationName="testkit",
        integrationAlias="locked",
        actionName="echo",
        name="fixed channel",
        values={"channel": "C-fixed"},
        enforcedKeys=["channel"],
        isDefault=True,
    )
    only_kit = await env.partial(
        integrationName="testkit",
        integrationAlias="kit",
        actionName="echo",
        name="kit only",
        values={"count": 1},
    )
    await env.create_server(
        toolOverrides=[
            {"integrationAlias": "off", "actionName": "echo", "enabled": False},
            {"integrationAlias": "picky", "actionName": "echo", "partialIds": [only_kit["id"]]},
        ]
    )
    return str(only_kit["id"])


async def _rest(env: McpEnv, case: Case) -> tuple[str | None, str | None]:
    body = {
        "workspaceId": env.workspace_id,
        "integrationName": "testkit",
        "integrationAlias": case.alias,
        "actionName": case.action,
        "input": case.input,
        **dict(case.rest_body),
    }
    response = await env.rest.post("/api/v1/actions/execute", json=body)
    answer = response.json()
    if response.status_code == 200 and answer["success"]:
        return None, None
    assert response.status_code >= 400, response.text
    return answer["error"], answer.get("field")


async def _mcp(client: Client, case: Case) -> tuple[str | None, str | None]:
    try:
        result = await client.call_tool(f"{case.alias}__{case.action}", case.input)
    except MCPError as error:
        return str(error.error.code), None
    if not result.is_error:
        return None, None
    fields = refusal_fields(result)
    return fields["error"], fields.get("field")


async def _new_records(env: McpEnv, source: str, before: int) -> list[tuple[Any, ...]]:
    entries = await env.activity(source=source, limit="200")
    fresh = entries[: len(entries) - before]  # newest first
    return [
        (e["source"], e["integrationAlias"], e["actionName"], e["status"], e["errorCode"])
        for e in fresh
    ]


def _record(source: str, case: Case, seen: Seen) -> list[tuple[Any, ...]]:
    if not seen.recorded:
        return []
    status = STATUS.get(seen.code, "refused")
    return [(source, case.alias, case.action, status, seen.code)]


@pytest.mark.parametrize("era", ERAS)
async def test_rest_and_mcp_answer_the_same_inputs_alike_and_record_them_alike(
    mcp_env: McpEnv, era: str
) -> None:
    picky_partial = await _configure(mcp_env)
    observed: dict[str, dict[str, Any]] = {}
    async with mcp_env.connect("memory", era) as client:
        for case in cases(picky_partial):
            rest_before = len(await mcp_env.activity(source="rest", limit="200"))
            mcp_before = len(await mcp_env.activity(source="mcp_tools", limit="200"))
            rest = await _rest(mcp_env, case)
            mcp = await _mcp(client, case)
            observed[case.name] = {
                "rest": rest,
                "mcp": mcp,
                "rest records": await _new_records(mcp_env, "rest", rest_before),
                "mcp records": await _new_records(mcp_env, "mcp_tools", mcp_before),
            }

    expected = {}
    for case in cases(picky_partial):
        mcp = case.mcp or case.rest
        expected[case.name] = {
            "rest": (case.rest.code, case.rest.field),
            "mcp": (mcp.code, mcp.field),
            "rest records": _record("rest", case, case.rest),
            "mcp records": _record("mcp_tools", case, mcp),
        }
    assert observed == expected


@pytest.mark.parametrize("era", ERAS)
async def test_a_refusal_only_mcp_makes_says_why_in_the_tool_result(
    mcp_env: McpEnv, era: str
) -> None:
    await _configure(mcp_env)
    async with mcp_env.connect("memory", era) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        disabled = refusal_fields(await client.call_tool("off__echo", HI))
        misconfigured = refusal_fields(await client.call_tool("picky__echo", HI))
        enforced = refusal_fields(
            await client.call_tool("locked__echo", {"text": "hi", "channel": "C-mine"})
        )

    # A disabled tool is not listed; one whose override is broken stays listed, so a caller
    # learns why it is refused instead of the tool vanishing (or running without the partial).
    assert "off__echo" not in names
    assert "picky__echo" in names
    assert disabled["reason"] == "disabled_by_server"
    assert misconfigured["reason"] == "server_override"
    assert enforced["reason"] == "enforced_key"
