"""OAuth2 connections: app settings, the PKCE authorization flow, token refresh, connect links."""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from treadle.oauth.client import TokenClient
from treadle.oauth.connect_links import ConnectLinks
from treadle.oauth.flow import CALLBACK_PATH, OAuthFlow
from treadle.oauth.refresh import TokenRefresher
from treadle.oauth.repository import OAuthApps, OAuthStates
from treadle.oauth.upstream_clients import UpstreamClients
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
    # treadle as an OAuth client of upstream MCP servers (discovery, registration).
    upstreams: UpstreamClients

    @classmethod
    def assemble(
        cls, store: Store, vault: Vault, http: httpx2.AsyncClient, public_url: str
    ) -> OAuth:
        apps = OAuthApps(store.db, vault)
        states = OAuthStates(store.db, vault)
        tokens = TokenClient(http)
        links = ConnectLinks(vault.derive("treadle connect links"), public_url, store)
        callback = f"{public_url.rstrip('/')}{CALLBACK_PATH}"
        upstreams = UpstreamClients(store, apps, vault, http, public_url, callback)
        return cls(
            apps,
            states,
            links,
            OAuthFlow(store, apps, states, tokens, public_url, upstreams),
            TokenRefresher(store, apps, tokens, links),
            upstreams,
        )


__all__ = ["OAuth"]
