"""Ending the MCP streams that only listen, so `treadle serve` stops promptly.

A handshake-era client keeps a GET stream open for the whole session, and a 2026-07-28 client
keeps its `subscriptions/listen` request open. On SIGTERM uvicorn waits for every open request
to finish before it shuts the application down, and these finish only when their client hangs
up: one connected client would hold the process indefinitely. When draining starts, each such
request is told its client disconnected (the SDK then ends it as it would for a real
disconnect), and its response is completed so the client sees the stream end cleanly; a
client reconnecting meanwhile is ended at once. Requests that do work (tool calls) are not
touched: uvicorn lets them finish.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHOD_HEADER = b"mcp-method"
_LISTEN = b"subscriptions/listen"
_DISCONNECT: Message = {"type": "http.disconnect"}


def only_listens(scope: Scope) -> bool:
    """A handshake-era GET stream, or a 2026-07-28 listen request (the SDK checks that the
    `Mcp-Method` header matches the body's method, so the header can be trusted here)."""
    if scope["method"] == "GET":
        return True
    return any(name == _METHOD_HEADER and value == _LISTEN for name, value in scope["headers"])


class StreamDrain:
    def __init__(self) -> None:
        self.draining = False
        self._waiters: set[anyio.Event] = set()

    def start(self) -> None:
        self.draining = True
        for waiter in self._waiters:
            waiter.set()
        self._waiters.clear()

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Runs `app` for a request that only listens, ending it when draining starts."""
        started = complete = drained = False

        async def watched_send(message: Message) -> None:
            nonlocal started, complete
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        async def receive_until_drained() -> Message:
            nonlocal drained
            message = await self._until_drained(receive)
            drained = drained or message is _DISCONNECT
            return message

        await app(scope, receive_until_drained, watched_send)
        if drained and started and not complete:
            # The SDK stops writing when its client "disconnects"; the client is still there.
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _until_drained(self, receive: Receive) -> Message:
        """The next message from the client, or our own disconnect once draining starts."""
        if self.draining:
            return _DISCONNECT
        stop = anyio.Event()
        self._waiters.add(stop)
        received: Message | None = None
        try:
            async with anyio.create_task_group() as tg:

                async def forward() -> None:
                    nonlocal received
                    received = await receive()
                    tg.cancel_scope.cancel()

                tg.start_soon(forward)
                await stop.wait()
                tg.cancel_scope.cancel()
        finally:
            self._waiters.discard(stop)
        return received if received is not None else _DISCONNECT
