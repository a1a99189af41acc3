"""Configuration the hot path reads on every call, kept in memory while it is still exact.

A call needs its org, workspace, workspace integrations, partials and approval policies, and a
request needs its credential resolved. Read from the database each time, that is about eight
transactions per call. Every write to any of these bumps the global configuration version in
the same transaction (`WriteTxn.changed`), so an entry tagged with the version read *before*
it was loaded is exact for as long as the version stays put: this cache never serves stale
configuration, in this process or after another process's commit, and needs no TTL. When the
version moves, entries of workspaces the change did not touch stay (`versioned_memo`).

A request reads the version once (`snapshot`) and makes every lookup at it: the credential,
the server record, the workspace's configuration for the tool list and for the pipeline.

A tool call can do without even that read where the pipeline confirms the version in a
statement it makes anyway (`confirms_at_admission`: PostgreSQL's rate-and-quota statement,
conditioned on the version it was given). Its face takes an `assumed_snapshot`, at the newest
version this process has seen, and serves the request again at the newer one should the
pipeline find it moved (`StaleConfiguration`); the pipeline reads the version on its own
before any answer or write that comes earlier (a refusal, an approval). So the call sees the
configuration exactly as a read would have, with one round trip less.

API keys are the one exception to "every write bumps": creating a key does not, so only keys
that exist are cached; revoking one bumps its scope (`ApiKeys.revoke`). A key past its expiry
stays cached but is answered as no key: expiry moves no version.
"""

from __future__ import annotations

from dataclasses import dataclass

from treadle.ids import hash_token
from treadle.store.configuration import Partials, WorkspaceIntegrations
from treadle.store.database import Database
from treadle.store.gates import ApprovalPolicies, ApprovalPolicy
from treadle.store.mcp_servers import McpServer, McpServers
from treadle.store.records import ApiKey, Org, Partial, Workspace, WorkspaceIntegration
from treadle.store.tenancy import ApiKeys, Orgs, Workspaces
from treadle.store.versioned_memo import VersionedMemo


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


def _workspace_of_key(key: tuple[str, str], _value: WorkspaceConfig | None) -> str:
    return key[1]


def _workspace_of_server(_key: str, value: McpServer | None) -> str | None:
    # Known once loaded: a server never moves to another workspace.
    return None if value is None else value.workspace_id


def _workspace_of_key_record(_key: str, value: ApiKey | None) -> str | None:
    # Keys of the whole org change with no workspace: they follow the global version.
    return None if value is None else value.workspace_id


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
        scoped = db.version
        self._workspace_configs: VersionedMemo[tuple[str, str], WorkspaceConfig] = VersionedMemo(
            scope_of=_workspace_of_key, scope_version=scoped
        )
        self._keys: VersionedMemo[str, ApiKey] = VersionedMemo(
            scope_of=_workspace_of_key_record, scope_version=scoped
        )
        self._servers: VersionedMemo[str, McpServer] = VersionedMemo(
            scope_of=_workspace_of_server, scope_version=scoped
        )
        self._server_tokens: VersionedMemo[str, McpServer] = VersionedMemo(
            scope_of=_workspace_of_server, scope_version=scoped
        )
        # Set where the pipeline's admission statement confirms the version (`app.py`).
        self.confirms_at_admission = False
        self._newest: int | None = None  # the newest version any read here has answered

    def saw(self, version: int) -> None:
        """A version read just now (with something else, or by the admission statement)."""
        if self._newest is None or version > self._newest:
            self._newest = version

    async def version(self) -> int:
        version = await self._db.config_version()
        self.saw(version)
        return version

    async def snapshot(self) -> ConfigSnapshot:
        """Lookups at the version as it is now: one read, however many lookups follow."""
        return ConfigSnapshot(self, await self.version())

    def snapshot_at(self, version: int) -> ConfigSnapshot:
        """Lookups at a version the caller read just now (with something else, in one
        statement: `Database.config_version_beside`)."""
        self.saw(version)
        return ConfigSnapshot(self, version)

    async def assumed_snapshot(self) -> ConfigSnapshot:
        """For a tool call only: lookups at the newest version seen here, not read for this
        request, where the pipeline confirms it (see the module's docstring); elsewhere, and
        before any read here, `snapshot()`."""
        if self.confirms_at_admission and self._newest is not None:
            return ConfigSnapshot(self, self._newest, confirmed=False)
        return await self.snapshot()

    async def workspace(self, org_id: str, workspace_id: str) -> WorkspaceConfig | None:
        """The workspace's configuration, or None if the org has no such workspace."""
        return await self.workspace_at(await self.version(), org_id, workspace_id)

    async def api_key(self, token: str) -> ApiKey | None:
        return await self.api_key_at(await self.version(), token)

    async def mcp_server(self, server_id: str) -> McpServer | None:
        return await self.mcp_server_at(await self.version(), server_id)

    async def mcp_server_for_token(self, token: str) -> McpServer | None:
        return await self.mcp_server_for_token_at(await self.version(), token)

    async def workspace_at(
        self, version: int, org_id: str, workspace_id: str
    ) -> WorkspaceConfig | None:
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

    async def api_key_at(self, version: int, token: str) -> ApiKey | None:
        key = await self._keys.get(
            hash_token(token), version, lambda: self._api_keys.authenticate(token)
        )
        return None if key is None or key.expired() else key

    async def mcp_server_at(self, version: int, server_id: str) -> McpServer | None:
        return await self._servers.get(server_id, version, lambda: self._mcp_servers.get(server_id))

    async def mcp_server_for_token_at(self, version: int, token: str) -> McpServer | None:
        return await self._server_tokens.get(
            hash_token(token), version, lambda: self._mcp_servers.by_token(token)
        )


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """The configuration as one read of the version found it: what one request sees.

    Faces read it once per request and hand it on (to the tool set, to the pipeline), so a
    request costs one version read however many lookups it makes."""

    cache: ConfigCache
    version: int
    # False: `version` was assumed, not read for this request (`assumed_snapshot`).
    confirmed: bool = True

    @property
    def assumed_version(self) -> int | None:
        """`ExecuteRequest.assumed_version` for a request served at this snapshot."""
        return None if self.confirmed else self.version

    async def confirm(self) -> ConfigSnapshot:
        """This snapshot if it was read for the request, else one at the version now (the
        same version, confirmed, or a newer one)."""
        return self if self.confirmed else await self.cache.snapshot()

    async def workspace(self, org_id: str, workspace_id: str) -> WorkspaceConfig | None:
        return await self.cache.workspace_at(self.version, org_id, workspace_id)

    async def api_key(self, token: str) -> ApiKey | None:
        return await self.cache.api_key_at(self.version, token)

    async def mcp_server(self, server_id: str) -> McpServer | None:
        return await self.cache.mcp_server_at(self.version, server_id)

    async def mcp_server_for_token(self, token: str) -> McpServer | None:
        return await self.cache.mcp_server_for_token_at(self.version, token)
