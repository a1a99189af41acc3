"""Values kept while the configuration they were loaded from holds, checked per scope.

Every configuration write bumps the global version (`*`), and a write to a workspace's
configuration (its integrations, partials, policies, MCP servers, the workspace itself, and
its org's limits and org-wide policies) bumps that workspace's version row too, in the same
transaction. An entry is exact at the global version it is tagged with. When the global version
moved, an entry whose workspace's version did not is still exact: it is re-tagged without
loading it again, so a change in one workspace reloads that workspace only, not every other one
this process holds.

Loads are per key: after a change, concurrent requests for one key wait for one load, while
requests for other keys go on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

K = TypeVar("K")
V = TypeVar("V")

# Bounds memory when many keys or workspaces are seen; an evicted entry is simply re-read.
MAX_ENTRIES = 10_000

# The scope (workspace) a value was loaded from, given its key and (when known) its previous
# value; None when it is not known, so only the global version validates it.
ScopeOf = Callable[[K, V | None], str | None]
ScopeVersion = Callable[[str], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    version: int
    # Its scope's version, read before it was loaded; None: not tracked.
    scoped: int | None
    value: V


class KeyedLocks(Generic[K]):
    """One lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[K, tuple[anyio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class VersionedMemo(Generic[K, V]):
    """Values tagged with the configuration version they are known exact at."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        *,
        scope_of: ScopeOf[K, V] | None = None,
        scope_version: ScopeVersion | None = None,
    ) -> None:
        self._entries: dict[K, _Entry[V]] = {}
        self._max = max_entries
        self._scope_of = scope_of if scope_version is not None else None
        self._scope_version = scope_version
        self._loading: KeyedLocks[K] = KeyedLocks()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self,
        key: K,
        version: int,
        load: Callable[[], Awaitable[V | None]],
    ) -> V | None:
        # A newer tag is as good: the global version only grows, and a request may see a
        # change committed after it read the version (never one older than it).
        found = self._entries.get(key)
        if found is not None and found.version >= version:
            return found.value
        async with self._loading.hold(key):
            found = self._entries.get(key)
            if found is not None and found.version >= version:
                return found.value
            scope = self._scope(key, None if found is None else found.value)
            scoped = None
            if scope is not None:
                assert self._scope_version is not None
                scoped = await self._scope_version(scope)
            if found is not None and scoped is not None and found.scoped == scoped:
                # Only other workspaces moved the global version since this was loaded.
                self._entries[key] = _Entry(version, scoped, found.value)
                return found.value
            value = await load()
            if value is None:
                self._entries.pop(key, None)
                return None
            if found is not None and found.value == value:
                value = found.value  # unchanged: keep the object others may have keyed on
            if self._scope(key, value) != scope:
                scoped = None  # read for another scope than the value has: not a valid tag
            self._put(key, _Entry(version, scoped, value))
            return value

    def _scope(self, key: K, value: V | None) -> str | None:
        return None if self._scope_of is None else self._scope_of(key, value)

    def _put(self, key: K, entry: _Entry[V]) -> None:
        if key not in self._entries and len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = entry
