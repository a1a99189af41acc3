"""OAuth2 connections: app settings, the PKCE authorization flow, token refresh, connect links."""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from treadle.oauth.client import TokenClient
from treadle.oauth.connect_links import ConnectLinks
from treadle.oauth.flow import OAuthFlow
from treadle.oauth.refresh import TokenRefresher
from treadle.oauth.repository import OAuthApps, OAuthStates
from treadle.store import Store
from treadle.vault import Vault


@dataclass(frozen=True, slots=True)
class OAuth:
    """The OAuth components of one gateway, assembled once (app.py)."""

    apps: OAuthApps
    states: OAuthStates
    links: ConnectLinks
    flow: OAuthFlow
    refresher: TokenRefresher

    @classmethod
    def assemble(
        cls, store: Store, vault: Vault, http: httpx2.AsyncClient, public_url: str
    ) -> OAuth:
        apps = OAuthApps(store.db, vault)
        states = OAuthStates(store.db, vault)
        tokens = TokenClient(http)
        links = ConnectLinks(vault.derive("treadle connect links"), public_url, store)
        return cls(
            apps,
            states,
            links,
            OAuthFlow(store, apps, states, tokens, public_url),
            TokenRefresher(store, apps, tokens, links),
        )


__all__ = ["OAuth"]
