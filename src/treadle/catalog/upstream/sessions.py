"""Client sessions to upstream MCP servers, pooled per (upstream, credentials).

Opening a session costs a handshake (or a process start on stdio), so calls share one per
upstream and connection; a rotated secret keys a new one. Each session is owned by a task of
its own: the SDK's client must be entered and left in one task, and a session outlives the
call that opened it. A session whose transport died (an upstream restart, an expired HTTP
session) is dropped and the next call opens a fresh one.

What an upstream sends mid-call (elicitation, sampling, log messages) goes to the caller
whose call it belongs to: on 2026-07-28 the SDK drives that in the calling task (a context
variable finds the caller); on a handshake-era session it arrives on the session's own task,
so it is relayed only while exactly one call is in flight there, and otherwise declined:
treadle never shows one end user a question meant for another.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    LoggingMessageNotificationParams,
)

from treadle.catalog.model import (
    ClientCapabilityMissing,
    ClientInteraction,
    ClientInteractionUnavailable,
)
from treadle.catalog.upstream.transport import http_client, stdio_parameters

log = logging.getLogger(__name__)

# The MCP client of the call being made in this task (2026-07-28 input rounds run here).
calling: contextvars.ContextVar[ClientInteraction | None] = contextvars.ContextVar(
    "treadle_upstream_calling", default=None
)

MessageHandler = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Target:
    """Everything a session is opened with; its `key` names the pool slot."""

    upstream_id: str
    transport: dict[str, Any]
    allow_private_network: bool
    headers: tuple[tuple[str, str], ...] = ()
    connection_id: str | None = None
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # The secret's hash, not the secret: a rotated token opens a new session. Computed
        # once: a call's target is looked up by it more than once.
        digest = hashlib.sha256(repr(self.headers).encode()).hexdigest()[:16]
        object.__setattr__(self, "key", f"{self.upstream_id}/{self.connection_id or '-'}/{digest}")


class Unreachable(Exception):
    """The upstream could not be connected to (or negotiated with)."""

    def __init__(self, cause: BaseException, *, auth_refused: bool = False) -> None:
        super().__init__("HTTP 401/403" if auth_refused else describe(cause))
        self.cause = cause
        self.auth_refused = auth_refused


def leaf_errors(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaf_errors(inner)]
    found = [error]
    if error.__cause__ is not None:
        found.extend(leaf_errors(error.__cause__))
    return found


def describe(error: BaseException) -> str:
    """One line for the operator and the caller: the innermost error's kind and text, never
    a URL (it may carry a query secret) or a header."""
    leaves = leaf_errors(error)
    leaf = leaves[-1] if leaves else error
    for candidate in leaves:
        if isinstance(candidate, httpx2.HTTPStatusError):
            return f"HTTP {candidate.response.status_code}"
    text = str(leaf).split("\n", 1)[0][:200]
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


@dataclass(slots=True)
class Live:
    target: Target
    on_message: MessageHandler | None
    client: Client | None = None
    error: BaseException | None = None
    closed: bool = False
    # The upstream answered 401/403: its credentials were refused (the SDK only says
    # "error response").
    auth_refused: bool = False
    in_flight: dict[int, ClientInteraction | None] = field(default_factory=dict)
    # Also told of every message (resource updates for relayed subscriptions).
    watchers: list[MessageHandler] = field(default_factory=list)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        """Negotiated and not (yet) known to be dead: usable without waiting."""
        return self.client is not None and not self.closed

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._own())

    async def ready(self) -> Client:
        await self._ready.wait()
        if self.client is None or self.closed:
            cause = self.error or ConnectionError("the session closed")
            raise Unreachable(cause, auth_refused=self.auth_refused)
        return self.client

    async def _own(self) -> None:
        http: httpx2.AsyncClient | None = None
        try:
            if self.target.transport.get("type") == "stdio":
                server: Any = stdio_parameters(self.target.transport)
            else:
                http = http_client(
                    self.target.allow_private_network, dict(self.target.headers), self._status
                )
                server = streamable_http_client(str(self.target.transport["url"]), http_client=http)
            async with Client(
                server,
                mode="auto",
                cache=None,
                elicitation_callback=self._elicit,
                logging_callback=self._log,
                message_handler=self._message,
            ) as client:
                self.client = client
                self._ready.set()
                await self._stop.wait()
        except BaseException as error:
            self.error = error
            if not isinstance(error, asyncio.CancelledError):
                log.info("upstream session %s ended: %s", self.target.key, describe(error))
        finally:
            self.closed = True
            self._ready.set()
            if http is not None:
                with suppress(Exception):
                    await http.aclose()

    def _status(self, status: int) -> None:
        if status in (401, 403):
            self.auth_refused = True

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with anyio.move_on_after(5), suppress(BaseException):
                await asyncio.shield(self._task)
            if not self._task.done():
                self._task.cancel()

    def _caller(self) -> ClientInteraction | None:
        current = calling.get()
        if current is not None:
            return current
        callers = list(self.in_flight.values())
        return callers[0] if len(callers) == 1 else None

    async def _elicit(
        self, context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        caller = self._caller()
        # URL-mode requests open a page the upstream names: never relayed through treadle.
        if caller is None or not isinstance(params, ElicitRequestFormParams):
            return ElicitResult(action="decline")
        try:
            answer = await caller.elicit(params.message, params.requested_schema)
        except (ClientCapabilityMissing, ClientInteractionUnavailable):
            return ElicitResult(action="decline")
        return ElicitResult.model_validate({"action": answer.action, "content": answer.content})

    async def _log(self, params: LoggingMessageNotificationParams) -> None:
        caller = self._caller()
        if caller is not None:
            await caller.log(params.level, params.data, params.logger)

    async def _message(self, message: Any) -> None:
        if isinstance(message, BaseException):
            return
        if self.on_message is not None:
            await self.on_message(message)
        for watcher in list(self.watchers):
            await watcher(message)


class SessionPool:
    """The live sessions of this process, one per `Target.key`."""

    def __init__(self, connect_timeout: float = 20.0) -> None:
        self._live: dict[str, Live] = {}
        self._opening = asyncio.Lock()
        self._connect_timeout = connect_timeout

    async def session(self, target: Target, on_message: MessageHandler | None = None) -> Live:
        """A live session for `target`, opened if needed; `Unreachable` when it cannot be
        (within the connect timeout: a session still opening then is given up)."""
        key = target.key
        live = self._live.get(key)
        if live is not None and live.open:
            # Every call after the first: no lock, no timeout scope, no wait.
            if on_message is not None:
                live.on_message = on_message
            return live
        if live is None or live.closed:
            opened = False
            async with self._opening:
                live = self._live.get(key)
                if live is None or live.closed:
                    live = Live(target, on_message)
                    self._live[key] = live
                    live.start()
                    opened = True
            if opened:
                await self._drop_superseded(target)
        if on_message is not None:
            live.on_message = on_message  # a catalog session's watch, on a shared one
        try:
            with anyio.fail_after(self._connect_timeout):
                await live.ready()
        except TimeoutError as timeout:
            await self.drop(live)
            raise Unreachable(timeout) from None
        except Unreachable:
            await self.drop(live)
            raise
        return live

    async def drop(self, live: Live) -> None:
        if self._live.get(live.target.key) is live:
            del self._live[live.target.key]
        await live.close()

    async def _drop_superseded(self, target: Target) -> None:
        """A connection's rotated secret (a refreshed OAuth token) keys a new session; the
        old one's token is dead, so it goes, unless a call on it is still running."""
        if target.connection_id is None:
            return
        for live in [
            v
            for v in self._live.values()
            if v.target.key != target.key
            and v.target.upstream_id == target.upstream_id
            and v.target.connection_id == target.connection_id
            and not v.in_flight
        ]:
            await self.drop(live)

    async def drop_upstream(self, upstream_id: str) -> None:
        """Close every session of an upstream (deleted, or its transport changed)."""
        for live in [v for v in self._live.values() if v.target.upstream_id == upstream_id]:
            await self.drop(live)

    async def close(self) -> None:
        for live in list(self._live.values()):
            await self.drop(live)

    def __len__(self) -> int:
        return len(self._live)
