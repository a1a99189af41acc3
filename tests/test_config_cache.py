"""The configuration cache is never stale (store/config_cache.py, store/version_probe.py).

Two gateways open the same database file, as `treadle serve` and `treadle stdio` (or a CLI
command) do: A serves calls and fills its caches, B changes the configuration through its own
REST API or store. A's very next call must see the change, with no waiting and no event from
B: only the global configuration version in the database tells A its entries are stale.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
import sqlalchemy as sa
from mcp import Client

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.model import JSONObject
from treadle.http_app import build_http_app
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime
from treadle.settings import Settings
from treadle.store import Database, schema
from treadle.store.version_probe import VersionProbe

from conftest import Api, client_for
from databases import database_env, only_on_sqlite

pytestmark = pytest.mark.anyio

LEGACY = "legacy"
TOOL = "probe__echo"


async def _echo(ctx: ActionContext, data: JSONObject) -> Any:
    return dict(data)


def _action(name: str) -> Action:
    return Action(
        name=name,
        display_name=name,
        description=f"Test action {name}.",
        input_schema={
            "type": "object",
            "properties": {"n": {"type": "integer"}, "to": {"type": "string"}},
        },
        run=_echo,
    )


PROBE = Integration(
    name="probe",
    display_name="Probe",
    description="Test-only integration that echoes its input.",
    auth_kind=AuthKind.NONE,
    actions=(_action("echo"), _action("other")),
)


@dataclass
class Pair:
    """Two gateways on one database file: `a` serves calls, `b` changes the configuration."""

    a: Api
    b: Api
    integration_id: str  # the probe integration configured in the default workspace


@pytest.fixture
async def pair(settings: Settings) -> AsyncIterator[Pair]:
    async with AsyncExitStack() as stack:
        gateway_a = await Gateway.open(settings, catalog=Catalog([PROBE]))
        stack.push_async_callback(gateway_a.close)
        gateway_b = await Gateway.open(settings, catalog=Catalog([PROBE]))
        stack.push_async_callback(gateway_b.close)
        init = await initialise(gateway_a.store, settings.data_dir)
        assert init.api_key is not None
        apis = []
        for gateway in (gateway_a, gateway_b):
            client = await stack.enter_async_context(client_for(gateway, init.api_key))
            apis.append(Api(client, gateway, init.org_id, init.workspace_id, init.api_key))
        a, b = apis
        configured = await b.configure("probe")
        yield Pair(a, b, configured["id"])


async def echo(api: Api, **fields: Any) -> httpx2.Response:
    fields.setdefault("input", {"n": 1})
    return await api.execute(integrationName="probe", actionName="echo", **fields)


def error_code(response: httpx2.Response) -> str:
    code: str = response.json()["error"]
    return code


async def set_limits(api: Api, **limits: Any) -> None:
    store = api.gateway.store
    async with store.db.write("test") as txn:
        await store.orgs.set_limits(txn, api.org_id, **limits)


async def patch_integration(pair: Pair, **fields: Any) -> None:
    path = f"/workspaces/{pair.b.workspace_id}/integrations/{pair.integration_id}"
    response = await pair.b.patch(path, fields)
    assert response.status_code == 200, response.text


async def create_policy(pair: Pair, **fields: Any) -> None:
    body = {"name": "stop", "decision": "block", "workspaceId": pair.b.workspace_id, **fields}
    response = await pair.b.post("/approval-policies", body)
    assert response.status_code == 201, response.text


# -- REST: A's next call reflects what B changed ---------------------------------------------


async def _disallow(pair: Pair) -> None:
    await patch_integration(pair, allowedActions=["other"])


async def _remove_integration(pair: Pair) -> None:
    path = f"/workspaces/{pair.b.workspace_id}/integrations/{pair.integration_id}"
    assert (await pair.b.delete(path)).status_code == 200


async def _block(pair: Pair) -> None:
    await create_policy(pair)


async def _block_org_wide(pair: Pair) -> None:
    await create_policy(pair, workspaceId=None)


async def _rate_limit(pair: Pair) -> None:
    # A already made one call in this window: a limit of one leaves no room for the next.
    await set_limits(pair.b, rate_limit=1)


async def _quota(pair: Pair) -> None:
    await set_limits(pair.b, monthly_quota=1)


CHANGES: dict[str, tuple[Callable[[Pair], Awaitable[None]], int, str]] = {
    "action-disallowed": (_disallow, 403, "ACTION_NOT_ALLOWED"),
    "integration-removed": (_remove_integration, 400, "INTEGRATION_NOT_FOUND"),
    "block-policy": (_block, 403, "ACTION_BLOCKED"),
    "org-wide-block-policy": (_block_org_wide, 403, "ACTION_BLOCKED"),
    "org-rate-limit": (_rate_limit, 429, "RATE_LIMITED"),
    "org-monthly-quota": (_quota, 403, "QUOTA_EXCEEDED"),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_change_made_by_another_gateway_applies_to_the_very_next_call(
    pair: Pair, change: str
) -> None:
    make, status, code = CHANGES[change]
    assert (await echo(pair.a)).status_code == 200  # A has loaded (and cached) everything
    await make(pair)
    refused = await echo(pair.a)
    assert refused.status_code == status, refused.text
    assert error_code(refused) == code


async def test_undoing_a_change_in_another_gateway_applies_at_once_too(pair: Pair) -> None:
    assert (await echo(pair.a)).status_code == 200
    await patch_integration(pair, allowedActions=["other"])
    assert error_code(await echo(pair.a)) == "ACTION_NOT_ALLOWED"
    await patch_integration(pair, allowedActions=None)
    assert (await echo(pair.a)).status_code == 200


async def _enforced_recipient(pair: Pair) -> httpx2.Response:
    """B creates a default partial enforcing `to: first` on the probe integration."""
    created = await pair.b.post(
        "/partials",
        {
            "workspaceId": pair.b.workspace_id,
            "integrationName": "probe",
            "name": "recipient",
            "values": {"to": "first"},
            "enforcedKeys": ["to"],
            "isDefault": True,
        },
    )
    assert created.status_code == 201, created.text
    return created


async def test_a_partials_enforced_value_changed_elsewhere_is_used_at_once(pair: Pair) -> None:
    created = await _enforced_recipient(pair)
    partial_id = created.json()["partial"]["id"]
    first = await echo(pair.a)
    assert first.status_code == 200, first.text
    assert first.json()["output"] == {"n": 1, "to": "first"}

    changed = await pair.b.patch(f"/partials/{partial_id}", {"values": {"to": "second"}})
    assert changed.status_code == 200, changed.text
    assert (await echo(pair.a)).json()["output"] == {"n": 1, "to": "second"}

    assert (await pair.b.delete(f"/partials/{partial_id}")).status_code == 200
    assert (await echo(pair.a)).json()["output"] == {"n": 1}


async def test_a_workspace_deleted_elsewhere_is_gone_with_its_keys(pair: Pair) -> None:
    made = await pair.b.post("/workspaces", {"name": "short-lived"})
    assert made.status_code == 201, made.text
    workspace_id = made.json()["workspace"]["id"]
    store = pair.b.gateway.store
    async with store.db.write("test") as txn:
        _key, scoped = await store.api_keys.create(
            txn, pair.b.org_id, name="scoped", workspace_id=workspace_id
        )
    configured = await pair.b.post(
        f"/workspaces/{workspace_id}/integrations",
        {"integrationName": "probe", "connectionStrategy": "fixed"},
    )
    assert configured.status_code == 201, configured.text
    as_scoped = {"Authorization": f"Bearer {scoped}"}
    body = {"workspaceId": workspace_id, "integrationName": "probe", "actionName": "echo"}
    assert (await pair.a.post("/actions/execute", body)).status_code == 200
    assert (await pair.a.post("/actions/execute", body, headers=as_scoped)).status_code == 200

    assert (await pair.b.delete(f"/workspaces/{workspace_id}")).status_code == 200

    gone = await pair.a.post("/actions/execute", body)
    assert gone.status_code == 404, gone.text
    assert error_code(gone) == "NOT_FOUND"
    # The workspace's own key went with it, even though A had it cached.
    revoked = await pair.a.post("/actions/execute", body, headers=as_scoped)
    assert revoked.status_code == 401, revoked.text
    assert error_code(revoked) == "UNAUTHORIZED"
    # Nothing else was disturbed.
    assert (await echo(pair.a)).status_code == 200


async def test_a_key_created_elsewhere_works_at_once(pair: Pair) -> None:
    """Creating a key bumps no version: it works because unknown keys are never cached."""
    body = {"workspaceId": pair.a.workspace_id, "integrationName": "probe", "actionName": "echo"}

    async def echo_as(token: str) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return await pair.a.post("/actions/execute", body, headers=headers)

    assert (await echo(pair.a)).status_code == 200
    assert error_code(await echo_as("trd_not_a_key")) == "UNAUTHORIZED"
    store = pair.b.gateway.store
    async with store.db.write("test") as txn:
        _key, token = await store.api_keys.create(txn, pair.b.org_id, name="new")
    created = await echo_as(token)
    assert created.status_code == 200, created.text


async def test_raising_a_limit_elsewhere_lets_the_next_call_through(pair: Pair) -> None:
    await set_limits(pair.b, monthly_quota=1)
    assert (await echo(pair.a)).status_code == 200
    assert error_code(await echo(pair.a)) == "QUOTA_EXCEEDED"
    await set_limits(pair.b, monthly_quota=2)
    assert (await echo(pair.a)).status_code == 200
    assert error_code(await echo(pair.a)) == "QUOTA_EXCEEDED"


async def test_set_limits_bumps_the_configuration_version(pair: Pair) -> None:
    db = pair.a.gateway.store.db
    before = await db.config_version()
    await set_limits(pair.b, rate_limit=7)
    after = await db.config_version()
    assert after > before
    assert after == await db.version()  # the probe and the ordinary read agree


async def test_an_unrelated_change_keeps_the_cached_configuration_object(pair: Pair) -> None:
    """Derived caches (tool sets) key on identity: an unrelated bump must not replace it."""
    cache = pair.a.gateway.store.config
    first = await cache.workspace(pair.a.org_id, pair.a.workspace_id)
    made = await pair.b.post("/workspaces", {"name": "elsewhere"})
    assert made.status_code == 201
    again = await cache.workspace(pair.a.org_id, pair.a.workspace_id)
    assert again is first
    await patch_integration(pair, allowedActions=["echo"])
    changed = await cache.workspace(pair.a.org_id, pair.a.workspace_id)
    assert changed is not first
    assert changed is not None
    assert changed.integrations[0].allowed_actions == ("echo",)


# -- MCP: A's tools/list reflects what B changed ---------------------------------------------


@dataclass
class McpPair:
    pair: Pair
    runtime: McpRuntime
    server_id: str
    server_token: str


@pytest.fixture
async def mcp_pair(pair: Pair) -> AsyncIterator[McpPair]:
    created = await pair.b.post(
        "/mcp/servers", {"workspaceId": pair.b.workspace_id, "name": "cache test"}
    )
    assert created.status_code == 201, created.text
    runtime = McpRuntime(pair.a.gateway, poll_seconds=3600)  # no resync help: only the cache
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.hub.run)
        yield McpPair(pair, runtime, created.json()["server"]["id"], created.json()["token"])
        tg.cancel_scope.cancel()


async def test_tools_list_reflects_a_change_made_by_another_gateway(mcp_pair: McpPair) -> None:
    pair = mcp_pair.pair
    binding = await bind_server(mcp_pair.runtime.gateway.store, mcp_pair.server_id, None)
    face = mcp_pair.runtime.bound_face(binding)
    async with Client(face.server, mode=LEGACY) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"probe__echo", "probe__other"}

        await patch_integration(pair, allowedActions=["other"])
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"probe__other"}

        overrides = [{"integrationAlias": "probe", "actionName": "other", "enabled": False}]
        updated = await pair.b.patch(
            f"/mcp/servers/{mcp_pair.server_id}", {"toolOverrides": overrides}
        )
        assert updated.status_code == 200, updated.text
        assert (await client.list_tools()).tools == []

        await patch_integration(pair, allowedActions=None)
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"probe__echo"}


async def test_a_tool_call_reflects_a_partial_changed_by_another_gateway(
    mcp_pair: McpPair,
) -> None:
    pair = mcp_pair.pair
    created = await _enforced_recipient(pair)
    binding = await bind_server(mcp_pair.runtime.gateway.store, mcp_pair.server_id, None)
    face = mcp_pair.runtime.bound_face(binding)
    async with Client(face.server, mode=LEGACY) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert "to" not in tools[TOOL].input_schema.get("properties", {})
        first = await client.call_tool(TOOL, {"n": 2})
        assert not first.is_error
        assert first.structured_content == {"n": 2, "to": "first"}

        partial_id = created.json()["partial"]["id"]
        changed = await pair.b.patch(f"/partials/{partial_id}", {"values": {"to": "second"}})
        assert changed.status_code == 200, changed.text
        second = await client.call_tool(TOOL, {"n": 3})
        assert second.structured_content == {"n": 3, "to": "second"}


async def test_tools_list_is_empty_once_another_gateway_deleted_the_workspace(
    pair: Pair,
) -> None:
    made = await pair.b.post("/workspaces", {"name": "doomed"})
    workspace_id = made.json()["workspace"]["id"]
    configured = await pair.b.post(
        f"/workspaces/{workspace_id}/integrations",
        {"integrationName": "probe", "connectionStrategy": "fixed"},
    )
    assert configured.status_code == 201, configured.text
    created = await pair.b.post("/mcp/servers", {"workspaceId": workspace_id, "name": "doomed"})
    assert created.status_code == 201, created.text
    runtime = McpRuntime(pair.a.gateway, poll_seconds=3600)
    binding = await bind_server(pair.a.gateway.store, created.json()["server"]["id"], None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.hub.run)
        async with Client(runtime.bound_face(binding).server, mode=LEGACY) as client:
            assert len((await client.list_tools()).tools) == 2
            assert (await pair.b.delete(f"/workspaces/{workspace_id}")).status_code == 200
            assert (await client.list_tools()).tools == []
        tg.cancel_scope.cancel()


# The HTTP endpoint authenticates every request through the cache (server and token).

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "cache-test", "version": "1"},
    },
}


@dataclass
class Endpoint:
    """A's HTTP app with its lifespan running (session manager, hub, background writer)."""

    http: httpx2.AsyncClient

    async def post(
        self, server_id: str, token: str, message: dict[str, Any], **headers: str
    ) -> httpx2.Response:
        """One JSON-RPC message to the server's endpoint, as an MCP client sends it."""
        return await self.http.post(
            f"/mcp/{server_id}",
            content=json.dumps(message).encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
                **headers,
            },
        )

    async def initialize(self, server_id: str, token: str) -> int:
        return (await self.post(server_id, token, INITIALIZE)).status_code


@pytest.fixture
async def endpoint(pair: Pair) -> AsyncIterator[Endpoint]:
    app = build_http_app(pair.a.gateway, McpRuntime(pair.a.gateway, poll_seconds=3600))
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as http,
    ):
        yield Endpoint(http)


async def test_a_token_rotated_elsewhere_stops_working_at_once(
    mcp_pair: McpPair, endpoint: Endpoint
) -> None:
    pair = mcp_pair.pair
    assert await endpoint.initialize(mcp_pair.server_id, mcp_pair.server_token) == 200
    rotated = await pair.b.post(f"/mcp/servers/{mcp_pair.server_id}/rotate-token")
    assert rotated.status_code == 200, rotated.text
    assert await endpoint.initialize(mcp_pair.server_id, mcp_pair.server_token) == 401
    assert await endpoint.initialize(mcp_pair.server_id, rotated.json()["token"]) == 200


async def test_a_server_deleted_elsewhere_stops_answering_at_once(
    mcp_pair: McpPair, endpoint: Endpoint
) -> None:
    pair = mcp_pair.pair
    assert await endpoint.initialize(mcp_pair.server_id, mcp_pair.server_token) == 200
    assert await endpoint.initialize(mcp_pair.server_id, pair.a.api_key) == 200
    deleted = await pair.b.delete(f"/mcp/servers/{mcp_pair.server_id}")
    assert deleted.status_code == 200, deleted.text
    assert await endpoint.initialize(mcp_pair.server_id, mcp_pair.server_token) == 401
    assert await endpoint.initialize(mcp_pair.server_id, pair.a.api_key) == 401


# -- 2026-07-28 tool calls and REST executes at an assumed version ---------------------------
#
# Where the admission statement confirms the configuration version (PostgreSQL), A serves a
# call at the newest version it has seen, without reading it first: these check that a call
# still sees B's change exactly as a read would have, and counts and records once.

MODERN = "2026-07-28"


async def modern_call(
    endpoint: Endpoint, server_id: str, token: str, arguments: dict[str, Any]
) -> httpx2.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": TOOL,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    routing = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": TOOL}
    return await endpoint.post(server_id, token, body, **routing)


def tool_result(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def refusal_code(result: dict[str, Any]) -> str:
    """The error code a refused tool result starts with."""
    assert result.get("isError") is True, result
    text: str = result["content"][0]["text"]
    return text.split(":", 1)[0].split()[0]


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_2026_tool_call_reflects_a_change_made_by_another_gateway(
    mcp_pair: McpPair, endpoint: Endpoint, change: str
) -> None:
    make, _status, code = CHANGES[change]
    call = (mcp_pair.server_id, mcp_pair.server_token)
    first = tool_result(await modern_call(endpoint, *call, {"n": 1}))
    assert first.get("isError") is not True, first  # A has loaded (and cached) everything
    await make(mcp_pair.pair)
    after = await modern_call(endpoint, *call, {"n": 2})
    if change == "integration-removed":
        # Its tools are gone from the list: the name is unknown (a protocol error).
        assert after.status_code == 400, after.text
        assert after.json()["error"]["code"] == -32602
    else:
        assert refusal_code(tool_result(after)) == code


async def executions_of(api: Api) -> list[dict[str, Any]]:
    response = await api.get("/activity", params={"type": "action_execution", "limit": 100})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["activity"]
    return found


async def used_this_month(api: Api) -> int:
    rows = await api.gateway.store.db.query(
        sa.select(sa.func.coalesce(sa.func.sum(schema.usage_counters.c.count), 0)).where(
            schema.usage_counters.c.org_id == api.org_id
        )
    )
    return int(rows[0][0])


@pytest.mark.parametrize("face", ["rest", MODERN])
async def test_a_call_at_a_version_that_moved_runs_once_and_is_recorded_once(
    mcp_pair: McpPair, endpoint: Endpoint, face: str
) -> None:
    """A's last call saw the action disallowed; B allows it again. A's next call, at the
    version A saw last, is refused there, and only then finds the version moved: it runs at
    the new one, one activity record and one quota unit, no refusal recorded."""
    pair = mcp_pair.pair

    async def call(n: int) -> tuple[bool, str | None]:
        if face == "rest":
            response = await echo(pair.a, input={"n": n})
            return response.status_code == 200, None if response.is_success else error_code(
                response
            )
        result = tool_result(
            await modern_call(endpoint, mcp_pair.server_id, mcp_pair.server_token, {"n": n})
        )
        return result.get("isError") is not True, (
            refusal_code(result) if result.get("isError") else None
        )

    await patch_integration(pair, allowedActions=["other"])
    assert await call(1) == (False, "ACTION_NOT_ALLOWED")
    records, used = len(await executions_of(pair.a)), await used_this_month(pair.a)
    await patch_integration(pair, allowedActions=None)
    assert await call(2) == (True, None)
    after = await executions_of(pair.a)
    assert len(after) == records + 1
    assert after[0]["status"] == "succeeded"
    assert await used_this_month(pair.a) == used + 1


@pytest.mark.parametrize("face", ["rest", MODERN])
async def test_a_policy_removed_elsewhere_pauses_no_call_at_the_old_version(
    mcp_pair: McpPair, endpoint: Endpoint, face: str
) -> None:
    """A policy at the version A saw last would pause the call (a write: an approval): A
    confirms the version before asking it, and runs the call at the new one instead."""
    pair = mcp_pair.pair

    async def call(n: int) -> Any:
        if face == "rest":
            return (await echo(pair.a, input={"n": n})).status_code
        made = await modern_call(endpoint, mcp_pair.server_id, mcp_pair.server_token, {"n": n})
        return tool_result(made).get("structuredContent")

    async def approvals() -> int:
        listed = await pair.a.get("/approvals")
        assert listed.status_code == 200, listed.text
        return len(listed.json()["approvals"])

    created = await pair.b.post(
        "/approval-policies",
        {"name": "ask", "decision": "require_approval", "workspaceId": pair.b.workspace_id},
    )
    assert created.status_code == 201, created.text
    assert await call(1) != (200 if face == "rest" else {"n": 1})  # paused
    waiting = await approvals()
    assert waiting == 1
    policy_id = created.json()["policy"]["id"]
    assert (await pair.b.delete(f"/approval-policies/{policy_id}")).status_code == 200
    assert await call(2) == (200 if face == "rest" else {"n": 2})
    assert await approvals() == waiting


async def test_a_2026_call_whose_token_was_rotated_elsewhere_does_not_run(
    mcp_pair: McpPair, endpoint: Endpoint
) -> None:
    pair = mcp_pair.pair
    old = mcp_pair.server_token
    assert tool_result(await modern_call(endpoint, mcp_pair.server_id, old, {"n": 1}))
    records = len(await executions_of(pair.a))
    rotated = await pair.b.post(f"/mcp/servers/{mcp_pair.server_id}/rotate-token")
    assert rotated.status_code == 200, rotated.text
    refused = await modern_call(endpoint, mcp_pair.server_id, old, {"n": 2})
    # Refused before the call is counted: 401 when A read the version first (SQLite), a
    # JSON-RPC error when it assumed it and the admission statement found it moved.
    if refused.status_code != 401:
        assert refused.json()["error"]["code"] == -32600, refused.text
    assert len(await executions_of(pair.a)) == records
    new = rotated.json()["token"]
    assert tool_result(await modern_call(endpoint, mcp_pair.server_id, new, {"n": 3}))
    assert len(await executions_of(pair.a)) == records + 1


# -- the version probe and its fallback ------------------------------------------------------


# The probe is how SQLite answers without a thread hop; PostgreSQL reads per request for now.
PROBE_IS_SQLITE = only_on_sqlite("the version probe reads the SQLite file itself")


def database_path(settings: Settings) -> Path:
    return settings.data_dir / "treadle.db"


@PROBE_IS_SQLITE
async def test_the_probe_reads_what_another_connection_committed(pair: Pair) -> None:
    db = pair.a.gateway.store.db
    seen = await db.config_version()
    # A plain sqlite3 writer, as another program would be: no SQLAlchemy, no events.
    path = database_path(pair.a.gateway.settings)
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("UPDATE config_versions SET version = version + 5 WHERE scope = '*'")
    finally:
        raw.close()
    assert await db.config_version() == seen + 5


def test_a_probe_that_cannot_open_its_file_answers_none(tmp_path: Path) -> None:
    probe = VersionProbe(str(tmp_path / "no-such-directory" / "treadle.db"))
    try:
        assert probe.read() is None
        assert probe.read() is None  # and keeps answering, without raising
    finally:
        probe.close()


def test_a_probe_on_a_file_without_the_table_answers_none(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).close()
    probe = VersionProbe(str(path))
    try:
        assert probe.read() is None
    finally:
        probe.close()


async def test_no_probe_for_databases_that_are_not_a_plain_file(tmp_path: Path) -> None:
    db = await Database.open(f"sqlite+aiosqlite:///file:{tmp_path / 'uri.db'}?uri=true")
    try:
        assert db._probe is None
        assert await db.config_version() == await db.version()
    finally:
        await db.close()


def break_probe(db: Database, tmp_path: Path) -> None:
    """Point the probe at a file it cannot open: every read fails, as if it were locked.

    (A real SQLITE_BUSY cannot be forced on a WAL reader from outside: no connection gets an
    exclusive lock while the gateway's own connections are open.)"""
    if db._probe is not None:
        db._probe.close()
    db._probe = VersionProbe(str(tmp_path / "no-such-directory" / "treadle.db"))


async def test_with_a_failing_probe_every_answer_is_still_exact(pair: Pair, tmp_path: Path) -> None:
    break_probe(pair.a.gateway.store.db, tmp_path)
    assert (await echo(pair.a)).status_code == 200
    await patch_integration(pair, allowedActions=["other"])
    assert error_code(await echo(pair.a)) == "ACTION_NOT_ALLOWED"
    await set_limits(pair.b, rate_limit=1)
    await patch_integration(pair, allowedActions=None)
    assert error_code(await echo(pair.a)) == "RATE_LIMITED"
    db = pair.a.gateway.store.db
    assert await db.config_version() == await db.version()


@PROBE_IS_SQLITE
async def test_a_probe_whose_connection_broke_falls_back_then_reconnects(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    db = pair.a.gateway.store.db
    assert (await echo(pair.a)).status_code == 200
    probe = db._probe
    assert probe is not None
    assert probe._conn is not None
    probe._conn.close()  # closed underneath it: the next read raises sqlite3.ProgrammingError
    await patch_integration(pair, allowedActions=["other"])
    with caplog.at_level(logging.DEBUG, logger="treadle.store.version_probe"):
        refused = await echo(pair.a)
    assert error_code(refused) == "ACTION_NOT_ALLOWED"
    assert any(r.name == "treadle.store.version_probe" for r in caplog.records)
    # The next read reconnects and the probe answers again.
    assert probe.read() == await db.version()
    assert probe._conn is not None


# -- `treadle org limits` from another process ------------------------------------------------


def treadle_command() -> list[str]:
    script = Path(sys.executable).with_name("treadle")
    return [str(script)] if script.exists() else [sys.executable, "-m", "treadle"]


def cli_environment(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TREADLE_")}
    env["TREADLE_DATA_DIR"] = str(data_dir)
    env.update(database_env(data_dir))
    return env


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Api]:
    """A gateway running as `treadle serve` runs it: the app's lifespan (background writer,
    MCP session manager, resync hub) around the REST API."""
    gateway = await Gateway.open(settings, catalog=Catalog([PROBE]))
    try:
        init = await initialise(gateway.store, settings.data_dir)
        assert init.api_key is not None
        app = build_http_app(gateway)
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app),
                base_url="http://treadle.test",
                headers={"Authorization": f"Bearer {init.api_key}"},
            ) as client,
        ):
            api = Api(client, gateway, init.org_id, init.workspace_id, init.api_key)
            await api.configure("probe")
            yield api
    finally:
        await gateway.close()


@pytest.mark.parametrize(
    ("flag", "status", "code"),
    [("--rate-limit", 429, "RATE_LIMITED"), ("--monthly-quota", 403, "QUOTA_EXCEEDED")],
)
async def test_treadle_org_limits_applies_to_a_running_gateways_next_call(
    served: Api, flag: str, status: int, code: str
) -> None:
    with anyio.fail_after(5):  # the writer runs, as under `treadle serve`
        while not served.gateway.store.ledger.running:
            await anyio.lowlevel.checkpoint()
    assert (await echo(served)).status_code == 200
    data_dir = served.gateway.settings.data_dir
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [*treadle_command(), "org", "limits", flag, "1"], env=cli_environment(data_dir)
        )
    shown = json.loads(done.stdout)
    assert shown["rateLimit" if flag == "--rate-limit" else "monthlyQuota"] == 1
    refused = await echo(served)
    assert refused.status_code == status, refused.text
    assert error_code(refused) == code
