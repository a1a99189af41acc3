"""Handshake-era MCP sessions that any replica serves: no sticky routing needed.

A session opens on whichever replica gets its `initialize`: its state is sealed into its ID
(`treadle.mcp.sealed_sessions`) and a row records it (`treadle.store.mcp_sessions`). Every later
request carrying the ID, on any replica:

1. opens the seal (an ID that does not open, or one opened by other credentials: 404, as the
   SDK answers for a session it does not know);
2. reads the session's row: ended (DELETE through any replica) or idle past the limit by the
   shared clock: 404. This one primary-key read per request is what makes a DELETE exact on
   the very next request to every replica; `last_seen` is refreshed at most every eighth of
   the idle limit (and while a GET stream is open), so a session may end up to that much
   early when its requests land on several replicas;
3. when this replica does not serve the session yet, restores it: the SDK's session transport,
   already initialised with the negotiated version and the client's declarations, counted in
   this replica's session limits and registered with its resync hub, so a GET stream here is
   told `tools/list_changed` for changes made through any replica.

The SDK then serves the request as it serves any session of its own.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.connection import Connection
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import Message, Receive, Scope, Send

from treadle.mcp.binding import Binding
from treadle.mcp.resync import ResyncHub
from treadle.mcp.sealed_sessions import KEY_PURPOSE, SessionSeal, SessionState, opening_state
from treadle.mcp.sessions import (
    CountedSessionManager,
    OverLimit,
    Reservation,
    SessionLedger,
    opening_id,
)
from treadle.store import Store
from treadle.store.mcp_sessions import SessionMark, now_ms

_SESSION_HEADER = b"mcp-session-id"
_VERSION_HEADER = b"mcp-protocol-version"
# Opened seals remembered, so a session's requests decrypt its ID once per replica.
_MAX_OPENED = 10_000
# The JSON-RPC error the SDK answers an unknown session with (INVALID_REQUEST, no id).
_NOT_FOUND = json.dumps(
    {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
).encode()

App = Callable[[Scope, Receive, Send], Awaitable[None]]


def session_id_of(scope: Scope) -> str | None:
    """The `Mcp-Session-Id` of a handshake-era request; None when it has none, or when it is
    a 2026-07-28 request (the SDK routes those by version, sessions play no part)."""
    session_id = None
    for name, value in scope["headers"]:
        if name == _SESSION_HEADER and session_id is None:
            session_id = value.decode("latin-1")
        elif name == _VERSION_HEADER and value.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS:
            return None
    return session_id


async def not_found(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": _NOT_FOUND})


@dataclass(frozen=True, slots=True)
class MarkRead:
    """A session's mark as read for a request (None: the session has no row)."""

    mark: SessionMark | None


class SharedSessions:
    def __init__(
        self,
        store: Store,
        manager: CountedSessionManager,
        ledger: SessionLedger,
        hub: ResyncHub,
        *,
        idle_seconds: float,
        max_body_bytes: int,
    ) -> None:
        self._seal = SessionSeal(store.vault.derive(KEY_PURPOSE))
        self._marks = store.mcp_sessions
        self._manager = manager
        self._ledger = ledger
        self._hub = hub
        self._max_body = max_body_bytes
        self._idle_ms = idle_seconds * 1000 if math.isfinite(idle_seconds) else math.inf
        # How stale `last_seen` may get before a request refreshes it.
        self._touch_ms = self._idle_ms / 8
        self._opened: OrderedDict[str, SessionState] = OrderedDict()

    # -- opening -------------------------------------------------------------------------------

    async def open(
        self, binding: Binding, scope: Scope, receive: Receive, send: Send, serve: App
    ) -> None:
        """Serve a request that may open a session (`serve` runs the SDK), giving the session
        its sealed ID. The body is read first: what `initialize` declares goes into the seal."""
        messages: list[Message] = []
        body = b""
        if scope["method"] == "POST":
            body, messages = await read_body(receive, self._max_body)
        state = opening_state(binding, body)
        session_id = self._seal.seal(state)
        at = now_ms()
        prune_before = at - 2 * self._idle_ms
        await self._marks.opened(
            state.key,
            state.server_id,
            at,
            int(prune_before) if math.isfinite(prune_before) else -1,
        )
        self._remember(session_id, state)
        replayed = replay(messages, receive)
        reset = opening_id.set(session_id)
        try:
            await serve(scope, replayed, send)
        finally:
            opening_id.reset(reset)
            if not self._manager.holds(session_id):
                # Refused (not an initialize, a bad header, ...): no session opened.
                with anyio.CancelScope(shield=True):
                    await self._marks.forget(state.key)
                self._opened.pop(session_id, None)

    # -- continuing ----------------------------------------------------------------------------

    async def version_and_mark(self, session_id: str) -> tuple[int, MarkRead] | None:
        """The configuration version with the session's mark, read in one statement where
        each read is a round trip (PostgreSQL), for the request's snapshot and `resume`;
        None where they are read on their own, or when the ID is none of ours."""
        state = self._state(session_id)
        if state is None:
            return None
        found = await self._marks.get_with_version(state.key)
        if found is None:
            return None
        version, mark = found
        return version, MarkRead(mark)

    async def resume(
        self,
        binding: Binding,
        session_id: str,
        user: AuthenticatedUser | None,
        method: str,
        read: MarkRead | None = None,
    ) -> SessionState | OverLimit | None:
        """Make the session servable here: its state, or None when it is unknown to the
        caller (404), or OverLimit when restoring it here would exceed a session limit.
        `read`: the session's mark as `version_and_mark` read it for this request."""
        state = self._state(session_id)
        if state is None or not state.belongs_to(binding):
            return None
        mark = read.mark if read is not None else await self._marks.get(state.key)
        at = now_ms()
        if mark is None or mark.ended:
            await self._manager.end_here(session_id)
            return None
        if at - mark.last_seen_ms >= self._idle_ms:
            await self._marks.end(state.key, at)
            await self._manager.end_here(session_id)
            return None
        if at - mark.last_seen_ms >= self._touch_ms:
            await self._marks.touch(state.key, at)
        if self._manager.holds(session_id):
            return state
        # A DELETE ends the session whatever the counts; it is held only while it is served.
        reserved: Reservation | OverLimit = (
            self._ledger.hold(binding) if method == "DELETE" else self._ledger.reserve(binding)
        )
        if isinstance(reserved, OverLimit):
            return reserved
        requestor = authorization_context(user) if user is not None else None

        async def register(connection: Connection) -> None:
            # As the server middleware does on a session's first request here, but now: a
            # replica serving only the session's GET stream sees no request at all.
            if self._hub.add_session(binding, id(connection), connection):
                connection.exit_stack.callback(self._hub.remove_session, binding, id(connection))
                await self._hub.remember(binding)

        await self._manager.restore(
            session_id, requestor, reserved, state.client_params(), register
        )
        return state

    def ending(self, state: SessionState, send: Send) -> Send:
        """`send` for a DELETE: the session is marked ended for every replica before the
        client hears that it is (so its next request, wherever it lands, is refused)."""

        async def marked_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                await self._marks.end(state.key, now_ms())
            await send(message)

        return marked_send

    @asynccontextmanager
    async def streaming(self, session_id: str, state: SessionState) -> AsyncIterator[None]:
        """While a GET stream of the session is open here: keep `last_seen` fresh (the
        session is in use), and end this replica's copy if it was ended elsewhere."""
        if not math.isfinite(self._touch_ms):
            yield
            return
        async with anyio.create_task_group() as tg:

            async def keep_alive() -> None:
                while True:
                    await anyio.sleep(self._touch_ms / 1000)
                    mark = await self._marks.get(state.key)
                    if mark is None or mark.ended:
                        await self._manager.end_here(session_id)
                        return
                    await self._marks.touch(state.key, now_ms())

            tg.start_soon(keep_alive)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    def _state(self, session_id: str) -> SessionState | None:
        state = self._opened.get(session_id)
        if state is not None:
            self._opened.move_to_end(session_id)
            return state
        state = self._seal.open(session_id)
        if state is not None:
            self._remember(session_id, state)
        return state

    def _remember(self, session_id: str, state: SessionState) -> None:
        self._opened[session_id] = state
        if len(self._opened) > _MAX_OPENED:
            self._opened.popitem(last=False)


async def read_body(receive: Receive, limit: int) -> tuple[bytes, list[Message]]:
    """The request body (up to just past `limit`: the SDK refuses longer ones itself), and
    the messages it came in, to hand on unchanged."""
    messages: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if len(body) > limit or not message.get("more_body", False):
            break
    return bytes(body), messages


def replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
