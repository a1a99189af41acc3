"""Streamable HTTP at `/mcp/{serverId}`: bearer auth, DNS-rebinding checks, body limit.

Accepted tokens: the server's own `mcp_…` token, an API key that may use the server's
workspace, or an OAuth access token issued for this endpoint (`treadle.auth.server`, which
also words the 401/403 challenges that start a client's sign-in). A handshake-era session
belongs to the (server, principal, end user) that opened it and continues on any replica
(`treadle.mcp.shared_sessions`): anyone else presenting its session ID gets 404, as from the
SDK for an unknown session. Sessions are bounded per principal, server and org, in each
replica (`treadle.mcp.sessions`).

Refusals after authentication are JSON-RPC errors (the SDK client surfaces them) whose `data`
carries treadle's code: `{"error": CODE, "message", ...}` as in REST.
"""

from __future__ import annotations

import contextvars
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server import ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from treadle.api.auth import bearer_token, refused_reason
from treadle.app import Gateway
from treadle.auth.server import tokens as oauth_tokens
from treadle.auth.server.authority import Authority
from treadle.clock import now_iso
from treadle.engine.end_user_ids import check_end_user_id
from treadle.errors import ErrorCode, Refusal, ValidationFailed
from treadle.ids import hash_token
from treadle.mcp.answer_relay import AnswerRelay, accepted, answered_id
from treadle.mcp.binding import Binding
from treadle.mcp.drain import StreamDrain, only_listens
from treadle.mcp.modern_route import ModernRoute, calls_tool, routed
from treadle.mcp.runtime import McpRuntime
from treadle.mcp.session_route import SessionRoute
from treadle.mcp.sessions import (
    CountedSessionManager,
    OverLimit,
    SessionLedger,
    opens_session,
    pending,
)
from treadle.mcp.shared_sessions import (
    SharedSessions,
    not_found,
    read_body,
    replay,
    session_id_of,
)
from treadle.observability.logs import note
from treadle.store.config_cache import ConfigSnapshot

MAX_BODY_BYTES = 1024 * 1024
MAX_ADMISSIONS = 10_000
END_USER_HEADER = "X-Treadle-End-User"
_END_USER_HEADER = END_USER_HEADER.lower().encode()
# JSON-RPC's range for implementation-defined server errors; `data.error` says which.
REFUSED_RPC_CODE = -32000
_SCOPE_KEY = "treadle.binding"
_SNAPSHOT_KEY = "treadle.config_snapshot"
_MARK_KEY = "treadle.session_mark"

_current: contextvars.ContextVar[Binding | None] = contextvars.ContextVar(
    "treadle_http_binding", default=None
)


def transport_security(port: int | None = None) -> TransportSecuritySettings:
    """Localhost only by default; TREADLE_ALLOWED_HOSTS / TREADLE_ALLOWED_ORIGINS (comma
    separated, `host:port` with `*` for any port) for deployments behind a real hostname."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    hosts += [
        h.strip() for h in os.environ.get("TREADLE_ALLOWED_HOSTS", "").split(",") if h.strip()
    ]
    origins += [
        o.strip() for o in os.environ.get("TREADLE_ALLOWED_ORIGINS", "").split(",") if o.strip()
    ]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _send_rpc_error(send: Send, status: int, refusal: Refusal) -> None:
    data = {"error": refusal.code.value, "message": refusal.message, **refusal.extra}
    body = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": REFUSED_RPC_CODE, "message": refusal.message, "data": data},
    }
    await _send_json(send, status, body, [])


def _end_user_header(scope: Scope) -> str | None:
    """The raw `X-Treadle-End-User` value, read as UTF-8 (REST's JSON is UTF-8 too, so a
    non-ASCII id names the same end user on both faces); None when absent or empty."""
    found: list[bytes] = [value for name, value in scope["headers"] if name == _END_USER_HEADER]
    if not found or found == [b""]:
        return None
    if len(found) > 1:
        raise ValidationFailed(f"Send {END_USER_HEADER} once", field=END_USER_HEADER)
    try:
        return found[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed(
            f"{END_USER_HEADER} must be UTF-8 text", field=END_USER_HEADER
        ) from None


def _too_many_sessions(over: OverLimit) -> Refusal:
    return Refusal(
        ErrorCode.TOO_MANY_SESSIONS,
        f"Too many open MCP sessions for this {over.scope} (limit {over.limit}); end one with "
        "DELETE, let one expire, or use the 2026-07-28 protocol, which needs none",
        scope=over.scope,
        limit=over.limit,
    )


@dataclass(frozen=True, slots=True)
class _Admission:
    binding: Binding
    user: AuthenticatedUser
    # The API key's expiry: expiry moves no version, so a remembered admission checks it.
    expires_at: str | None = None

    def lapsed(self) -> bool:
        return self.expires_at is not None and self.expires_at <= now_iso()


class McpEndpoint:
    """The ASGI app mounted at `/mcp/{server_id}`."""

    def __init__(
        self,
        gateway: Gateway,
        runtime: McpRuntime,
        security: TransportSecuritySettings | None = None,
    ) -> None:
        self._gateway = gateway
        self._runtime = runtime
        self._admissions: dict[tuple[str, str, str | None], tuple[int, _Admission]] = {}
        # OAuth access tokens (treadle.auth): who they stand for is asked there.
        self.auth = Authority(gateway)
        self.face = runtime.face(self._resolve, self._schema, self._snapshot, self._move_to)
        limits = gateway.settings.mcp_sessions
        self.sessions = SessionLedger(limits)
        self.manager = CountedSessionManager(
            self.face.server,
            self.sessions,
            limits,
            security_settings=security or transport_security(),
            max_request_body_size=MAX_BODY_BYTES,
        )
        # Sessions any replica continues (treadle.mcp.shared_sessions).
        self.shared = SharedSessions(
            gateway.store,
            self.manager,
            self.sessions,
            runtime.hub,
            idle_seconds=limits.idle_seconds,
            max_body_bytes=MAX_BODY_BYTES,
        )
        # A client's answer to a request a call sent it, landing on another replica than the
        # call (treadle.mcp.answer_relay).
        self.answers = AnswerRelay(gateway.store.db, self.manager)
        self.drain = StreamDrain()
        # A session's tools/call and tools/list: treadle's own route in front of the SDK's
        # session transport (treadle.mcp.session_route).
        self.session_route = SessionRoute(
            self.manager, security or transport_security(), MAX_BODY_BYTES
        )
        # 2026-07-28 tools/call and tools/list: treadle's own route in front of the SDK's
        # (treadle.mcp.modern_route); the manager's lifespan state has no public accessor.
        self.modern = ModernRoute(
            self.face.server,
            security or transport_security(),
            MAX_BODY_BYTES,
            lambda: getattr(self.manager, "_lifespan_state", None),
            self.manager.handle_request,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run(), anyio.create_task_group() as tg:
            tg.start_soon(self.answers.run)
            try:
                yield
            finally:
                await self.manager.end_sessions()
                tg.cancel_scope.cancel()

    @staticmethod
    async def _resolve(ctx: ServerRequestContext[Any, Any]) -> Binding:
        request = ctx.request
        binding = request.scope.get(_SCOPE_KEY) if isinstance(request, Request) else None
        if not isinstance(binding, Binding):
            raise RuntimeError("MCP request reached the handlers without a binding")
        return binding

    async def _snapshot(self, ctx: ServerRequestContext[Any, Any]) -> ConfigSnapshot:
        # The one the request was authenticated at: one version read per request.
        request = ctx.request
        found = request.scope.get(_SNAPSHOT_KEY) if isinstance(request, Request) else None
        if isinstance(found, ConfigSnapshot):
            return found
        return await self._gateway.store.config.snapshot()

    def _schema(self, name: str) -> dict[str, Any] | None:
        binding = _current.get()
        if binding is None:
            return None
        return self._runtime.toolsets.cached_schema(binding.cache_key, name)

    async def _move_to(self, ctx: ServerRequestContext[Any, Any], version: int) -> bool:
        """Serve the rest of this request at configuration `version` (its assumed snapshot
        was not current): the snapshot and the binding as they are there. False when its
        credentials admit it no longer."""
        request = ctx.request
        if not isinstance(request, Request):
            return False
        scope = request.scope
        snapshot = scope[_SNAPSHOT_KEY] = self._gateway.store.config.snapshot_at(version)
        try:
            found = await self._admitted(scope, snapshot)
        except (oauth_tokens.InsufficientScope, Refusal):
            return False
        if found is None:
            return False
        scope[_SCOPE_KEY] = found.binding
        return True

    async def _authenticate(self, scope: Scope) -> _Admission | None:
        snapshot = scope[_SNAPSHOT_KEY] = await self._snapshot_of(scope)
        try:
            found = await self._admitted(scope, snapshot)
        except (oauth_tokens.InsufficientScope, Refusal):
            if snapshot.confirmed:
                raise
            found = None
        if found is None and not snapshot.confirmed:
            # Refused at an assumed version: refused only if the current one says so too.
            snapshot = scope[_SNAPSHOT_KEY] = await snapshot.confirm()
            found = await self._admitted(scope, snapshot)
        return found

    async def _admitted(self, scope: Scope, snapshot: ConfigSnapshot) -> _Admission | None:
        server_id = scope.get("path_params", {}).get("server_id", "")
        request = Request(scope)
        token = bearer_token(request)
        if not token or not isinstance(server_id, str) or len(server_id) > 100:
            note(authReason="missing" if not token else "unknown_server")
            return None
        end_user_header = _end_user_header(scope)
        # Every request of a session presents the same credentials: answer those from memory
        # while the configuration version holds (tokens rotate and servers change only with
        # a bump). Only admissions are remembered; refusals are always checked afresh.
        version = snapshot.version
        key = (server_id, hash_token(token), end_user_header)
        remembered = self._admissions.get(key)
        if remembered is not None and remembered[0] == version and not remembered[1].lapsed():
            return remembered[1]
        admission = await self._admit(snapshot, server_id, token, end_user_header, scope)
        # An OAuth token is checked afresh every time: its revocation must stop it at once.
        if admission is not None and not oauth_tokens.is_oauth_token(token):
            if len(self._admissions) >= MAX_ADMISSIONS:
                self._admissions.pop(next(iter(self._admissions)))
            self._admissions[key] = (version, admission)
        return admission

    async def _snapshot_of(self, scope: Scope) -> ConfigSnapshot:
        """The request's one configuration snapshot. A request of a handshake-era session
        reads its session's mark in the same statement where that saves a round trip
        (PostgreSQL); `_continue` hands that mark to `resume`. A 2026-07-28 tools/call takes
        an assumed snapshot: the pipeline confirms it (`ConfigCache.assumed_snapshot`)."""
        config = self._gateway.store.config
        session_id = session_id_of(scope)
        if session_id is not None:
            found = await self.shared.version_and_mark(session_id)
            if found is not None:
                version, scope[_MARK_KEY] = found
                return config.snapshot_at(version)
        elif calls_tool(scope):
            return await config.assumed_snapshot()
        return await config.snapshot()

    async def _admit(
        self,
        config: ConfigSnapshot,
        server_id: str,
        token: str,
        end_user_header: str | None,
        scope: Scope,
    ) -> _Admission | None:
        server = await config.mcp_server(server_id)
        if server is None:
            note(authReason="unknown_server")
            return None
        end_user = server.end_user_id
        expires_at = None
        if oauth_tokens.is_oauth_token(token):
            signed_in = await oauth_tokens.admit(self.auth, server, token, scope)
            if signed_in is None:
                note(authReason="invalid_token")
                return None
            principal, end_user = signed_in.actor, signed_in.end_user_id
        elif token.startswith("mcp_"):
            if await config.mcp_server_for_token(token) != server:
                note(authReason="wrong_server")
                return None
            principal = f"mcp_server:{server.id}"
        else:
            key = await config.api_key(token)
            if key is None:
                note(authReason=await refused_reason(self._gateway.store, token))
                return None
            if key.org_id != server.org_id or key.workspace_id not in (None, server.workspace_id):
                note(authReason="wrong_server")
                return None
            principal = f"api_key:{key.id}"
            expires_at = key.expires_at
            # A platform acting for many users names the end user per request: by the same
            # rule as everywhere, refused rather than trimmed or cut to fit.
            if end_user is None:
                end_user = check_end_user_id(end_user_header, field=END_USER_HEADER)
        binding = Binding(
            org_id=server.org_id,
            workspace_id=server.workspace_id,
            server=server,
            end_user_id=end_user,
            actor=principal,
        )
        # The SDK ties each session to the credential that opened it; make that credential
        # (server, principal, end user) so no session is shared across any of the three.
        user = AuthenticatedUser(
            AccessToken(
                token=hash_token(token),
                client_id=binding.cache_key,
                scopes=[],
                subject=f"{binding.actor}|{binding.end_user_id or ''}",
                claims={"iss": "treadle"},
            )
        )
        return _Admission(binding, user, expires_at)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            found = await self._authenticate(scope)
        except ValidationFailed as refused:
            await _send_rpc_error(send, refused.code.status, refused)
            return
        except (oauth_tokens.InsufficientScope, Refusal) as lacking:
            # An OAuth token refused by treadle.auth (scope, an external server's verdict).
            await _send_json(send, *await oauth_tokens.refused(self.auth, scope, lacking))
            return
        if found is None:
            presented = bearer_token(Request(scope)) is not None
            await _send_json(
                send,
                401,
                {
                    "error": "UNAUTHORIZED",
                    "message": "A valid MCP server token, API key or OAuth access token is "
                    "required",
                },
                await oauth_tokens.challenge(
                    self.auth, scope, error="invalid_token" if presented else None
                ),
            )
            return
        binding = found.binding
        scope[_SCOPE_KEY] = binding
        scope["user"] = found.user
        reset = _current.set(binding)
        try:
            if opens_session(scope):
                await self._open_session(binding, scope, receive, send)
            else:
                await self._continue(binding, found.user, scope, receive, send)
        finally:
            _current.reset(reset)

    async def _continue(
        self, binding: Binding, user: AuthenticatedUser, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A request of a session (served here whichever replica opened it), or one that
        needs none (2026-07-28)."""
        session_id = session_id_of(scope)
        if session_id is None:
            await self._serve(scope, receive, send)
            return
        resumed = await self.shared.resume(
            binding, session_id, user, scope["method"], scope.get(_MARK_KEY)
        )
        if resumed is None:
            await not_found(send)
        elif isinstance(resumed, OverLimit):
            await self._over_limit(send, resumed)
        elif scope["method"] == "DELETE":
            await self.manager.handle_request(scope, receive, self.shared.ending(resumed, send))
        elif scope["method"] == "GET":
            async with self.shared.streaming(session_id, resumed):
                await self._serve(scope, receive, send)
        elif scope["method"] == "POST":
            await self._post(session_id, resumed.protocol_version, scope, receive, send)
        else:
            await self._serve(scope, receive, send)

    async def _post(
        self, session_id: str, version: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A POST of a session: an answer to a request another replica's call waits for is
        handed on to it (202, as the SDK answers once the answer is handed to the session);
        a tools/call or tools/list is served by treadle's own route when it takes it."""
        body, messages = await read_body(receive, MAX_BODY_BYTES)
        last = messages[-1]
        whole = last["type"] == "http.request" and not last.get("more_body", False)
        if whole and self.answers.relays:
            answered = answered_id(body) if len(body) <= MAX_BODY_BYTES else None
            if answered is not None and not self.answers.takes_here(session_id, answered):
                await self.answers.hand_on(session_id, version, body)
                await accepted(send)
                return
        if whole and await self.session_route.serve(session_id, body, scope, send):
            return
        await self._serve(scope, replay(messages, receive), send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if only_listens(scope):
            await self.drain.serve(self.manager.handle_request, scope, receive, send)
        elif routed(scope):
            # The route (and the SDK, if the route hands the request on) checks Mcp-Param-*
            # headers against the tool's input schema, looked up synchronously in the tool
            # set cache: make the binding's tool set the one at this request's snapshot
            # first, or a cold cache (just started, just changed) skips that check.
            await self._runtime.toolsets.current(scope[_SCOPE_KEY], scope[_SNAPSHOT_KEY])
            await self.modern(scope, receive, send)
        else:
            await self.manager.handle_request(scope, receive, send)

    @staticmethod
    async def _over_limit(send: Send, over: OverLimit) -> None:
        status = 503 if over.scope == "total" else ErrorCode.TOO_MANY_SESSIONS.status
        await _send_rpc_error(send, status, _too_many_sessions(over))

    async def _open_session(
        self, binding: Binding, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A request that may open a session holds a place in the counts while it is served;
        the session keeps it if one opens, otherwise it is given back."""
        reserved = self.sessions.reserve(binding)
        if isinstance(reserved, OverLimit):
            await self._over_limit(send, reserved)
            return
        reset = pending.set(reserved)
        try:
            await self.shared.open(binding, scope, receive, send, self.manager.handle_request)
        finally:
            pending.reset(reset)
            if not reserved.claimed:
                self.sessions.release(reserved)
