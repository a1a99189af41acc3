"""Upstream prompts, resources and completion through treadle (issue 15, item 4), in both
protocol eras, against `upstream_fixture.py` on loopback."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    BlobResourceContents,
    DiscoverResult,
    PromptListChangedNotification,
    PromptReference,
    PromptsCapability,
    ResourceTemplateReference,
    ServerCapabilities,
    TextContent,
    TextResourceContents,
)
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from treadle.catalog.upstream.content import split_uri
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime
from upstream_fixture import PIXEL, Upstream, http_app

from conftest import Api
from loopback import serve

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with serve(http_app(Upstream()), lifespan="on", timeout_graceful_shutdown=1) as port:
        yield f"http://127.0.0.1:{port}/mcp"


async def register(api: Api, url: str, name: str = "fixture", **fields: Any) -> None:
    body = {
        "name": name,
        "transport": {"type": "streamable_http", "url": url},
        "allowPrivateNetwork": True,
        **fields,
    }
    response = await api.post("/upstreams", body)
    assert response.status_code == 201, response.text
    assert response.json()["upstream"]["health"]["connected"] is True


async def face_of(api: Api, end_user: str | None = None) -> Any:
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    assert server.status_code == 201, server.text
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], end_user)
    return runtime.bound_face(binding).server


async def capabilities(client: Client) -> ServerCapabilities:
    """What the server declares: the handshake's, or on 2026-07-28 a `server/discover` (a
    client that names its version skips it and assumes nothing)."""
    if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
        raw = await client.session.send_discover(client.protocol_version)
        return DiscoverResult.model_validate(raw).capabilities
    return client.server_capabilities


@pytest.mark.parametrize("era", ERAS)
async def test_prompts_are_listed_under_the_alias_and_got_from_the_upstream(
    api: Api, url: str, era: str
) -> None:
    await register(api, url)
    await api.configure("fixture", integrationAlias="fx", allowedActions=["echo"])
    async with Client(await face_of(api), mode=era) as client:
        assert (await capabilities(client)).prompts is not None
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert set(prompts) == {"fx__greet", "fx__whoami"}
        arguments = prompts["fx__greet"].arguments or []
        assert [(a.name, a.required) for a in arguments] == [("name", True), ("style", None)]
        got = await client.get_prompt("fx__greet", {"name": "Ada", "style": "formal"})
        content = got.messages[0].content
        assert isinstance(content, TextContent)
        assert content.text == "Say hello to Ada, formally"
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("fx__greet", {})
        assert missing.value.error.code == -32602  # the upstream's own answer
        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("nope__greet", {"name": "x"})
        assert unknown.value.error.code == -32602


@pytest.mark.parametrize("era", ERAS)
async def test_resources_and_templates_are_namespaced_and_read_through(
    api: Api, url: str, era: str
) -> None:
    await register(api, url)
    await api.configure("fixture", integrationAlias="fx")
    async with Client(await face_of(api), mode=era) as client:
        assert (await capabilities(client)).resources is not None
        listed = {r.name: r.uri for r in (await client.list_resources()).resources}
        assert listed == {
            "readme": "treadle://fx/file:///docs/readme.md",
            "pixel": "treadle://fx/file:///pixel.png",
        }
        text = (await client.read_resource(listed["readme"])).contents
        assert isinstance(text[0], TextResourceContents)
        assert text[0].text == "# Hi"
        assert text[0].uri == listed["readme"]
        blob = (await client.read_resource(listed["pixel"])).contents
        assert isinstance(blob[0], BlobResourceContents)
        assert base64.b64decode(blob[0].blob) == base64.b64decode(PIXEL)
        assert blob[0].mime_type == "image/png"
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["treadle://fx/note:///{topic}"]
        note = (await client.read_resource("treadle://fx/note:///cats")).contents
        assert isinstance(note[0], TextResourceContents)
        assert note[0].text == "a note on cats"
        for unknown in ("treadle://other/file:///docs/readme.md", "file:///docs/readme.md"):
            with pytest.raises(MCPError) as refused:
                await client.read_resource(unknown)
            assert refused.value.error.code == -32002


@pytest.mark.parametrize("era", ERAS)
async def test_completion_is_routed_to_the_upstream_owning_the_prompt_or_template(
    api: Api, url: str, era: str
) -> None:
    await register(api, url)
    await api.configure("fixture", integrationAlias="fx")
    async with Client(await face_of(api), mode=era) as client:
        assert (await capabilities(client)).completions is not None
        styles = await client.complete(
            PromptReference(type="ref/prompt", name="fx__greet"), {"name": "style", "value": "c"}
        )
        assert styles.completion.values == ["casual", "cheerful"]
        topics = await client.complete(
            ResourceTemplateReference(type="ref/resource", uri="treadle://fx/note:///{topic}"),
            {"name": "topic", "value": "ca"},
        )
        assert topics.completion.values == ["cats", "cars"]
        with pytest.raises(MCPError) as unknown:
            await client.complete(
                PromptReference(type="ref/prompt", name="zz__greet"),
                {"name": "style", "value": ""},
            )
        assert unknown.value.error.code == -32602


@pytest.mark.parametrize("era", ERAS)
async def test_a_server_without_upstreams_declares_no_prompts_resources_or_completions(
    api: Api, era: str
) -> None:
    await api.configure("kv-store", integrationAlias="kv")
    async with Client(await face_of(api), mode=era) as client:
        declared = await capabilities(client)
        assert declared.tools is not None
        assert declared.prompts is None
        assert declared.resources is None
        assert declared.completions is None


async def test_two_aliases_of_one_upstream_do_not_collide(api: Api, url: str) -> None:
    await register(api, url)
    await api.configure("fixture", integrationAlias="one")
    await api.configure("fixture", integrationAlias="two")
    async with Client(await face_of(api), mode="legacy") as client:
        names = sorted(p.name for p in (await client.list_prompts()).prompts)
        assert names == ["one__greet", "one__whoami", "two__greet", "two__whoami"]
        uris = sorted(r.uri for r in (await client.list_resources()).resources)
        assert len(set(uris)) == 4
        assert {split_uri(u)[0] for u in uris} == {"one", "two"}  # type: ignore[index]
        for alias in ("one", "two"):
            read = await client.read_resource(f"treadle://{alias}/note:///dogs")
            assert read.contents[0].uri == f"treadle://{alias}/note:///dogs"


async def test_two_upstreams_do_not_collide(api: Api, url: str) -> None:
    await register(api, url, name="first")
    await register(api, url, name="second")
    await api.configure("first", integrationAlias="a")
    await api.configure("second", integrationAlias="b")
    async with Client(await face_of(api), mode="2026-07-28") as client:
        uris = sorted(r.uri for r in (await client.list_resources()).resources)
        assert uris == [
            "treadle://a/file:///docs/readme.md",
            "treadle://a/file:///pixel.png",
            "treadle://b/file:///docs/readme.md",
            "treadle://b/file:///pixel.png",
        ]


@pytest.fixture
async def guarded_url() -> AsyncIterator[str]:
    app = http_app(Upstream(), {"token-of-alice", "token-of-bob", "catalog-token"})
    async with serve(app, lifespan="on", timeout_graceful_shutdown=1) as port:
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.mark.parametrize("era", ERAS)
async def test_a_prompt_is_got_with_the_end_user_s_own_connection(
    api: Api, guarded_url: str, era: str
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
    auth = {"type": "bearer", "connectionId": catalog.json()["connection"]["id"]}
    await register(api, guarded_url, auth=auth)
    await api.configure("fixture", integrationAlias="fx", connectionStrategy="per_user")
    for user in ("alice", "bob"):
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
                "values": {"token": f"token-of-{user}"},
            },
        )
        assert made.status_code == 201, made.text
    for user in ("alice", "bob"):
        async with Client(await face_of(api, user), mode=era) as client:
            got = await client.get_prompt("fx__whoami")
            content = got.messages[0].content
            assert isinstance(content, TextContent)
            assert content.text == f"Bearer token-of-{user}"
    async with Client(await face_of(api, "carol"), mode=era) as client:
        with pytest.raises(MCPError) as refused:
            await client.get_prompt("fx__whoami")
        assert refused.value.error.data == {
            "code": "CONNECTION_REQUIRED",
            "integrationAlias": "fx",
            "endUserId": "carol",
        }


@pytest.mark.parametrize("era", ERAS)
async def test_an_upstream_prompt_list_change_reaches_treadle_s_clients(
    api: Api, url: str, era: str
) -> None:
    await register(api, url)
    await api.configure("fixture", integrationAlias="fx")
    runtime = McpRuntime(api.gateway, poll_seconds=0.05)
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], None)
    told = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, PromptListChangedNotification):
            told.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.hub.run)
        tg.start_soon(api.gateway.federation.run)
        face = runtime.bound_face(binding).server
        async with Client(face, mode=era, message_handler=on_message) as client:
            assert (await capabilities(client)).prompts == PromptsCapability(list_changed=True)
            await client.list_tools()
            if era == "legacy":
                added = await client.call_tool("fx__add_prompt", {"name": "fresh"})
                assert not added.is_error
                with anyio.fail_after(10):
                    await told.wait()
            else:
                async with client.listen(prompts_list_changed=True) as events:
                    added = await client.call_tool("fx__add_prompt", {"name": "fresh"})
                    assert not added.is_error
                    with anyio.fail_after(10):
                        async for event in events:
                            assert "prompts" in repr(event).lower()
                            break
            names = {p.name for p in (await client.list_prompts()).prompts}
            assert "fx__fresh" in names
        tg.cancel_scope.cancel()
