"""The tables, as SQLAlchemy Core objects, for building queries.

The DDL that creates them lives in `migrations.py` (frozen, recorded steps); a test checks the
two agree. JSON lives in TEXT columns so SQLite and PostgreSQL store it the same way.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class JSONText(sa.types.TypeDecorator[Any]):
    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), sort_keys=True)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("applied_at", sa.Text, nullable=False),
)

orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("plan", sa.Text, nullable=False),
    sa.Column("monthly_quota", sa.Integer, nullable=False),
    sa.Column("rate_limit", sa.Integer, nullable=False),
    sa.Column("rate_window_seconds", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
)

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("key_prefix", sa.Text, nullable=False),
    sa.Column("key_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Text),
)

end_users = sa.Table(
    "end_users",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text, nullable=False),
    sa.Column("external_id", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text),
    sa.Column("email", sa.Text),
    sa.Column("metadata", JSONText),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)

connections = sa.Table(
    "connections",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text),
    sa.Column("end_user_id", sa.Text),
    sa.Column("integration_name", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("external_id", sa.Text, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("base_url", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)

workspace_integrations = sa.Table(
    "workspace_integrations",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text, nullable=False),
    sa.Column("integration_name", sa.Text, nullable=False),
    sa.Column("alias", sa.Text, nullable=False),
    sa.Column("connection_strategy", sa.Text, nullable=False),
    sa.Column("connection_id", sa.Text),
    sa.Column("allowed_actions", JSONText),
    sa.Column("settings", JSONText, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)

partials = sa.Table(
    "partials",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text, nullable=False),
    sa.Column("integration_name", sa.Text, nullable=False),
    sa.Column("integration_alias", sa.Text),
    sa.Column("action_name", sa.Text),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("values", JSONText, nullable=False),
    sa.Column("enforced_keys", JSONText, nullable=False),
    sa.Column("is_default", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)

activity = sa.Table(
    "activity",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("integration_name", sa.Text),
    sa.Column("integration_alias", sa.Text),
    sa.Column("action_name", sa.Text),
    sa.Column("end_user_id", sa.Text),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("error_code", sa.Text),
    sa.Column("target_type", sa.Text),
    sa.Column("target_id", sa.Text),
    sa.Column("change", sa.Text),
    sa.Column("input", JSONText),
    sa.Column("created_at", sa.Text, nullable=False),
)

kv_entries = sa.Table(
    "kv_entries",
    metadata,
    sa.Column("namespace", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", JSONText, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)

usage_counters = sa.Table(
    "usage_counters",
    metadata,
    sa.Column("org_id", sa.Text, primary_key=True),
    sa.Column("period", sa.Text, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

config_versions = sa.Table(
    "config_versions",
    metadata,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

# The sliding-window rate limiter's two fixed-window counts per key (store/rate_windows.py).
rate_windows = sa.Table(
    "rate_windows",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("window_start", sa.BigInteger, nullable=False),
    sa.Column("current_count", sa.BigInteger, nullable=False),
    sa.Column("previous_count", sa.BigInteger, nullable=False),
)

# Handshake-era MCP sessions, for every replica: ended or still open, and when last used
# (treadle.store.mcp_sessions; the session's own state is sealed in its ID).
mcp_sessions = sa.Table(
    "mcp_sessions",
    metadata,
    sa.Column("session_key", sa.Text, primary_key=True),
    sa.Column("server_id", sa.Text, nullable=False),
    sa.Column("opened_at", sa.BigInteger, nullable=False),
    sa.Column("last_seen", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger),
)

mcp_servers = sa.Table(
    "mcp_servers",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("end_user_id", sa.Text),
    sa.Column("tool_overrides", JSONText, nullable=False),
    sa.Column("auto_threshold", sa.Integer, nullable=False, server_default="40"),
    sa.Column("token_hash", sa.Text, nullable=False),
    sa.Column("token_prefix", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)

approval_policies = sa.Table(
    "approval_policies",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("sources", JSONText),
    sa.Column("integration_names", JSONText),
    sa.Column("integration_aliases", JSONText),
    sa.Column("action_names", JSONText),
    sa.Column("connection_strategies", JSONText),
    sa.Column("mcp_server_ids", JSONText),
    sa.Column("end_user_mode", sa.Text, nullable=False),
    sa.Column("rules", JSONText),
    sa.Column("decision", sa.Text, nullable=False),
    sa.Column("timeout_seconds", sa.Integer, nullable=False),
    sa.Column("default_on_timeout", sa.Text, nullable=False),
    sa.Column("approval_access_mode", sa.Text, nullable=False),
    sa.Column("allow_self_approval", sa.Boolean, nullable=False),
    sa.Column("reuse_window_seconds", sa.Integer, nullable=False),
    sa.Column("notify_webhook_url", sa.Text),
    sa.Column("webhook_secret", sa.Text),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text, nullable=False),
    sa.Column("policy_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("integration_name", sa.Text, nullable=False),
    sa.Column("integration_alias", sa.Text, nullable=False),
    sa.Column("action_name", sa.Text, nullable=False),
    sa.Column("end_user_id", sa.Text),
    sa.Column("approval_key", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("input_preview", JSONText, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("decided_by", sa.Text),
    sa.Column("decided_at", sa.Text),
    sa.Column("consumed_at", sa.Text),
    sa.Column("expires_at", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
)

idempotency_records = sa.Table(
    "idempotency_records",
    metadata,
    sa.Column("org_id", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("body", JSONText),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Text, nullable=False),
    sa.Column("owner", sa.Text),
    sa.Column("lease_expires_at", sa.Text),
)

oauth_apps = sa.Table(
    "oauth_apps",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("integration_name", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("client_secret", sa.Text, nullable=False),
    sa.Column("scopes", JSONText, nullable=False),
    sa.Column("authorize_url", sa.Text, nullable=False),
    sa.Column("token_url", sa.Text, nullable=False),
    sa.Column("api_base_url", sa.Text),
    sa.Column("allow_private_network", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
    sa.Column("resource", sa.Text),
)

oauth_states = sa.Table(
    "oauth_states",
    metadata,
    sa.Column("state_hash", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text, nullable=False),
    sa.Column("integration_name", sa.Text, nullable=False),
    sa.Column("end_user_id", sa.Text),
    sa.Column("external_id", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("redirect_to", sa.Text),
    sa.Column("code_verifier", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Text, nullable=False),
    sa.Column("used_at", sa.Text),
    sa.Column("created_at", sa.Text, nullable=False),
)

upstreams = sa.Table(
    "upstreams",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("transport", JSONText, nullable=False),
    sa.Column("allow_private_network", sa.Boolean, nullable=False),
    sa.Column("auth", JSONText, nullable=False),
    sa.Column("catalog", JSONText, nullable=False),
    sa.Column("catalog_hash", sa.Text),
    sa.Column("health", JSONText, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
    sa.UniqueConstraint("org_id", "name"),
)

# An org's identity providers (treadle.auth.identity). The client secret is sealed with the
# vault like connection secrets.
identity_providers = sa.Table(
    "identity_providers",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),  # oidc | external_as
    sa.Column("issuer", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text),
    sa.Column("client_secret", sa.Text),
    sa.Column("scopes", JSONText, nullable=False),
    sa.Column("claim", sa.Text, nullable=False),
    sa.Column("allow_create_end_users", sa.Boolean, nullable=False),
    sa.Column("audience", sa.Text),
    sa.Column("allow_private_network", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
    sa.UniqueConstraint("org_id", "name"),
)

# Which MCP servers an `external_as` provider authorizes: at most one provider per server
# (the primary key), so two concurrent claims of one server cannot both succeed.
identity_provider_servers = sa.Table(
    "identity_provider_servers",
    metadata,
    sa.Column("server_id", sa.Text, primary_key=True),
    sa.Column("idp_id", sa.Text, nullable=False),
    sa.Column("org_id", sa.Text, nullable=False),
)

# One browser sign-in at an `oidc` provider, from its start to the ticket's single use. State,
# nonce and ticket are stored as hashes, the PKCE verifier sealed.
idp_sign_ins = sa.Table(
    "idp_sign_ins",
    metadata,
    sa.Column("state_hash", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("idp_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text),
    sa.Column("nonce_hash", sa.Text, nullable=False),
    sa.Column("code_verifier", sa.Text, nullable=False),
    sa.Column("return_to", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Text, nullable=False),
    sa.Column("used_at", sa.Text),
    sa.Column("ticket_hash", sa.Text, unique=True),
    sa.Column("ticket_expires_at", sa.Text),
    sa.Column("ticket_used_at", sa.Text),
    sa.Column("external_id", sa.Text),
    sa.Column("end_user_id", sa.Text),
    # The browser that started the sign-in (a cookie's hash): only it may finish it.
    sa.Column("browser_hash", sa.Text),
)


# -- the MCP endpoints' OAuth authorization server (treadle.auth.server) -------------------

# Clients registered by Dynamic Client Registration (RFC 7591). Clients named by a metadata
# document are fetched from their URL instead, never stored as registrations.
oauth_clients = sa.Table(
    "oauth_clients",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("client_name", sa.Text),
    sa.Column("redirect_uris", JSONText, nullable=False),
    sa.Column("secret_hash", sa.Text),
    sa.Column("auth_method", sa.Text, nullable=False),
    sa.Column("client_uri", sa.Text),
    sa.Column("created_at", sa.Text, nullable=False),
)

# Which clients an org's people have authorized, and whether the org revoked one.
oauth_org_clients = sa.Table(
    "oauth_org_clients",
    metadata,
    sa.Column("org_id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("client_name", sa.Text),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("first_seen_at", sa.Text, nullable=False),
    sa.Column("last_seen_at", sa.Text, nullable=False),
    sa.Column("revoked_at", sa.Text),
)

# One consent: a client may act on one MCP endpoint as one end user with these scopes.
oauth_grants = sa.Table(
    "oauth_grants",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("workspace_id", sa.Text, nullable=False),
    sa.Column("server_id", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("end_user_id", sa.Text),
    sa.Column("signed_in_as", sa.Text, nullable=False),
    sa.Column("scopes", JSONText, nullable=False),
    sa.Column("resource", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("last_used_at", sa.Text),
    sa.Column("revoked_at", sa.Text),
    sa.Column("revoked_reason", sa.Text),
)

oauth_codes = sa.Table(
    "oauth_codes",
    metadata,
    sa.Column("code_hash", sa.Text, primary_key=True),
    sa.Column("grant_id", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    sa.Column("code_challenge", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Text, nullable=False),
    sa.Column("used_at", sa.Text),
)

oauth_tokens = sa.Table(
    "oauth_tokens",
    metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("grant_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),  # access | refresh
    sa.Column("expires_at", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("used_at", sa.Text),  # a refresh token that was rotated
    sa.Column("revoked_at", sa.Text),
)

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("session_hash", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("api_key_id", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),  # wall-clock milliseconds
    sa.Column("last_seen", sa.BigInteger, nullable=False),
)
