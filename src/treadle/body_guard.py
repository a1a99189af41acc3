"""Requests whose answer and body part ways: answered early, or left by their client.

- An answer sent before the body was read to its end (a 413 at the limit, a 401) closes the
  connection: kept open, the server would go on reading and discarding the rest, however
  large, for as long as the client cares to send it.
- A client gone mid-body leaves nothing to answer. `receive` itself raises ClientDisconnect, so
  no handler on the way (the MCP SDK's catch everything) mistakes it for a crash and logs a
  500 with a traceback; the access log records a disconnect.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CLOSE = (b"connection", b"close")


class BodyGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        finished = False

        async def guarded_receive() -> Message:
            nonlocal finished
            message = await receive()
            if message["type"] == "http.request":
                finished = not message.get("more_body", False)
            elif message["type"] == "http.disconnect" and not finished:
                raise ClientDisconnect()
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not finished:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _value in headers):
                    message = {**message, "headers": [*headers, _CLOSE]}
            await send(message)

        await self.app(scope, guarded_receive, closing_send)


def _has_body(headers: Headers) -> bool:
    # The server has checked the framing: Content-Length is digits, or the body is chunked.
    declared = headers.get("content-length", "")
    return "transfer-encoding" in headers or declared.strip("0") != ""
