"""Persistence: every SQL statement of treadle lives in this package."""

from __future__ import annotations

from datetime import timedelta

from treadle.store.activity import Activity, ActivityFilter
from treadle.store.config_cache import ConfigCache, WorkspaceConfig
from treadle.store.configuration import Partials, WorkspaceIntegrations
from treadle.store.database import ChangeEvent, Database, WriteTxn
from treadle.store.gates import (
    IDEMPOTENCY_LEASE,
    ApprovalPolicies,
    Approvals,
    IdempotencyRecords,
)
from treadle.store.ledger import ExecutionLedger
from treadle.store.mcp_servers import McpServers
from treadle.store.mcp_sessions import McpSessions
from treadle.store.people import Connections, EndUsers
from treadle.store.state import KeyValueNamespace, UsageCounters
from treadle.store.tenancy import ApiKeys, Orgs, Workspaces
from treadle.vault import Vault


class Store:
    """The repositories over one database, assembled once per process."""

    def __init__(
        self, db: Database, vault: Vault, *, idempotency_lease: timedelta = IDEMPOTENCY_LEASE
    ) -> None:
        self.db = db
        self.vault = vault
        self.orgs = Orgs(db)
        self.workspaces = Workspaces(db)
        self.api_keys = ApiKeys(db)
        self.end_users = EndUsers(db)
        self.connections = Connections(db, vault)
        self.integrations = WorkspaceIntegrations(db)
        self.partials = Partials(db)
        self.usage = UsageCounters(db)
        self.ledger = ExecutionLedger(db, self.usage)
        self.activity = Activity(db, self.ledger)
        self.mcp_servers = McpServers(db)
        self.mcp_sessions = McpSessions(db)
        self.approval_policies = ApprovalPolicies(db)
        self.approvals = Approvals(db)
        self.idempotency = IdempotencyRecords(db, lease=idempotency_lease)
        self.config = ConfigCache(
            db,
            orgs=self.orgs,
            workspaces=self.workspaces,
            api_keys=self.api_keys,
            integrations=self.integrations,
            partials=self.partials,
            policies=self.approval_policies,
            mcp_servers=self.mcp_servers,
        )

    def kv(self, namespace: str) -> KeyValueNamespace:
        return KeyValueNamespace(self.db, namespace, actor="system")

    async def close(self) -> None:
        self.mcp_sessions.close()
        await self.db.close()


__all__ = [
    "ActivityFilter",
    "ChangeEvent",
    "ConfigCache",
    "Database",
    "ExecutionLedger",
    "Store",
    "WorkspaceConfig",
    "WriteTxn",
]
