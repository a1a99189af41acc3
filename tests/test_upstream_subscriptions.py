"""Resource subscriptions relayed to upstreams, and an upstream offered under its own names.

The upstream is `conformance/fixture_upstream.py` (the conformance suite's content server)
on loopback, spoken to by treadle in the 2026-07-28 era or, behind `HandshakeOnly`, in the
handshake era; treadle's own clients speak either era too.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
import uvicorn
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp.types import (
    PromptReference,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    TextResourceContents,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from conformance.fixture_upstream import (
    STATIC_TEXT,
    WATCHED,
    ContentUpstream,
    HandshakeOnly,
    http_app,
)
from test_upstream_content import capabilities, face_of, register
from test_upstream_everything import EVERYTHING, NODE, everything, everything_http  # noqa: F401
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime
from upstream_fixture import Upstream as PlainUpstream
from upstream_fixture import http_app as plain_app

from conftest import Api
from loopback import _Server as LoopbackServer
from loopback import serve
from mcp_harness import McpEnv

pytestmark = [
    pytest.mark.anyio,
    # resources/subscribe is the handshake era's, deprecated by the SDK for 2026-07-28.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

ERAS = ["legacy", "2026-07-28"]
UPSTREAM_ERAS = ["modern", "handshake"]
NAMESPACED = f"treadle://cx/{WATCHED}"


class Running:
    def __init__(self, upstream: ContentUpstream, url: str, era: str) -> None:
        self.upstream = upstream
        self.url = url
        self.era = era


@pytest.fixture(params=UPSTREAM_ERAS)
async def content(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    upstream = ContentUpstream()
    app = http_app(upstream, handshake_only=request.param == "handshake")
    async with serve(app, lifespan="on", timeout_graceful_shutdown=1) as port:
        yield Running(upstream, f"http://127.0.0.1:{port}/mcp", request.param)


async def _updates_of(client: Client, uri: str, updated: anyio.Event, touch: Any) -> None:
    """Subscribe to `uri` in the client's era, touch it, and wait for its update."""
    if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
        async with client.listen(resource_subscriptions=[uri]) as events:
            await touch()
            with anyio.fail_after(10):
                async for event in events:
                    assert event == ResourceUpdated(uri=uri)
                    updated.set()
                    break
        return
    await client.subscribe_resource(uri)
    await touch()
    with anyio.fail_after(10):
        await updated.wait()


@pytest.mark.parametrize("era", ERAS)
async def test_a_subscribed_upstream_resource_s_update_reaches_the_client_under_its_uri(
    api: Api, content: Running, era: str
) -> None:
    await register(api, content.url, name="content")
    await api.configure("content", integrationAlias="cx")
    updated = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification) and message.params.uri == NAMESPACED:
            updated.set()

    async def touch() -> None:
        result = await client.call_tool("cx__touch_watched_resource", {})
        assert not result.is_error

    async with Client(await face_of(api), mode=era, message_handler=on_message) as client:
        declared = await capabilities(client)
        assert declared.resources is not None
        assert declared.resources.subscribe is True
        await _updates_of(client, NAMESPACED, updated, touch)
        read = await client.read_resource(NAMESPACED)
        assert isinstance(read.contents[0], TextResourceContents)
        assert read.contents[0].text == "Watched resource, version 1."
        assert read.contents[0].uri == NAMESPACED


async def test_unsubscribing_and_leaving_end_the_upstream_subscription(
    api: Api, content: Running
) -> None:
    await register(api, content.url, name="content")
    await api.configure("content", integrationAlias="cx")
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    face = runtime.bound_face(binding).server
    watches = runtime.content.watches
    handshake = content.upstream.subscribers  # filled only by a handshake-era upstream
    async with Client(face, mode="legacy") as first, Client(face, mode="legacy") as second:
        await first.subscribe_resource(NAMESPACED)
        await second.subscribe_resource(NAMESPACED)
        assert len(watches) == 1  # one upstream subscription, shared
        assert len(handshake) == (1 if content.era == "handshake" else 0)
        await first.unsubscribe_resource(NAMESPACED)
        assert len(watches) == 1  # the second client still listens
        await first.unsubscribe_resource(NAMESPACED)  # again: nothing to do
    with anyio.fail_after(10):
        while len(watches):
            await anyio.wait_all_tasks_blocked()  # the closed connection's cleanup
    assert handshake == {}


async def test_subscribing_to_a_resource_nobody_offers_is_refused(
    api: Api, content: Running
) -> None:
    await register(api, content.url, name="content")
    await api.configure("content", integrationAlias="cx")
    async with Client(await face_of(api), mode="legacy") as client:
        with pytest.raises(MCPError) as unknown:
            await client.subscribe_resource("treadle://nope/test://watched-resource")
        assert unknown.value.error.code == -32002  # as a read of it


@pytest.fixture
async def plain_url() -> AsyncIterator[str]:
    # upstream_fixture.py serves resources but takes no resources/subscribe; spoken to in
    # the handshake era, it declares `subscribe: false`.
    app = HandshakeOnly(plain_app(PlainUpstream()))
    async with serve(app, lifespan="on", timeout_graceful_shutdown=1) as port:
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.mark.parametrize("era", ERAS)
async def test_subscribe_is_declared_only_when_an_upstream_takes_subscriptions(
    api: Api, plain_url: str, era: str
) -> None:
    await register(api, plain_url, name="plain")
    await api.configure("plain", integrationAlias="pl")
    async with Client(await face_of(api), mode=era) as client:
        declared = await capabilities(client)
        assert declared.resources is not None
        assert declared.resources.subscribe is False
    async with Client(await face_of(api), mode="legacy") as client:
        with pytest.raises(MCPError) as refused:
            await client.subscribe_resource("treadle://pl/file:///docs/readme.md")
        assert refused.value.error.code == -32601


@pytest.mark.parametrize("era", ERAS)
async def test_an_upstream_offered_under_its_own_names_keeps_them(
    api: Api, content: Running, era: str
) -> None:
    await register(api, content.url, name="content")
    await api.configure("content", integrationAlias="cx", settings={"contentNames": "upstream"})
    async with Client(await face_of(api), mode=era) as client:
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert "test_simple_prompt" in prompts
        got = await client.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        assert "arg1='a'" in got.messages[0].content.text  # type: ignore[union-attr]
        uris = {r.uri for r in (await client.list_resources()).resources}
        assert STATIC_TEXT in uris
        read = await client.read_resource(STATIC_TEXT)
        assert read.contents[0].uri == STATIC_TEXT
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["test://template/{id}/data"]
        item = await client.read_resource("test://template/123/data")
        assert isinstance(item.contents[0], TextResourceContents)
        assert '"id": "123"' in item.contents[0].text
        completed = await client.complete(
            PromptReference(type="ref/prompt", name="test_prompt_with_arguments"),
            {"name": "arg1", "value": "par"},
        )
        assert completed.completion.values == ["paris", "park", "party"]
        ids = await client.complete(
            ResourceTemplateReference(type="ref/resource", uri="test://template/{id}/data"),
            {"name": "id", "value": "12"},
        )
        assert ids.completion.values == ["123", "124"]


async def test_content_names_must_be_one_of_the_two(api: Api, plain_url: str) -> None:
    await register(api, plain_url, name="plain")
    body = {
        "integrationName": "plain",
        "integrationAlias": "pl",
        "connectionStrategy": "fixed",
        "settings": {"contentNames": "mine"},
    }
    response = await api.post(f"/workspaces/{api.workspace_id}/integrations", body)
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"


async def test_an_own_name_taken_earlier_or_shaped_like_a_namespaced_one_is_namespaced(
    api: Api, content: Running
) -> None:
    await register(api, content.url, name="content")
    await api.configure("content", integrationAlias="one", settings={"contentNames": "upstream"})
    await api.configure("content", integrationAlias="two", settings={"contentNames": "upstream"})
    async with Client(await face_of(api), mode="legacy") as client:
        names = {p.name for p in (await client.list_prompts()).prompts}
        assert {"test_simple_prompt", "two__test_simple_prompt"} <= names
        assert "one__test_simple_prompt" not in names
        uris = {r.uri for r in (await client.list_resources()).resources}
        assert {STATIC_TEXT, f"treadle://two/{STATIC_TEXT}"} <= uris
        again = await client.read_resource(f"treadle://two/{STATIC_TEXT}")
        assert again.contents[0].uri == f"treadle://two/{STATIC_TEXT}"


@pytest.mark.skipif(
    NODE is None or not EVERYTHING.exists(),
    reason="@modelcontextprotocol/server-everything is not installed in .tools/ (run .ci/run)",
)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("era", ERAS)
async def test_server_everything_s_resource_updates_reach_a_subscriber(
    api: Api,
    everything: dict[str, Any],  # noqa: F811 (the fixture imported above)
    era: str,
) -> None:
    # server-everything sends an update for every resource its session subscribed to when
    # `toggle-subscriber-updates` starts its simulated updates (then every 5 s).
    await api.configure("everything", integrationAlias="ev")
    updated = anyio.Event()
    uri = ""

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification) and message.params.uri == uri:
            updated.set()

    async def touch() -> None:
        result = await client.call_tool("ev__toggle_subscriber_updates", {})
        assert not result.is_error

    async with Client(await face_of(api), mode=era, message_handler=on_message) as client:
        declared = await capabilities(client)
        assert declared.resources is not None
        assert declared.resources.subscribe is True
        uri = (await client.list_resources()).resources[0].uri
        assert uri.startswith("treadle://ev/")
        try:
            await _updates_of(client, uri, updated, touch)
        finally:
            await touch()  # its updates stop again


@pytest.mark.parametrize("transport", ["http"])
@pytest.mark.parametrize("era", ERAS)
async def test_over_http_an_update_reaches_the_subscribed_session_or_stream(
    mcp_env: McpEnv, content: Running, transport: str, era: str
) -> None:
    name = f"content-{uuid.uuid4().hex[:8]}"
    async with mcp_env.remote_rest() as rest:  # registered where the MCP clients connect
        body = {
            "name": name,
            "transport": {"type": "streamable_http", "url": content.url},
            "allowPrivateNetwork": True,
        }
        created = await rest.post("/api/v1/upstreams", json=body)
        assert created.status_code == 201, created.text
        configured = await rest.post(
            f"/api/v1/workspaces/{mcp_env.workspace_id}/integrations",
            json={"integrationName": name, "integrationAlias": "cx", "connectionStrategy": "fixed"},
        )
        assert configured.status_code == 201, configured.text
    updated = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification) and message.params.uri == NAMESPACED:
            updated.set()

    async def touch() -> None:
        result = await client.call_tool("cx__touch_watched_resource", {})
        assert not result.is_error

    async with mcp_env.connect(transport, era, message_handler=on_message) as client:
        await _updates_of(client, NAMESPACED, updated, touch)


async def test_a_resource_whose_upstream_takes_no_subscriptions_is_refused_beside_one_that_does(
    api: Api, content: Running, plain_url: str
) -> None:
    await register(api, content.url, name="content")
    await register(api, plain_url, name="plain")
    await api.configure("content", integrationAlias="cx")
    await api.configure("plain", integrationAlias="pl")
    async with Client(await face_of(api), mode="legacy") as client:
        declared = await capabilities(client)
        assert declared.resources is not None
        assert declared.resources.subscribe is True
        with pytest.raises(MCPError) as refused:
            await client.subscribe_resource("treadle://pl/file:///docs/readme.md")
        assert refused.value.error.code == -32602
        await client.subscribe_resource(NAMESPACED)  # the other upstream's: taken


@asynccontextmanager
async def serving_on(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    """`app` on an already bound socket until the block ends (then the port is free again)."""
    config = uvicorn.Config(app, lifespan="on", log_config=None, http="h11")
    config.timeout_graceful_shutdown = 1
    server = LoopbackServer(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        with anyio.fail_after(5):
            await server.listening.wait()
        try:
            yield
        finally:
            server.should_exit = True


def bound_socket(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def run_upstream(
    app: Any,
    sock: socket.socket,
    stop: anyio.Event,
    ended: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    try:
        async with serving_on(app, sock):
            task_status.started()
            await stop.wait()
    finally:
        ended.set()


@pytest.mark.parametrize("era", ERAS)
async def test_a_2026_upstream_s_resource_stream_is_opened_again_after_its_restart(
    api: Api, era: str
) -> None:
    sock = bound_socket()
    port = sock.getsockname()[1]
    updated = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification) and message.params.uri == NAMESPACED:
            updated.set()

    stops = [anyio.Event(), anyio.Event()]
    ended = [anyio.Event(), anyio.Event()]
    async with anyio.create_task_group() as upstreams:
        await upstreams.start(run_upstream, http_app(ContentUpstream()), sock, stops[0], ended[0])
        try:
            await register(api, f"http://127.0.0.1:{port}/mcp", name="content")
            await api.configure("content", integrationAlias="cx")
            face = await face_of(api)
            async with AsyncExitStack() as stack:
                client = await stack.enter_async_context(
                    Client(face, mode=era, message_handler=on_message)
                )
                events = None
                if era == "legacy":
                    await client.subscribe_resource(NAMESPACED)
                else:
                    events = await stack.enter_async_context(
                        client.listen(resource_subscriptions=[NAMESPACED])
                    )
                stops[0].set()  # the upstream goes away, and comes back on its port
                with anyio.fail_after(10):
                    await ended[0].wait()
                again = ContentUpstream()
                await upstreams.start(
                    run_upstream, http_app(again), bound_socket(port), stops[1], ended[1]
                )
                with anyio.fail_after(15):
                    await again.listened.wait()  # treadle listens to the URI again
                touched = await client.call_tool("cx__touch_watched_resource", {})
                assert not touched.is_error
                with anyio.fail_after(10):
                    if events is None:
                        await updated.wait()
                    else:
                        async for event in events:
                            assert event == ResourceUpdated(uri=NAMESPACED)
                            break
        finally:
            for stop in stops:
                stop.set()
