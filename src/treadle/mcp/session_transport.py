"""The transport of one handshake-era session: the SDK's, plus what treadle needs to know of it.

- `awaiting`: the IDs of the requests it sent the client and has not heard answered (a
  client's answer may land on another replica: `treadle.mcp.answer_relay`);
- `served`: the session's running dispatcher and connection, through which treadle's own
  route serves the session's calls (`treadle.mcp.session_route`);
- `routed`: the requests that route serves, each with how many messages were sent for it, so
  its answer is written after them (`Routed`);
- `holding()`: a request that route serves keeps the session from going idle, as one the
  SDK's transport serves does.

Built on the SDK 2.3 transport's internals (`mcp` is pinned to that release).
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner
from mcp.server.streamable_http import (
    REQUEST_STREAM_BUFFER_SIZE,
    EventMessage,
    StreamableHTTPServerTransport,
)
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp.shared.transport_context import TransportContext
from mcp.types import (
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)
from starlette.requests import Request


def key_of(request_id: object) -> str:
    return str(request_id)


@dataclass(frozen=True, slots=True)
class ServedSession:
    """A session's running dispatcher and connection (see `CountedSessionManager._run`)."""

    dispatcher: JSONRPCDispatcher[TransportContext]
    connection: Connection
    # The session's kernel (a stateless view of `connection`), for requests served outside
    # the dispatcher's loop.
    runner: ServerRunner[Any]


class Routed:
    """What was sent for one request treadle's route serves: the messages the session's
    dispatcher wrote for it (they reach `stream`, through the transport's router)."""

    __slots__ = ("sent", "stream")

    def __init__(self, stream: MemoryObjectReceiveStream[EventMessage]) -> None:
        self.sent = 0
        self.stream = stream


class _Recording:
    """The session's outgoing stream, noting each request sent to the client (and each one
    the server gives up on: notifications/cancelled), and each message for a routed request."""

    def __init__(self, inner: WriteStream[SessionMessage], transport: AwaitingTransport) -> None:
        self._inner = inner
        self._awaiting = transport.awaiting
        self._routed = transport.routed

    async def send(self, item: SessionMessage, /) -> None:
        message = item.message
        if isinstance(message, JSONRPCRequest):
            self._awaiting.add(key_of(message.id))
        elif isinstance(message, JSONRPCNotification) and message.method == (
            "notifications/cancelled"
        ):
            given_up = (message.params or {}).get("requestId")
            if given_up is not None:
                self._awaiting.discard(key_of(given_up))
        if self._routed:
            # Where the transport's router sends it: by its related request, or an answer by
            # its own ID.
            metadata = item.metadata
            related = (
                metadata.related_request_id if isinstance(metadata, ServerMessageMetadata) else None
            )
            if related is None and isinstance(message, JSONRPCResponse | JSONRPCError):
                related = message.id
            routed = self._routed.get(key_of(related)) if related is not None else None
            if routed is not None:
                routed.sent += 1
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


class AwaitingTransport(StreamableHTTPServerTransport):
    """The SDK's session transport, with the bookkeeping above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaiting: set[str] = set()
        self.routed: dict[str, Routed] = {}
        self.served: ServedSession | None = None

    @asynccontextmanager
    async def connect(
        self,
    ) -> AsyncGenerator[tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]]:
        async with super().connect() as (read_stream, write_stream):
            yield read_stream, _Recording(write_stream, self)

    def takes_json(self, request: Request) -> bool:
        """Whether the request's Content-Type is one the transport accepts."""
        return self._check_content_type(request)

    def metadata_for(self, request: Request) -> ServerMessageMetadata:
        """What the transport frames a request with (its `can_send_request` verdict)."""
        return self._message_metadata(request)

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[bool]:
        """While a request is served outside `handle_request`: the idle countdown is
        suspended as `handle_request` suspends it. Yields False when the session already
        went idle (it is ending: let the SDK answer)."""
        scope = self.idle_scope
        timeout = self._idle_timeout
        if scope is None or timeout is None:
            yield True
            return
        if scope.cancel_called:
            yield False
            return
        self._requests_in_flight += 1
        scope.deadline = math.inf
        try:
            yield True
        finally:
            self._requests_in_flight -= 1
            if not self._requests_in_flight:
                scope.deadline = anyio.current_time() + timeout

    @asynccontextmanager
    async def routing(self, request_id: RequestId) -> AsyncIterator[Routed | None]:
        """The request's own stream, as the transport opens one for each request it serves:
        the router delivers there what the dispatcher sends for the request. None when the
        ID is already in use (the SDK then answers)."""
        key = key_of(request_id)
        if key in self._request_streams or key in self.routed:
            yield None
            return
        writer, reader = anyio.create_memory_object_stream[EventMessage](REQUEST_STREAM_BUFFER_SIZE)
        self._request_streams[key] = (writer, reader)
        routed = self.routed[key] = Routed(reader)
        try:
            yield routed
        finally:
            del self.routed[key]
            if self._request_streams.get(key, (None,))[0] is writer:
                del self._request_streams[key]
            writer.close()
            reader.close()
