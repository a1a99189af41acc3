"""The identity providers' tables (migration `0013_identity_providers`), defined with the
store's schema so that the migration tests hold them to their DDL.

A provider's client secret is sealed with the vault like connection secrets; a sign-in's
state, nonce and ticket are kept only as SHA-256 hashes (each carries 256 bits of entropy), and
its PKCE verifier sealed: a database reader can neither finish nor replay anybody's sign-in.
"""

from __future__ import annotations

from treadle.store.schema import identity_provider_servers, identity_providers, idp_sign_ins

__all__ = ["identity_provider_servers", "identity_providers", "idp_sign_ins"]
