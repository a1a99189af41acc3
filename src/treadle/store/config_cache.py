"""Configuration the hot path reads on every call, kept in memory while it is still exact.

A call needs its org, workspace, workspace integrations, partials and approval policies, and a
request needs its credential resolved. Read from the database each time, that is about eight
transactions per call. Every write to any of these bumps the global configuration version in
the same transaction (`WriteTxn.changed`), so an entry tagged with the version read *before*
it was loaded is exact for as long as the version stays put: this cache never serves stale
configuration, in this process or after another process's commit, and needs no TTL.

API keys are the one exception to "every write bumps": creating a key does not, so only keys
that exist are cached (there is no key revocation yet; when there is, it must bump).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

from treadle.ids import hash_token
from treadle.store.configuration import Partials, WorkspaceIntegrations
from treadle.store.database import Database
from treadle.store.gates import ApprovalPolicies, ApprovalPolicy
from treadle.store.mcp_servers import McpServer, McpServers
from treadle.store.records import ApiKey, Org, Partial, Workspace, WorkspaceIntegration
from treadle.store.tenancy import ApiKeys, Orgs, Workspaces

K = TypeVar("K")
V = TypeVar("V")

# Bounds memory when many keys or workspaces are seen; an evicted entry is simply re-read.
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class WorkspaceConfig:
    """Everything the pipeline and the tool-set builder read about one workspace.

    While the content stays equal the cache hands out the same object, even across version
    bumps made by other workspaces, so derived caches (tool sets) may key on its identity."""

    org: Org
    workspace: Workspace
    integrations: tuple[WorkspaceIntegration, ...]
    partials: tuple[Partial, ...]
    policies: tuple[ApprovalPolicy, ...]


class _VersionedMemo(Generic[K, V]):
    """Values tagged with the configuration version they were loaded under."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: dict[K, tuple[int, V]] = {}
        self._max = max_entries
        # One load at a time: after a change, concurrent calls wait for one load, not run 32.
        self._loading = anyio.Lock()

    async def get(
        self,
        key: K,
        version: int,
        load: Callable[[], Awaitable[V | None]],
    ) -> V | None:
        found = self._entries.get(key)
        if found is not None and found[0] == version:
            return found[1]
        async with self._loading:
            found = self._entries.get(key)
            if found is not None and found[0] == version:
                return found[1]
            value = await load()
            if value is None:
                self._entries.pop(key, None)
                return None
            if found is not None and found[1] == value:
                value = found[1]  # unchanged: keep the object others may have keyed on
            if len(self._entries) >= self._max:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (version, value)
            return value


class ConfigCache:
    def __init__(
        self,
        db: Database,
        *,
        orgs: Orgs,
        workspaces: Workspaces,
        api_keys: ApiKeys,
        integrations: WorkspaceIntegrations,
        partials: Partials,
        policies: ApprovalPolicies,
        mcp_servers: McpServers,
    ) -> None:
        self._db = db
        self._orgs = orgs
        self._workspaces = workspaces
        self._api_keys = api_keys
        self._integrations = integrations
        self._partials = partials
        self._policies = policies
        self._mcp_servers = mcp_servers
        self._workspace_configs: _VersionedMemo[tuple[str, str], WorkspaceConfig] = _VersionedMemo()
        self._keys: _VersionedMemo[str, ApiKey] = _VersionedMemo()
        self._servers: _VersionedMemo[str, McpServer] = _VersionedMemo()
        self._server_tokens: _VersionedMemo[str, McpServer] = _VersionedMemo()

    async def version(self) -> int:
        return await self._db.config_version()

    async def workspace(self, org_id: str, workspace_id: str) -> WorkspaceConfig | None:
        """The workspace's configuration, or None if the org has no such workspace."""
        version = await self.version()

        async def load() -> WorkspaceConfig | None:
            org = await self._orgs.get(org_id)
            workspace = None if org is None else await self._workspaces.get(org_id, workspace_id)
            if org is None or workspace is None:
                return None
            return WorkspaceConfig(
                org=org,
                workspace=workspace,
                integrations=tuple(await self._integrations.list(workspace_id)),
                partials=tuple(await self._partials.list(workspace_id)),
                policies=tuple(await self._policies.list(org_id, {workspace_id})),
            )

        return await self._workspace_configs.get((org_id, workspace_id), version, load)

    async def api_key(self, token: str) -> ApiKey | None:
        digest = hash_token(token)
        return await self._keys.get(
            digest, await self.version(), lambda: self._api_keys.authenticate(token)
        )

    async def mcp_server(self, server_id: str) -> McpServer | None:
        return await self._servers.get(
            server_id, await self.version(), lambda: self._mcp_servers.get(server_id)
        )

    async def mcp_server_for_token(self, token: str) -> McpServer | None:
        digest = hash_token(token)
        return await self._server_tokens.get(
            digest, await self.version(), lambda: self._mcp_servers.by_token(token)
        )
