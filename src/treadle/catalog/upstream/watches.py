"""Subscriptions to an upstream's resources, shared by every treadle client that asks.

One upstream subscription per (pooled session, upstream URI), however many of treadle's
clients subscribe to it: the first subscriber opens it, the last one leaving closes it, and
every update fans out to all of them. How it is opened follows the era the session speaks:
`resources/subscribe` (and `notifications/resources/updated` on the session) in the
handshake era, a `subscriptions/listen` stream naming the URI on 2026-07-28.

On 2026-07-28 the stream is opened again whenever it ends while anyone still subscribes
(an upstream restart included). A handshake-era subscription lives as long as the session it
was made on: after the upstream restarts, its updates stop until the URI is subscribed to
again on the fresh session (by a new subscriber).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated
from mcp.types import ResourceUpdatedNotification
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from treadle.catalog.upstream.sessions import Live, describe

log = logging.getLogger(__name__)

Deliver = Callable[[], Awaitable[None]]
Cancel = Callable[[], Awaitable[None]]

Reopen = Callable[[], Awaitable[Live]]

# An upstream that does not answer a subscribe or unsubscribe in this long is given up on.
ANSWER_SECONDS = 10.0
# A 2026-07-28 stream that ended is opened again after this, doubling up to the maximum.
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 30.0


@dataclass(slots=True)
class _Watch:
    live: Live
    uri: str
    # A session to listen on again when this one has died (2026-07-28 upstreams).
    reopen: Reopen | None = None
    subscribers: dict[object, Deliver] = field(default_factory=dict)
    listening: asyncio.Task[None] | None = None

    async def fan_out(self) -> None:
        for deliver in list(self.subscribers.values()):
            with suppress(Exception):  # a subscriber whose client just went away
                await deliver()

    async def on_message(self, message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification) and message.params.uri == self.uri:
            await self.fan_out()


Key = tuple[str, str]  # (the session's pool key, the upstream's URI)


class ResourceWatches:
    def __init__(self) -> None:
        self._watches: dict[Key, _Watch] = {}
        # One lock per key while anyone uses it: an unsubscribe must reach the upstream
        # before a new subscribe to the same URI on the same session does, but a slow
        # upstream must not hold up anyone else's subscriptions.
        self._locks: dict[Key, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def _serialised(self, key: Key) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    async def watch(
        self, live: Live, uri: str, deliver: Deliver, reopen: Reopen | None = None
    ) -> Cancel:
        """Call `deliver` on every update of the upstream's `uri` until the returned
        callable is awaited. The upstream's refusal (an MCPError) propagates. `reopen`
        gives a fresh session of the same target when `live` has died."""
        key = (live.target.key, uri)
        token = object()
        async with self._serialised(key):
            watch = self._watches.get(key)
            carried: dict[object, Deliver] = {}
            if watch is not None and watch.listening is None and watch.live is not live:
                # Made on a session since replaced (the upstream restarted): made again on
                # this one, for everyone who subscribed.
                del self._watches[key]
                carried = dict(watch.subscribers)
                await _end(watch)
                watch = None
            if watch is None:
                watch = _Watch(live, uri, reopen)
                await _start(watch)
                self._watches[key] = watch
            watch.subscribers.update(carried)
            watch.subscribers[token] = deliver

        async def cancel() -> None:
            async with self._serialised(key):
                current = self._watches.get(key)
                if current is None or current.subscribers.pop(token, None) is None:
                    return
                if not current.subscribers:
                    del self._watches[key]
                    await _end(current)

        return cancel

    def __len__(self) -> int:
        return len(self._watches)


async def _start(watch: _Watch) -> None:
    client = watch.live.client
    assert client is not None
    if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
        acknowledged = asyncio.Event()
        watch.listening = asyncio.get_running_loop().create_task(_listen(watch, acknowledged))
        done = asyncio.ensure_future(acknowledged.wait())
        try:
            await asyncio.wait(
                {done, watch.listening}, timeout=ANSWER_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            done.cancel()
        if not acknowledged.is_set():
            listening = watch.listening
            listening.cancel()
            with suppress(BaseException):
                await listening
            error = None if listening.cancelled() else listening.exception()
            raise error or TimeoutError("the upstream did not acknowledge the subscription")
        return
    with anyio.fail_after(ANSWER_SECONDS), warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.subscribe_resource(watch.uri)
    watch.live.watchers.append(watch.on_message)


async def _listen(watch: _Watch, acknowledged: asyncio.Event) -> None:
    """The 2026-07-28 stream of one URI's updates; opened again (after a pause that grows
    while it keeps failing) whenever it ends while subscribers remain: the upstream closed
    it, restarted, or was unreachable for a while."""
    pause = RETRY_FIRST_SECONDS
    while True:
        client = watch.live.client
        assert client is not None
        try:
            async with client.listen(resource_subscriptions=[watch.uri]) as events:
                acknowledged.set()
                pause = RETRY_FIRST_SECONDS
                async for event in events:
                    if isinstance(event, ResourceUpdated) and event.uri == watch.uri:
                        await watch.fan_out()
        except Exception as error:
            if not acknowledged.is_set():
                raise
            log.info("upstream resource stream for %s ended (%s)", watch.uri, describe(error))
        if watch.reopen is None:
            return
        await asyncio.sleep(pause)
        pause = min(pause * 2, RETRY_MAX_SECONDS)
        if watch.live.closed:
            try:
                watch.live = await watch.reopen()
            except Exception as error:
                log.info("upstream for %s still unreachable (%s)", watch.uri, describe(error))


async def _end(watch: _Watch) -> None:
    if watch.listening is not None:
        watch.listening.cancel()
        with suppress(BaseException):
            await watch.listening
        return
    with suppress(ValueError):
        watch.live.watchers.remove(watch.on_message)
    client = watch.live.client
    if client is None or not watch.live.open:
        return
    with (
        suppress(Exception),
        anyio.move_on_after(ANSWER_SECONDS),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.unsubscribe_resource(watch.uri)
