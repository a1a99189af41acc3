"""Auto-resync: configuration changes reach connected clients as tools/list_changed.

Clients are real SDK clients: handshake-era sessions (stdio, HTTP, in-memory) get
`notifications/tools/list_changed` through their message handler; 2026-07-28 clients hold a
`subscriptions/listen` stream open. Changes go through the REST API, either in the process that
serves the client (`treadle serve` for HTTP, the test process for memory) or in another process
(the test process for stdio and for HTTP's poll path).

"Nothing was sent" is proved without sleeping: a witness client on another server (or in
another workspace) is told about a change made *after* the no-op; the hub handles changes in
order, so by then it has also handled the no-op.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import Subscription
from mcp.types import Tool, ToolListChangedNotification
from sqlalchemy.exc import OperationalError

from treadle.catalog.model import Action, ActionContext, AuthKind, Integration
from treadle.mcp.binds import bind_server
from treadle.store.records import ConnectionStrategy

from mcp_harness import McpEnv, subprocess_env

pytestmark = pytest.mark.anyio

LEGACY = "legacy"
MODERN = "2026-07-28"
# Long enough for a loaded CI machine to show a real failure rather than a hang. How fast a
# change arrives (the "within a second" bound) is measured in bench/ (the resync case, p99
# over 50 clients, and across replicas), not here: a timed assertion on a shared 2-core CI
# machine fails on load, not on a defect. These tests print the latencies they see (`-s`).
WAIT_SECONDS = 5.0


@dataclass
class Watch:
    """The tools/list_changed one client receives, with arrival times (time.monotonic).

    `raw` counts every notification that reached the client (2026-07-28 listen frames are teed
    to the message handler too); `seen` is what the application observes: handler calls for a
    handshake client, events from `async for ev in sub` for a listen stream.
    """

    era: str
    raw: list[float] = field(default_factory=list)
    seen: list[float] = field(default_factory=list)
    faults: list[Exception] = field(default_factory=list)
    _moved: anyio.Event = field(default_factory=anyio.Event)

    async def on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.faults.append(message)
        elif isinstance(message, ToolListChangedNotification):
            self.raw.append(time.monotonic())
            if self.era == LEGACY:
                self._record()

    async def drain(self, sub: Subscription) -> None:
        async for _event in sub:
            self._record()

    def _record(self) -> None:
        self.seen.append(time.monotonic())
        self._moved.set()
        self._moved = anyio.Event()

    async def wait(self, count: int, seconds: float = WAIT_SECONDS) -> float:
        """When the `count`-th notification was seen (waits for it)."""
        with anyio.fail_after(seconds):
            while len(self.seen) < count:
                await self._moved.wait()
        return self.seen[count - 1]


@asynccontextmanager
async def open_client(
    env: McpEnv, transport: str, era: str, server_id: str, token: str, watch: Watch
) -> AsyncIterator[Client]:
    """A client of any MCP server record (the harness connects only to `env.server_id`)."""
    if transport == "memory":
        binding = await bind_server(env.runtime.gateway.store, server_id, None)
        face = env.runtime.bound_face(binding)
        async with Client(face.server, mode=era, message_handler=watch.on_message) as client:
            yield client
    elif transport == "http":
        assert env.serve is not None
        url = f"{env.serve.base_url}/mcp/{server_id}"
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http:
            connection = streamable_http_client(url, http_client=http)
            async with Client(connection, mode=era, message_handler=watch.on_message) as client:
                yield client
    else:
        assert server_id == env.server_id, "stdio connects through the harness"
        async with env.connect(transport, era, message_handler=watch.on_message) as client:
            yield client


@asynccontextmanager
async def watching(
    env: McpEnv,
    transport: str,
    era: str,
    server: tuple[str, str] | None = None,
) -> AsyncIterator[tuple[Client, Watch]]:
    """A connected client that is listening for list changes, and what it has seen so far."""
    if server is None:
        if not env.server_id:
            await env.create_server()
        server = (env.server_id, env.server_token)
    watch = Watch(era)
    async with open_client(env, transport, era, *server, watch) as client:
        # A handshake client is registered by its first messages. The round trip also gives
        # an HTTP client's standalone GET stream time to open: the SDK drops what the server
        # sends before it is up, so a change made in the same instant could go unheard.
        await client.list_tools()
        if era == LEGACY:
            yield client, watch
        else:
            async with (
                client.listen(tools_list_changed=True) as sub,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(watch.drain, sub)
                yield client, watch
                tg.cancel_scope.cancel()
    assert watch.faults == []


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def add_server(env: McpEnv, **fields: Any) -> tuple[str, str]:
    """Another MCP server record in the env's workspace: (id, token)."""
    body = {"workspaceId": env.workspace_id, "name": "another server", **fields}
    response = await env.rest.post("/api/v1/mcp/servers", json=body)
    assert response.status_code == 201, response.text
    return response.json()["server"]["id"], response.json()["token"]


async def send(
    rest: httpx2.AsyncClient, method: str, path: str, body: dict[str, Any] | None = None
) -> float:
    """A REST write; returns when it was sent, so `received - sent` bounds commit → receipt."""
    started = time.monotonic()
    response = await rest.request(method, f"/api/v1{path}", json=body)
    assert response.status_code in (200, 201), response.text
    return started


async def patch(rest: httpx2.AsyncClient, path: str, body: dict[str, Any]) -> float:
    return await send(rest, "PATCH", path, body)


@asynccontextmanager
async def changer(env: McpEnv, where: str) -> AsyncIterator[httpx2.AsyncClient]:
    """REST in the `treadle serve` process ("serve") or in the test process ("test")."""
    if where == "serve":
        async with env.remote_rest() as rest:
            yield rest
    else:
        yield env.rest


def integration_path(env: McpEnv, configured: dict[str, Any]) -> str:
    return f"/workspaces/{env.workspace_id}/integrations/{configured['id']}"


def record(label: str, seconds: float) -> None:
    """Measured latencies, for `pytest -s`."""
    print(f"latency {label}: {seconds * 1000:.0f} ms")


# -- the required test ------------------------------------------------------------

# (transport, era, where the REST change is made). "test": the test process, i.e. another
# process than stdio/serve (their hubs poll the database); "serve": the serve process itself.
CHANGE_PATHS = [
    pytest.param("stdio", LEGACY, "test", id="stdio-handshake"),
    pytest.param("stdio", MODERN, "test", id="stdio-listen"),
    pytest.param("http", LEGACY, "serve", id="http-handshake-same-process"),
    pytest.param("http", LEGACY, "test", id="http-handshake-other-process"),
    pytest.param("http", MODERN, "serve", id="http-listen-same-process"),
    pytest.param("http", MODERN, "test", id="http-listen-other-process"),
    pytest.param("memory", LEGACY, "test", id="memory-handshake"),
    pytest.param("memory", MODERN, "test", id="memory-listen"),
]


@pytest.mark.parametrize(("transport", "era", "where"), CHANGE_PATHS)
async def test_removing_an_allowed_action_tells_connected_clients(
    mcp_env: McpEnv, transport: str, era: str, where: str
) -> None:
    kit = await mcp_env.configure(
        "testkit", integrationAlias="kit", allowedActions=["echo", "crash"]
    )
    async with (
        watching(mcp_env, transport, era) as (client, watch),
        changer(mcp_env, where) as rest,
    ):
        assert await tool_names(client) == {"kit__echo", "kit__crash"}

        sent = await patch(rest, integration_path(mcp_env, kit), {"allowedActions": ["echo"]})
        told = await watch.wait(1)
        names = await tool_names(client)
        relisted = time.monotonic()

        record(f"{transport}/{era}/{where} notified", told - sent)
        record(f"{transport}/{era}/{where} relisted", relisted - sent)
        assert names == {"kit__echo"}
        assert relisted - sent < WAIT_SECONDS

        refused = await client.call_tool("kit__crash", {})
        assert refused.is_error
        assert refused.structured_content is not None
        assert refused.structured_content["error"] == "ACTION_NOT_ALLOWED"
        assert len(watch.seen) == 1


# -- which changes are told, and to whom --------------------------------------------------


@dataclass
class Elsewhere:
    """A workspace other than the env's, with `kit` configured and an MCP server on it."""

    workspace_id: str
    kit_path: str
    server: tuple[str, str]


async def elsewhere(env: McpEnv) -> Elsewhere:
    name = f"elsewhere-{uuid.uuid4().hex[:12]}"
    made = await env.rest.post("/api/v1/workspaces", json={"name": name})
    assert made.status_code == 201, made.text
    workspace_id = made.json()["workspace"]["id"]
    configured = await env.rest.post(
        f"/api/v1/workspaces/{workspace_id}/integrations",
        json={
            "integrationName": "testkit",
            "integrationAlias": "kit",
            "connectionStrategy": "fixed",
            "allowedActions": ["echo", "crash"],
        },
    )
    assert configured.status_code == 201, configured.text
    server = await env.rest.post(
        "/api/v1/mcp/servers", json={"workspaceId": workspace_id, "name": "elsewhere"}
    )
    assert server.status_code == 201, server.text
    return Elsewhere(
        workspace_id,
        f"/workspaces/{workspace_id}/integrations/{configured.json()['integration']['id']}",
        (server.json()["server"]["id"], server.json()["token"]),
    )


def echo_schema(tools: dict[str, Tool], name: str) -> dict[str, Any]:
    return tools[name].input_schema


async def tools_by_name(client: Client) -> dict[str, Tool]:
    return {tool.name: tool for tool in (await client.list_tools()).tools}


@pytest.mark.parametrize(
    ("transport", "era", "where"),
    [
        pytest.param("memory", LEGACY, "test", id="memory-handshake"),
        pytest.param("http", MODERN, "serve", id="http-listen-same-process"),
        pytest.param("stdio", LEGACY, "test", id="stdio-handshake-other-process"),
    ],
)
async def test_every_kind_of_tool_list_change_is_told(
    mcp_env: McpEnv, transport: str, era: str, where: str
) -> None:
    server_path = f"/mcp/servers/{await mcp_env.create_server()}"
    async with (
        watching(mcp_env, transport, era) as (client, watch),
        changer(mcp_env, where) as rest,
    ):
        assert await tools_by_name(client) == {}
        told = 0

        async def step(
            method: str, path: str, body: dict[str, Any] | None = None
        ) -> dict[str, Tool]:
            nonlocal told
            await send(rest, method, path, body)
            told += 1
            await watch.wait(told)
            return await tools_by_name(client)

        made = await rest.post(
            f"/api/v1/workspaces/{mcp_env.workspace_id}/integrations",
            json={
                "integrationName": "testkit",
                "integrationAlias": "kit",
                "connectionStrategy": "fixed",
                "allowedActions": ["echo"],
            },
        )
        assert made.status_code == 201, made.text
        told += 1
        await watch.wait(told)
        assert set(await tools_by_name(client)) == {"kit__echo"}
        kit = f"/workspaces/{mcp_env.workspace_id}/integrations/{made.json()['integration']['id']}"

        tools = await step("PATCH", kit, {"integrationAlias": "box"})
        assert set(tools) == {"box__echo"}
        tools = await step("PATCH", kit, {"allowedActions": ["echo", "crash"]})
        assert set(tools) == {"box__echo", "box__crash"}

        partial = await rest.post(
            "/api/v1/partials",
            json={
                "workspaceId": mcp_env.workspace_id,
                "integrationName": "testkit",
                "actionName": "echo",
                "name": "fixed channel",
                "values": {"channel": "C1"},
                "enforcedKeys": ["channel"],
                "isDefault": True,
            },
        )
        assert partial.status_code == 201, partial.text
        told += 1
        await watch.wait(told)
        assert "channel" not in echo_schema(await tools_by_name(client), "box__echo")["properties"]
        one = f"/partials/{partial.json()['partial']['id']}"

        tools = await step("PATCH", one, {"enforcedKeys": []})
        assert echo_schema(tools, "box__echo")["properties"]["channel"]["default"] == "C1"
        tools = await step("POST", f"{one}/set-default", {"isDefault": False})
        assert "default" not in echo_schema(tools, "box__echo")["properties"]["channel"]
        tools = await step("POST", f"{one}/set-default", {"isDefault": True})
        assert echo_schema(tools, "box__echo")["properties"]["channel"]["default"] == "C1"
        tools = await step("DELETE", one)
        assert "default" not in echo_schema(tools, "box__echo")["properties"]["channel"]

        override: dict[str, Any] = {
            "integrationAlias": "box",
            "actionName": "echo",
            "description": "Say it.",
        }
        tools = await step("PATCH", server_path, {"toolOverrides": [override]})
        assert tools["box__echo"].description == "Say it."

        # A partial only this server's override selects: deleting it changes the schema too.
        chosen = await rest.post(
            "/api/v1/partials",
            json={
                "workspaceId": mcp_env.workspace_id,
                "integrationName": "testkit",
                "actionName": "echo",
                "name": "chosen by the server",
                "values": {"channel": "C9"},
                "enforcedKeys": ["channel"],
            },
        )
        assert chosen.status_code == 201, chosen.text
        chosen_id = chosen.json()["partial"]["id"]
        chosen_override = {**override, "partialIds": [chosen_id]}
        tools = await step("PATCH", server_path, {"toolOverrides": [chosen_override]})
        assert "channel" not in echo_schema(tools, "box__echo")["properties"]
        tools = await step("DELETE", f"/partials/{chosen_id}")
        assert "channel" in echo_schema(tools, "box__echo")["properties"]

        hidden = {"integrationAlias": "box", "actionName": "crash", "enabled": False}
        tools = await step("PATCH", server_path, {"toolOverrides": [override, hidden]})
        assert set(tools) == {"box__echo"}

        tools = await step("DELETE", kit)
        assert tools == {}
        assert len(watch.seen) == told


@pytest.mark.parametrize(
    ("transport", "era", "where"),
    [
        pytest.param("memory", LEGACY, "test", id="memory-handshake"),
        pytest.param("memory", MODERN, "test", id="memory-listen"),
        pytest.param("http", LEGACY, "serve", id="http-handshake"),
        pytest.param("http", MODERN, "serve", id="http-listen"),
    ],
)
async def test_a_change_that_leaves_the_list_as_it_was_sends_nothing(
    mcp_env: McpEnv, transport: str, era: str, where: str
) -> None:
    kit = await mcp_env.configure(
        "testkit", integrationAlias="kit", allowedActions=["echo", "crash"]
    )
    await mcp_env.create_server()
    twin = await add_server(mcp_env)
    other = await elsewhere(mcp_env)
    hub = mcp_env.runtime.hub
    async with (
        # Connected first, so the hub looks at this server first in every pass.
        watching(mcp_env, transport, era) as (client, watch),
        watching(mcp_env, transport, LEGACY, twin) as (twin_client, twin_watch),
        watching(mcp_env, transport, LEGACY, other.server) as (_, other_watch),
        changer(mcp_env, where) as rest,
    ):
        before = hub.notifications_sent
        path = integration_path(mcp_env, kit)
        # Writes that bump the configuration version without changing what this server lists.
        await patch(rest, path, {"allowedActions": ["echo", "crash"]})
        await patch(rest, path, {"connectionStrategy": "per_user"})
        await send(
            rest,
            "POST",
            "/partials",
            {
                "workspaceId": mcp_env.workspace_id,
                "integrationName": "testkit",
                "actionName": "echo",
                "name": "not a default",
                "values": {"channel": "C2"},
            },
        )
        await send(
            rest,
            "POST",
            "/partials",
            {
                "workspaceId": mcp_env.workspace_id,
                "integrationName": "keyed",
                "name": "another integration",
                "values": {"note": "x"},
                "isDefault": True,
            },
        )
        # Witness: an override that changes only the twin server's list.
        hidden = {"integrationAlias": "kit", "actionName": "crash", "enabled": False}
        await patch(rest, f"/mcp/servers/{twin[0]}", {"toolOverrides": [hidden]})
        await twin_watch.wait(1)
        assert await tool_names(twin_client) == {"kit__echo"}
        assert watch.seen == []
        assert other_watch.seen == []
        if transport == "memory":
            assert hub.notifications_sent - before == 1

        # A real change: the first thing this client is told about. The twin already hides
        # crash, so its list stays as it was.
        changed = await patch(rest, path, {"allowedActions": ["echo"]})
        first = await watch.wait(1)
        assert first > changed
        assert await tool_names(client) == {"kit__echo"}

        # Closing witness, in another workspace: everything before it has been handled.
        await patch(rest, other.kit_path, {"allowedActions": ["echo"]})
        await other_watch.wait(1)
        assert len(watch.seen) == len(watch.raw) == 1
        assert len(twin_watch.seen) == 1
        if transport == "memory":
            assert hub.notifications_sent - before == 3


@pytest.mark.parametrize(
    ("transport", "era", "where"),
    [
        pytest.param("memory", LEGACY, "test", id="memory-handshake"),
        pytest.param("memory", MODERN, "test", id="memory-listen"),
        pytest.param("http", LEGACY, "serve", id="http-handshake-same-process"),
        pytest.param("http", MODERN, "test", id="http-listen-other-process"),
    ],
)
async def test_a_burst_of_twenty_changes_sends_few_notifications_and_ends_on_the_last_list(
    mcp_env: McpEnv, transport: str, era: str, where: str
) -> None:
    kit = await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    other = await elsewhere(mcp_env)
    hub = mcp_env.runtime.hub
    async with (
        watching(mcp_env, transport, era) as (client, watch),
        watching(mcp_env, transport, LEGACY, other.server) as (_, other_watch),
        changer(mcp_env, where) as rest,
    ):
        before = hub.notifications_sent
        path = integration_path(mcp_env, kit)
        started = time.monotonic()
        # Twenty writes at once. (One after another they may outlast the hub's bound on how
        # long it holds a notification back, 0.4 s, on a loaded machine: a second notice for
        # a burst that long is right, since the first change must be told within a second.)
        async with anyio.create_task_group() as tg:
            for index in range(1, 21):
                tg.start_soon(patch, rest, path, {"integrationAlias": f"kit{index}"})
        burst = time.monotonic() - started
        first = await watch.wait(1)
        record(f"burst {transport}/{era}/{where} took", burst)
        record(f"burst {transport}/{era}/{where} first notice after it began", first - started)

        # Closing witness: every pass the burst caused has been made and sent.
        await patch(rest, other.kit_path, {"allowedActions": ["echo"]})
        await other_watch.wait(1)
        final = (await rest.get(f"/api/v1{path}")).json()["integration"]["integrationAlias"]
        assert await tool_names(client) == {f"{final}__echo"}
        count = max(len(watch.raw), len(watch.seen))
        print(f"burst {transport}/{era}/{where}: {count} notification(s)")
        assert 1 <= count <= 3
        if transport == "memory":
            assert hub.notifications_sent - before == count + 1


@asynccontextmanager
async def listening_first(
    env: McpEnv, transport: str, era: str
) -> AsyncIterator[tuple[Client, Watch]]:
    """A client that starts listening before it lists, as 2026-07-28 clients re-listen and then
    refetch (a handshake client is registered by its first messages, before it lists too)."""
    watch = Watch(era)
    async with open_client(env, transport, era, env.server_id, env.server_token, watch) as client:
        if era == LEGACY:
            yield client, watch
        else:
            async with (
                client.listen(tools_list_changed=True) as sub,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(watch.drain, sub)
                yield client, watch
                tg.cancel_scope.cancel()
    assert watch.faults == []


@pytest.mark.parametrize(
    ("transport", "era", "where"),
    [
        pytest.param("http", LEGACY, "serve", id="http-handshake"),
        pytest.param("http", MODERN, "serve", id="http-listen"),
        pytest.param("memory", LEGACY, "test", id="memory-handshake"),
        pytest.param("memory", MODERN, "test", id="memory-listen"),
    ],
)
async def test_a_client_is_told_when_the_list_goes_back_to_one_it_never_saw(
    mcp_env: McpEnv, transport: str, era: str, where: str
) -> None:
    """L1 is told to a client; L2 lands while nobody is connected; a new client lists L2; the
    list goes back to L1. The tool-set cache still held L1 from before L2 (nobody listed in
    between), so a hub that takes the cache's latest list as what a new client holds sees
    L1 → L1 and stays silent, and the client keeps L2."""
    kit = await mcp_env.configure(
        "testkit", integrationAlias="kit", allowedActions=["echo", "crash"]
    )
    await mcp_env.create_server()
    other = await elsewhere(mcp_env)
    path = integration_path(mcp_env, kit)
    async with (
        changer(mcp_env, where) as rest,
        watching(mcp_env, transport, LEGACY, other.server) as (_, witness),
    ):
        async with watching(mcp_env, transport, era) as (first, told_first):
            await patch(rest, path, {"allowedActions": ["echo"]})
            await told_first.wait(1)
            assert await tool_names(first) == {"kit__echo"}

        await patch(rest, path, {"allowedActions": ["crash"]})
        # Witness in another workspace: the hub handles changes in order, so once it is told,
        # the change to L2 has been handled too (with nobody connected to this server).
        await patch(rest, other.kit_path, {"allowedActions": ["echo"]})
        await witness.wait(1)

        async with listening_first(mcp_env, transport, era) as (client, watch):
            assert await tool_names(client) == {"kit__crash"}
            await patch(rest, path, {"allowedActions": ["echo"]})
            await watch.wait(1)
            assert await tool_names(client) == {"kit__echo"}
            # Closing witness: nothing else was sent for this server.
            await patch(rest, other.kit_path, {"allowedActions": ["crash"]})
            await witness.wait(2)
            assert len(watch.seen) == 1


@pytest.mark.parametrize("transport", ["http"])
async def test_one_change_reaches_every_session_of_every_affected_server_in_every_process(
    mcp_env: McpEnv, transport: str
) -> None:
    kit = await mcp_env.configure(
        "testkit", integrationAlias="kit", allowedActions=["echo", "crash"]
    )
    await mcp_env.create_server()
    twin = await add_server(mcp_env)
    async with (
        watching(mcp_env, "http", LEGACY) as (_, http_handshake),
        watching(mcp_env, "http", MODERN) as (_, http_listen),
        watching(mcp_env, "http", LEGACY, twin) as (_, twin_handshake),
        watching(mcp_env, "http", MODERN, twin) as (_, twin_listen),
        watching(mcp_env, "memory", LEGACY) as (_, memory_handshake),
        watching(mcp_env, "memory", MODERN, twin) as (_, memory_listen),
        watching(mcp_env, "stdio", LEGACY) as (_, stdio_handshake),
    ):
        watches = {
            "http handshake": http_handshake,
            "http listen": http_listen,
            "http handshake, second server": twin_handshake,
            "http listen, second server": twin_listen,
            "memory handshake": memory_handshake,
            "memory listen, second server": memory_listen,
            "stdio handshake": stdio_handshake,
        }
        changed = await patch(
            mcp_env.rest, integration_path(mcp_env, kit), {"allowedActions": ["echo"]}
        )
        for label, watch in watches.items():
            received = await watch.wait(1)
            record(f"fan-out to {label}", received - changed)


async def test_a_workspace_wide_stdio_server_is_told_about_changes_made_elsewhere(
    mcp_env: McpEnv,
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "treadle", "stdio", "--workspace", mcp_env.workspace_id],
        env=subprocess_env(mcp_env.data_dir),
    )
    watch = Watch(LEGACY)
    async with Client(params, mode=LEGACY, message_handler=watch.on_message) as client:
        assert await tool_names(client) == {"kit__echo"}
        changed = time.monotonic()
        await mcp_env.configure("testkit", integrationAlias="box", allowedActions=["crash"])
        received = await watch.wait(1)
        record("stdio --workspace/handshake", received - changed)
        assert await tool_names(client) == {"kit__echo", "box__crash"}
    assert watch.faults == []


async def test_the_hub_keeps_watching_after_a_failed_database_read(
    mcp_env: McpEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A locked SQLite file or a dropped PostgreSQL connection must not end resync for the
    life of the process (the hub is one task in `treadle serve`'s lifespan)."""
    kit = await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    db = mcp_env.runtime.gateway.store.db
    real_version = db.config_version
    failed = anyio.Event()

    async def flaky_version() -> int:
        if not failed.is_set():
            failed.set()
            raise OperationalError("SELECT version", {}, Exception("database is locked"))
        return await real_version()

    async with watching(mcp_env, "memory", LEGACY) as (client, watch):
        monkeypatch.setattr(db, "config_version", flaky_version)
        with anyio.fail_after(WAIT_SECONDS):
            await failed.wait()
        await patch(mcp_env.rest, integration_path(mcp_env, kit), {"allowedActions": ["crash"]})
        await watch.wait(1)
        assert await tool_names(client) == {"kit__crash"}


async def test_a_pass_while_a_listen_stream_registers_leaves_it_nothing_to_be_told(
    mcp_env: McpEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the hub recording a listen stream's list and the stream subscribing, there are
    awaits (the version read is a round trip on PostgreSQL). A pass that runs then must
    neither forget the stream's entry nor leave it without its list: the next pass, with
    nothing changed, would tell the client its list changed (seen in CI on PostgreSQL)."""
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.create_server()
    hub = mcp_env.runtime.hub
    read_version = hub._version
    inside, go_on = anyio.Event(), anyio.Event()

    async def version_held_in_remember() -> int:
        # The registration's first version read waits here, whatever the database.
        if sys._getframe(1).f_code.co_name == "remember" and not inside.is_set():
            inside.set()
            await go_on.wait()
        return await read_version()

    watch = Watch(MODERN)
    server = (mcp_env.server_id, mcp_env.server_token)
    async with open_client(mcp_env, "memory", MODERN, *server, watch) as client:
        await client.list_tools()
        monkeypatch.setattr(hub, "_version", version_held_in_remember)
        subscribed = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def listen() -> None:
                async with client.listen(tools_list_changed=True) as sub:
                    subscribed.set()  # the server sent the ack: its listener is in place
                    await watch.drain(sub)

            tg.start_soon(listen)
            with anyio.fail_after(WAIT_SECONDS):
                await inside.wait()
            await hub.resync()  # the pass that lands while the stream registers
            go_on.set()
            with anyio.fail_after(WAIT_SECONDS):
                await subscribed.wait()
            before = hub.notifications_sent
            assert await hub.resync() == 0  # nothing changed since the client listed
            assert hub.notifications_sent == before
            tg.cancel_scope.cancel()
    assert watch.seen == []
    assert watch.faults == []


@pytest.mark.parametrize("era", [LEGACY, MODERN])
async def test_a_client_that_leaves_is_forgotten(mcp_env: McpEnv, era: str) -> None:
    kit = await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    hub = mcp_env.runtime.hub
    async with watching(mcp_env, "memory", era):
        assert mcp_env.server_id in hub.servers
    assert mcp_env.server_id not in hub.servers
    # Nobody is left to tell, so a change is not even looked at for this server.
    before = hub.notifications_sent
    await patch(mcp_env.rest, integration_path(mcp_env, kit), {"allowedActions": ["crash"]})
    assert await hub.resync() == 0
    assert hub.notifications_sent == before


async def _pong(_ctx: ActionContext, _data: dict[str, Any]) -> dict[str, Any]:
    return {"pong": True}


async def test_an_integration_added_to_the_catalog_notifies_servers_that_gain_tools(
    mcp_env: McpEnv,
) -> None:
    """A plugin registered while clients are connected: its configured alias gains tools."""
    store = mcp_env.runtime.gateway.store
    # The alias is configured before this process's catalog knows the integration (as when
    # another process with the plugin configured it): only the catalog change adds tools.
    async with store.db.write("test") as txn:
        await store.integrations.create(
            txn,
            org_id=mcp_env.org_id,
            workspace_id=mcp_env.workspace_id,
            integration_name="late-plugin",
            alias="late",
            strategy=ConnectionStrategy.FIXED,
            connection_id=None,
            allowed_actions=None,
            settings={},
        )
    late = Integration(
        name="late-plugin",
        display_name="Late",
        description="Registered at run time.",
        auth_kind=AuthKind.NONE,
        actions=(Action("ping", "Ping", "Ping.", {"type": "object", "properties": {}}, _pong),),
    )
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, ToolListChangedNotification):
            changed.set()

    async with mcp_env.connect("memory", "legacy", message_handler=on_message) as client:
        before = {t.name for t in (await client.list_tools()).tools}
        assert "late__ping" not in before
        mcp_env.runtime.gateway.catalog.add(late)
        with anyio.fail_after(2):
            await changed.wait()
        after = {t.name for t in (await client.list_tools()).tools}
        assert "late__ping" in after
