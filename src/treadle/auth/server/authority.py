"""The authorization server of one gateway: its configuration, clients and grants."""

from __future__ import annotations

from urllib.parse import urlsplit

from treadle.app import Gateway
from treadle.auth.server.clients import (
    ClientRefused,
    MetadataDocuments,
    OAuthClient,
    is_metadata_url,
)
from treadle.auth.server.config import AuthConfig
from treadle.auth.server.grants import Grants
from treadle.auth.server.registration import Registrations
from treadle.store.mcp_servers import McpServer


class Authority:
    def __init__(self, gateway: Gateway, config: AuthConfig | None = None) -> None:
        self.gateway = gateway
        self.config = config or AuthConfig.from_env()
        self.grants = Grants(
            gateway.store.db, self.config.access_seconds, self.config.refresh_seconds
        )
        self.registrations = Registrations(gateway.store.db)
        self.documents = MetadataDocuments(gateway.http, self.config.metadata_private_allowed)

    async def client(self, client_id: str) -> OAuthClient:
        if not client_id or len(client_id) > 2000:
            raise ClientRefused("invalid_client", "client_id is missing or too long")
        if is_metadata_url(client_id):
            return await self.documents.client(client_id)
        found = await self.registrations.get(client_id)
        if found is None:
            raise ClientRefused("invalid_client", "This client is not registered")
        return found

    async def resource_server(self, base: str, resource: str | None) -> McpServer | None:
        """The MCP server a resource indicator (RFC 8707) names: one of our endpoints."""
        if not resource or len(resource) > 300:
            return None
        prefix = f"{base}/mcp/"
        if not resource.startswith(prefix) or urlsplit(resource).query:
            return None
        server_id = resource[len(prefix) :].rstrip("/")
        if not server_id or "/" in server_id:
            return None
        return await self.gateway.store.config.mcp_server(server_id)
