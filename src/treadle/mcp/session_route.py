"""treadle's own route for the `tools/call` and `tools/list` POSTs of a handshake-era session.

The SDK's session transport serves each of a session's POSTs by handing the request through a
memory stream to the session's dispatcher, which spawns the handler in the session's task
group; the answer travels back through the transport's router task and a second memory stream
to an `EventSourceResponse`, which runs its own task group of writer, pinger and disconnect
watcher, and the result is validated into a `JSONRPCResponse` and dumped again on the way. At
c=32 that machinery was most of what the handshake era cost beyond the 2026-07-28 route.

This route makes the checks the transport makes, in its order, with the SDK's functions (the
session's owner, DNS rebinding, the Accept and Content-Type headers, the JSON-RPC shape); a
request that is not one of these two methods, or that any check would refuse, is handed to
the SDK untouched (its body replayed), so every refusal stays the SDK's. It then runs the
session's own kernel over the session's own connection, in the request's task, with a
dispatch context of the session's own dispatcher:

- whatever the handler sends for the request (progress, log messages, and requests to the
  client: elicitation, sampling) travels as it always did, through the dispatcher and the
  transport's router onto this request's own stream, and from there onto the response; the
  client's answers and its `notifications/cancelled` reach the handler through the
  dispatcher's tables, as before;
- the answer is encoded once, by pydantic-core, straight onto the response when nothing was
  sent for the request; otherwise it goes the same way as what was sent, so it comes last.

Answers keep the transport's shape: an SSE stream with its headers, `event: message` frames,
a `: ping - <time>` comment after every 15 s of silence, and `REQUEST_CANCELLED` for a request
the client cancelled. As with the transport, a client that goes away does not stop the call.
Built on the SDK 2.3 dispatcher's internals (`mcp` is pinned to that release).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any, Final

import anyio
import pydantic_core
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.jsonrpc_dispatcher import (
    _InFlight,
    _JSONRPCDispatchContext,
    handler_exception_to_error_data,
    progress_token_from_params,
)
from mcp.types import (
    ErrorData,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.requests import Request
from starlette.types import Scope, Send

from treadle.mcp.session_transport import AwaitingTransport, Routed, ServedSession
from treadle.mcp.sessions import CountedSessionManager

log = logging.getLogger(__name__)

ROUTED_METHODS: Final = frozenset({"tools/call", "tools/list"})
# sse-starlette's ping interval, which the transport's responses use.
PING_SECONDS = 15.0
# The transport's answer to a request the client cancelled (`_terminate_unanswered_request`).
REQUEST_CANCELLED: Final = -32800
_SEP = b"\r\n"


def _error(request_id: Any, error: ErrorData) -> dict[str, Any]:
    wire = error.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {"jsonrpc": "2.0", "id": request_id, "error": wire}


class _Response:
    """The request's SSE response, headers sent with the first frame."""

    def __init__(self, send: Send, session_id: str) -> None:
        self._send = send
        self._lock = anyio.Lock()
        self._started = False
        self._headers = [
            (b"cache-control", b"no-cache, no-transform"),
            (b"connection", b"keep-alive"),
            (b"content-type", b"text/event-stream"),
            (MCP_SESSION_ID_HEADER.encode(), session_id.encode("latin-1")),
            (b"x-accel-buffering", b"no"),
        ]

    async def write(self, frame: bytes, more: bool) -> None:
        async with self._lock:
            if not self._started:
                self._started = True
                await self._send(
                    {"type": "http.response.start", "status": 200, "headers": self._headers}
                )
            await self._send({"type": "http.response.body", "body": frame, "more_body": more})

    async def message(self, data: bytes, more: bool) -> None:
        await self.write(b"event: message" + _SEP + b"data: " + data + _SEP + _SEP, more)

    async def ping(self) -> None:
        await self.write(f": ping - {datetime.now(UTC)}".encode() + _SEP + _SEP, True)


class SessionRoute:
    """The route; `serve` answers whether it took the request (if not, the SDK serves it)."""

    def __init__(
        self,
        manager: CountedSessionManager,
        security: TransportSecuritySettings | None,
        max_body_bytes: int,
    ) -> None:
        self._manager = manager
        self._security = TransportSecurityMiddleware(security)
        self._max_body = max_body_bytes

    async def serve(self, session_id: str, body: bytes, scope: Scope, send: Send) -> bool:
        found = self._manager.served(session_id)
        if found is None:
            return False
        transport, served = found
        request = Request(scope)
        rpc = await self._accepted(session_id, transport, served, request, body)
        if rpc is None:
            return False
        async with transport.holding() as live:
            if not live:
                return False
            async with transport.routing(rpc.id) as routed:
                if routed is None:
                    return False
                await self._serve(transport, served, routed, request, rpc, session_id, send)
        return True

    async def _accepted(
        self,
        session_id: str,
        transport: AwaitingTransport,
        served: ServedSession,
        request: Request,
        body: bytes,
    ) -> JSONRPCRequest | None:
        """The request, when every check the SDK makes passes (in its order); else None."""
        user = request.scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if requestor != self._manager.owner_of(session_id):
            return None
        if await self._security.validate_request(request, is_post=True) is not None:
            return None
        has_json, has_sse = check_accept_headers(request)
        if not (has_json and has_sse) or not transport.takes_json(request):
            return None
        if len(body) > self._max_body:
            return None
        try:
            raw = pydantic_core.from_json(body)
        except ValueError:
            return None
        if not isinstance(raw, dict) or raw.get("method") not in ROUTED_METHODS:
            return None
        try:
            message = jsonrpc_message_adapter.validate_python(raw, by_name=False)
        except ValidationError:
            return None
        if not isinstance(message, JSONRPCRequest):
            return None
        if coerce_request_id(message.id) in served.dispatcher._in_flight:
            return None  # a duplicated ID: the SDK's own handling
        return message

    async def _serve(
        self,
        transport: AwaitingTransport,
        served: ServedSession,
        routed: Routed,
        request: Request,
        rpc: JSONRPCRequest,
        session_id: str,
        send: Send,
    ) -> None:
        dispatcher = served.dispatcher
        metadata = transport.metadata_for(request)
        dctx = _JSONRPCDispatchContext(
            transport=dispatcher._transport_builder(metadata),
            _dispatcher=dispatcher,
            _request_id=rpc.id,
            message_metadata=metadata,
            _progress_token=progress_token_from_params(rpc.params),
        )
        handler = anyio.CancelScope()
        key = coerce_request_id(rpc.id)
        entry = dispatcher._in_flight[key] = _InFlight(scope=handler, dctx=dctx)
        response = _Response(send, session_id)
        # A plain asyncio task, as in treadle.mcp.modern_route (a task group costs ~4x).
        forwarder = asyncio.ensure_future(self._forward(routed, response))
        answer: JSONRPCResponse | JSONRPCError
        try:
            with handler:
                try:
                    result = await served.runner.on_request(dctx, rpc.method, rpc.params)
                    answer = JSONRPCResponse(jsonrpc="2.0", id=rpc.id, result=result)
                except Exception as failure:
                    error = handler_exception_to_error_data(failure)
                    if error is None:
                        log.exception("handler for %r raised", rpc.method)
                        # As the SDK's dispatcher answers an unmapped failure.
                        error = ErrorData(code=0, message=str(failure))
                    answer = JSONRPCError(jsonrpc="2.0", id=rpc.id, error=error)
                finally:
                    dctx.close()
                    if dispatcher._in_flight.get(key) is entry:
                        del dispatcher._in_flight[key]
            if dctx.cancel_requested.is_set() or handler.cancelled_caught:
                cancelled = ErrorData(code=REQUEST_CANCELLED, message="Request cancelled")
                answer = JSONRPCError(jsonrpc="2.0", id=rpc.id, error=cancelled)
            if routed.sent:
                # Something went out for this request through the router: the answer follows
                # it the same way, and the forwarder writes it last.
                await dispatcher._write(answer)
                await forwarder
                return
        finally:
            if not forwarder.done():
                forwarder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await forwarder
        wire = (
            {"jsonrpc": "2.0", "id": rpc.id, "result": answer.result}
            if isinstance(answer, JSONRPCResponse)
            else _error(rpc.id, answer.error)
        )
        await response.message(to_json(wire), more=False)

    @staticmethod
    async def _forward(routed: Routed, response: _Response) -> None:
        """Writes what the router delivers for the request, and pings a silent stream; ends
        after the request's own answer."""
        while True:
            with anyio.move_on_after(PING_SECONDS) as timer:
                try:
                    event = await routed.stream.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
            if timer.cancelled_caught:
                await response.ping()
                continue
            message = event.message
            last = isinstance(message, JSONRPCResponse | JSONRPCError)
            data = message.model_dump_json(by_alias=True, exclude_unset=True).encode()
            await response.message(data, more=not last)
            if last:
                return
