"""Handshake-era HTTP sessions, bounded per principal, per MCP server, per org and in total.

The SDK's session manager only caps the sessions of the whole process, so one principal could
open all of them and every other org's `initialize` would be refused. Here each session opened
is counted against the principal that opened it (a server token or an API key), its MCP
server and its org; a request that would go over any of those limits is refused before the
SDK sees it, with `TOO_MANY_SESSIONS` naming the limit, while everyone else still gets theirs.
Sessions leave the count however they end: DELETE, idle timeout, a failed opening, shutdown.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.abc
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner, serve_connection
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp.types import InitializeRequestParams
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import Message, Receive, Scope, Send

from treadle.mcp.binding import Binding
from treadle.mcp.session_transport import AwaitingTransport, ServedSession
from treadle.settings import McpSessionLimits

log = logging.getLogger(__name__)

LimitScope = Literal["principal", "server", "org", "total"]

_SESSION_HEADER = b"mcp-session-id"
_VERSION_HEADER = b"mcp-protocol-version"


def opens_session(scope: Scope) -> bool:
    """Whether the SDK would open a session for this request: a handshake-era request (no
    version header, or a handshake version) without a session ID, whatever its method."""
    version = None
    for name, value in scope["headers"]:
        if name == _SESSION_HEADER:
            return False
        if name == _VERSION_HEADER and version is None:
            version = value.decode("latin-1")
    return version is None or version in HANDSHAKE_PROTOCOL_VERSIONS


@dataclass(frozen=True, slots=True)
class OverLimit:
    scope: LimitScope
    limit: int


class Reservation:
    """One session's place in the counts, from the request that opens it until it ends."""

    __slots__ = ("claimed", "keys", "released")

    def __init__(self, keys: tuple[tuple[LimitScope, str], ...]) -> None:
        self.keys = keys
        self.claimed = False  # a session was opened with it; the session releases it
        self.released = False


def _keys(binding: Binding) -> tuple[tuple[LimitScope, str], ...]:
    # Narrowest first: a refusal names the limit closest to the caller.
    return (
        ("principal", binding.actor),
        ("server", binding.cache_key),
        ("org", binding.org_id),
        ("total", ""),
    )


class SessionLedger:
    """Open sessions per principal, server, org and in total. Reserving and releasing do not
    await, so a check and its count happen in one step of the event loop: concurrent
    `initialize` requests cannot both take the last place."""

    def __init__(self, limits: McpSessionLimits) -> None:
        self._limits: dict[LimitScope, int] = {
            "principal": limits.per_principal,
            "server": limits.per_server,
            "org": limits.per_org,
            "total": limits.total,
        }
        self._open: dict[tuple[LimitScope, str], int] = {}
        self._waiters: set[anyio.Event] = set()

    def reserve(self, binding: Binding) -> Reservation | OverLimit:
        keys = _keys(binding)
        for key in keys:
            limit = self._limits[key[0]]
            if self._open.get(key, 0) >= limit:
                return OverLimit(key[0], limit)
        for key in keys:
            self._open[key] = self._open.get(key, 0) + 1
        return Reservation(keys)

    def hold(self, binding: Binding) -> Reservation:
        """A place in the counts whatever the limits: for a session that is only being ended."""
        keys = _keys(binding)
        for key in keys:
            self._open[key] = self._open.get(key, 0) + 1
        return Reservation(keys)

    def release(self, reservation: Reservation) -> None:
        if reservation.released:
            return
        reservation.released = True
        for key in reservation.keys:
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]
        for waiter in self._waiters:
            waiter.set()
        self._waiters.clear()

    def open_sessions(self, scope: LimitScope = "total", key: str = "") -> int:
        return self._open.get((scope, key), 0)

    async def released(self) -> None:
        """Returns after the next session leaves the counts."""
        waiter = anyio.Event()
        self._waiters.add(waiter)
        await waiter.wait()


# The reservation of the request being admitted (set by the endpoint around the SDK call).
pending: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar(
    "treadle_session_reservation", default=None
)
# The ID the session opened by that request gets: its state, sealed (treadle.mcp.sealed_sessions).
opening_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "treadle_opening_session_id", default=None
)

OnConnection = Callable[[Connection], Awaitable[None]]


class CountedSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, with every session it opens held in the ledger's counts.

    It hooks the two places where the SDK 2.3 manager registers and forgets a session (`mcp`
    is pinned to that release). A session can only be opened with a reservation, so no
    session escapes the counts even if a request reached the manager some other way.
    """

    def __init__(
        self,
        app: Any,
        ledger: SessionLedger,
        limits: McpSessionLimits,
        *,
        security_settings: TransportSecuritySettings,
        max_request_body_size: int,
    ) -> None:
        super().__init__(
            app=app,
            security_settings=security_settings,
            max_request_body_size=max_request_body_size,
            session_idle_timeout=limits.idle_seconds,
            max_sessions=limits.total,
        )
        self._ledger = ledger
        self._held: dict[str, tuple[Reservation, StreamableHTTPServerTransport]] = {}
        self._restoring: dict[str, anyio.Event] = {}

    def _admit_session(
        self, requestor: AuthorizationContext | None
    ) -> StreamableHTTPServerTransport | None:
        # The SDK's own admission (2.3), but the session takes the ID the endpoint sealed
        # for it rather than a random one, so any replica can continue it.
        reservation = pending.get()
        session_id = opening_id.get()
        if reservation is None or reservation.released or session_id is None:
            return None
        if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
            return None
        transport = self._transport(session_id)
        self._register(session_id, transport, requestor, reservation)
        return transport

    def _transport(self, session_id: str) -> AwaitingTransport:
        return AwaitingTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=self.json_response,
            event_store=self.event_store,
            security_settings=self.security_settings,
            retry_interval=self.retry_interval,
            idle_timeout=self.session_idle_timeout,
        )

    def _register(
        self,
        session_id: str,
        transport: StreamableHTTPServerTransport,
        requestor: AuthorizationContext | None,
        reservation: Reservation,
    ) -> None:
        if requestor is not None:
            self._session_owners[session_id] = requestor
        self._server_instances[session_id] = transport
        reservation.claimed = True
        self._held[session_id] = (reservation, transport)

    def holds(self, session_id: str) -> bool:
        """Whether this process serves the session now (it opened or restored it)."""
        return session_id in self._server_instances

    def awaiting(self, session_id: str, request_id: str) -> AwaitingTransport | None:
        """The session's transport here, when it waits for the client's answer to `request_id`
        (treadle.mcp.answer_relay)."""
        transport = self._server_instances.get(session_id)
        if isinstance(transport, AwaitingTransport) and request_id in transport.awaiting:
            return transport
        return None

    async def end_here(self, session_id: str) -> None:
        """Stop serving the session in this process (it was ended through another one)."""
        transport = self._server_instances.get(session_id)
        if transport is not None:
            await self._discard_session(session_id, transport)

    def _sessions(self) -> anyio.abc.TaskGroup:
        """The task group every session's task runs in (the SDK manager's, while it runs)."""
        task_group: anyio.abc.TaskGroup | None = getattr(self, "_task_group", None)
        if task_group is None:
            raise RuntimeError("the session manager is not running")
        return task_group

    async def _serve_opening_request(
        self,
        http_transport: StreamableHTTPServerTransport,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """The SDK 2.3 manager's own (start the session's task, let its transport answer the
        opening request, discard the session unless that established it), with the session's
        task started by `_run`, as a restored session's is."""
        session_id = http_transport.mcp_session_id
        assert session_id is not None
        assert isinstance(http_transport, AwaitingTransport)
        established = False
        try:
            await self._sessions().start(self._run, session_id, http_transport, None, None)
            statuses: list[int] = []

            async def watched(message: Message) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])
                await send(message)

            await http_transport.handle_request(scope, receive, watched)
            established = bool(statuses) and statuses[0] < 400
        finally:
            if not established:
                await self._discard_session(session_id, http_transport)

    async def _run(
        self,
        session_id: str,
        transport: AwaitingTransport,
        client_params: InitializeRequestParams | None,
        on_connection: OnConnection | None,
        *,
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        """A session's task, as the SDK's `serve_loop` runs it, but with its dispatcher and
        connection kept on the transport (`AwaitingTransport.served`: treadle's own route for
        a session's calls, `treadle.mcp.session_route`, serves through them). A restored
        session (`client_params` given) starts as already initialised with them."""
        async with transport.connect() as (read_stream, write_stream):
            try:
                idle_scope = transport.idle_scope or anyio.CancelScope()
                with idle_scope:
                    dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                        read_stream, write_stream, inline_methods=frozenset({"initialize"})
                    )
                    connection = Connection.for_loop(
                        dispatcher,
                        session_id=session_id,
                        protocol_version_hint=(
                            None if client_params is None else client_params.protocol_version
                        ),
                    )
                    if client_params is not None:
                        connection.client_params = client_params
                        connection.initialized.set()
                    runner = ServerRunner(self.app, connection, self._lifespan_state)
                    transport.served = ServedSession(dispatcher, connection, runner)
                    try:
                        if on_connection is not None:
                            await on_connection(connection)
                    finally:
                        task_status.started()
                    await serve_connection(
                        self.app,
                        dispatcher,
                        connection=connection,
                        lifespan_state=self._lifespan_state,
                    )
                if idle_scope.cancelled_caught:
                    log.info("session %s idle timeout", session_id[:16])
            except Exception:
                log.exception("session %s crashed", session_id[:16])
            finally:
                transport.served = None
                await self._discard_session(session_id, transport)

    def owner_of(self, session_id: str) -> AuthorizationContext | None:
        """The credential the session belongs to, as the SDK compares it on every request."""
        return self._session_owners.get(session_id)

    def served(self, session_id: str) -> tuple[AwaitingTransport, ServedSession] | None:
        """The session's transport and its running dispatcher and connection, while this
        process serves it and it can take requests."""
        transport = self._server_instances.get(session_id)
        if not isinstance(transport, AwaitingTransport) or transport.is_terminated:
            return None
        served = transport.served
        return None if served is None else (transport, served)

    async def restore(
        self,
        session_id: str,
        requestor: AuthorizationContext | None,
        reservation: Reservation,
        client_params: InitializeRequestParams,
        on_connection: OnConnection,
    ) -> None:
        """Serve here a session another replica opened, as already initialised with what its
        client declared then; the next request reaches it as it would any session.

        The connection is built as the SDK's `serve_loop` builds it, then given the
        handshake's outcome (`client_params`, version, initialized) that its `initialize`
        would have committed. `on_connection` runs before any request is served (resync
        registration). Concurrent requests for the same session restore it once."""
        restoring = self._restoring.get(session_id)
        if restoring is not None:
            self._ledger.release(reservation)
            await restoring.wait()
            return
        if self.holds(session_id):
            self._ledger.release(reservation)
            return
        done = self._restoring[session_id] = anyio.Event()
        transport = self._transport(session_id)
        self._register(session_id, transport, requestor, reservation)
        try:
            await self._sessions().start(
                self._run, session_id, transport, client_params, on_connection
            )
        except BaseException:
            await self._discard_session(session_id, transport)
            raise
        finally:
            del self._restoring[session_id]
            done.set()

    async def _discard_session(
        self, session_id: str, transport: StreamableHTTPServerTransport
    ) -> None:
        held = self._held.pop(session_id, None)
        if held is not None:
            self._ledger.release(held[0])
        await super()._discard_session(session_id, transport)

    async def end_sessions(self) -> None:
        """Ends every open session by closing its streams, before `run()` cancels what is left.

        Each session's task then finishes on its own. Left to the cancellation of `run()`,
        thousands of sessions took seconds to unwind (measured: 9 s of CPU for 8,000, 1.4 s
        this way), which is how long a SIGTERM waited.
        """
        with anyio.CancelScope(shield=True):
            for _reservation, transport in list(self._held.values()):
                await transport.terminate()
