"""The authorization server's tables (created by migration `0009_mcp_authorization`).

Codes, tokens and client secrets are kept only as SHA-256 hashes (they carry 256 bits of
entropy each): a database reader can neither act as a client nor as a person.
"""

from __future__ import annotations

import sqlalchemy as sa

from treadle.store.schema import JSONText

metadata = sa.MetaData()

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
