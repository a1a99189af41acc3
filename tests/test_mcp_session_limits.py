"""Handshake-era MCP sessions are bounded per principal, server, org and process, expire when
idle, and a `treadle serve` holding many of them (and their streams) stops promptly.

The defect: one `StreamableHTTPSessionManager` with the SDK's defaults (10,000 sessions, 30 min
idle) let one org's token open every session of the process, so another org's `initialize` got
503; a SIGTERM then waited for the sessions, and for as long as any client kept a stream open.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import SubscriptionLost

from treadle.app import Gateway
from treadle.http_app import build_http_app
from treadle.mcp.http import McpEndpoint
from treadle.settings import McpSessionLimits, Settings

from conftest import Api, api_on
from mcp_harness import ServeProcess, subprocess_env

pytestmark = pytest.mark.anyio

HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": HANDSHAKE,
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
MODERN_LIST = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/list",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    },
}


@dataclass
class Served:
    http: httpx2.AsyncClient  # the whole app, in process, lifespan entered
    endpoint: McpEndpoint
    api: Api

    async def server(self, api_key: str | None = None) -> tuple[str, str]:
        """A new MCP server of the key's org; returns its URL path and its token."""
        key = api_key or self.api.api_key
        workspaces = await self.http.get(
            "/api/v1/workspaces", headers={"Authorization": f"Bearer {key}"}
        )
        workspace_id = workspaces.json()["workspaces"][0]["id"]
        made = await self.http.post(
            "/api/v1/mcp/servers",
            json={"workspaceId": workspace_id, "name": f"s-{uuid.uuid4().hex[:6]}"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert made.status_code == 201, made.text
        return f"/mcp/{made.json()['server']['id']}", made.json()["token"]

    async def initialize(self, path: str, token: str) -> httpx2.Response:
        headers = {**ACCEPT, "Authorization": f"Bearer {token}"}
        return await self.http.post(path, content=json.dumps(INITIALIZE), headers=headers)

    async def open(self, path: str, token: str) -> str:
        opened = await self.initialize(path, token)
        assert opened.status_code == 200, opened.text
        session_id: str = opened.headers["mcp-session-id"]
        return session_id

    async def other_org_key(self) -> str:
        store = self.api.gateway.store
        async with store.db.write("test") as txn:
            org = await store.orgs.create(txn, f"other-{uuid.uuid4().hex[:8]}")
            await store.workspaces.create(txn, org.id, "default")
            _key, token = await store.api_keys.create(txn, org.id, name="other")
        return token


@asynccontextmanager
async def serving(settings: Settings, limits: McpSessionLimits) -> AsyncIterator[Served]:
    gateway = await Gateway.open(dataclasses.replace(settings, mcp_sessions=limits))
    try:
        async with api_on(gateway) as api:
            app = build_http_app(gateway)
            async with (
                app.router.lifespan_context(app),
                httpx2.AsyncClient(
                    transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8400"
                ) as http,
            ):
                yield Served(http, app.state.mcp_endpoint, api)
    finally:
        await gateway.close()


def refused_for(response: httpx2.Response, status: int, scope: str, limit: int) -> None:
    assert response.status_code == status, response.text
    assert "mcp-session-id" not in response.headers
    data = response.json()["error"]["data"]
    assert (data["error"], data["scope"], data["limit"]) == ("TOO_MANY_SESSIONS", scope, limit)


async def test_a_principal_over_its_limit_is_refused_while_other_principals_still_connect(
    settings: Settings,
) -> None:
    limits = McpSessionLimits(per_principal=2, per_server=10, per_org=10, total=10)
    async with serving(settings, limits) as served:
        path, token = await served.server()
        first = await served.open(path, token)
        await served.open(path, token)
        refused_for(await served.initialize(path, token), 429, "principal", 2)

        # Another org, another server's token, and an API key on the same server still connect.
        other_path, other_token = await served.server(await served.other_org_key())
        await served.open(other_path, other_token)
        _second_path, second_token = await served.server()
        await served.open(_second_path, second_token)
        await served.open(path, served.api.api_key)

        # The stateless 2026-07-28 era opens no session: the full principal still works.
        modern = await served.http.post(
            path,
            content=json.dumps(MODERN_LIST),
            headers={
                **ACCEPT,
                "Authorization": f"Bearer {token}",
                "MCP-Protocol-Version": MODERN,
                "Mcp-Method": "tools/list",
            },
        )
        assert modern.status_code == 200, modern.text
        assert "result" in modern.json()

        # Ending a session gives its place back.
        ended = await served.http.delete(
            path,
            headers={
                "Authorization": f"Bearer {token}",
                "Mcp-Session-Id": first,
                "MCP-Protocol-Version": HANDSHAKE,
            },
        )
        assert ended.status_code == 200, ended.text
        await served.open(path, token)


async def test_limits_per_server_org_and_process_name_the_limit_that_was_reached(
    settings: Settings,
) -> None:
    limits = McpSessionLimits(per_principal=5, per_server=2, per_org=3, total=4)
    async with serving(settings, limits) as served:
        path, token = await served.server()
        await served.open(path, token)
        await served.open(path, served.api.api_key)
        refused_for(await served.initialize(path, served.api.api_key), 429, "server", 2)

        other_path, other_token = await served.server()
        await served.open(other_path, other_token)
        refused_for(await served.initialize(other_path, other_token), 429, "org", 3)

        far_path, far_token = await served.server(await served.other_org_key())
        await served.open(far_path, far_token)
        # The process is full: a capacity refusal, not the caller's fault.
        refused_for(await served.initialize(far_path, far_token), 503, "total", 4)
        assert served.endpoint.sessions.open_sessions() == 4


async def test_an_idle_session_expires_and_gives_its_place_back(settings: Settings) -> None:
    limits = McpSessionLimits(per_principal=1, idle_seconds=0.2)
    async with serving(settings, limits) as served:
        path, token = await served.server()
        session_id = await served.open(path, token)
        ledger = served.endpoint.sessions
        with anyio.fail_after(10):
            while ledger.open_sessions() > 0:
                await ledger.released()
        expired = await served.http.post(
            path,
            content=json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
            headers={
                **ACCEPT,
                "Authorization": f"Bearer {token}",
                "Mcp-Session-Id": session_id,
                "MCP-Protocol-Version": HANDSHAKE,
            },
        )
        assert expired.status_code == 404
        await served.open(path, token)


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().mcp_sessions == McpSessionLimits()
    values = {
        "TREADLE_MCP_MAX_SESSIONS": "40",
        "TREADLE_MCP_MAX_SESSIONS_PER_ORG": "30",
        "TREADLE_MCP_MAX_SESSIONS_PER_SERVER": "20",
        "TREADLE_MCP_MAX_SESSIONS_PER_PRINCIPAL": "10",
        "TREADLE_MCP_SESSION_IDLE_SECONDS": "1.5",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env().mcp_sessions == McpSessionLimits(40, 30, 20, 10, 1.5)
    for wrong in ("0", "-1", "ten", "1.5"):
        monkeypatch.setenv("TREADLE_MCP_MAX_SESSIONS_PER_PRINCIPAL", wrong)
        with pytest.raises(SystemExit, match="TREADLE_MCP_MAX_SESSIONS_PER_PRINCIPAL"):
            Settings.from_env()


# -- shutdown -----------------------------------------------------------------------------------

SESSIONS = 200
GET_STREAMS = 10
LISTENERS = 2
EXIT_SECONDS = 5.0  # a correctness bound (the defect was minutes with a stream open), not speed


async def hold_get_stream(
    http: httpx2.AsyncClient, url: str, session_id: str, opened: anyio.Event
) -> None:
    headers = {
        "Accept": "text/event-stream",
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": HANDSHAKE,
    }
    ready = await http.post(url, json=INITIALIZED, headers={**headers, **ACCEPT})
    assert ready.status_code == 202, ready.text
    async with http.stream("GET", url, headers=headers) as stream:
        assert stream.status_code == 200
        opened.set()
        async for _chunk in stream.aiter_bytes():
            pass


async def hold_listen_stream(http: httpx2.AsyncClient, url: str, opened: anyio.Event) -> None:
    try:
        async with (
            Client(streamable_http_client(url, http_client=http), mode=MODERN) as client,
            client.listen(tools_list_changed=True) as subscription,
        ):
            opened.set()
            async for _event in subscription:
                pass
    except* SubscriptionLost:
        pass  # the server ended the stream as it stopped, as a dropped connection would


def start_serve(data_dir: Path) -> tuple[ServeProcess, dict[str, Any]]:
    made = subprocess.run(
        [sys.executable, "-m", "treadle", "init", "--json"],
        env=subprocess_env(data_dir),
        check=True,
        capture_output=True,
        text=True,
    )
    return ServeProcess.start(data_dir), json.loads(made.stdout)


async def test_serve_with_many_sessions_and_open_streams_exits_promptly_on_sigterm(
    tmp_path: Path,
) -> None:
    serve, first = start_serve(tmp_path / "data")
    try:
        auth = {"Authorization": f"Bearer {first['apiKey']}"}
        async with httpx2.AsyncClient(
            base_url=serve.base_url, headers=auth, timeout=httpx2.Timeout(30)
        ) as http:
            made = await http.post(
                "/api/v1/mcp/servers", json={"workspaceId": first["workspaceId"], "name": "s"}
            )
            assert made.status_code == 201, made.text
            url = f"{serve.base_url}/mcp/{made.json()['server']['id']}"
            session_ids: list[str] = []
            limiter = anyio.CapacityLimiter(16)

            async def open_one() -> None:
                async with limiter:
                    opened = await http.post(url, content=json.dumps(INITIALIZE), headers=ACCEPT)
                assert opened.status_code == 200, opened.text
                session_ids.append(opened.headers["mcp-session-id"])

            async with anyio.create_task_group() as opening:
                for _ in range(SESSIONS):
                    opening.start_soon(open_one)

            async with anyio.create_task_group() as streams:
                events = [anyio.Event() for _ in range(GET_STREAMS + LISTENERS)]
                for session_id, opened in zip(session_ids, events[:GET_STREAMS], strict=False):
                    streams.start_soon(hold_get_stream, http, url, session_id, opened)
                for opened in events[GET_STREAMS:]:
                    streams.start_soon(hold_listen_stream, http, url, opened)
                with anyio.fail_after(30):
                    for opened in events:
                        await opened.wait()

                serve.process.send_signal(signal.SIGTERM)
                exit_code = await anyio.to_thread.run_sync(serve.process.wait, EXIT_SECONDS)
                streams.cancel_scope.cancel()
        assert exit_code == 0
        log = "".join(serve.lines)
        assert "Traceback" not in log
        assert " ERROR " not in log
    finally:
        if serve.process.poll() is None:
            serve.process.kill()
            serve.process.wait()
