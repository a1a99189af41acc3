"""treadle's own route for a handshake-era session's `tools/call` and `tools/list` answers what
the SDK's session transport does.

Every request is sent twice in the same session of the same in-process app: once as served
(through `treadle.mcp.session_route`), once with that route switched off (the SDK's
transport). Status, headers and the JSON-RPC messages must be the same, for answers, tool
errors, protocol errors, calls that send the client something first, and every request the
route leaves to the SDK. Over a real socket: cancellation, keepalives, a client that leaves.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from mcp.server.streamable_http import StreamableHTTPServerTransport

import treadle.mcp.session_route
from route_kit import (
    TALKER,
    Hold,
    gateway_with_server,
    holding_on_socket,
    messages,
    transport_refusals,
)
from treadle.http_app import build_http_app
from treadle.mcp.session_transport import AwaitingTransport
from treadle.settings import Settings

pytestmark = pytest.mark.anyio

VERSION = "2025-11-25"
# Headers that differ between any two responses.
_PER_RESPONSE = {"date", "x-request-id", "transfer-encoding", "content-length", "server"}


def headers(token: str, session_id: str | None = None, **more: str) -> dict[str, str]:
    sent = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    if session_id is not None:
        sent["Mcp-Session-Id"] = session_id
        sent["MCP-Protocol-Version"] = VERSION
    sent.update(more)
    return sent


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": VERSION,
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


async def open_session(http: httpx2.AsyncClient, url: str, token: str) -> str:
    opened = await http.post(url, content=json.dumps(INITIALIZE), headers=headers(token))
    assert opened.status_code == 200, opened.text
    session_id = opened.headers["mcp-session-id"]
    done = await http.post(url, content=json.dumps(INITIALIZED), headers=headers(token, session_id))
    assert done.status_code == 202, done.text
    return session_id


@dataclass
class Served:
    http: httpx2.AsyncClient
    path: str
    token: str
    session_id: str
    taken: list[bool]
    route: Any


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    aliases = [("testkit", "kit"), ("talker", "talk")]
    async with gateway_with_server(settings, [TALKER], aliases) as (gateway, found):
        app = build_http_app(gateway)
        route = app.state.mcp_endpoint.session_route
        taken: list[bool] = []
        serve = route.serve

        async def counted(*args: Any) -> bool:
            took: bool = await serve(*args)
            taken.append(took)
            return took

        route.serve = counted
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8400"
            ) as http,
        ):
            path = f"/mcp/{found['server']['id']}"
            session_id = await open_session(http, path, found["token"])
            taken.clear()
            yield Served(http, path, found["token"], session_id, taken, route)


def call(name: str, arguments: Any, request_id: int = 7) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


LIST = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}


def lasting(response: httpx2.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in _PER_RESPONSE}


async def same_as_sdk(
    served: Served,
    monkeypatch: pytest.MonkeyPatch,
    body: Any,
    taken: bool,
    **changes: str,
) -> httpx2.Response:
    """`body` as the route answers it and as the SDK does; `taken`: whether the route should
    serve it rather than hand it on."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {**headers(served.token, served.session_id), **changes}
    ours = await served.http.post(served.path, content=content, headers=sent)
    # Not taken: the route declined it, or never saw it (on PostgreSQL an answer no call here
    # waits for is handed on to the other replicas first).
    assert served.taken == [True] if taken else True not in served.taken
    with monkeypatch.context() as patched:

        async def declined(*_args: Any) -> bool:
            return False

        patched.setattr(served.route, "serve", declined)
        sdks = await served.http.post(served.path, content=content, headers=sent)
    served.taken.clear()
    assert ours.status_code == sdks.status_code, (ours.text, sdks.text)
    assert lasting(ours) == lasting(sdks)
    assert messages(ours) == messages(sdks)
    return ours


async def test_a_tool_list_is_the_sdks(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await same_as_sdk(served, monkeypatch, LIST, taken=True)
    (answer,) = messages(first)
    assert "kit__echo" in [t["name"] for t in answer["result"]["tools"]]
    assert first.headers["mcp-session-id"] == served.session_id


async def test_answers_tool_errors_and_protocol_errors_are_the_sdks(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = await same_as_sdk(
        served, monkeypatch, call("kit__echo", {"text": "hé", "channel": "c"}), taken=True
    )
    assert messages(ok)[0]["result"]["structuredContent"]["text"] == "hé"
    refused = await same_as_sdk(served, monkeypatch, call("kit__echo", {"text": 3}), taken=True)
    assert messages(refused)[0]["result"]["isError"] is True
    unknown = await same_as_sdk(served, monkeypatch, call("kit__nope", {}), taken=True)
    assert "error" in messages(unknown)[0]
    malformed = await same_as_sdk(served, monkeypatch, call("kit__echo", [1]), taken=True)
    assert messages(malformed)[0]["error"]["code"] == -32602


async def test_what_a_call_sends_first_comes_before_its_answer(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    level = {"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel", "params": {"level": "debug"}}
    await same_as_sdk(served, monkeypatch, level, taken=False)
    answer = await same_as_sdk(served, monkeypatch, call("talk__talk", {"text": "hi"}), taken=True)
    log, result = messages(answer)
    assert log["method"] == "notifications/message"
    assert result["result"]["structuredContent"] == {"said": "hi", "nothing": None}


async def test_concurrent_calls_of_one_session_each_get_their_own_answer(
    served: Served,
) -> None:
    """Each call's messages reach its own response: two of them log before answering."""
    answers: dict[int, list[Any]] = {}
    sent = headers(served.token, served.session_id)
    level = {"jsonrpc": "2.0", "id": 99, "method": "logging/setLevel", "params": {"level": "info"}}
    assert (await served.http.post(served.path, json=level, headers=sent)).status_code == 200

    async def one(request_id: int) -> None:
        name = "talk__talk" if request_id % 5 == 0 else "kit__echo"
        arguments = (
            {"text": f"t{request_id}", "channel": "c"}
            if name == "kit__echo"
            else {"text": f"t{request_id}"}
        )
        body = call(name, arguments, request_id=request_id)
        answer = await served.http.post(served.path, json=body, headers=sent)
        assert answer.status_code == 200, answer.text
        answers[request_id] = messages(answer)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for request_id in range(1, 13):
                tg.start_soon(one, request_id)
    assert sorted(answers) == list(range(1, 13))
    for request_id, got in answers.items():
        *before, last = got
        assert last["id"] == request_id
        structured = last["result"]["structuredContent"]
        assert structured.get("said", structured.get("text")) == f"t{request_id}"
        if request_id % 5 == 0:
            (log,) = before
            assert log["params"]["data"] == {"said": f"t{request_id}"}
        else:
            assert before == []
    assert served.taken.count(True) == 12


LEFT_TO_THE_SDK: dict[str, tuple[Any, dict[str, str]]] = {
    **transport_refusals(LIST),
    "another method": ({"jsonrpc": "2.0", "id": 7, "method": "ping"}, {}),
    "bad params": ({**LIST, "params": 3}, {}),
}


@pytest.mark.parametrize("case", sorted(LEFT_TO_THE_SDK))
async def test_what_the_route_does_not_take_the_sdk_answers(
    served: Served, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    body, changes = LEFT_TO_THE_SDK[case]
    await same_as_sdk(served, monkeypatch, body, taken=False, **changes)


async def test_another_credential_gets_the_sdks_404(served: Served) -> None:
    """The session belongs to the server token that opened it; an API key of the same org
    presenting its ID is answered as for an unknown session, by the SDK, not the route."""
    sent = headers("tdl_not_a_real_key_but_well_formed", served.session_id)
    answer = await served.http.post(served.path, content=json.dumps(LIST), headers=sent)
    assert answer.status_code == 401
    assert served.taken == []


# -- over a real socket: cancellation, keepalives, a client that leaves ---------------------


@asynccontextmanager
async def on_socket(settings: Settings, hold: Hold) -> AsyncIterator[tuple[str, str, str]]:
    async with holding_on_socket(settings, hold) as (url, token), httpx2.AsyncClient() as http:
        yield url, token, await open_session(http, url, token)


def frames(streamed: str) -> list[Any]:
    data = [line[6:] for line in streamed.split("\r\n") if line.startswith("data: ")]
    return [json.loads(item) for item in data]


async def test_a_call_the_client_cancels_stops_and_ends_its_stream(settings: Settings) -> None:
    hold = Hold()
    async with on_socket(settings, hold) as (url, token, session_id), httpx2.AsyncClient() as http:
        sent = headers(token, session_id)
        chunks: list[str] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def cancel() -> None:
                    await hold.started.wait()
                    note = {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": 41, "reason": "changed my mind"},
                    }
                    told = await http.post(url, content=json.dumps(note), headers=sent)
                    assert told.status_code == 202

                tg.start_soon(cancel)
                body = json.dumps(call("h__hold", {}, request_id=41))
                async with http.stream("POST", url, content=body, headers=sent) as response:
                    assert response.status_code == 200
                    async for text in response.aiter_text():
                        chunks.append(text)
            await hold.stopped.wait()
        (answer,) = frames("".join(chunks))
        assert answer["id"] == 41
        assert answer["error"]["code"] == treadle.mcp.session_route.REQUEST_CANCELLED


async def test_a_silent_call_keeps_its_stream_alive_then_answers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(treadle.mcp.session_route, "PING_SECONDS", 0.05)
    hold = Hold()
    async with on_socket(settings, hold) as (url, token, session_id), httpx2.AsyncClient() as http:
        body = json.dumps(call("h__hold", {}))
        chunks: list[str] = []
        with anyio.fail_after(10):
            sent = headers(token, session_id)
            async with http.stream("POST", url, content=body, headers=sent) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "text/event-stream"
                async for text in response.aiter_text():
                    chunks.append(text)
                    if ": ping - " in "".join(chunks):
                        hold.release.set()
        streamed = "".join(chunks)
        (answer,) = frames(streamed)
        assert answer["result"]["structuredContent"] == {"released": True}
        assert streamed.index(": ping - ") < streamed.index("data: ")


async def test_a_client_that_leaves_does_not_stop_the_call(settings: Settings) -> None:
    """As with the SDK's transport: the call runs to its end (and is recorded)."""
    hold = Hold()
    async with on_socket(settings, hold) as (url, token, session_id), httpx2.AsyncClient() as http:
        body = json.dumps(call("h__hold", {}))
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def post() -> None:
                    await http.post(url, content=body, headers=headers(token, session_id))

                tg.start_soon(post)
                await hold.started.wait()
                tg.cancel_scope.cancel()  # the client goes away mid-call
            hold.release.set()
            await hold.finished.wait()
        assert not hold.stopped.is_set()


async def test_a_request_served_outside_the_transport_holds_the_session_from_going_idle() -> None:
    transport = AwaitingTransport(mcp_session_id="s", idle_timeout=30.0)
    assert isinstance(transport, StreamableHTTPServerTransport)
    async with transport.connect():
        scope = transport.idle_scope
        assert scope is not None
        async with transport.holding() as live:
            assert live
            assert scope.deadline == float("inf")
            async with transport.holding():
                pass
            assert scope.deadline == float("inf")  # the outer one still holds it
        assert scope.deadline <= anyio.current_time() + 30.0
        scope.cancel()
        async with transport.holding() as live:
            assert not live  # gone idle: the SDK answers (as terminated)
