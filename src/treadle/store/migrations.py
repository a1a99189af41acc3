"""Named, recorded schema migrations.

Each step is frozen once released: change the schema by appending a step, never by editing
one. `migrate` applies the steps a database has not recorded yet, in order, each in its own
transaction, so upgrading an existing data dir keeps its data.

The DDL is written once, in the subset both databases accept (TEXT, INTEGER, BOOLEAN, plain
indexes), and is fitted to PostgreSQL when applied there (`Migration.statements_for`): in
CREATE/ALTER TABLE, TEXT becomes `TEXT COLLATE "C"` (byte-wise ordering and comparison, as
SQLite's default BINARY collation, whatever the database's locale) and INTEGER becomes BIGINT
(SQLite's integers are 64-bit). What SQLite needs no counterpart for goes in `postgresql`.

Several processes may start on one database at once (replicas, `treadle init` beside
`treadle serve`): each step is applied under the migration lock (`BEGIN IMMEDIATE` on SQLite,
an advisory lock on PostgreSQL) after re-reading the ledger, so every step runs exactly once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from treadle.clock import now_iso
from treadle.store.portable import ACTIVITY_SEQUENCE, on_postgresql

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    statements: Sequence[str]
    # Run after `statements` on PostgreSQL only: what SQLite does without being asked.
    postgresql: Sequence[str] = ()
    # Run once, last, in the step's transaction: a check of existing data that tells the
    # operator what it found (in the log) and changes nothing.
    report: Callable[[AsyncConnection], Awaitable[None]] | None = None

    def statements_for(self, dialect: str) -> Sequence[str]:
        if dialect != "postgresql":
            return self.statements
        return (*(_for_postgresql(statement) for statement in self.statements), *self.postgresql)


def _for_postgresql(statement: str) -> str:
    if not re.match(r"\s*(CREATE|ALTER)\s+TABLE\b", statement, re.IGNORECASE):
        return statement
    statement = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', statement)
    return re.sub(r"\bINTEGER\b", "BIGINT", statement)


async def report_end_user_ids(conn: AsyncConnection) -> None:
    """Existing end-user ids that the one rule for them now refuses: no request can name them
    any more. They are reported, not rewritten (trimming could merge two people into one, and
    only the operator knows who they are); the log names rows by id, never the values."""
    # Imported here: the engine imports the store, whose database runs these migrations.
    from treadle.engine.end_user_ids import MAX_LENGTH, end_user_id_problem

    checks = {
        "end users": "SELECT id, external_id FROM end_users",
        "MCP servers pinned to an end user": (
            "SELECT id, end_user_id FROM mcp_servers WHERE end_user_id IS NOT NULL"
        ),
    }
    for what, query in checks.items():
        rows = await conn.execute(sa.text(query))
        refused = sorted(row_id for row_id, value in rows if end_user_id_problem(value))
        if refused:
            log.warning(
                "%d %s have an end-user id that is now refused everywhere (leading or "
                "trailing whitespace, control characters, or over %d characters); nothing "
                "was changed, recreate or update them under a valid id. Their ids: %s",
                len(refused),
                what,
                MAX_LENGTH,
                _listed(refused),
            )


def _listed(ids: list[str], shown: int = 100) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_initial",
        (
            """CREATE TABLE orgs (
                id TEXT PRIMARY KEY, name TEXT NOT NULL, plan TEXT NOT NULL,
                monthly_quota INTEGER NOT NULL, rate_limit INTEGER NOT NULL,
                rate_window_seconds INTEGER NOT NULL, created_at TEXT NOT NULL)""",
            """CREATE TABLE workspaces (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id),
                name TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                UNIQUE (org_id, name))""",
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES orgs(id),
                workspace_id TEXT, name TEXT NOT NULL, key_prefix TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)""",
            """CREATE TABLE end_users (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workspace_id TEXT NOT NULL,
                external_id TEXT NOT NULL, display_name TEXT, email TEXT, metadata TEXT,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                UNIQUE (workspace_id, external_id))""",
            """CREATE TABLE connections (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workspace_id TEXT,
                end_user_id TEXT, integration_name TEXT NOT NULL, type TEXT NOT NULL,
                display_name TEXT NOT NULL, external_id TEXT NOT NULL, secret TEXT NOT NULL,
                base_url TEXT, status TEXT NOT NULL, created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL)""",
            """CREATE UNIQUE INDEX connections_external_id
                ON connections (org_id, COALESCE(workspace_id, ''), external_id)""",
            """CREATE TABLE workspace_integrations (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workspace_id TEXT NOT NULL,
                integration_name TEXT NOT NULL, alias TEXT NOT NULL,
                connection_strategy TEXT NOT NULL, connection_id TEXT, allowed_actions TEXT,
                settings TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                UNIQUE (workspace_id, alias))""",
            """CREATE TABLE partials (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workspace_id TEXT NOT NULL,
                integration_name TEXT NOT NULL, integration_alias TEXT, action_name TEXT,
                name TEXT NOT NULL, description TEXT, "values" TEXT NOT NULL,
                enforced_keys TEXT NOT NULL, is_default BOOLEAN NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
            """CREATE UNIQUE INDEX partials_scope_name ON partials (workspace_id,
                integration_name, COALESCE(integration_alias, ''), COALESCE(action_name, ''),
                name)""",
            """CREATE TABLE activity (
                id TEXT PRIMARY KEY, seq INTEGER NOT NULL, org_id TEXT NOT NULL,
                workspace_id TEXT, type TEXT NOT NULL, source TEXT NOT NULL,
                actor TEXT NOT NULL, status TEXT NOT NULL, integration_name TEXT,
                integration_alias TEXT, action_name TEXT, end_user_id TEXT,
                duration_ms INTEGER, error_code TEXT, target_type TEXT, target_id TEXT,
                change TEXT, input TEXT, created_at TEXT NOT NULL)""",
            "CREATE INDEX activity_org_seq ON activity (org_id, seq)",
            "CREATE UNIQUE INDEX activity_seq ON activity (seq)",
            """CREATE TABLE kv_entries (
                namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                updated_at TEXT NOT NULL, PRIMARY KEY (namespace, key))""",
            """CREATE TABLE usage_counters (
                org_id TEXT NOT NULL, period TEXT NOT NULL, count INTEGER NOT NULL,
                PRIMARY KEY (org_id, period))""",
            """CREATE TABLE config_versions (
                scope TEXT PRIMARY KEY, version INTEGER NOT NULL)""",
        ),
        # SQLite numbers `activity.seq` under its single writer; concurrent PostgreSQL
        # writers draw the numbers from a sequence instead (store/portable.py).
        postgresql=(f"CREATE SEQUENCE {ACTIVITY_SEQUENCE} AS BIGINT",),
    ),
    Migration(
        "0002_mcp_servers",
        (
            """CREATE TABLE mcp_servers (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workspace_id TEXT NOT NULL,
                name TEXT NOT NULL, mode TEXT NOT NULL, end_user_id TEXT,
                tool_overrides TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
                token_prefix TEXT NOT NULL, created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL)""",
            "CREATE INDEX mcp_servers_workspace ON mcp_servers (workspace_id)",
        ),
    ),
    Migration(
        "0003_human_gates",
        (
            """CREATE TABLE approval_policies (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workspace_id TEXT,
                name TEXT NOT NULL, description TEXT, enabled BOOLEAN NOT NULL,
                priority INTEGER NOT NULL, sources TEXT, integration_names TEXT,
                integration_aliases TEXT, action_names TEXT, connection_strategies TEXT,
                mcp_server_ids TEXT, end_user_mode TEXT NOT NULL, rules TEXT,
                decision TEXT NOT NULL, timeout_seconds INTEGER NOT NULL,
                default_on_timeout TEXT NOT NULL, approval_access_mode TEXT NOT NULL,
                allow_self_approval BOOLEAN NOT NULL, reuse_window_seconds INTEGER NOT NULL,
                notify_webhook_url TEXT, webhook_secret TEXT, created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL)""",
            "CREATE INDEX approval_policies_org ON approval_policies (org_id)",
            """CREATE TABLE approvals (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workspace_id TEXT NOT NULL,
                policy_id TEXT NOT NULL, status TEXT NOT NULL, source TEXT NOT NULL,
                actor TEXT NOT NULL, integration_name TEXT NOT NULL,
                integration_alias TEXT NOT NULL, action_name TEXT NOT NULL,
                end_user_id TEXT, approval_key TEXT NOT NULL, fingerprint TEXT NOT NULL,
                input_preview TEXT NOT NULL, reason TEXT, decided_by TEXT, decided_at TEXT,
                consumed_at TEXT, expires_at TEXT NOT NULL, created_at TEXT NOT NULL)""",
            "CREATE INDEX approvals_key ON approvals (org_id, approval_key, created_at)",
            "CREATE INDEX approvals_org_created ON approvals (org_id, created_at)",
            """CREATE TABLE idempotency_records (
                org_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
                state TEXT NOT NULL, status_code INTEGER, body TEXT, created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL, PRIMARY KEY (org_id, key))""",
        ),
    ),
    Migration(
        "0004_oauth",
        (
            """CREATE TABLE oauth_apps (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, integration_name TEXT NOT NULL,
                client_id TEXT NOT NULL, client_secret TEXT NOT NULL, scopes TEXT NOT NULL,
                authorize_url TEXT NOT NULL, token_url TEXT NOT NULL, api_base_url TEXT,
                allow_private_network BOOLEAN NOT NULL, created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL, UNIQUE (org_id, integration_name))""",
            """CREATE TABLE oauth_states (
                state_hash TEXT PRIMARY KEY, org_id TEXT NOT NULL, workspace_id TEXT NOT NULL,
                integration_name TEXT NOT NULL, end_user_id TEXT, external_id TEXT NOT NULL,
                display_name TEXT NOT NULL, redirect_to TEXT, code_verifier TEXT NOT NULL,
                actor TEXT NOT NULL, expires_at TEXT NOT NULL, used_at TEXT,
                created_at TEXT NOT NULL)""",
            "CREATE INDEX oauth_states_expires ON oauth_states (expires_at)",
        ),
    ),
    Migration(
        "0005_idempotency_lease",
        (
            # A running claim names the process that holds it and until when; the holder
            # renews the lease, so a claim whose lease ran out was abandoned (its process
            # stopped) and a retry may take it over. Rows from before this step have neither:
            # their processes are gone, so they count as abandoned.
            "ALTER TABLE idempotency_records ADD COLUMN owner TEXT",
            "ALTER TABLE idempotency_records ADD COLUMN lease_expires_at TEXT",
            "CREATE INDEX idempotency_records_owner ON idempotency_records (owner)",
        ),
    ),
    Migration("0006_end_user_ids_report", (), report=report_end_user_ids),
    Migration(
        "0007_rate_windows",
        (
            # One row per rate-limited key (an org): the sliding window's two fixed-window
            # counts, shared by every process on the database.
            """CREATE TABLE rate_windows (
                key TEXT PRIMARY KEY, window_start INTEGER NOT NULL,
                current_count INTEGER NOT NULL, previous_count INTEGER NOT NULL)""",
        ),
    ),
    Migration(
        "0008_api_key_expiry",
        # Keys from before this step never expire (NULL), as they did not.
        ("ALTER TABLE api_keys ADD COLUMN expires_at TEXT",),
    ),
    Migration(
        "0009_mcp_authorization",
        (
            # The built-in OAuth 2.1 authorization server of the MCP endpoints (treadle.auth):
            # codes, tokens and client secrets are stored as hashes only.
            """CREATE TABLE oauth_clients (
                client_id TEXT PRIMARY KEY, client_name TEXT, redirect_uris TEXT NOT NULL,
                secret_hash TEXT, auth_method TEXT NOT NULL, client_uri TEXT,
                created_at TEXT NOT NULL)""",
            """CREATE TABLE oauth_org_clients (
                org_id TEXT NOT NULL, client_id TEXT NOT NULL, client_name TEXT,
                kind TEXT NOT NULL, first_seen_at TEXT NOT NULL, last_seen_at TEXT NOT NULL,
                revoked_at TEXT, PRIMARY KEY (org_id, client_id))""",
            """CREATE TABLE oauth_grants (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workspace_id TEXT NOT NULL,
                server_id TEXT NOT NULL, client_id TEXT NOT NULL, end_user_id TEXT,
                signed_in_as TEXT NOT NULL, scopes TEXT NOT NULL, resource TEXT NOT NULL,
                created_at TEXT NOT NULL, last_used_at TEXT, revoked_at TEXT,
                revoked_reason TEXT)""",
            "CREATE INDEX oauth_grants_org_client ON oauth_grants (org_id, client_id)",
            "CREATE INDEX oauth_grants_server ON oauth_grants (server_id)",
            """CREATE TABLE oauth_codes (
                code_hash TEXT PRIMARY KEY, grant_id TEXT NOT NULL, client_id TEXT NOT NULL,
                redirect_uri TEXT NOT NULL, code_challenge TEXT NOT NULL,
                expires_at TEXT NOT NULL, used_at TEXT)""",
            """CREATE TABLE oauth_tokens (
                token_hash TEXT PRIMARY KEY, grant_id TEXT NOT NULL, kind TEXT NOT NULL,
                expires_at TEXT NOT NULL, created_at TEXT NOT NULL, used_at TEXT,
                revoked_at TEXT)""",
            "CREATE INDEX oauth_tokens_grant ON oauth_tokens (grant_id)",
        ),
    ),
    Migration(
        "0010_upstreams",
        (
            # Upstream MCP servers (treadle.catalog.upstream): an org's own integrations.
            """CREATE TABLE upstreams (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL,
                display_name TEXT NOT NULL, description TEXT, transport TEXT NOT NULL,
                allow_private_network BOOLEAN NOT NULL, auth TEXT NOT NULL,
                catalog TEXT NOT NULL, catalog_hash TEXT, health TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE (org_id, name))""",
        ),
    ),
    Migration(
        "0012_mcp_sessions",
        (
            # Handshake-era MCP sessions on any replica (treadle.store.mcp_sessions).
            """CREATE TABLE mcp_sessions (
                session_key TEXT PRIMARY KEY, server_id TEXT NOT NULL,
                opened_at INTEGER NOT NULL, last_seen INTEGER NOT NULL, ended_at INTEGER)""",
            "CREATE INDEX mcp_sessions_last_seen ON mcp_sessions (last_seen)",
        ),
    ),
    Migration(
        "0013_identity_providers",
        (
            # An org's identity providers (treadle.auth.identity): OpenID Connect sign-in and
            # external authorization servers. Client secrets are sealed; a sign-in's state,
            # nonce and ticket are stored as hashes only.
            """CREATE TABLE identity_providers (
                id TEXT PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL,
                kind TEXT NOT NULL, issuer TEXT NOT NULL, client_id TEXT, client_secret TEXT,
                scopes TEXT NOT NULL, claim TEXT NOT NULL,
                allow_create_end_users BOOLEAN NOT NULL, audience TEXT,
                allow_private_network BOOLEAN NOT NULL, created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL, UNIQUE (org_id, name))""",
            """CREATE TABLE identity_provider_servers (
                server_id TEXT PRIMARY KEY, idp_id TEXT NOT NULL, org_id TEXT NOT NULL)""",
            "CREATE INDEX identity_provider_servers_idp ON identity_provider_servers (idp_id)",
            """CREATE TABLE idp_sign_ins (
                state_hash TEXT PRIMARY KEY, org_id TEXT NOT NULL, idp_id TEXT NOT NULL,
                workspace_id TEXT, nonce_hash TEXT NOT NULL, code_verifier TEXT NOT NULL,
                return_to TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
                used_at TEXT, ticket_hash TEXT UNIQUE, ticket_expires_at TEXT,
                ticket_used_at TEXT, external_id TEXT, end_user_id TEXT,
                browser_hash TEXT)""",
            "CREATE INDEX idp_sign_ins_expires ON idp_sign_ins (expires_at)",
        ),
    ),
    Migration(
        "0014_mcp_server_auto_threshold",
        # AUTO mode lists tools while a server has at most this many, else the discovery
        # meta-tools (existing servers keep mode TOOLS; 40 is the default for all of them).
        ("ALTER TABLE mcp_servers ADD COLUMN auto_threshold INTEGER NOT NULL DEFAULT 40",),
    ),
    Migration(
        "0015_console_sessions",
        (
            # Signed-in browsers of the web console (treadle.web.console): only the hash of
            # the session cookie is kept; a revoked API key ends its sessions at once.
            """CREATE TABLE console_sessions (
                session_hash TEXT PRIMARY KEY, org_id TEXT NOT NULL, api_key_id TEXT NOT NULL,
                created_at INTEGER NOT NULL, last_seen INTEGER NOT NULL)""",
            "CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen)",
        ),
    ),
    Migration(
        "0016_oauth_app_resource",
        # The RFC 8707 resource an OAuth app's tokens are for: set on the clients treadle
        # registers with an upstream MCP server's authorization server (oauth.upstream_clients).
        ("ALTER TABLE oauth_apps ADD COLUMN resource TEXT",),
    ),
)

_CREATE_LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"""


# Any fixed number: the advisory lock every migrating process takes on PostgreSQL.
_MIGRATION_LOCK = 0x7472_6561_646C_65  # "treadle"


async def migrate(engine: AsyncEngine, steps: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the steps not yet recorded; returns the names applied now (by this call: when
    another process applies a step first, it is not applied again)."""
    if not await _anything_to_apply(engine, steps):
        return []
    applied: list[str] = []
    for step in steps:
        async with _migration_lock(engine) as conn:
            await conn.execute(sa.text(_CREATE_LEDGER))
            recorded = await conn.execute(
                sa.text("SELECT 1 FROM schema_migrations WHERE name = :n"), {"n": step.name}
            )
            if recorded.first() is not None:
                continue
            for statement in step.statements_for(conn.dialect.name):
                await conn.execute(sa.text(statement))
            if step.report is not None:
                await step.report(conn)
            await conn.execute(
                sa.text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, :t)"),
                {"n": step.name, "t": now_iso()},
            )
        applied.append(step.name)
    return applied


async def _anything_to_apply(engine: AsyncEngine, steps: Sequence[Migration]) -> bool:
    """Whether a step is missing, read without the lock (every start-up of an up-to-date
    database asks, and then takes no write lock)."""
    async with engine.connect() as conn:
        exists = await conn.run_sync(lambda sync: sa.inspect(sync).has_table("schema_migrations"))
        if not exists:
            return True
        done = set((await conn.execute(sa.text("SELECT name FROM schema_migrations"))).scalars())
    return any(step.name not in done for step in steps)


@asynccontextmanager
async def _migration_lock(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction that holds the migration lock until it ends."""
    async with engine.connect() as conn:
        # SQLite: `treadle_write` makes the connection open with BEGIN IMMEDIATE (see
        # `database._configure_sqlite`), the file's write lock, so DDL and ledger agree.
        conn = await conn.execution_options(treadle_write=True)
        async with conn.begin():
            if on_postgresql(conn):
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            yield conn
