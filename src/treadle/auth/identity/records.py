"""Identity providers and sign-ins, as the rest of treadle sees them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class IdpKind(StrEnum):
    OIDC = "oidc"
    EXTERNAL_AS = "external_as"


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    """An org's identity provider. The client secret stays sealed in the store."""

    id: str
    org_id: str
    name: str
    kind: IdpKind
    issuer: str
    client_id: str | None
    has_client_secret: bool
    scopes: tuple[str, ...]
    # The token claim that becomes the end user's externalId (`sub` by default, or `email`).
    claim: str
    allow_create_end_users: bool
    audience: str | None
    allow_private_network: bool
    server_ids: tuple[str, ...]
    created_at: str
    updated_at: str

    def to_json(self, redirect_uri: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "orgId": self.org_id,
            "name": self.name,
            "kind": self.kind.value,
            "issuer": self.issuer,
            # oidc: asked for besides `openid`; external_as: what every token must carry.
            "scopes": list(self.scopes),
            "claim": self.claim,
            "allowCreateEndUsers": self.allow_create_end_users,
            "allowPrivateNetwork": self.allow_private_network,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }
        if self.kind is IdpKind.OIDC:
            body.update(
                clientId=self.client_id,
                clientSecretSet=self.has_client_secret,
                redirectUri=redirect_uri,
            )
        else:
            body.update(audience=self.audience, mcpServerIds=list(self.server_ids))
        return body


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """One `state` of a browser sign-in: where it came from and what finishes it."""

    org_id: str
    idp_id: str
    workspace_id: str | None
    nonce_hash: str
    code_verifier: str
    return_to: str
    browser_hash: str | None


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A finished sign-in, as a ticket hands it to the page that asked for it."""

    org_id: str
    idp_id: str
    external_id: str
    end_user_id: str | None
