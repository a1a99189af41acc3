"""Resource subscriptions of treadle's clients, relayed to the upstreams owning the resources.

Handshake era: `resources/subscribe` and `resources/unsubscribe`, per client connection (a
connection that closes drops its subscriptions); an update reaches that connection as
`notifications/resources/updated` with the URI as the client subscribed to it. 2026-07-28:
the `resourceSubscriptions` of a `subscriptions/listen` stream, for as long as the stream is
open; an update reaches that stream only (`StreamTap` hands this module the stream's
listener), so one end user never hears of another's resources.

Each subscription is made with the connection the caller's strategy resolves to, over the
pooled session of (upstream, connection), exactly like a read (`UpstreamContent.subscribe`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import anyio
from mcp.server import ServerRequestContext
from mcp.server.subscriptions import ResourceUpdated, ServerEvent, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    UnsubscribeRequestParams,
)

from treadle.catalog.upstream.content import (
    Caller,
    NotSubscribable,
    Offer,
    UnknownContent,
    UpstreamContent,
)
from treadle.catalog.upstream.watches import Cancel
from treadle.mcp.binding import Binding

OfferOf = Callable[[ServerRequestContext[Any, Any]], Awaitable[tuple[Binding, Offer]]]
Listen = Callable[
    [ServerRequestContext[Any, Any], SubscriptionsListenRequestParams],
    Awaitable[SubscriptionsListenResult],
]
Listener = Callable[[ServerEvent], None]
# The engine's refusals as JSON-RPC errors (an unknown URI: -32002, as for a read).
Translate = Callable[[Awaitable[Any]], Awaitable[Any]]

# The listeners the listen stream being served subscribes (filled by `StreamTap`).
_stream_listeners: contextvars.ContextVar[list[Listener] | None] = contextvars.ContextVar(
    "treadle_stream_listeners", default=None
)

CLEANUP_SECONDS = 10.0


class StreamTap:
    """The listen handler's bus, passing everything on, that also tells this module which
    listener the stream being served registered."""

    def __init__(self, bus: SubscriptionBus) -> None:
        self._bus = bus

    async def publish(self, event: ServerEvent) -> None:
        await self._bus.publish(event)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        sink = _stream_listeners.get()
        if sink is not None:
            sink.append(listener)
        return self._bus.subscribe(listener)


class ResourceRelay:
    def __init__(self, content: UpstreamContent, offer_of: OfferOf, translate: Translate) -> None:
        self._content = content
        self._offer_of = offer_of
        self._translate = translate
        # Handshake era: (connection key, URI as subscribed) -> how to stop.
        self._subscribed: dict[tuple[int, str], Cancel] = {}
        self._connections: set[int] = set()

    async def _subscribe(
        self, binding: Binding, offer: Offer, uri: str, deliver: Callable[[], Awaitable[None]]
    ) -> Cancel:
        caller = Caller(binding.org_id, binding.workspace_id, binding.actor, binding.end_user_id)
        try:
            cancel: Cancel = await self._translate(
                self._content.subscribe(caller, offer, uri, deliver)
            )
        except NotSubscribable as refused:
            raise MCPError(INVALID_PARAMS, str(refused)) from None
        return cancel

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        binding, offer = await self._offer_of(ctx)
        if not offer.subscribe:
            raise MCPError(METHOD_NOT_FOUND, "This MCP server offers no resource subscriptions")
        uri = params.uri
        session = ctx.session

        async def deliver() -> None:
            await session.send_resource_updated(uri)

        cancel = await self._subscribe(binding, offer, uri, deliver)
        key, connection = _connection_key(ctx)
        previous = self._subscribed.pop((key, uri), None)
        self._subscribed[(key, uri)] = cancel
        if key not in self._connections:
            self._connections.add(key)
            connection.exit_stack.push_async_callback(self._connection_closed, key)
        if previous is not None:
            await previous()
        return EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        _, offer = await self._offer_of(ctx)
        if not offer.subscribe:
            raise MCPError(METHOD_NOT_FOUND, "This MCP server offers no resource subscriptions")
        key, _ = _connection_key(ctx)
        cancel = self._subscribed.pop((key, params.uri), None)
        if cancel is not None:
            await cancel()
        return EmptyResult()

    async def _connection_closed(self, key: int) -> None:
        self._connections.discard(key)
        gone = [k for k in self._subscribed if k[0] == key]
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
            for item in gone:
                cancel = self._subscribed.pop(item, None)
                if cancel is not None:
                    with suppress(Exception):
                        await cancel()

    async def listen(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: SubscriptionsListenRequestParams,
        binding: Binding,
        inner: Listen,
    ) -> SubscriptionsListenResult:
        """Serve the stream with `inner`, relaying its resource subscriptions meanwhile."""
        uris = list(dict.fromkeys(params.notifications.resource_subscriptions or ()))
        if not uris:
            return await inner(ctx, params)
        _, offer = await self._offer_of(ctx)
        listeners: list[Listener] = []
        cancels: list[Cancel] = []
        try:
            if offer.subscribe:
                for uri in uris:
                    cancel = await self._watch_for_stream(binding, offer, uri, listeners)
                    if cancel is not None:
                        cancels.append(cancel)
            token = _stream_listeners.set(listeners)
            try:
                return await inner(ctx, params)
            finally:
                _stream_listeners.reset(token)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
                for cancel in cancels:
                    with suppress(Exception):
                        await cancel()

    async def _watch_for_stream(
        self, binding: Binding, offer: Offer, uri: str, listeners: list[Listener]
    ) -> Cancel | None:
        async def deliver() -> None:
            for listener in list(listeners):
                listener(ResourceUpdated(uri=uri))

        try:
            return await self._subscribe(binding, offer, uri, deliver)
        except (MCPError, UnknownContent):
            # As for a URI nobody serves: the stream acknowledges it and it never fires.
            return None


def _connection_key(ctx: ServerRequestContext[Any, Any]) -> tuple[int, Any]:
    # As treadle.mcp.server's: the SDK gives handlers no public handle on the connection.
    connection = ctx.session._connection
    return id(connection), connection
