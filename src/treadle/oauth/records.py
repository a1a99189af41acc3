"""OAuth app settings and pending authorizations, as the rest of treadle sees them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class OAuthApp:
    """An org's OAuth client for one integration. The client secret stays sealed in the store."""

    id: str
    org_id: str
    integration_name: str
    client_id: str
    scopes: tuple[str, ...]
    authorize_url: str
    token_url: str
    api_base_url: str | None
    allow_private_network: bool
    created_at: str
    updated_at: str
    # The RFC 8707 resource its tokens are for (an upstream MCP server's URL), sent with the
    # authorization, code exchange and refresh; None for the providers' own apps.
    resource: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "integrationName": self.integration_name,
            "clientId": self.client_id,
            "clientSecretSet": True,
            "scopes": list(self.scopes),
            "authorizationUrl": self.authorize_url,
            "tokenUrl": self.token_url,
            "apiBaseUrl": self.api_base_url,
            "allowPrivateNetwork": self.allow_private_network,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """One `state`: who asked to connect what, and the PKCE verifier to finish with."""

    state_hash: str
    org_id: str
    workspace_id: str
    integration_name: str
    end_user_id: str | None
    external_id: str
    display_name: str
    redirect_to: str | None
    code_verifier: str
    actor: str
    expires_at: str
    used_at: str | None
