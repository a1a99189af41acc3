"""Auto-resync: tell every connected client when its server's tool list really changed.

Who is connected: handshake-era connections (stdio and HTTP sessions) register here from a
server middleware and unregister when their connection closes; 2026-07-28 `subscriptions/listen`
streams subscribe through `RoutingBus`, which files each stream under its server.

When to tell them: configuration writes bump a version row in the same transaction. The hub
wakes on this process's commits at once and polls the version row every 50 ms for other
processes' commits (`treadle stdio` beside `treadle serve`; on SQLite the poll is a
synchronous one-row read, no transaction or thread hop), waits a short moment so a burst coalesces,
then rebuilds the tool set of each affected server and notifies only if its fingerprint moved.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from mcp.server.session import ServerSession
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


@dataclass(slots=True)
class _Server:
    binding: Binding
    sessions: dict[int, ServerSession] = field(default_factory=dict)
    listeners: dict[object, Listener] = field(default_factory=dict)
    fingerprint: str | None = None

    @property
    def idle(self) -> bool:
        return not self.sessions and not self.listeners


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
        poll_seconds: float = 0.05,
    ) -> None:
        self._store = store
        self._toolsets = toolsets
        self._coalesce = coalesce_seconds
        self._max_delay = max_delay_seconds
        self._poll = poll_seconds
        self._wake = anyio.Event()
        self._catalog_changed = False
        self.servers: dict[str, _Server] = {}
        self.bus = RoutingBus(self)
        self.notifications_sent = 0

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

    def add_session(self, binding: Binding, connection_key: int, session: ServerSession) -> bool:
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
        """Record the list a newly connected client sees, to compare later changes with.

        The latest list served from the cache is what this client was shown (or older), so a
        change that lands while it registers is still notified; only when nothing was served
        yet is a list built here."""
        entry = self._entry(binding)
        if entry.fingerprint is not None:
            return
        known = self._toolsets.latest(binding.cache_key) or await self._toolsets.get(binding)
        if entry.fingerprint is None:
            entry.fingerprint = known.fingerprint

    # -- when to tell them -----------------------------------------------------------------

    def on_change(self, _event: ChangeEvent) -> None:
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
            return current
        seen = await self._quiet(current)
        await self.resync()
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
        changed = 0
        for key, entry in list(self.servers.items()):
            try:
                toolset = await self._toolsets.get(entry.binding)
            except Exception:
                log.exception("could not rebuild the tool list of %s", key)
                continue
            if toolset.fingerprint == entry.fingerprint:
                continue
            entry.fingerprint = toolset.fingerprint
            changed += 1
            await self._notify(entry)
        return changed

    async def _notify(self, entry: _Server) -> None:
        self.notifications_sent += 1
        for listener in list(entry.listeners.values()):
            listener(ToolsListChanged())
        for session in list(entry.sessions.values()):
            # Never raises: a notification to a connection that just went away is dropped.
            await session.send_tool_list_changed()
