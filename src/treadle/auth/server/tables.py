"""The authorization server's tables (migration `0009_mcp_authorization`), defined with the
store's schema so that the migration tests hold them to their DDL.

Codes, tokens and client secrets are kept only as SHA-256 hashes (they carry 256 bits of
entropy each): a database reader can neither act as a client nor as a person.
"""

from __future__ import annotations

from treadle.store.schema import (
    oauth_clients,
    oauth_codes,
    oauth_grants,
    oauth_org_clients,
    oauth_tokens,
)

__all__ = ["oauth_clients", "oauth_codes", "oauth_grants", "oauth_org_clients", "oauth_tokens"]
