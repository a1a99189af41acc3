"""Typed rows. `to_json` renders the documents' camelCase shapes; secrets have no field here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from treadle.clock import now_iso


class ConnectionStrategy(StrEnum):
    FIXED = "fixed"
    PER_USER = "per_user"
    PER_USER_WITH_FALLBACK = "per_user_with_fallback"

    @property
    def needs_connection_id(self) -> bool:
        return self is not ConnectionStrategy.PER_USER


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    name: str
    plan: str
    monthly_quota: int
    rate_limit: int
    rate_window_seconds: int
    created_at: str


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    org_id: str
    name: str
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "name": self.name,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    org_id: str
    workspace_id: str | None
    name: str
    key_prefix: str
    created_at: str
    # After this moment the key is refused everywhere; None: it never expires.
    expires_at: str | None = None

    def expired(self) -> bool:
        # ISO 8601 UTC with milliseconds and `Z` throughout: compared as text.
        return self.expires_at is not None and self.expires_at <= now_iso()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "workspaceId": self.workspace_id,
            "name": self.name,
            "keyPrefix": self.key_prefix,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class EndUser:
    id: str
    org_id: str
    workspace_id: str
    external_id: str
    display_name: str | None
    email: str | None
    metadata: dict[str, Any] | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "workspaceId": self.workspace_id,
            "externalId": self.external_id,
            "displayName": self.display_name,
            "email": self.email,
            "metadata": self.metadata,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Connection:
    id: str
    org_id: str
    workspace_id: str | None
    end_user_id: str | None
    end_user_external_id: str | None
    integration_name: str
    type: str
    display_name: str
    external_id: str
    base_url: str | None
    status: str
    created_at: str
    updated_at: str
    # The secret as stored (sealed by the vault), when the query that found the connection
    # read it too (`Connections.find(with_secret=True)`): a call then opens it without a
    # second query. Never part of any output.
    sealed_secret: str | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "workspaceId": self.workspace_id,
            "endUserId": self.end_user_external_id,
            "integrationName": self.integration_name,
            "type": self.type,
            "displayName": self.display_name,
            "externalId": self.external_id,
            "baseUrl": self.base_url,
            "status": self.status,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class WorkspaceIntegration:
    id: str
    org_id: str
    workspace_id: str
    integration_name: str
    alias: str
    connection_strategy: ConnectionStrategy
    connection_id: str | None
    allowed_actions: tuple[str, ...] | None
    settings: dict[str, Any]
    created_at: str
    updated_at: str

    def allows(self, action_name: str) -> bool:
        return self.allowed_actions is None or action_name in self.allowed_actions

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workspaceId": self.workspace_id,
            "orgId": self.org_id,
            "integrationName": self.integration_name,
            "integrationAlias": self.alias,
            "connectionStrategy": self.connection_strategy.value,
            "connectionId": self.connection_id,
            "allowedActions": None if self.allowed_actions is None else list(self.allowed_actions),
            "settings": self.settings,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Partial:
    id: str
    org_id: str
    workspace_id: str
    integration_name: str
    integration_alias: str | None
    action_name: str | None
    name: str
    description: str | None
    values: dict[str, Any]
    enforced_keys: tuple[str, ...]
    is_default: bool
    created_at: str
    updated_at: str

    def applies_to(self, integration_name: str, alias: str, action_name: str) -> bool:
        return (
            self.integration_name == integration_name
            and self.integration_alias in (None, alias)
            and self.action_name in (None, action_name)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "workspaceId": self.workspace_id,
            "integrationName": self.integration_name,
            "integrationAlias": self.integration_alias,
            "actionName": self.action_name,
            "name": self.name,
            "description": self.description,
            "values": self.values,
            "enforcedKeys": list(self.enforced_keys),
            "isDefault": self.is_default,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    id: str
    seq: int
    org_id: str
    workspace_id: str | None
    type: str
    source: str
    actor: str
    status: str
    integration_name: str | None
    integration_alias: str | None
    action_name: str | None
    end_user_id: str | None
    duration_ms: int | None
    error_code: str | None
    target_type: str | None
    target_id: str | None
    change: str | None
    input: Any
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": self.org_id,
            "workspaceId": self.workspace_id,
            "type": self.type,
            "source": self.source,
            "actor": self.actor,
            "status": self.status,
            "integrationName": self.integration_name,
            "integrationAlias": self.integration_alias,
            "actionName": self.action_name,
            "endUserId": self.end_user_id,
            "durationMs": self.duration_ms,
            "errorCode": self.error_code,
            "targetType": self.target_type,
            "targetId": self.target_id,
            "change": self.change,
            "input": self.input,
            "createdAt": self.created_at,
        }
