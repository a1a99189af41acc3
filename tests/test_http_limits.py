"""What a real server does with bodies over their limit, clients that vanish mid-body and
clients too slow to finish a request: uvicorn on a loopback port, as `treadle serve` runs it."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from test_gates_execute import Gates, gates_fixture, pending  # noqa: F401
from treadle.api.bodies import MAX_BODY_BYTES
from treadle.read_deadlines import DeadlineProtocol, deadline_protocol
from treadle.settings import Settings

from loopback import serve
from mcp_harness import ServeProcess

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024
FAR_OVER = 64 * 1024 * 1024  # what a client offers to send; the limits are 1 MiB and less


class BodyMeter:
    """Counts the body bytes the application was handed (what the server read for it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


def protocol(headers: float = 10.0, body: float = 30.0) -> type[DeadlineProtocol]:
    """The protocol class `treadle serve` hands uvicorn, with these deadlines."""
    return deadline_protocol(headers=headers, body=body)


@asynccontextmanager
async def served(app: ASGIApp, **options: Any) -> AsyncIterator[int]:
    """`app` on a loopback port behind the protocol of `treadle serve`; the port."""
    options.setdefault("http", protocol())
    async with serve(app, timeout_graceful_shutdown=5, **options) as port:
        yield port


def request_head(path: str, port: int, *lines: str, method: str = "POST") -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


# -- bodies stop at their limit --------------------------------------------------------------


async def approval_id(gates: Gates) -> str:
    await gates.policy()
    found: str = pending(await gates.send({"to": "a@example.com"}))["id"]
    return found


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    offered: int  # body bytes the client got into the connection before it was closed


def offer(port: int, head: bytes, *, chunked: bool) -> Answer:
    """Sends `head`, then body blocks until FAR_OVER bytes went out or the server closed the
    connection; then reads the answer. Blocking, in a thread: unlike an event loop's
    transport, a socket whose write was reset still hands over the answer that preceded it."""
    block = b"x" * CHUNK
    if chunked:
        block = b"%x\r\n%s\r\n" % (CHUNK, block)
    offered = 0
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        try:
            while offered < FAR_OVER:
                sock.sendall(block)
                offered += CHUNK
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    head_part, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head_part.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return Answer(int(status_line.split()[1]), headers, body, offered)


@pytest.mark.parametrize("route", ["api decision", "approval page", "connect page"])
@pytest.mark.parametrize("framing", ["chunked", "declared"])
async def test_a_body_far_over_its_limit_is_refused_before_the_server_reads_it(
    gates: Gates, route: str, framing: str
) -> None:
    meter = BodyMeter(gates.transport.app)
    lines = ["Content-Type: application/x-www-form-urlencoded"]
    if route == "api decision":
        approval = await approval_id(gates)
        path = f"/api/v1/approvals/{approval}/approve"
        lines = ["Content-Type: application/json", f"Authorization: Bearer {gates.reviewer}"]
    else:
        path = "/approve/apr_0" if route == "approval page" else "/connect"
    chunked = framing == "chunked"
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {FAR_OVER}")

    async with served(meter) as port:
        head = request_head(path, port, *lines)
        answer = await anyio.to_thread.run_sync(partial(offer, port, head, chunked=chunked))

    # The application was handed at most its limit and a chunk; the server stopped reading
    # there (kernel buffers took a few MiB more), so most of the offered body never went out.
    assert answer.offered < FAR_OVER // 2
    assert meter.read <= MAX_BODY_BYTES + 512 * 1024
    assert answer.status == 413
    assert answer.headers["connection"] == "close"
    if route == "api decision":
        assert json.loads(answer.body)["error"] == "PAYLOAD_TOO_LARGE"
        assert (await gates.approval(approval))["status"] == "pending"


# -- clients that vanish mid-body -------------------------------------------------------------


class Captured(logging.Handler):
    """Every record of the server's loggers; wakes a waiter on each access line."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._access = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if record.name == "treadle.access":
            self._access.set()

    async def access_line(self) -> str:
        with anyio.fail_after(10):
            await self._access.wait()
        return next(r.getMessage() for r in self.records if r.name == "treadle.access")


@contextmanager
def captured() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


async def mcp_server(gates: Gates) -> tuple[str, str]:
    created = await gates.api.post(
        "/mcp/servers", {"workspaceId": gates.api.workspace_id, "name": "probe"}
    )
    assert created.status_code == 201, created.text
    return created.json()["server"]["id"], created.json()["token"]


@pytest.mark.parametrize("route", ["rest", "approval page", "mcp"])
async def test_a_client_gone_mid_body_is_logged_as_a_disconnect_without_a_traceback(
    gates: Gates, route: str
) -> None:
    path = "/api/v1/actions/execute"
    lines = ["Content-Type: application/json", f"Authorization: Bearer {gates.api.api_key}"]
    if route == "approval page":
        path, lines = "/approve/apr_0", ["Content-Type: application/x-www-form-urlencoded"]
    elif route == "mcp":
        server_id, token = await mcp_server(gates)
        path = f"/mcp/{server_id}"
        lines = [
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            f"Authorization: Bearer {token}",
        ]

    with captured() as logs:
        async with served(gates.transport.app, lifespan="on") as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as sock:
                await sock.send(request_head(path, port, "Content-Length: 5000", *lines))
                await sock.send(b'{"workspaceId": ')
            line = await logs.access_line()
        # Leaving `served` waited for the request's task to end: all it logs is in.

    assert line.startswith(f"POST {path} client-disconnected ")
    assert troubles(logs) == []


def troubles(logs: Captured) -> list[str]:
    """Records that would alarm an operator: errors, tracebacks, 500s."""
    return [
        r.getMessage()
        for r in logs.records
        if r.exc_info or r.levelno >= logging.ERROR or " 500 " in r.getMessage()
    ]


# -- clients too slow to finish a request ------------------------------------------------------


async def closed_by_server(sock: SocketStream) -> bytes:
    """What the server sent until it closed the connection (fails if it never does)."""
    received = b""
    with anyio.fail_after(5):
        while True:
            try:
                received += await sock.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


@asynccontextmanager
async def slow_server(gates: Gates) -> AsyncIterator[tuple[int, SocketStream]]:
    """Deadlines of 0.3 s for headers and body; keep-alive far longer, so it closes nothing."""
    options = {"http": protocol(headers=0.3, body=0.3), "timeout_keep_alive": 60}
    async with (
        served(gates.transport.app, **options) as port,
        await anyio.connect_tcp("127.0.0.1", port) as sock,
    ):
        yield port, sock


def listing(port: int, gates: Gates) -> bytes:
    return request_head(
        "/api/v1/workspaces", port, f"Authorization: Bearer {gates.api.api_key}", method="GET"
    )


async def test_a_connection_that_sends_nothing_is_closed(gates: Gates) -> None:
    async with slow_server(gates) as (_port, sock):
        assert await closed_by_server(sock) == b""


async def test_headers_that_never_end_are_cut_off(gates: Gates) -> None:
    async with slow_server(gates) as (port, sock):
        await sock.send(listing(port, gates)[:-4])  # all but the blank line
        assert await closed_by_server(sock) == b""


@pytest.mark.parametrize("framing", ["Content-Length: 100", "Transfer-Encoding: chunked"])
async def test_a_body_that_never_ends_is_cut_off(gates: Gates, framing: str) -> None:
    auth = f"Authorization: Bearer {gates.api.api_key}"
    part = b'5\r\n{"wor\r\n' if "chunked" in framing else b'{"wor'
    with captured() as logs:
        async with slow_server(gates) as (port, sock):
            await sock.send(request_head("/api/v1/actions/execute", port, framing, auth) + part)
            assert await closed_by_server(sock) == b""
            line = await logs.access_line()
    assert line.startswith("POST /api/v1/actions/execute client-disconnected ")
    assert troubles(logs) == []


async def test_a_kept_alive_connection_gets_the_header_deadline_for_its_next_request(
    gates: Gates,
) -> None:
    async with slow_server(gates) as (port, sock):
        await sock.send(listing(port, gates))
        with anyio.fail_after(5):
            answered = await sock.receive()
        assert answered.startswith(b"HTTP/1.1 200 ")
        await sock.send(listing(port, gates)[:20])
        assert await closed_by_server(sock) == b""


async def test_requests_within_the_deadlines_are_answered_on_one_kept_alive_connection(
    gates: Gates,
) -> None:
    async with (
        served(gates.transport.app, http=protocol(headers=5, body=5)) as port,
        await anyio.connect_tcp("127.0.0.1", port) as sock,
    ):
        for _ in range(3):
            await sock.send(listing(port, gates))
            with anyio.fail_after(5):
                answered = await sock.receive()
            assert answered.startswith(b"HTTP/1.1 200 ")


async def test_treadle_serve_takes_its_deadlines_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREADLE_HEADER_TIMEOUT", "0.3")
    process = ServeProcess.start(tmp_path / "data")
    try:
        port = int(process.base_url.rsplit(":", 1)[1])
        async with await anyio.connect_tcp("127.0.0.1", port) as sock:
            await sock.send(b"GET /api/v1/workspaces HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert await closed_by_server(sock) == b""
    finally:
        assert process.stop() == 0


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_a_deadline_that_is_not_a_positive_number_stops_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TREADLE_BODY_TIMEOUT", value)
    with pytest.raises(SystemExit, match="TREADLE_BODY_TIMEOUT"):
        Settings.from_env(tmp_path)
