"""What the route parity tests share (tests/test_modern_route.py, tests/test_session_route.py):
a gateway with integrations and an MCP server, served in process or on a socket; actions that
log before answering, declare a routing header, or hold a call open; the JSON-RPC messages
of an answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2

from treadle.app import Gateway
from treadle.catalog import Action, ActionContext, AuthKind, Integration
from treadle.catalog.model import JSONObject
from treadle.http_app import build_http_app
from treadle.settings import Settings

import loopback
from conftest import api_on
from mcp_harness import test_catalog as kit_catalog


async def _talk(ctx: ActionContext, data: JSONObject) -> JSONObject:
    assert ctx.client is not None
    await ctx.client.log("info", {"said": data.get("text")})
    return {"said": data.get("text"), "nothing": None}


async def _region(_ctx: ActionContext, data: JSONObject) -> JSONObject:
    return {"region": data.get("region")}


TALKER = Integration(
    name="talker",
    display_name="Talker",
    description="Logs to the client while it runs.",
    auth_kind=AuthKind.NONE,
    actions=(
        Action(
            "talk",
            "Talk",
            "Logs, then answers.",
            {"type": "object", "properties": {"text": {"type": "string"}}},
            _talk,
        ),
        Action(
            "route",
            "Route",
            "Answers with the region an intermediary may route on (its Mcp-Param-Region).",
            {
                "type": "object",
                "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
            },
            _region,
        ),
    ),
)


class Hold:
    """An action that runs until released or cancelled, and says which."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.stopped = anyio.Event()
        self.finished = anyio.Event()

    async def run(self, _ctx: ActionContext, _data: JSONObject) -> JSONObject:
        self.started.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.stopped.set()
            raise
        self.finished.set()
        return {"released": True}

    def integration(self) -> Integration:
        empty = {"type": "object", "properties": {}}
        return Integration(
            name="hold",
            display_name="Hold",
            description="Holds a call open.",
            auth_kind=AuthKind.NONE,
            actions=(Action("hold", "Hold", "Runs until released.", empty, self.run),),
        )


@asynccontextmanager
async def gateway_with_server(
    settings: Settings, extra: Sequence[Integration], aliases: Sequence[tuple[str, str]]
) -> AsyncIterator[tuple[Gateway, dict[str, Any]]]:
    """A gateway on the test kit's catalog plus `extra`, a workspace with each (integration,
    alias) configured, and an MCP server of it (its REST answer: `server`, `token`)."""
    catalog = kit_catalog()
    for integration in extra:
        catalog.add(integration)
    gateway = await Gateway.open(settings, catalog=catalog)
    try:
        async with api_on(gateway) as api:
            for name, alias in aliases:
                made = await api.post(
                    f"/workspaces/{api.workspace_id}/integrations",
                    {
                        "integrationName": name,
                        "integrationAlias": alias,
                        "connectionStrategy": "fixed",
                    },
                )
                assert made.status_code == 201, made.text
            server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "m"})
            assert server.status_code == 201, server.text
            yield gateway, server.json()
    finally:
        await gateway.close()


@asynccontextmanager
async def holding_on_socket(settings: Settings, hold: Hold) -> AsyncIterator[tuple[str, str]]:
    """`hold` as the tool `h__hold`, served over a real socket: (endpoint URL, token)."""
    async with (
        gateway_with_server(settings, [hold.integration()], [("hold", "h")]) as (gateway, found),
        loopback.serve(build_http_app(gateway), lifespan="on") as port,
    ):
        yield f"http://127.0.0.1:{port}/mcp/{found['server']['id']}", found["token"]


def transport_refusals(listing: dict[str, Any]) -> dict[str, tuple[Any, dict[str, str]]]:
    """Requests each route hands to the SDK, which refuses or answers them itself: a body
    and the headers changed from a valid request's, built on `listing` (the era's valid
    tools/list)."""
    return {
        "json only accepted": (listing, {"Accept": "application/json"}),
        "foreign host": (listing, {"Host": "evil.example"}),
        "foreign origin": (listing, {"Origin": "http://evil.example"}),
        "not json content": (listing, {"Content-Type": "text/plain"}),
        "not json": (b"{nope", {}),
        "a batch": ([listing, listing], {}),
        "a notification": ({"jsonrpc": "2.0", "method": "notifications/cancelled"}, {}),
        "an answer": ({"jsonrpc": "2.0", "id": 7, "result": {}}, {}),
        "bad id": ({**listing, "id": [1]}, {}),
    }


def messages(response: httpx2.Response) -> list[Any]:
    """The JSON-RPC messages of an answer, SSE or JSON (none for an empty body)."""
    kind = response.headers.get("content-type", "")
    if not response.content:
        return []
    if kind.startswith("text/event-stream"):
        return [
            json.loads(line[len("data: ") :])
            for line in response.text.split("\r\n")
            if line.startswith("data: ")
        ]
    if kind.startswith("application/json"):
        return [response.json()]
    return [response.text]
