"""treadle's own route for 2026-07-28 `tools/call` and `tools/list` answers what the SDK's does.

Every request is sent twice to the same in-process app: once as served (through
`treadle.mcp.modern_route`), once with that route switched off (the SDK's single-exchange
entry). Status, content type and the JSON-RPC messages must be the same, for answers, tool
errors, protocol errors and every refusal of the SDK's checks (which the route hands to it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest

import treadle.mcp.http
import treadle.mcp.modern_route
from route_kit import (
    TALKER,
    Hold,
    gateway_with_server,
    holding_on_socket,
    messages,
    transport_refusals,
)
from treadle.http_app import build_http_app
from treadle.settings import Settings

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


@dataclass
class Served:
    http: httpx2.AsyncClient
    path: str
    token: str
    route_calls: list[int]


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    aliases = [("testkit", "kit"), ("talker", "talk")]
    async with gateway_with_server(settings, [TALKER], aliases) as (gateway, found):
        app = build_http_app(gateway)
        endpoint = app.state.mcp_endpoint
        calls: list[int] = []
        route = endpoint.modern

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            calls.append(1)
            await route(scope, receive, send)

        endpoint.modern = counted
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8400"
            ) as http,
        ):
            yield Served(http, f"/mcp/{found['server']['id']}", found["token"], calls)


def headers(token: str, method: str, name: str | None = None, **more: str) -> dict[str, str]:
    sent = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
    }
    if name is not None:
        sent["Mcp-Name"] = name
    sent.update(more)
    return sent


def call(name: str, arguments: dict[str, Any], **meta: Any) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments, "_meta": {**META, **meta}}
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}


LIST = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"_meta": META}}


async def same_as_sdk(
    served: Served, monkeypatch: pytest.MonkeyPatch, body: Any, sent: dict[str, str]
) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    before = len(served.route_calls)
    ours = await served.http.post(served.path, content=content, headers=sent)
    assert len(served.route_calls) == before + 1  # the route saw it (and kept or passed it)
    with monkeypatch.context() as patched:
        patched.setattr(treadle.mcp.http, "routed", lambda _scope: False)
        sdks = await served.http.post(served.path, content=content, headers=sent)
    assert len(served.route_calls) == before + 1
    assert ours.status_code == sdks.status_code, (ours.text, sdks.text)
    kind = ours.headers.get("content-type", "").split(";")[0]
    assert kind == sdks.headers.get("content-type", "").split(";")[0]
    assert "mcp-session-id" not in ours.headers
    assert messages(ours) == messages(sdks)
    return ours


async def test_a_tool_list_is_the_sdks(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = headers(served.token, "tools/list")
    first = await same_as_sdk(served, monkeypatch, LIST, sent)
    names = [t["name"] for t in first.json()["result"]["tools"]]
    assert "kit__echo" in names
    await same_as_sdk(served, monkeypatch, LIST, sent)  # served from the kept page


async def test_answers_and_tool_errors_are_the_sdks(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = await same_as_sdk(
        served,
        monkeypatch,
        call("kit__echo", {"text": "hé", "channel": "c"}),
        headers(served.token, "tools/call", "kit__echo"),
    )
    assert ok.json()["result"]["structuredContent"]["text"] == "hé"
    refused = await same_as_sdk(
        served,
        monkeypatch,
        call("kit__echo", {"text": 3}),
        headers(served.token, "tools/call", "kit__echo"),
    )
    assert refused.json()["result"]["isError"] is True
    unknown = await same_as_sdk(
        served,
        monkeypatch,
        call("kit__nope", {}),
        headers(served.token, "tools/call", "kit__nope"),
    )
    assert "error" in unknown.json()


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_a_call_that_notifies_streams_as_the_sdk_does(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = call("talk__talk", {"text": "hi"}, **{"io.modelcontextprotocol/logLevel": "debug"})
    answer = await same_as_sdk(
        served, monkeypatch, body, headers(served.token, "tools/call", "talk__talk")
    )
    log, result = messages(answer)
    assert log["method"] == "notifications/message"
    assert result["result"]["structuredContent"] == {"said": "hi", "nothing": None}


async def test_param_headers_are_checked_as_the_sdk_checks_them(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header the schema does not declare is not validated, by either route."""
    body = call("kit__echo", {"text": "a", "channel": "c"})
    sent = headers(served.token, "tools/call", "kit__echo", **{"Mcp-Param-Text": "b"})
    answer = await same_as_sdk(served, monkeypatch, body, sent)
    assert answer.json()["result"]["structuredContent"]["text"] == "a"


@pytest.mark.parametrize(
    ("sent_header", "refused"),
    [("eu", False), ("us", True), (None, True)],
    ids=["matching", "disagreeing", "missing"],
)
async def test_a_declared_param_header_is_checked_as_the_sdk_checks_it(
    served: Served, monkeypatch: pytest.MonkeyPatch, sent_header: str | None, refused: bool
) -> None:
    """A property annotated `x-mcp-header` must travel as its header too, equal to the body's
    value; the route remembers which schemas have no annotation, never this one."""
    extra = {} if sent_header is None else {"Mcp-Param-Region": sent_header}
    sent = headers(served.token, "tools/call", "talk__route", **extra)
    for _ in range(2):  # the second time, from what the route remembered of the schema
        answer = await same_as_sdk(served, monkeypatch, call("talk__route", {"region": "eu"}), sent)
        if refused:
            assert "error" in answer.json()
        else:
            assert answer.json()["result"]["structuredContent"] == {"region": "eu"}


REFUSED: dict[str, tuple[Any, dict[str, str]]] = {
    **transport_refusals(LIST),
    "name header disagrees": (call("kit__echo", {}), {"Mcp-Name": "kit__other"}),
    "method header disagrees": (LIST, {"Mcp-Method": "tools/call"}),
    "no envelope": ({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, {}),
    "duplicated version header": (LIST, {}),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_every_refusal_is_the_sdks(
    served: Served, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    body, changes = REFUSED[case]
    method = body.get("method", "tools/list") if isinstance(body, dict) else "tools/list"
    method = method if method in ("tools/call", "tools/list") else "tools/list"
    name = "kit__echo" if method == "tools/call" else None
    sent = {**headers(served.token, method, name), **changes}
    if case == "duplicated version header":
        raw = [(k.encode(), v.encode()) for k, v in sent.items()]
        raw.append((b"mcp-protocol-version", MODERN.encode()))
        answer = await served.http.post(served.path, content=json.dumps(body), headers=raw)
        with monkeypatch.context() as patched:
            patched.setattr(treadle.mcp.http, "routed", lambda _scope: False)
            sdks = await served.http.post(served.path, content=json.dumps(body), headers=raw)
        assert (answer.status_code, messages(answer)) == (sdks.status_code, messages(sdks))
        assert answer.status_code >= 400
        return
    answer = await same_as_sdk(served, monkeypatch, body, sent)
    assert answer.status_code >= 400 or answer.status_code == 202 or "error" in answer.text


# -- over a real socket: disconnects and keepalives ------------------------------------------


async def test_a_client_that_disconnects_cancels_the_call(settings: Settings) -> None:
    hold = Hold()
    async with holding_on_socket(settings, hold) as (url, token), httpx2.AsyncClient() as http:
        body = json.dumps(call("h__hold", {}))
        sent = headers(token, "tools/call", "h__hold")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def post() -> None:
                    await http.post(url, content=body, headers=sent)

                tg.start_soon(post)
                await hold.started.wait()
                tg.cancel_scope.cancel()  # the client goes away mid-call
            await hold.stopped.wait()


async def test_a_silent_call_keeps_its_stream_alive_then_answers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(treadle.mcp.modern_route, "PING_SECONDS", 0.05)
    hold = Hold()
    async with holding_on_socket(settings, hold) as (url, token), httpx2.AsyncClient() as http:
        body = json.dumps(call("h__hold", {}))
        sent = headers(token, "tools/call", "h__hold")
        chunks: list[str] = []
        with anyio.fail_after(10):
            async with http.stream("POST", url, content=body, headers=sent) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                async for text in response.aiter_text():
                    chunks.append(text)
                    if ": ping" in "".join(chunks):
                        hold.release.set()
        streamed = "".join(chunks)
        data = [line[6:] for line in streamed.split("\r\n") if line.startswith("data: ")]
        (answer,) = [json.loads(item) for item in data]
        assert answer["result"]["structuredContent"] == {"released": True}
        assert streamed.index(": ping") < streamed.index("data: ")


@pytest.mark.parametrize(
    ("schema", "mentions"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}}, False),
        ({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "A"}}}, True),
        ({"anyOf": [{"properties": {"b": {"x-mcp-header": "B"}}}]}, True),
        ({"properties": {"c": {"items": {"x-mcp-header": "C"}}}}, True),
        ({"$defs": {"d": {"x-mcp-header": "D"}}}, True),
    ],
)
def test_a_schema_mentions_a_param_header_wherever_it_is(
    schema: dict[str, Any], mentions: bool
) -> None:
    assert treadle.mcp.modern_route.mentions_param_header(schema) is mentions
