"""Worker factories for `bench.load`: raw JSON-RPC, the SDK `Client`, and REST."""

from __future__ import annotations

import itertools
from contextlib import AsyncExitStack
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.load import Request, WorkerFactory
from bench.rawmcp import RawSession


class CallFailed(Exception):
    pass


def raw_mcp(
    url: str, era: str, token: str | None, tools: list[str], args: dict[str, Any]
) -> WorkerFactory:
    """One MCP connection per worker (a handshake-era session each, like separate agents)."""

    async def make(http: httpx2.AsyncClient) -> tuple[Request, Any]:
        session = await RawSession(http, url, era, token).open()
        names = itertools.cycle(tools)

        async def request() -> None:
            result = await session.call(next(names), args)
            if result.get("isError"):
                raise CallFailed(str(result)[:300])

        return request, session.close

    return make


def sdk_mcp(
    url: str,
    era: str,
    token: str | None,
    tools: list[str],
    args: dict[str, Any],
    *,
    list_first: bool = True,
) -> WorkerFactory:
    """The SDK `Client`. With `list_first` it lists every page before calling, as real clients
    do; without, the client fetches `tools/list` (first page) on each call to find the tool's
    output schema."""

    async def make(_http: httpx2.AsyncClient) -> tuple[Request, Any]:
        stack = AsyncExitStack()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60))
            )
            client = await stack.enter_async_context(
                Client(streamable_http_client(url, http_client=http), mode=era)
            )
            cursor: str | None = None
            for _ in range(1000 if list_first else 0):
                page = await client.list_tools(cursor=cursor)
                cursor = page.next_cursor
                if cursor is None:
                    break
        except BaseException:
            # Close here, in the task that opened it (a leaked client is closed by the garbage
            # collector in whatever task runs then, which breaks anyio's cancel scopes).
            await stack.aclose()
            raise
        names = itertools.cycle(tools)

        async def request() -> None:
            result = await client.call_tool(next(names), args)
            if result.is_error:
                raise CallFailed(str(result)[:300])

        return request, stack.aclose

    return make


def rest_execute(url: str, token: str | None, body: dict[str, Any]) -> WorkerFactory:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def make(http: httpx2.AsyncClient) -> tuple[Request, Any]:
        async def request() -> None:
            response = await http.post(url, json=body, headers=headers)
            if response.status_code != 200 or not response.json().get("success"):
                raise CallFailed(f"{response.status_code} {response.text[:300]}")

        async def close() -> None:
            return None

        return request, close

    return make
