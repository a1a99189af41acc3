"""What one call costs in work, not time: one query for a connection and its secret, one
encoding of the output, an approval key only where a policy may pause the call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx2
import pytest
import sqlalchemy as sa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from test_execute_connections import KEYED, OPEN, SECRETS, connect, used, whoami
from treadle.app import Gateway
from treadle.catalog import Catalog
from treadle.http_app import build_http_app
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime
from treadle.mcp.toolset import build_toolset
from treadle.settings import Settings
from treadle.store import Database

import loopback
import testkit_integrations
from conftest import Api, api_on, open_api
from mcp_harness import test_catalog as kit_catalog

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with open_api(settings, Catalog([KEYED, OPEN])) as configured:
        yield configured


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine.sync_engine, "before_cursor_execute", record)


def reading_connections(seen: list[str]) -> list[str]:
    return [s for s in seen if s.lstrip().upper().startswith("SELECT") and "connections" in s]


async def test_a_call_reads_its_connection_and_secret_in_one_query(api: Api) -> None:
    team = await connect(api, "team")
    await api.configure("keyed", connectionStrategy="fixed", connectionId=team["id"])
    assert used(await whoami(api)) == "conn_team"  # warm: configuration cached
    with statements(api.gateway.store.db) as seen:
        assert used(await whoami(api)) == "conn_team"
    assert len(reading_connections(seen)) == 1, reading_connections(seen)


async def test_a_per_user_call_reads_its_connection_and_secret_in_one_query(api: Api) -> None:
    created = await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": "alice"})
    assert created.status_code == 201, created.text
    await connect(api, "alice", end_user="alice")
    await api.configure("keyed", connectionStrategy="per_user")
    assert used(await whoami(api, endUserId="alice")) == "conn_alice"
    with statements(api.gateway.store.db) as seen:
        assert used(await whoami(api, endUserId="alice")) == "conn_alice"
    assert len(reading_connections(seen)) == 1, reading_connections(seen)


async def test_a_listed_connection_carries_no_secret(api: Api) -> None:
    await connect(api, "team")
    listed = await api.gateway.store.connections.list(api.org_id, api.workspace_id, None)
    assert [c.sealed_secret for c in listed] == [None]
    response = await api.get("/connections", params={"workspaceId": api.workspace_id})
    assert response.status_code == 200, response.text
    assert SECRETS["team"] not in response.text


async def test_the_tool_text_is_the_outputs_one_compact_encoding(api: Api) -> None:
    await api.configure("open", integrationAlias="open")
    created = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    assert created.status_code == 201, created.text
    runtime = McpRuntime(api.gateway)
    binding = await bind_server(api.gateway.store, created.json()["server"]["id"], None)
    async with Client(runtime.bound_face(binding).server, mode="2026-07-28") as client:
        result = await client.call_tool("open__whoami", {})
    assert not result.is_error
    (block,) = result.content
    text = getattr(block, "text", None)
    assert text == json.dumps(result.structured_content, separators=(",", ":"))
    assert json.loads(text) == {"connection": None}


async def test_only_a_tool_a_policy_may_pause_needs_an_approval_key(api: Api) -> None:
    await api.configure("open", integrationAlias="open")
    await api.configure("keyed", integrationAlias="keyed", connectionStrategy="per_user")
    made = await api.post(
        "/approval-policies",
        {
            "name": "ask first",
            "decision": "require_approval",
            "workspaceId": api.workspace_id,
            "integrationNames": ["keyed"],
        },
    )
    assert made.status_code == 201, made.text
    config = await api.gateway.store.config.workspace(api.org_id, api.workspace_id)
    assert config is not None
    toolset = build_toolset(
        api.gateway.catalog, None, list(config.integrations), list(config.partials), config.policies
    )
    assert {name: t.may_pause for name, t in toolset.targets.items()} == {
        "open__whoami": False,
        "keyed__whoami": True,
    }


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_an_http_client_that_asked_for_progress_gets_it(settings: Settings, era: str) -> None:
    """Calls start the progress reporter only when they carry a progress token; over HTTP
    the token is on the wire, in both eras."""
    release = testkit_integrations.release["event"] = anyio.Event()
    gateway = await Gateway.open(settings, catalog=kit_catalog())
    try:
        async with api_on(gateway) as api:
            await api.post(
                f"/workspaces/{api.workspace_id}/integrations",
                {
                    "integrationName": "testkit",
                    "integrationAlias": "kit",
                    "connectionStrategy": "fixed",
                },
            )
            made = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "p"})
            assert made.status_code == 201, made.text
            server_id, token = made.json()["server"]["id"], made.json()["token"]
            app = build_http_app(gateway, McpRuntime(gateway, progress_seconds=0.05))
            seen: list[float] = []
            enough = anyio.Event()

            async def on_progress(progress: float, _total: float | None, _msg: str | None) -> None:
                seen.append(progress)
                if len(seen) >= 2:
                    enough.set()

            async with loopback.serve(app, lifespan="on") as port:
                headers = {"Authorization": f"Bearer {token}"}
                url = f"http://127.0.0.1:{port}/mcp/{server_id}"
                async with (
                    httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http,
                    Client(streamable_http_client(url, http_client=http), mode=era) as client,
                    anyio.create_task_group() as tg,
                ):
                    results: list[Any] = []

                    async def call() -> None:
                        results.append(
                            await client.call_tool("kit__wait", {}, progress_callback=on_progress)
                        )

                    tg.start_soon(call)
                    with anyio.fail_after(10):
                        await enough.wait()
                    release.set()
            assert len(results) == 1
            assert not results[0].is_error
            assert seen == sorted(seen)
            assert all(p > 0 for p in seen)
    finally:
        await gateway.close()
