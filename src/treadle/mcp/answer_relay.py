"""A client's answer to a server request mid-call reaches the replica whose call waits for it.

In the handshake era a tool call may send the client a request on the call's open stream
(sampling, elicitation: treadle's own approval pause asks through it) and wait for the
answer, which the client POSTs separately with the session ID. Behind a balancer without
affinity that POST lands on any replica. Each session's transport here records the IDs of
the requests it sent and has not heard answered (`AwaitingTransport`); a replica receiving a
POST that carries only an answer:

- whose request it holds, serves it as the SDK always did;
- otherwise publishes it on the cross-replica channel (PostgreSQL `NOTIFY`,
  `treadle.store.pg_answers`) and answers the POST 202, as the SDK does once an answer is
  handed to the session. The replica holding the request feeds the answer into that
  session's transport as a POST of its own, so it reaches the waiting call exactly as if it
  had arrived there.

On SQLite only one process serves HTTP: every answer is local and nothing is relayed.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import anyio
from starlette.types import Message, Send

from treadle.mcp.session_transport import key_of
from treadle.store.database import Database
from treadle.store.pg_answers import PostgresAnswers, RelayedAnswer

if TYPE_CHECKING:
    from treadle.mcp.sessions import CountedSessionManager

log = logging.getLogger(__name__)

# Relayed answers waiting to be fed in (a burst beyond this is dropped, and logged).
_QUEUE = 1_000
# Any allowed host serves (127.0.0.1:* always is): the request never left this process.
_LOCAL_HOST = b"127.0.0.1:0"


def answered_id(body: bytes) -> str | None:
    """The request ID a POST body answers, when it is one JSON-RPC response or error (and
    nothing else); None for anything the SDK should see as it is."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or "method" in message:
        return None
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None
    if ("result" in message) == ("error" in message):
        return None
    return key_of(request_id)


async def accepted(send: Send) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class AnswerRelay:
    """Hands answers to the replica that waits for them, and takes those others hand on."""

    def __init__(self, db: Database, manager: CountedSessionManager) -> None:
        self._manager = manager
        self._channel = None if db.is_sqlite else PostgresAnswers(db, self._heard)
        self._inbox_in, self._inbox = anyio.create_memory_object_stream[RelayedAnswer](_QUEUE)

    @property
    def relays(self) -> bool:
        """Whether answers can travel to other replicas (PostgreSQL)."""
        return self._channel is not None

    def takes_here(self, session_id: str, request_id: str) -> bool:
        """Whether this replica holds the request answered; if so it is answered now."""
        transport = self._manager.awaiting(session_id, request_id)
        if transport is None:
            return False
        transport.awaiting.discard(request_id)
        return True

    async def hand_on(self, session_id: str, protocol_version: str, body: bytes) -> None:
        if self._channel is not None:
            await self._channel.publish(RelayedAnswer(session_id, protocol_version, body))

    async def run(self) -> None:
        """Listen for other replicas' answers and feed them in, until cancelled."""
        if self._channel is None:
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._channel.run)
            async for answer in self._inbox:
                await self._feed(answer)

    def _heard(self, answer: RelayedAnswer) -> None:
        try:
            self._inbox_in.send_nowait(answer)
        except anyio.WouldBlock:
            log.warning("dropped a relayed MCP answer: too many waiting to be fed in")

    async def _feed(self, answer: RelayedAnswer) -> None:
        request_id = answered_id(answer.body)
        if request_id is None:
            return
        transport = self._manager.awaiting(answer.session_id, request_id)
        if transport is None:
            return  # another replica holds it, or nobody waits for it any more
        transport.awaiting.discard(request_id)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", _LOCAL_HOST),
                (b"content-type", b"application/json"),
                (b"accept", b"application/json, text/event-stream"),
                (b"mcp-session-id", answer.session_id.encode("latin-1")),
                (b"mcp-protocol-version", answer.protocol_version.encode("latin-1")),
            ],
            "client": None,
            "server": None,
        }
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": answer.body, "more_body": False}

        status: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        try:
            await transport.handle_request(scope, receive, send)
        except Exception:
            log.exception("could not feed a relayed MCP answer to its session")
            return
        if status != [202]:
            log.warning("a relayed MCP answer was refused by its session (%s)", status)
