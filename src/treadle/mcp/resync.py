"""Auto-resync: tell every connected client when its server's tool list really changed.

Who is connected: handshake-era connections (stdio and HTTP sessions) register here from a
server middleware and unregister when their connection closes; 2026-07-28 `subscriptions/listen`
streams subscribe through `RoutingBus`, which files each stream under its server.

When to tell them: configuration writes bump a version row in the same transaction. The hub
wakes on this process's commits at once, and on other processes' commits when the database's
change bus brings them (store/change_bus.py: NOTIFY on PostgreSQL, Redis pub/sub); without
one it polls the version row every 50 ms (`treadle stdio` beside `treadle serve` on SQLite,
where the poll is a synchronous one-row read, no transaction or thread hop), waits a short
moment so a burst coalesces, then rebuilds the tool set of each affected server and notifies
when it differs from a list one of its clients may hold.

What a client may hold: every pass leaves each server with one baseline, the list of the
configuration version the pass compared (its clients either listed it or were just told to
list again). A client that connects takes the list current at that moment: when no pass is
pending, that *is* the baseline's version, so it is exact, and it must not be the cache's
latest list instead, which may be older (built before changes made while nobody was
connected: a change back to that older list would then look like no change, and the client
would keep what it listed in between). Only while a change is in flight as the client
connects is it unclear which of the two lists it was shown, so both count and the pending
pass tells it if either differs. This costs one cached tool-set lookup per connection and
nothing per pass beyond the comparison the hub always made; tracking what every session
listed would need a hook on every tools/list for the same answer.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from mcp.server.subscriptions import ServerEvent, ToolsListChanged

from treadle.mcp.binding import Binding
from treadle.mcp.toolset import ToolsetCache
from treadle.store import ChangeEvent, Store

log = logging.getLogger(__name__)

# The binding of the `subscriptions/listen` request being served (set around ListenHandler).
listening: contextvars.ContextVar[Binding | None] = contextvars.ContextVar(
    "treadle_listening", default=None
)

Listener = Callable[[ServerEvent], None]


class Notifiable(Protocol):
    """A handshake-era connection to tell (the SDK's ServerSession, or its Connection when
    treadle restores a session another replica opened: treadle.mcp.shared_sessions)."""

    async def send_tool_list_changed(self) -> None: ...


@dataclass(slots=True)
class _Server:
    binding: Binding
    sessions: dict[int, Notifiable] = field(default_factory=dict)
    listeners: dict[object, Listener] = field(default_factory=dict)
    # Fingerprints of the lists these clients may hold. Empty: unknown, so the next pass tells
    # them (a connection whose registration did not finish).
    held: set[str] = field(default_factory=set)
    # Clients inside `remember` now: while held is still empty, they compare for themselves.
    registering: int = 0
    # Listen streams between `remember` and their subscription, or subscribed (`listening_for`).
    pinned: int = 0

    @property
    def idle(self) -> bool:
        return not self.sessions and not self.listeners and not self.pinned


class RoutingBus:
    """A `SubscriptionBus` that files each listen stream under the server it listens to."""

    def __init__(self, hub: ResyncHub) -> None:
        self._hub = hub

    async def publish(self, event: ServerEvent) -> None:
        # Events are routed per server by the hub; an unrouted publish reaches every stream.
        for entry in list(self._hub.servers.values()):
            for listener in list(entry.listeners.values()):
                listener(event)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        binding = listening.get()
        if binding is None:
            raise RuntimeError("subscriptions/listen served outside a treadle binding")
        return self._hub.add_listener(binding, listener)


class ResyncHub:
    def __init__(
        self,
        store: Store,
        toolsets: ToolsetCache,
        *,
        coalesce_seconds: float = 0.05,
        max_delay_seconds: float = 0.4,
        poll_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._toolsets = toolsets
        self._coalesce = coalesce_seconds
        self._max_delay = max_delay_seconds
        # Other processes' commits: as often as the database's change bus needs (never, when
        # its events carry every change: PostgreSQL LISTEN/NOTIFY); None asks it.
        self._poll = store.db.changes.poll_seconds if poll_seconds is None else poll_seconds
        self._wake = anyio.Event()
        self._catalog_changed = False
        # The configuration version the last pass compared lists at (None: not known yet, or
        # a read failed since). A connection made while the database is past it races a pass.
        self._compared: int | None = None
        self.servers: dict[str, _Server] = {}
        self.bus = RoutingBus(self)
        self.notifications_sent = 0
        self.passes = 0  # resync passes started
        # When the change now being resynced arrived (monotonic), and who hears of the delay
        # from it to each notification (treadle.observability.metrics); None: nobody.
        self._changed_at: float | None = None
        self.on_notified: Callable[[float], None] | None = None

    # -- who is connected ------------------------------------------------------------------

    def _entry(self, binding: Binding) -> _Server:
        entry = self.servers.get(binding.cache_key)
        if entry is None:
            entry = self.servers[binding.cache_key] = _Server(binding)
        return entry

    def _drop_if_idle(self, key: str) -> None:
        entry = self.servers.get(key)
        if entry is not None and entry.idle:
            del self.servers[key]

    def add_session(self, binding: Binding, connection_key: int, session: Notifiable) -> bool:
        """Track a handshake-era connection; True when it is new."""
        entry = self._entry(binding)
        is_new = connection_key not in entry.sessions
        entry.sessions[connection_key] = session
        return is_new

    def remove_session(self, binding: Binding, connection_key: int) -> None:
        entry = self.servers.get(binding.cache_key)
        if entry is not None:
            entry.sessions.pop(connection_key, None)
            self._drop_if_idle(binding.cache_key)

    def add_listener(self, binding: Binding, listener: Listener) -> Callable[[], None]:
        token = object()
        self._entry(binding).listeners[token] = listener

        def unsubscribe() -> None:
            entry = self.servers.get(binding.cache_key)
            if entry is not None:
                entry.listeners.pop(token, None)
                self._drop_if_idle(binding.cache_key)

        return unsubscribe

    async def remember(self, binding: Binding) -> None:
        """Record the list a newly connected client holds, to compare later changes with.

        Called right after `add_session` (the session keeps the entry from looking idle to
        a pass), or by `listening_for` for a listen stream (which pins it)."""
        entry = self._entry(binding)
        entry.registering += 1
        passes = self.passes
        try:
            shown = self._toolsets.latest(binding.cache_key)
            before = await self._version()
            current = await self._toolsets.get(binding)
            settled = (
                before == self._compared
                and not self._catalog_changed
                and await self._version() == before
            )
            held = {current.fingerprint}
            if shown is not None and not settled:
                # A change is in flight: the client may have been shown the list built before.
                held.add(shown.fingerprint)
            entry.held |= held
            if self.passes != passes:
                # A pass ran meanwhile and left this entry to us (its baseline was not known
                # yet): compare as it would have, now that it is. (Where the version read
                # suspends, on PostgreSQL, a pass lands here often; telling the client about
                # a change that never happened would be a spurious list_changed.)
                await self._compare(entry)
        finally:
            entry.registering -= 1

    @asynccontextmanager
    async def listening_for(self, binding: Binding) -> AsyncIterator[None]:
        """Around a listen stream's handler: its client's list recorded (`remember`), and
        its entry kept until the handler ends. Between `remember` and the stream's
        subscription there are awaits (the version read on PostgreSQL, resource relays);
        a pass meanwhile would otherwise drop the entry as idle, and the subscription would
        start a new one with no baseline, so the next pass, with nothing changed, would
        tell the client its list changed."""
        entry = self._entry(binding)
        entry.pinned += 1
        try:
            await self.remember(binding)
            yield
        finally:
            entry.pinned -= 1
            self._drop_if_idle(binding.cache_key)

    # -- when to tell them -----------------------------------------------------------------

    def on_change(self, _event: ChangeEvent) -> None:
        if self._changed_at is None:
            self._changed_at = time.monotonic()
        self._wake.set()

    def on_catalog_change(self) -> None:
        self._catalog_changed = True
        self._wake.set()

    async def _version(self) -> int:
        # On SQLite a synchronous read of one row (see VersionProbe): cheap enough to poll often.
        return await self._store.db.config_version()

    async def run(self) -> None:
        """Watch for configuration changes until cancelled.

        A failed database read (a locked SQLite file, a dropped PostgreSQL connection) is
        logged and retried at the next poll: this task lives as long as the process, and
        ending it would silently stop every later notification (or take the server down).
        """
        unsubscribe = self._store.db.subscribe(self.on_change)
        unsubscribe_catalog = self._toolsets.catalog.subscribe(self.on_catalog_change)
        try:
            seen: int | None = None
            while True:
                try:
                    if self._catalog_changed:
                        # A new integration can add tools to any server: compare them all.
                        self._catalog_changed = False
                        await self.resync()
                    seen = await self._catch_up(seen)
                except Exception:
                    log.exception("could not check for configuration changes; will retry")
                    # Unknown now: compare tool lists again once the database answers.
                    seen = -1
                    self._compared = None
                with anyio.move_on_after(self._poll):
                    await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            unsubscribe()
            unsubscribe_catalog()

    async def _catch_up(self, seen: int | None) -> int:
        """Resync if the version moved past `seen` (None: first look, just note it)."""
        current = await self._version()
        if seen is None or current == seen:
            if seen is None:
                self._compared = current
            return current
        seen = await self._quiet(current)
        # Before the lists are built: a client connecting during the pass already gets them
        # (at this version or later, which the next pass compares again).
        self._compared = seen
        try:
            await self.resync()
        finally:
            self._changed_at = None
        return seen

    async def _quiet(self, version: int) -> int:
        """Let a burst of writes land: wait until the version holds still (bounded)."""
        deadline = anyio.current_time() + self._max_delay
        while anyio.current_time() < deadline:
            await anyio.sleep(self._coalesce)
            latest = await self._version()
            if latest == version:
                break
            version = latest
        self._wake = anyio.Event()
        return version

    async def resync(self) -> int:
        """Notify every connected server whose tool list changed; returns how many."""
        self.passes += 1
        changed = 0
        for key, entry in list(self.servers.items()):
            if entry.idle:
                # Registered without a connection (a listen stream refused after `remember`).
                if self.servers.get(key) is entry:
                    del self.servers[key]
                continue
            if entry.registering and not entry.held:
                continue  # `remember` compares for it once its baseline is known
            if await self._compare(entry):
                changed += 1
        return changed

    async def _compare(self, entry: _Server) -> bool:
        """Notify the entry's clients if its list is not the one they hold; True if told."""
        try:
            toolset = await self._toolsets.get(entry.binding)
        except Exception:
            log.exception("could not rebuild the tool list of %s", entry.binding.cache_key)
            return False
        if entry.held == {toolset.fingerprint}:
            return False
        entry.held = {toolset.fingerprint}
        await self._notify(entry)
        return True

    async def _notify(self, entry: _Server) -> None:
        self.notifications_sent += 1
        if self.on_notified is not None and self._changed_at is not None:
            self.on_notified(time.monotonic() - self._changed_at)
        for listener in list(entry.listeners.values()):
            listener(ToolsListChanged())
        for session in list(entry.sessions.values()):
            # Never raises: a notification to a connection that just went away is dropped.
            await session.send_tool_list_changed()
