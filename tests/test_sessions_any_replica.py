"""A handshake-era MCP session opened through one replica continues on any other: two real
gateways (`treadle serve`'s app on uvicorn, loopback ports) on one database, no affinity.

The defect: the SDK's session manager keeps sessions in one process's memory, so a session
opened through A answered 404 "Session not found" on B behind any load balancer without
sticky routing. Its state is now sealed in its ID and its end recorded in the database.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from treadle.app import Gateway
from treadle.http_app import build_http_app
from treadle.mcp.http import McpEndpoint
from treadle.mcp.sealed_sessions import MAX_SESSION_ID_CHARS, SessionSeal, SessionState
from treadle.settings import McpSessionLimits, Settings

from conftest import Api, api_on
from loopback import serve

pytestmark = pytest.mark.anyio

HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
WAIT_SECONDS = 10.0
END_USER = "carol"


@dataclass
class Replica:
    gateway: Gateway
    endpoint: McpEndpoint
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class RoundRobin(httpx2.AsyncBaseTransport):
    """A load balancer without affinity: each request to the next replica in turn."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = ports
        self._turn = 0
        self._inner = httpx2.AsyncHTTPTransport()
        self.served: Counter[tuple[int, str]] = Counter()  # (port, method)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self._ports[self._turn % len(self._ports)]
        self._turn += 1
        self.served[(port, request.method)] += 1
        request.url = request.url.copy_with(port=port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Replicas:
    a: Replica
    b: Replica
    api: Api  # REST on A
    path: str  # the MCP server's endpoint path
    token: str  # its own mcp_… token
    http: httpx2.AsyncClient

    async def initialize(
        self, on: Replica, token: str | None = None, capabilities: dict[str, Any] | None = None
    ) -> str:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": HANDSHAKE,
                "capabilities": capabilities or {},
                "clientInfo": {"name": "probe", "version": "1"},
            },
        }
        opened = await self.http.post(
            on.base + self.path, json=body, headers=self._headers(token or self.token)
        )
        assert opened.status_code == 200, opened.text
        session_id: str = opened.headers["mcp-session-id"]
        initialized = await self.http.post(
            on.base + self.path,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers=self._headers(token or self.token, session_id),
        )
        assert initialized.status_code == 202, initialized.text
        return session_id

    async def initialize_for(self, on: Replica, path: str, end_user: str) -> str:
        """Opens a session with the org's API key, acting for `end_user`."""
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": HANDSHAKE,
                "capabilities": {},
                "clientInfo": {"name": "platform", "version": "1"},
            },
        }
        headers = {**self._headers(self.api.api_key), "X-Treadle-End-User": end_user}
        opened = await self.http.post(on.base + path, json=body, headers=headers)
        assert opened.status_code == 200, opened.text
        session_id: str = opened.headers["mcp-session-id"]
        return session_id

    async def rpc(
        self,
        on: Replica,
        session_id: str,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or {}}
        sent = await self.http.post(
            on.base + (path or self.path),
            json=body,
            headers={**self._headers(token or self.token, session_id), **(headers or {})},
        )
        return sent.status_code, _message(sent)

    async def delete(self, on: Replica, session_id: str) -> int:
        ended = await self.http.delete(
            on.base + self.path, headers=self._headers(self.token, session_id)
        )
        return ended.status_code

    @staticmethod
    def _headers(token: str, session_id: str | None = None) -> dict[str, str]:
        headers = {**ACCEPT, "Authorization": f"Bearer {token}"}
        if session_id is not None:
            headers["Mcp-Session-Id"] = session_id
            headers["MCP-Protocol-Version"] = HANDSHAKE
        return headers


def _message(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or single-event SSE response."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                found: dict[str, Any] = json.loads(line[5:])
                return found
        return {}
    return dict(response.json()) if response.content else {}


@asynccontextmanager
async def two_replicas(settings: Settings) -> AsyncIterator[Replicas]:
    async with AsyncExitStack() as stack:
        opened: list[Replica] = []
        for _ in range(2):
            # One database, one data dir: the secret key (and so the session seal) is shared.
            gateway = await Gateway.open(settings)
            stack.push_async_callback(gateway.close)
            app = build_http_app(gateway)
            port = await stack.enter_async_context(serve(app, lifespan="on"))
            opened.append(Replica(gateway, app.state.mcp_endpoint, port))
        a, b = opened
        api = await stack.enter_async_context(api_on(a.gateway))
        # kv-store keeps its state per end user: the server acts for one.
        made = await api.post(
            "/mcp/servers",
            {"workspaceId": api.workspace_id, "name": "anywhere", "endUserId": END_USER},
        )
        assert made.status_code == 201, made.text
        http = await stack.enter_async_context(httpx2.AsyncClient(timeout=WAIT_SECONDS))
        yield Replicas(a, b, api, f"/mcp/{made.json()['server']['id']}", made.json()["token"], http)


@pytest.fixture
async def replicas(settings: Settings) -> AsyncIterator[Replicas]:
    async with two_replicas(settings) as opened:
        yield opened


def tool_names(message: dict[str, Any]) -> list[str]:
    return sorted(tool["name"] for tool in message["result"]["tools"])


def not_found(status: int, message: dict[str, Any]) -> bool:
    # The SDK's own answer for a session it does not know: 404, JSON-RPC INVALID_REQUEST.
    return status == 404 and message["error"]["code"] == -32600


async def test_the_sdk_client_continues_its_session_on_both_replicas_in_turn(
    replicas: Replicas,
) -> None:
    await replicas.api.configure("kv-store", integrationAlias="notes")
    balancer = RoundRobin([replicas.a.port, replicas.b.port])
    url = f"http://127.0.0.1:{replicas.a.port}{replicas.path}"
    async with (
        httpx2.AsyncClient(
            transport=balancer,
            headers={"Authorization": f"Bearer {replicas.token}"},
            timeout=WAIT_SECONDS,
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        for round_number in range(4):
            listed = await client.list_tools()
            assert "notes__put" in [tool.name for tool in listed.tools]
            put = await client.call_tool(
                "notes__put", {"key": f"k{round_number}", "value": round_number}
            )
            assert not put.is_error, put
            got = await client.call_tool("notes__get", {"key": f"k{round_number}"})
            assert got.structured_content is not None
            assert got.structured_content["value"] == round_number
        # Both replicas served the session's requests (and now both hold it).
        assert balancer.served[(replicas.a.port, "POST")] >= 4
        assert balancer.served[(replicas.b.port, "POST")] >= 4
        assert replicas.a.endpoint.sessions.open_sessions() == 1
        assert replicas.b.endpoint.sessions.open_sessions() == 1


async def test_raw_requests_alternate_between_replicas(replicas: Replicas) -> None:
    session_id = await replicas.initialize(replicas.a)
    for on in (replicas.b, replicas.a, replicas.b, replicas.a):
        status, message = await replicas.rpc(on, session_id, "tools/list")
        assert status == 200, message
        assert tool_names(message) == []
    # What the client declared at initialize travelled with the session to B.
    status, message = await replicas.rpc(replicas.b, session_id, "ping")
    assert (status, message.get("result")) == (200, {})


async def test_a_2026_07_28_client_needs_no_session_on_either_replica(
    replicas: Replicas,
) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }
    for on in (replicas.a, replicas.b):
        listed = await replicas.http.post(
            on.base + replicas.path,
            json=body,
            headers={
                **ACCEPT,
                "Authorization": f"Bearer {replicas.token}",
                "MCP-Protocol-Version": MODERN,
                "Mcp-Method": "tools/list",
            },
        )
        assert listed.status_code == 200, listed.text
        assert "mcp-session-id" not in listed.headers
    assert replicas.a.endpoint.sessions.open_sessions() == 0
    assert replicas.b.endpoint.sessions.open_sessions() == 0


async def test_a_forged_or_altered_session_id_is_an_unknown_session(
    replicas: Replicas,
) -> None:
    session_id = await replicas.initialize(replicas.a)
    middle = len(session_id) // 2
    flipped = "A" if session_id[middle] != "A" else "B"
    altered = session_id[:middle] + flipped + session_id[middle + 1 :]
    state = SessionState(
        key=uuid.uuid4().hex,
        server_id=replicas.path.rsplit("/", 1)[1],
        principal=f"mcp_server:{replicas.path.rsplit('/', 1)[1]}",
        end_user_id=None,
        protocol_version=HANDSHAKE,
        capabilities={},
        client_info={"name": "forger", "version": "1"},
    )
    # Well formed, right fields, but sealed under another secret key (also what a
    # rotated key makes of every session opened before the rotation).
    foreign = SessionSeal(b"k" * 32).seal(state)
    for forged in (altered, foreign, "ts1.AAAA", uuid.uuid4().hex, session_id + "x"):
        for on in (replicas.a, replicas.b):
            status, message = await replicas.rpc(on, forged, "tools/list")
            assert not_found(status, message), (forged, status, message)
    assert replicas.b.endpoint.sessions.open_sessions() == 0
    status, _ = await replicas.rpc(replicas.b, session_id, "tools/list")
    assert status == 200


async def test_delete_through_a_ends_the_session_on_b_too(replicas: Replicas) -> None:
    session_id = await replicas.initialize(replicas.a)
    status, _ = await replicas.rpc(replicas.b, session_id, "tools/list")
    assert status == 200
    assert replicas.b.endpoint.sessions.open_sessions() == 1  # B serves it now

    assert await replicas.delete(replicas.a, session_id) == 200

    for on in (replicas.b, replicas.a):
        status, message = await replicas.rpc(on, session_id, "tools/list")
        assert not_found(status, message), (status, message)
    # B stopped serving its copy and gave its place in the counts back.
    assert replicas.b.endpoint.sessions.open_sessions() == 0
    assert replicas.a.endpoint.sessions.open_sessions() == 0
    assert await replicas.delete(replicas.b, session_id) == 404


async def test_delete_through_a_replica_that_never_served_the_session(
    replicas: Replicas,
) -> None:
    session_id = await replicas.initialize(replicas.a)
    assert await replicas.delete(replicas.b, session_id) == 200
    status, message = await replicas.rpc(replicas.a, session_id, "tools/list")
    assert not_found(status, message)
    assert replicas.a.endpoint.sessions.open_sessions() == 0
    assert replicas.b.endpoint.sessions.open_sessions() == 0


async def test_other_credentials_on_the_session_are_refused_on_every_replica(
    replicas: Replicas,
) -> None:
    session_id = await replicas.initialize(replicas.a)
    other = await replicas.api.post(
        "/mcp/servers", {"workspaceId": replicas.api.workspace_id, "name": "other"}
    )
    assert other.status_code == 201
    other_path = f"/mcp/{other.json()['server']['id']}"
    other_token = other.json()["token"]
    for on in (replicas.a, replicas.b):
        # Another principal of the same org (an API key allowed on the server).
        status, message = await replicas.rpc(
            on, session_id, "tools/list", token=replicas.api.api_key
        )
        assert not_found(status, message), (status, message)
        # Another MCP server, with its own valid token.
        status, message = await replicas.rpc(
            on, session_id, "tools/list", token=other_token, path=other_path
        )
        assert not_found(status, message), (status, message)

    # An API key acting for an end user: another end user on the same key is someone else.
    for_alice = await replicas.initialize_for(replicas.a, other_path, "alice")
    status, _ = await replicas.rpc(
        replicas.b,
        for_alice,
        "tools/list",
        token=replicas.api.api_key,
        path=other_path,
        headers={"X-Treadle-End-User": "alice"},
    )
    assert status == 200
    status, message = await replicas.rpc(
        replicas.b,
        for_alice,
        "tools/list",
        token=replicas.api.api_key,
        path=other_path,
        headers={"X-Treadle-End-User": "bob"},
    )
    assert not_found(status, message), (status, message)
    # The session's own credentials still work after all those refusals.
    status, _ = await replicas.rpc(replicas.b, session_id, "tools/list")
    assert status == 200


async def test_the_get_stream_on_b_hears_a_change_made_through_a(replicas: Replicas) -> None:
    session_id = await replicas.initialize(replicas.a)
    headers = {
        "Accept": "text/event-stream",
        "Authorization": f"Bearer {replicas.token}",
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": HANDSHAKE,
    }
    async with replicas.http.stream(
        "GET", replicas.b.base + replicas.path, headers=headers
    ) as stream:
        assert stream.status_code == 200
        # B restored the session for its stream alone: no other request reached it.
        assert replicas.b.endpoint.sessions.open_sessions() == 1
        await replicas.api.configure("kv-store", integrationAlias="notes")
        heard: list[str] = []
        with anyio.fail_after(WAIT_SECONDS):
            async for line in stream.aiter_lines():
                if line.startswith("data:") and line[5:].strip():
                    heard.append(json.loads(line[5:])["method"])
                    if "notifications/tools/list_changed" in heard:
                        break
    assert heard == ["notifications/tools/list_changed"]
    # And the list B serves now is the new one.
    status, message = await replicas.rpc(replicas.b, session_id, "tools/list")
    assert status == 200
    assert "notes__put" in tool_names(message)


async def test_an_approval_paused_on_a_and_retried_on_b_runs_once(replicas: Replicas) -> None:
    await replicas.api.configure("kv-store", integrationAlias="notes")
    policy = await replicas.api.post(
        "/approval-policies",
        {
            "workspaceId": replicas.api.workspace_id,
            "name": "lists need a person",
            "decision": "require_approval",
            "sources": ["mcp_tools"],
            "actionNames": ["add_to_list"],
        },
    )
    assert policy.status_code == 201, policy.text
    # A client without elicitation: the model is told to call again once approved.
    session_id = await replicas.initialize(replicas.a)
    call = {"name": "notes__add_to_list", "arguments": {"key": "todo", "value": "ship"}}
    status, paused = await replicas.rpc(replicas.a, session_id, "tools/call", call)
    assert status == 200, paused
    pending = paused["result"]["structuredContent"]
    assert pending["status"] == "approval_required"

    decided = await replicas.api.post(f"/approvals/{pending['approvalId']}/approve", {})
    assert decided.status_code == 200, decided.text

    status, ran = await replicas.rpc(replicas.b, session_id, "tools/call", call)
    assert status == 200, ran
    assert not ran["result"].get("isError"), ran
    assert ran["result"]["structuredContent"]["value"] == ["ship"]
    # The approval is used up: the same call again, on either replica, asks afresh.
    for on in (replicas.a, replicas.b):
        status, again = await replicas.rpc(on, session_id, "tools/call", call)
        assert again["result"]["structuredContent"]["status"] == "approval_required"
        assert again["result"]["structuredContent"]["approvalId"] != pending["approvalId"]
    listed = await replicas.api.execute(
        integrationName="kv-store",
        integrationAlias="notes",
        actionName="get",
        input={"key": "todo"},
        endUserId=END_USER,
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["output"]["value"] == ["ship"]


async def test_a_session_idle_on_every_replica_expires_on_every_replica(
    settings: Settings,
) -> None:
    idle = dataclasses.replace(settings, mcp_sessions=McpSessionLimits(idle_seconds=0.3))
    async with two_replicas(idle) as replicas:
        session_id = await replicas.initialize(replicas.a)
        with anyio.fail_after(WAIT_SECONDS):
            while replicas.a.endpoint.sessions.open_sessions() > 0:
                await replicas.a.endpoint.sessions.released()  # A let it go: idle
        # B never served it, and its shared clock says idle too: not restored.
        status, message = await replicas.rpc(replicas.b, session_id, "tools/list")
        assert not_found(status, message), (status, message)
        assert replicas.b.endpoint.sessions.open_sessions() == 0
        status, message = await replicas.rpc(replicas.a, session_id, "tools/list")
        assert not_found(status, message), (status, message)


async def test_an_outsized_declaration_still_gives_an_id_every_replica_opens(
    replicas: Replicas,
) -> None:
    # Incompressible, and far more than a header line should carry.
    capabilities = {"experimental": {"blob": {"data": os.urandom(8000).hex()}}, "roots": {}}
    session_id = await replicas.initialize(replicas.a, capabilities=capabilities)
    assert len(session_id) <= MAX_SESSION_ID_CHARS
    status, message = await replicas.rpc(replicas.b, session_id, "tools/list")
    assert status == 200, message


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The JSON-RPC messages of an SSE stream, as they arrive."""
    async for line in lines:
        if line.startswith("data:") and line[5:].strip():
            yield json.loads(line[5:])


# An answer past NOTIFY's 8000-byte payload limit travels in parts.
@pytest.mark.parametrize("padding", [0, 30_000])
async def test_an_elicitation_answered_on_b_completes_the_call_waiting_on_a_once(
    replicas: Replicas, padding: int
) -> None:
    if replicas.a.gateway.store.db.is_sqlite:
        pytest.skip(
            "two processes on one SQLite file share no channel to hand an answer on; "
            "several replicas need PostgreSQL (docs/deploy.md)"
        )
    await replicas.api.configure("kv-store", integrationAlias="notes")
    policy = await replicas.api.post(
        "/approval-policies",
        {
            "workspaceId": replicas.api.workspace_id,
            "name": "lists need a yes",
            "decision": "require_approval",
            "sources": ["mcp_tools"],
            "actionNames": ["add_to_list"],
            "allowSelfApproval": True,
        },
    )
    assert policy.status_code == 201, policy.text
    # A client that answers forms: the approval pause asks it over the open call.
    session_id = await replicas.initialize(replicas.a, capabilities={"elicitation": {"form": {}}})
    headers = Replicas._headers(replicas.token, session_id)
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "notes__add_to_list", "arguments": {"key": "todo", "value": "ship"}},
    }
    answers: list[int] = []
    with anyio.fail_after(WAIT_SECONDS):
        async with replicas.http.stream(
            "POST", replicas.a.base + replicas.path, json=call, headers=headers
        ) as stream:
            assert stream.status_code == 200
            async for message in _events(stream.aiter_lines()):
                if message.get("method") == "elicitation/create":
                    assert message["params"]["mode"] == "form"
                    # The answer lands on B, which holds nothing waiting for it.
                    answered = await replicas.http.post(
                        replicas.b.base + replicas.path,
                        json={
                            "jsonrpc": "2.0",
                            "id": message["id"],
                            "result": {
                                "action": "accept",
                                "content": {"approve": True},
                                "_meta": {"padding": "é" * padding},
                            },
                        },
                        headers=headers,
                    )
                    answers.append(answered.status_code)
                elif message.get("id") == 7:
                    result = message["result"]
                    break
    assert answers == [202]
    assert not result.get("isError"), result
    assert result["structuredContent"]["value"] == ["ship"]
    # Ran exactly once: the list holds the value once.
    listed = await replicas.api.execute(
        integrationName="kv-store",
        integrationAlias="notes",
        actionName="get",
        input={"key": "todo"},
        endUserId=END_USER,
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["output"]["value"] == ["ship"]
    # Nothing is left waiting on either replica.
    for replica in (replicas.a, replicas.b):
        assert replica.endpoint.manager.awaiting(session_id, str(7)) is None


async def test_an_answer_nobody_waits_for_is_accepted_and_changes_nothing(
    replicas: Replicas,
) -> None:
    session_id = await replicas.initialize(replicas.a)
    for on in (replicas.b, replicas.a):
        answered = await replicas.http.post(
            on.base + replicas.path,
            json={"jsonrpc": "2.0", "id": 99, "result": {}},
            headers=Replicas._headers(replicas.token, session_id),
        )
        assert answered.status_code == 202, answered.text
    status, message = await replicas.rpc(replicas.b, session_id, "ping")
    assert (status, message.get("result")) == (200, {})
