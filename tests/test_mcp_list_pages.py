"""How `tools/list` is cut into pages, and what its cursors mean.

A page holds at most `page_size` tools and `page_bytes` bytes of tool JSON (a tool larger
than that still gets a page of its own). A cursor is a position in the name-sorted list:
following `nextCursor` from the start gives every tool exactly once, and a cursor issued
before the list changed resumes at that position of the current list (a client that was told
of the change lists again from the start). Pages are served from what the SDK serialised the
first time, so a second listing must be the same, byte for byte.

The paging rules run in memory with small caps, in both eras; one test lists a large
workspace from the real `treadle serve` over HTTP with the default caps and raw JSON-RPC,
so page sizes are the bodies on the wire.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import ListToolsResult, Tool

from treadle.mcp.binding import Binding
from treadle.mcp.binds import bind_server
from treadle.mcp.server import PAGE_BYTES, McpFace, encode_cursor

from mcp_harness import ERAS, McpEnv

pytestmark = pytest.mark.anyio

KIT_ACTIONS = ("crash", "echo", "unreachable", "upstream_error", "wait")
HANDSHAKE_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
SSE_EVENT_LIMIT = 1024 * 1024  # what the SDK client refuses (DEFAULT_MAX_SSE_EVENT_SIZE)


def _wire(tool: Tool) -> dict[str, Any]:
    return tool.model_dump(mode="json", by_alias=True, exclude_none=True)


def _tool_bytes(tools: list[dict[str, Any]]) -> int:
    """Bytes of the tools' compact JSON, the way the page cap counts them."""
    return sum(len(json.dumps(tool, separators=(",", ":"))) + 1 for tool in tools)


@asynccontextmanager
async def _client(
    mcp_env: McpEnv, era: str, *, page_size: int, page_bytes: int = PAGE_BYTES
) -> AsyncIterator[Client]:
    """An in-memory client of a face with its own page caps (on the shared tool-set cache)."""
    if not mcp_env.server_id:
        await mcp_env.create_server()
    runtime = mcp_env.runtime
    binding = await bind_server(runtime.gateway.store, mcp_env.server_id, None)

    async def resolve(_ctx: ServerRequestContext[Any, Any]) -> Binding:
        return binding

    face = McpFace(
        runtime.gateway.executor,
        runtime.toolsets,
        runtime.hub,
        resolve,
        page_size=page_size,
        page_bytes=page_bytes,
        approvals=runtime.gateway.approvals,
    )
    async with Client(face.server, mode=era) as client:
        yield client


async def _pages(client: Client, cursor: str | None = None) -> list[ListToolsResult]:
    pages: list[ListToolsResult] = []
    while True:
        # Past the 2026-07-28 client's response cache: these tests are about the server.
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        pages.append(page)
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 1000, "nextCursor never ends"


def _names(pages: list[ListToolsResult]) -> list[str]:
    return [tool.name for page in pages for tool in page.tools]


async def _configure_kits(mcp_env: McpEnv, *aliases: str) -> list[str]:
    for alias in aliases:
        await mcp_env.configure("testkit", integrationAlias=alias)
    return sorted(f"{alias}__{action}" for alias in aliases for action in KIT_ACTIONS)


# -- every tool exactly once, within the caps ---------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_every_tool_comes_back_exactly_once_in_name_order(mcp_env: McpEnv, era: str) -> None:
    expected = await _configure_kits(mcp_env, "k1", "k2", "k3", "k4", "k5")
    async with _client(mcp_env, era, page_size=1000) as client:
        unpaged = await _pages(client)
    async with _client(mcp_env, era, page_size=4) as client:
        by_count = await _pages(client)
    one_tool = max(_tool_bytes([_wire(tool)]) for tool in unpaged[0].tools)
    page_bytes = 3 * one_tool
    async with _client(mcp_env, era, page_size=1000, page_bytes=page_bytes) as client:
        by_bytes = await _pages(client)

    assert len(unpaged) == 1
    assert _names(unpaged) == expected
    assert _names(by_count) == expected
    assert [len(page.tools) for page in by_count] == [4, 4, 4, 4, 4, 4, 1]
    assert _names(by_bytes) == expected
    # Every tool fits three times in the cap: only the last page may hold fewer.
    assert all(len(page.tools) >= 3 for page in by_bytes[:-1])
    for page in by_bytes:
        assert _tool_bytes([_wire(tool) for tool in page.tools]) <= page_bytes
    # Greedy: no page could have taken the first tool of the next one.
    for page, following in itertools.pairwise(by_bytes):
        taken = [_wire(tool) for tool in [*page.tools, following.tools[0]]]
        assert _tool_bytes(taken) > page_bytes


@pytest.mark.parametrize("era", ERAS)
async def test_a_tool_larger_than_the_byte_cap_gets_a_page_of_its_own(
    mcp_env: McpEnv, era: str
) -> None:
    expected = await _configure_kits(mcp_env, "kit")
    async with _client(mcp_env, era, page_size=1000, page_bytes=10) as client:
        pages = await _pages(client)

    assert [len(page.tools) for page in pages] == [1] * len(expected)
    assert _names(pages) == expected


@pytest.mark.parametrize("era", ERAS)
async def test_a_second_listing_gets_the_same_pages_and_cursors(mcp_env: McpEnv, era: str) -> None:
    await _configure_kits(mcp_env, "k1", "k2", "k3")
    async with _client(mcp_env, era, page_size=4) as client:
        first = await _pages(client)
        second = await _pages(client)
    async with _client(mcp_env, era, page_size=4) as client:
        other_client = await _pages(client)

    dumped = [page.model_dump(by_alias=True, mode="json") for page in first]
    assert [page.model_dump(by_alias=True, mode="json") for page in second] == dumped
    assert [page.model_dump(by_alias=True, mode="json") for page in other_client] == dumped
    assert [page.next_cursor for page in first][:-1] == [
        encode_cursor(offset) for offset in range(4, 15, 4)
    ]


# -- cursors -----------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_a_cursor_inside_a_page_gets_the_rest_of_that_page_then_regular_pages(
    mcp_env: McpEnv, era: str
) -> None:
    expected = await _configure_kits(mcp_env, "k1", "k2", "k3")
    async with _client(mcp_env, era, page_size=4) as client:
        await _pages(client)  # the regular pages are kept first
        pages = await _pages(client, encode_cursor(5))

    assert [len(page.tools) for page in pages] == [3, 4, 3]
    assert _names(pages) == expected[5:]


@pytest.mark.parametrize("era", ERAS)
async def test_a_cursor_at_or_past_the_end_is_an_empty_last_page(mcp_env: McpEnv, era: str) -> None:
    await _configure_kits(mcp_env, "kit")
    async with _client(mcp_env, era, page_size=2) as client:
        at_end = await client.list_tools(cursor=encode_cursor(5), cache_mode="bypass")
        past_end = await client.list_tools(cursor=encode_cursor(500), cache_mode="bypass")

    assert (at_end.tools, at_end.next_cursor) == ([], None)
    assert (past_end.tools, past_end.next_cursor) == ([], None)


@pytest.mark.parametrize("era", ERAS)
async def test_a_cursor_from_before_a_change_resumes_at_its_position_in_the_new_list(
    mcp_env: McpEnv, era: str
) -> None:
    before = await _configure_kits(mcp_env, "k1", "k2", "k3")
    async with _client(mcp_env, era, page_size=4) as client:
        first = await client.list_tools(cache_mode="bypass")
        assert first.next_cursor is not None
        # Five tools that sort before all the others.
        changed = sorted(await _configure_kits(mcp_env, "a0") + before)
        resumed = await _pages(client, first.next_cursor)
        again = await _pages(client)

    assert _names(resumed) == changed[4:]
    assert _names(again) == changed
    assert len(_names(resumed)) == len(set(_names(resumed)))


@pytest.mark.parametrize("era", ERAS)
async def test_an_invalid_cursor_is_refused_after_pages_were_served(
    mcp_env: McpEnv, era: str
) -> None:
    await _configure_kits(mcp_env, "kit")
    async with _client(mcp_env, era, page_size=2) as client:
        await _pages(client)
        with pytest.raises(MCPError) as raised:
            await client.list_tools(cursor="not a cursor", cache_mode="bypass")
        forged = base64.urlsafe_b64encode(b'{"o": -2}').decode()
        with pytest.raises(MCPError) as negative:
            await client.list_tools(cursor=forged, cache_mode="bypass")

    assert raised.value.error.code == -32602
    assert negative.value.error.code == -32602


# -- a large workspace on the real server ----------------------------------------------------


class RawMcp:
    """Raw JSON-RPC over streamable HTTP, so sizes are the bodies the server sent."""

    def __init__(self, http: httpx2.AsyncClient, url: str, era: str) -> None:
        self.http = http
        self.url = url
        self.era = era
        self.headers: dict[str, str] = {}
        self.ids = iter(range(1, 100_000))

    async def open(self) -> RawMcp:
        if self.era == MODERN_VERSION:
            self.headers = {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": "tools/list"}
            return self
        initialize = {
            "protocolVersion": HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "pages", "version": "1"},
        }
        opened = await self.http.post(self.url, json=self._body("initialize", initialize))
        assert opened.status_code == 200, opened.text
        self.headers = {
            "Mcp-Session-Id": opened.headers["mcp-session-id"],
            "MCP-Protocol-Version": HANDSHAKE_VERSION,
        }
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        ready = await self.http.post(self.url, json=note, headers=self.headers)
        assert ready.status_code == 202, ready.text
        return self

    def _body(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.era == MODERN_VERSION:
            params = {
                **params,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                    "io.modelcontextprotocol/clientInfo": {"name": "pages", "version": "1"},
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            }
        return {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}

    async def request(self, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The JSON-RPC answer to tools/list, and the size of the body that carried it (less
        the request id, so answers to different requests compare)."""
        response = await self.http.post(
            self.url, json=self._body("tools/list", params), headers=self.headers
        )
        if response.headers["content-type"].startswith("application/json"):
            message: dict[str, Any] = response.json()
        else:
            data = [line[5:].strip() for line in response.text.splitlines()]
            message = json.loads(next(d for d in data if d.startswith("{")))
        return message, len(response.content) - len(json.dumps(message["id"]))

    async def pages(self) -> list[tuple[dict[str, Any], int]]:
        found: list[tuple[dict[str, Any], int]] = []
        cursor: str | None = None
        while True:
            message, size = await self.request({"cursor": cursor} if cursor else {})
            assert "result" in message, message
            result: dict[str, Any] = message["result"]
            found.append((result, size))
            cursor = result.get("nextCursor")
            if cursor is None:
                return found
            assert len(found) < 100, "nextCursor never ends"

    async def close(self) -> None:
        if "Mcp-Session-Id" in self.headers:
            await self.http.delete(self.url, headers=self.headers)


@pytest.mark.parametrize("transport", ["http"])
async def test_a_large_workspace_lists_in_pages_under_the_byte_cap_over_http(
    mcp_env: McpEnv, transport: str
) -> None:
    aliases = [f"kv{i:03d}" for i in range(220)]  # ~870 KB of tools: two pages

    async def configure(chunk: list[str]) -> None:
        for alias in chunk:
            await mcp_env.configure("kv-store", integrationAlias=alias)

    async with anyio.create_task_group() as tg:
        for start in range(4):
            tg.start_soon(configure, aliases[start::4])
    await mcp_env.create_server()
    headers = {
        "Authorization": f"Bearer {mcp_env.server_token}",
        "Accept": "application/json, text/event-stream",
    }
    listings: dict[str, list[list[tuple[dict[str, Any], int]]]] = {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60)) as http:
        for era in (HANDSHAKE_VERSION, MODERN_VERSION):
            raw = await RawMcp(http, mcp_env.mcp_url, era).open()
            listings[era] = [await raw.pages(), await raw.pages()]
            # Malformed params get the SDK's own answer; a well-formed bad cursor, ours.
            malformed, _ = await raw.request({"cursor": 5})
            assert malformed["error"]["code"] == -32602, era
            refused, _ = await raw.request({"cursor": "not a cursor"})
            assert refused["error"] == {"code": -32602, "message": "Invalid cursor"}, era
            await raw.close()

    for era, (first, second) in listings.items():
        tools = [tool for result, _ in first for tool in result["tools"]]
        names = [tool["name"] for tool in tools]
        assert len(tools) == 220 * 6, era
        assert names == sorted(set(names)), era
        assert len(first) >= 2, era
        for result, size in first:
            assert _tool_bytes(result["tools"]) <= PAGE_BYTES, era
            assert size < PAGE_BYTES + 4096 < SSE_EVENT_LIMIT, era
        # The second listing is served from the kept pages: the same results, byte for byte.
        assert [result for result, _ in second] == [result for result, _ in first], era
        assert [size for _, size in second] == [size for _, size in first], era
    # Each era gets its own envelope, from the kept pages as from the SDK.
    for result, _ in listings[HANDSHAKE_VERSION][1]:
        assert set(result) <= {"tools", "nextCursor"}
    for result, _ in listings[MODERN_VERSION][1]:
        assert result["resultType"] == "complete"
        assert (result["ttlMs"], result["cacheScope"]) == (30_000, "private")
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "treadle"
    # Both eras see the same tools.
    assert [t for r, _ in listings[HANDSHAKE_VERSION][0] for t in r["tools"]] == [
        t for r, _ in listings[MODERN_VERSION][0] for t in r["tools"]
    ]
