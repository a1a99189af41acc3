"""treadle's own route for the 2026-07-28 era's `tools/call` and `tools/list` POSTs.

The SDK's single-exchange HTTP entry (`mcp.server._streamable_http_modern`) serves these by
running the handler beside a disconnect watcher in a task group, fed through a memory stream,
and writes the answer by wrapping the result in a `JSONRPCResponse`, dumping it again with
`model_dump(mode="json")` and encoding that with `json.dumps`: for a 512 KiB tool-list page
about 22 ms, more than twice what the handshake era's transport takes for the same page.

This route runs the same checks in the same order (DNS rebinding and content type, the Accept
header, JSON-RPC shape, duplicated routing headers, the version and envelope ladder, the
`Mcp-Param-*` headers) with the SDK's own functions, and the same kernel (`serve_one`, so every
middleware and handler of the `Server` runs as before). It differs in two places only:

- the answer is encoded once, by pydantic-core, from the result dict the kernel produced;
- the handler runs in the request's task and one plain asyncio task watches for a disconnect
  (and keeps a silent SSE stream alive), instead of a task group of two tasks and a stream.

Anything that is not a well-formed request of these two methods, or that any check would
refuse, is handed to the SDK untouched (its body replayed), so every refusal, status code and
error body stays the SDK's. Answers keep the SDK's shape: JSON when the handler sent no
notification, an SSE stream (`event: message` frames, `: ping` keepalives every 15 s of
silence, the result last) once it did or once it ran silent for 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from mcp.server import Server
from mcp.server.connection import Connection
from mcp.server.runner import modern_error_data, serve_one
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_METHOD_HEADER,
    MCP_PARAM_HEADER_PREFIX,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp.types import ErrorData, JSONRPCRequest, ProgressToken, RequestId
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTED_METHODS: Final = frozenset({"tools/call", "tools/list"})
# The SDK's keepalive interval (`_SSE_PING_INTERVAL`): a silent handler commits SSE after it.
PING_SECONDS = 15.0

_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.encode()
_METHOD_HEADER = MCP_METHOD_HEADER.encode()
_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower()
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]
_PING: Final = b": ping\r\n\r\n"
# Input schemas whose header check is known to pass, at most this many remembered.
MAX_REMEMBERED_SCHEMAS = 4096


def mentions_param_header(node: Any) -> bool:
    """Whether `x-mcp-header` appears anywhere in a schema: without it no property is
    annotated, and the SDK's `Mcp-Param-*` check has nothing to compare."""
    stack = [node]
    while stack:
        found = stack.pop()
        if isinstance(found, dict):
            if "x-mcp-header" in found:
                return True
            stack.extend(found.values())
        elif isinstance(found, list):
            stack.extend(found)
    return False


class _UnannotatedSchemas:
    """Input schemas with no `x-mcp-header`, by identity: a tool set's schemas are immutable
    and live as long as it does, and the SDK walks the whole schema on every call with
    arguments (~40 µs for a small one). Each entry holds its schema, so an id is never taken
    by another object while it is remembered."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Any, bool]] = {}

    def plain(self, schema: Any) -> bool:
        found = self._seen.get(id(schema))
        if found is not None and found[0] is schema:
            return found[1]
        plain = not mentions_param_header(schema)
        if len(self._seen) >= MAX_REMEMBERED_SCHEMAS:
            self._seen.clear()
        self._seen[id(schema)] = (schema, plain)
        return plain


def routed(scope: Scope) -> bool:
    """Whether this route would serve the request: a POST of a 2026-07-28 version naming one
    of the routed methods in its `Mcp-Method` header (the body must agree; checked later)."""
    return _modern_method(scope) in ROUTED_METHODS


def calls_tool(scope: Scope) -> bool:
    """A 2026-07-28 POST whose `Mcp-Method` header says tools/call: the SDK and this route
    serve it only if the body's method agrees."""
    return _modern_method(scope) == "tools/call"


def _modern_method(scope: Scope) -> str | None:
    """The `Mcp-Method` header of a POST of a 2026-07-28 version, else None."""
    if scope.get("method") != "POST":
        return None
    version: bytes | None = None
    method: bytes | None = None
    for name, value in scope["headers"]:
        if name == _VERSION_HEADER:
            version = value
        elif name == _METHOD_HEADER:
            method = value
    if version is None or method is None:
        return None
    if version.decode("latin-1") not in MODERN_PROTOCOL_VERSIONS:
        return None
    return method.decode("latin-1")


def _sse(message: dict[str, Any]) -> bytes:
    return b"event: message\r\ndata: " + to_json(message) + b"\r\n\r\n"


class _Stream:
    """The response of one request: JSON until something is streamed, then SSE."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = anyio.Lock()
        self.committed = False

    async def _chunk(self, body: bytes, more: bool) -> None:
        async with self._lock:
            if not self.committed:
                self.committed = True
                await self._send(
                    {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS}
                )
            await self._send({"type": "http.response.body", "body": body, "more_body": more})

    async def event(self, message: dict[str, Any]) -> None:
        await self._chunk(_sse(message), True)

    async def ping(self) -> None:
        await self._chunk(_PING, True)

    async def last(self, message: dict[str, Any]) -> None:
        await self._chunk(_sse(message), False)

    async def json(self, status: int, message: dict[str, Any]) -> None:
        body = to_json(message)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


@dataclass
class _Exchange:
    """`DispatchContext` of one request: no back-channel (2026-07-28 has none);
    notifications go onto the request's own response, as SSE events."""

    transport: TransportContext
    request_id: RequestId
    message_metadata: ServerMessageMetadata
    stream: _Stream
    progress_token: ProgressToken | None = None
    cancel_requested: anyio.Event = field(default_factory=anyio.Event)
    can_send_request: bool = field(default=False, init=False)

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = dict(params)
        await self.stream.event(message)

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        if self.progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self.progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)


def _replaying(messages: deque[Message], receive: Receive) -> Receive:
    """`receive`, after handing out again what was already read from it."""

    async def replay() -> Message:
        if messages:
            return messages.popleft()
        return await receive()

    return replay


def _error(request_id: RequestId, error: ErrorData) -> dict[str, Any]:
    wire = error.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {"jsonrpc": "2.0", "id": request_id, "error": wire}


class ModernRoute:
    """The route; `fallback` is the SDK's handler, for everything this route does not take."""

    def __init__(
        self,
        server: Server[Any],
        security: TransportSecuritySettings | None,
        max_body_bytes: int,
        lifespan_state: Callable[[], Any],
        fallback: ASGIApp,
    ) -> None:
        self._server = server
        self._security = TransportSecurityMiddleware(security)
        self._max_body = max_body_bytes
        self._lifespan_state = lifespan_state
        self._fallback = fallback
        self._unannotated = _UnannotatedSchemas()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        read: deque[Message] = deque()
        body = await self._read_body(scope, receive, read)
        if body is None:
            await self._fallback(scope, _replaying(read, receive), send)
            return
        request = Request(scope, _replaying(deque(read), receive))
        accepted = await self._accepted(request, body)
        if accepted is None:
            await self._fallback(scope, _replaying(read, receive), send)
            return
        rpc, verdict = accepted
        await self._serve(request, rpc, verdict, receive, send)

    async def _read_body(
        self, scope: Scope, receive: Receive, read: deque[Message]
    ) -> bytes | None:
        """The whole body, or None (over the limit, a disconnect): then the SDK answers."""
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self._max_body):
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _accepted(
        self, request: Request, body: bytes
    ) -> tuple[JSONRPCRequest, InboundModernRoute] | None:
        """The request and its envelope, when every check the SDK makes passes (in its
        order); None otherwise."""
        if await self._security.validate_request(request, is_post=True) is not None:
            return None
        has_json, has_sse = check_accept_headers(request)
        if not (has_json and has_sse):
            return None
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(decoded, dict) or "id" not in decoded:
            return None
        try:
            rpc = JSONRPCRequest.model_validate(decoded)
        except ValidationError:
            return None
        if rpc.method not in ROUTED_METHODS:
            return None
        if find_duplicated_routing_header(request.headers.items()) is not None:
            return None
        verdict = classify_inbound_request(decoded, headers=dict(request.headers))
        if isinstance(verdict, InboundLadderRejection):
            return None
        if self._param_rejection(request, rpc) is not None:
            return None
        return rpc, verdict

    def _param_rejection(
        self, request: Request, rpc: JSONRPCRequest
    ) -> InboundLadderRejection | None:
        """The `Mcp-Param-*` check of a tools/call (the SDK's, through the same lookup)."""
        lookup = self._server.get_tool_input_schema
        if rpc.method != "tools/call" or lookup is None:
            return None
        params = rpc.params or {}
        name, arguments = params.get("name"), params.get("arguments")
        if not isinstance(name, str) or (arguments is not None and not isinstance(arguments, dict)):
            return None
        if not arguments and not any(h.startswith(_PARAM_PREFIX) for h in request.headers):
            return None
        schema = lookup(name)
        if schema is None or self._unannotated.plain(schema):
            return None
        return validate_mcp_param_headers(schema, arguments or {}, request.headers)

    async def _serve(
        self,
        request: Request,
        rpc: JSONRPCRequest,
        verdict: InboundModernRoute,
        receive: Receive,
        send: Send,
    ) -> None:
        stream = _Stream(send)
        exchange = _Exchange(
            transport=TransportContext(
                kind="streamable-http", can_send_request=False, headers=request.headers
            ),
            request_id=rpc.id,
            message_metadata=ServerMessageMetadata(request_context=request),
            stream=stream,
            progress_token=progress_token_from_params(rpc.params),
        )
        connection = Connection.from_envelope(
            verdict.protocol_version, verdict.client_info, verdict.client_capabilities
        )
        handler = anyio.CancelScope()
        # A plain asyncio task, not a task group: 16 µs a request instead of ~70 (treadle is
        # served by uvicorn on asyncio; anyio's scopes work inside it).
        watcher = asyncio.ensure_future(self._watch(receive, stream, handler))
        answer: dict[str, Any]
        try:
            with handler:
                try:
                    result = await serve_one(
                        self._server,
                        exchange,
                        rpc.method,
                        rpc.params,
                        connection=connection,
                        lifespan_state=self._lifespan_state(),
                    )
                    answer = {"jsonrpc": "2.0", "id": rpc.id, "result": result}
                except Exception as failure:
                    answer = _error(rpc.id, modern_error_data(failure))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if handler.cancelled_caught:
            return  # the client went away: nobody to answer
        if stream.committed:
            await stream.last(answer)
            return
        error = answer.get("error")
        status = ERROR_CODE_HTTP_STATUS.get(error["code"], 200) if error else 200
        await stream.json(status, answer)

    @staticmethod
    async def _watch(receive: Receive, stream: _Stream, handler: anyio.CancelScope) -> None:
        """Cancels the handler when the client disconnects; keeps a silent stream alive."""
        while True:
            with anyio.move_on_after(PING_SECONDS) as timer:
                while (await receive())["type"] != "http.disconnect":
                    pass
                handler.cancel()
                return
            if timer.cancelled_caught:
                await stream.ping()
