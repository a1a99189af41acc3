"""Upstream MCP servers as integrations (issue 15): a real SDK server on loopback behind
treadle, its tools governed by the pipeline like a built-in's.

The upstream is `upstream_fixture.py` over streamable HTTP (in this process, an ephemeral
port) or over stdio (a subprocess the operator's allow-list names).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import ToolListChangedNotification

from treadle.catalog.upstream.sessions import SessionPool, Target, Unreachable, leaf_errors
from treadle.catalog.upstream.transport import STDIO_ALLOW_ENV
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime
from treadle.net.guard import BlockedDestination
from upstream_fixture import Upstream, http_app

from conftest import Api
from loopback import serve

pytestmark = pytest.mark.anyio

FIXTURE = str(Path(__file__).with_name("upstream_fixture.py"))


@dataclass
class Running:
    upstream: Upstream
    url: str


@pytest.fixture
async def upstream() -> AsyncIterator[Running]:
    state = Upstream()
    async with serve(http_app(state), lifespan="on", timeout_graceful_shutdown=1) as port:
        yield Running(state, f"http://127.0.0.1:{port}/mcp")


@pytest.fixture
async def guarded_upstream() -> AsyncIterator[Running]:
    state = Upstream()
    async with serve(
        http_app(state, {"token-of-alice", "token-of-bob", "catalog-token"}),
        lifespan="on",
        timeout_graceful_shutdown=1,
    ) as port:
        yield Running(state, f"http://127.0.0.1:{port}/mcp")


async def register(api: Api, url: str, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "fixture",
        "displayName": "Fixture server",
        "transport": {"type": "streamable_http", "url": url},
        "allowPrivateNetwork": True,
        **fields,
    }
    response = await api.post("/upstreams", body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["upstream"]
    return created


async def test_registering_an_upstream_imports_its_tools_with_their_schemas(
    api: Api, upstream: Running
) -> None:
    created = await register(api, upstream.url)
    assert created["health"]["connected"] is True
    assert created["health"]["toolCount"] == len(upstream.upstream.tools)
    assert created["health"]["protocolVersion"]
    assert created["id"].startswith("ups_")
    found = await api.get("/integrations/fixture")
    assert found.status_code == 200, found.text
    echo = found.json()["integration"]["actions"]["echo"]
    assert echo["displayName"] == "Echo"
    listed = (await api.get("/upstreams")).json()
    assert [u["name"] for u in listed["upstreams"]] == ["fixture"]
    assert (await api.get(f"/upstreams/{created['id']}")).json()["upstream"]["name"] == "fixture"


async def test_a_loopback_url_is_refused_unless_the_record_allows_private_networks(
    api: Api, upstream: Running
) -> None:
    refused = await api.post(
        "/upstreams",
        {"name": "fixture", "transport": {"type": "streamable_http", "url": upstream.url}},
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "VALIDATION_ERROR"
    assert refused.json()["reason"] == "destination_not_allowed"
    assert (await api.get("/upstreams")).json()["total"] == 0


async def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed(
    api: Api, upstream: Running
) -> None:
    by_name = upstream.url.replace("127.0.0.1", "localhost")
    refused = await api.post(
        "/upstreams", {"name": "fixture", "transport": {"type": "streamable_http", "url": by_name}}
    )
    assert refused.status_code == 400
    assert refused.json()["reason"] == "destination_not_allowed"


async def test_the_guard_checks_the_address_actually_connected_to(upstream: Running) -> None:
    # What registration cannot see (a name that resolves elsewhere later) the session's
    # outbound client refuses at connect time.
    pool = SessionPool(connect_timeout=10)
    target = Target(
        "ups_x", {"type": "streamable_http", "url": upstream.url}, allow_private_network=False
    )
    with pytest.raises(Unreachable) as refused:
        await pool.session(target)
    assert any(isinstance(e, BlockedDestination) for e in leaf_errors(refused.value.cause))
    await pool.close()
    assert upstream.upstream.calls == []


async def test_stdio_commands_come_only_from_the_operators_allow_list(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdio = {"type": "stdio", "command": sys.executable, "args": [FIXTURE, "stdio"]}
    refused = await api.post("/upstreams", {"name": "local", "transport": stdio})
    assert refused.status_code == 400
    assert refused.json()["reason"] == "stdio_not_allowed"
    monkeypatch.setenv(
        STDIO_ALLOW_ENV, json.dumps([{"command": sys.executable, "args": [FIXTURE, "stdio"]}])
    )
    other = {**stdio, "args": [FIXTURE, "stdio", "--extra"]}
    assert (await api.post("/upstreams", {"name": "local", "transport": other})).status_code == 400
    created = await api.post("/upstreams", {"name": "local", "transport": stdio})
    assert created.status_code == 201, created.text
    assert created.json()["upstream"]["health"]["connected"] is True
    await api.configure("local", integrationAlias="loc")
    ran = await api.execute(
        integrationName="local", actionName="echo", input={"text": "hi", "channel": "c"}
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["output"]["content"] == [{"type": "text", "text": "hi to c"}]


async def test_bad_bodies_are_refused_with_their_codes(api: Api, upstream: Running) -> None:
    bad = [
        {"name": "Bad Name", "transport": {"type": "streamable_http", "url": upstream.url}},
        {"name": "x", "transport": {"type": "ftp", "url": upstream.url}},
        {"name": "x", "transport": {"type": "streamable_http", "url": "file:///etc/passwd"}},
        {
            "name": "x",
            "transport": {"type": "streamable_http", "url": "http://u:p@example.com/mcp"},
        },
        {"name": "x", "transport": {"type": "streamable_http", "url": upstream.url}, "extra": 1},
    ]
    for body in bad:
        response = await api.post("/upstreams", body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "VALIDATION_ERROR"
    clash = await api.post(
        "/upstreams",
        {
            "name": "kv-store",
            "transport": {"type": "streamable_http", "url": upstream.url},
            "allowPrivateNetwork": True,
        },
    )
    assert clash.status_code == 409
    await register(api, upstream.url)
    again = await api.post(
        "/upstreams",
        {
            "name": "fixture",
            "transport": {"type": "streamable_http", "url": upstream.url},
            "allowPrivateNetwork": True,
        },
    )
    assert again.status_code == 409
    assert again.json()["error"] == "DUPLICATE"
    assert (await api.get("/upstreams/ups_nope")).status_code == 404


async def test_calls_run_through_the_pipeline_with_aliases_and_allowed_actions(
    api: Api, upstream: Running
) -> None:
    await register(api, upstream.url)
    await api.configure("fixture", integrationAlias="fx", allowedActions=["echo", "fail"])
    ran = await api.execute(
        integrationName="fixture",
        integrationAlias="fx",
        actionName="echo",
        input={"text": "hello", "channel": "general"},
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["output"]["content"] == [{"type": "text", "text": "hello to general"}]
    blocked = await api.execute(integrationName="fixture", actionName="whoami", input={})
    assert blocked.json()["error"] == "ACTION_NOT_ALLOWED"
    failed = await api.execute(integrationName="fixture", actionName="fail", input={})
    assert failed.status_code == 200, failed.text
    assert failed.json()["success"] is False
    assert "the widget broke" in failed.json()["output"]["error"]
    invalid = await api.execute(integrationName="fixture", actionName="echo", input={"text": 1})
    assert invalid.json()["error"] == "VALIDATION_ERROR"
    assert [name for name, _ in upstream.upstream.calls] == ["echo", "fail"]


async def test_an_enforced_partial_is_pruned_from_the_tool_and_enforced_on_the_call(
    api: Api, upstream: Running
) -> None:
    await register(api, upstream.url)
    await api.configure("fixture", integrationAlias="fx")
    partial = await api.post(
        "/partials",
        {
            "workspaceId": api.workspace_id,
            "integrationName": "fixture",
            "actionName": "echo",
            "name": "only general",
            "values": {"channel": "general"},
            "enforcedKeys": ["channel"],
            "isDefault": True,
        },
    )
    assert partial.status_code == 201, partial.text
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    async with Client(runtime.bound_face(binding).server, mode="legacy") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert "channel" not in tools["fx__echo"].input_schema["properties"]
        assert tools["fx__echo"].annotations is not None
        assert tools["fx__echo"].annotations.read_only_hint is True
        result = await client.call_tool("fx__echo", {"text": "hi"})
        assert result.content[0].text == "hi to general"  # type: ignore[union-attr]
        smuggled = await client.call_tool("fx__echo", {"text": "hi", "channel": "secret"})
        assert smuggled.is_error
    assert upstream.upstream.calls == [("echo", {"text": "hi", "channel": "general"})]


async def test_content_blocks_pass_through_unchanged(api: Api, upstream: Running) -> None:
    await register(api, upstream.url)
    await api.configure("fixture", integrationAlias="fx")
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    async with Client(runtime.bound_face(binding).server, mode="legacy") as client:
        result = await client.call_tool("fx__picture", {})
    kinds = [block.type for block in result.content]
    assert kinds == ["text", "image"]
    assert result.content[1].mime_type == "image/png"  # type: ignore[union-attr]


async def test_an_approval_gate_pauses_an_upstream_call_and_runs_it_once_after_approval(
    api: Api, upstream: Running
) -> None:
    await register(api, upstream.url)
    await api.configure("fixture", integrationAlias="fx")
    policy = await api.post(
        "/approval-policies",
        {
            "workspaceId": api.workspace_id,
            "name": "echo needs a person",
            "decision": "require_approval",
            "integrationNames": ["fixture"],
            "actionNames": ["echo"],
            "allowSelfApproval": True,
        },
    )
    assert policy.status_code == 201, policy.text
    echo = {"text": "refund", "channel": "billing"}
    paused = await api.execute(integrationName="fixture", actionName="echo", input=echo)
    assert paused.status_code == 202, paused.text
    assert upstream.upstream.calls == []
    approval = paused.json()["approval"]
    decided = await api.post(f"/approvals/{approval['id']}/approve", {})
    assert decided.status_code == 200, decided.text
    key = approval["retry"]["idempotencyKey"]
    ran = await api.execute(
        integrationName="fixture", actionName="echo", input=echo, idempotencyKey=key
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["output"]["content"] == [{"type": "text", "text": "refund to billing"}]
    again = await api.execute(
        integrationName="fixture", actionName="echo", input=echo, idempotencyKey=key
    )
    assert again.status_code == 200, again.text
    assert upstream.upstream.calls == [("echo", echo)]


async def test_each_end_user_s_bearer_reaches_the_upstream_never_another_s(
    api: Api, guarded_upstream: Running
) -> None:
    catalog = await api.post(
        "/connections",
        {
            "integrationName": "kv-store",
            "type": "bearer",
            "displayName": "catalog",
            "externalId": "catalog",
            "values": {"token": "catalog-token"},
        },
    )
    assert catalog.status_code == 201, catalog.text
    await register(
        api,
        guarded_upstream.url,
        auth={"type": "bearer", "connectionId": catalog.json()["connection"]["id"]},
    )
    await api.configure("fixture", integrationAlias="fx", connectionStrategy="per_user")
    for user, token in (("alice", "token-of-alice"), ("bob", "token-of-bob")):
        person = await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": user})
        assert person.status_code == 201, person.text
        made = await api.post(
            "/connections",
            {
                "integrationName": "fixture",
                "type": "bearer",
                "displayName": user,
                "externalId": f"conn-{user}",
                "workspaceId": api.workspace_id,
                "endUserId": user,
                "values": {"token": token},
            },
        )
        assert made.status_code == 201, made.text
    seen = {}
    for user in ("alice", "bob", "alice"):
        ran = await api.execute(
            integrationName="fixture", actionName="whoami", input={}, endUserId=user
        )
        assert ran.status_code == 200, ran.text
        seen.setdefault(user, set()).add(ran.json()["output"]["content"][0]["text"])
    # The answer quotes the token, which treadle scrubs from what it returns: the upstream's
    # own record of the calls says whose token arrived.
    assert seen == {"alice": {"Bearer [redacted]"}, "bob": {"Bearer [redacted]"}}
    arrived = [call for call in guarded_upstream.upstream.calls if call[0] == "whoami"]
    assert guarded_upstream.upstream.seen == [
        "Bearer token-of-alice",
        "Bearer token-of-bob",
        "Bearer token-of-alice",
    ]
    assert len(arrived) == 3
    nobody = await api.execute(
        integrationName="fixture", actionName="whoami", input={}, endUserId="carol"
    )
    assert nobody.json()["error"] == "CONNECTION_REQUIRED"


async def test_a_refused_token_is_a_connection_error(api: Api, guarded_upstream: Running) -> None:
    unauthenticated = await register(
        api, guarded_upstream.url, name="bare", auth={"type": "bearer"}
    )
    assert unauthenticated["health"]["connected"] is False
    assert "401" in unauthenticated["health"]["lastError"]
    catalog = await api.post(
        "/connections",
        {
            "integrationName": "kv-store",
            "type": "bearer",
            "displayName": "catalog",
            "externalId": "catalog",
            "values": {"token": "catalog-token"},
        },
    )
    await register(
        api,
        guarded_upstream.url,
        auth={"type": "bearer", "connectionId": catalog.json()["connection"]["id"]},
    )
    bad = await api.post(
        "/connections",
        {
            "integrationName": "fixture",
            "type": "bearer",
            "displayName": "bad",
            "externalId": "bad",
            "values": {"token": "wrong"},
        },
    )
    assert bad.status_code == 201, bad.text
    await api.configure(
        "fixture", integrationAlias="fx", connectionId=bad.json()["connection"]["id"]
    )
    ran = await api.execute(integrationName="fixture", actionName="whoami", input={})
    assert ran.json()["error"] == "CONNECTION_ERROR"


async def test_an_upstream_tool_list_change_reaches_treadle_s_clients(
    api: Api, upstream: Running
) -> None:
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    await register(api, upstream.url)
    await api.configure("fixture", integrationAlias="fx")
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    told = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            told.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.hub.run)
        tg.start_soon(api.gateway.federation.run)
        async with Client(
            runtime.bound_face(binding).server, mode="legacy", message_handler=on_message
        ) as client:
            await client.list_tools()
            await runtime.hub.remember(binding)
            added = await client.call_tool("fx__add_tool", {"name": "brand_new"})
            assert not added.is_error
            with anyio.fail_after(5):
                await told.wait()
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "fx__brand_new" in names
        tg.cancel_scope.cancel()


async def test_an_upstream_that_goes_down_fails_clearly_and_recovers(api: Api) -> None:
    state = Upstream()
    async with serve(http_app(state), lifespan="on", timeout_graceful_shutdown=1) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        await register(api, url)
        await api.configure("fixture", integrationAlias="fx")
        ok = await api.execute(
            integrationName="fixture", actionName="echo", input={"text": "a", "channel": "b"}
        )
        assert ok.status_code == 200, ok.text
    down = await api.execute(
        integrationName="fixture", actionName="echo", input={"text": "a", "channel": "b"}
    )
    assert down.status_code == 400
    assert down.json()["error"] == "ACTION_FAILED"
    assert down.json()["reason"] == "upstream_unreachable"
    upstream_id = (await api.get("/upstreams")).json()["upstreams"][0]["id"]
    health = (await api.post(f"/upstreams/{upstream_id}/refresh")).json()["upstream"]["health"]
    assert health["connected"] is False
    assert health["lastError"]
    assert health["toolCount"] == len(state.tools)  # the last good catalog stays
    # Back, on another port: the record follows the upstream's new address.
    async with serve(http_app(Upstream()), lifespan="on", timeout_graceful_shutdown=1) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        moved = await api.patch(
            f"/upstreams/{upstream_id}", {"transport": {"type": "streamable_http", "url": url}}
        )
        assert moved.json()["upstream"]["health"]["connected"] is True
        back = await api.execute(
            integrationName="fixture", actionName="echo", input={"text": "a", "channel": "b"}
        )
        assert back.status_code == 200, back.text


async def test_a_crashed_stdio_upstream_is_restarted_by_the_next_call(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        STDIO_ALLOW_ENV, json.dumps([{"command": sys.executable, "args": [FIXTURE, "stdio"]}])
    )
    stdio = {"type": "stdio", "command": sys.executable, "args": [FIXTURE, "stdio"]}
    assert (await api.post("/upstreams", {"name": "local", "transport": stdio})).status_code == 201
    await api.configure("local", integrationAlias="loc")
    crashed = await api.execute(integrationName="local", actionName="crash", input={})
    assert crashed.json()["error"] == "ACTION_FAILED"
    ran = await api.execute(
        integrationName="local", actionName="echo", input={"text": "x", "channel": "y"}
    )
    assert ran.status_code == 200, ran.text


async def test_a_failing_upstream_does_not_hide_the_other_tools(
    api: Api, upstream: Running
) -> None:
    await register(api, upstream.url)
    await api.configure("fixture", integrationAlias="fx")
    await api.configure("kv-store", integrationAlias="notes")
    dead = await api.post(
        "/upstreams",
        {
            "name": "dead",
            "transport": {"type": "streamable_http", "url": "http://127.0.0.1:9/mcp"},
            "allowPrivateNetwork": True,
        },
    )
    assert dead.status_code == 201, dead.text
    assert dead.json()["upstream"]["health"]["connected"] is False
    await api.configure("dead", integrationAlias="gone")
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    async with Client(runtime.bound_face(binding).server, mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert "fx__echo" in names
    assert "notes__put" in names


async def test_deleting_an_upstream_removes_its_integration(api: Api, upstream: Running) -> None:
    created = await register(api, upstream.url)
    deleted = await api.delete(f"/upstreams/{created['id']}")
    assert deleted.status_code == 200, deleted.text
    assert (await api.get("/integrations/fixture")).status_code == 404
    assert (await api.get(f"/upstreams/{created['id']}")).status_code == 404


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_progress_is_relayed_and_a_cancelled_call_is_cancelled_upstream(
    api: Api, upstream: Running, era: str
) -> None:
    await register(api, upstream.url)
    await api.configure("fixture", integrationAlias="fx")
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    reported: list[str | None] = []
    got_progress = anyio.Event()

    async def progress(done: float, total: float | None, message: str | None) -> None:
        reported.append(message)
        got_progress.set()

    async with Client(runtime.bound_face(binding).server, mode=era) as client:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await client.call_tool("fx__slow", {}, progress_callback=progress)

            tg.start_soon(call)
            with anyio.fail_after(10):
                await upstream.upstream.slow_started.wait()
                if era == "legacy":
                    await got_progress.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(10):
            await upstream.upstream.slow_cancelled.wait()
    if era == "legacy":
        assert "half way" in reported


@dataclass
class Counted:
    running: Running
    methods: list[str]


@pytest.fixture
async def counted_upstream() -> AsyncIterator[Counted]:
    """The fixture upstream, recording the JSON-RPC method of every POST it receives."""
    state = Upstream()
    inner = http_app(state)
    methods: list[str] = []

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await inner(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = json.loads(b"".join(chunks) or b"{}")
        methods.append(body.get("method", "-") if isinstance(body, dict) else "batch")
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await inner(scope, replay, send)

    async with serve(counting, lifespan="on", timeout_graceful_shutdown=1) as port:
        yield Counted(Running(state, f"http://127.0.0.1:{port}/mcp"), methods)


async def test_calls_reuse_one_session_and_send_one_request_each(
    api: Api, counted_upstream: Counted
) -> None:
    # The federation benchmark's premise: after a session's first call, a call is exactly
    # one `tools/call` upstream (no handshake, discover or tools/list per call).
    methods = counted_upstream.methods
    await register(api, counted_upstream.running.url)
    await api.configure("fixture", integrationAlias="fx")
    echo = {"text": "a", "channel": "b"}
    first = await api.execute(integrationName="fixture", actionName="echo", input=echo)
    assert first.status_code == 200, first.text
    before = len(methods)
    assert methods.count("tools/call") == 1  # the counter sees the upstream's traffic
    for _ in range(5):
        ran = await api.execute(integrationName="fixture", actionName="echo", input=echo)
        assert ran.status_code == 200, ran.text
    assert methods[before:] == ["tools/call"] * 5
    assert [name for name, _ in counted_upstream.running.upstream.calls] == ["echo"] * 6
