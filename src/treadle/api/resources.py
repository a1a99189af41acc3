"""The resources the REST API answers with, as response models for the OpenAPI document.

Each mirrors its record's `to_json` (treadle.store.records and neighbours): a field renamed or
retyped there without changing it here fails the schema conformance run (tests/test_openapi.py
and the schemathesis run of .ci/run), which checks every answer against these models.
"""

from __future__ import annotations

from typing import Any

from treadle.api.openapi import Deleted, Out, listing, one

__all__ = ["Deleted", "listing", "one"]


class Workspace(Out):
    id: str
    orgId: str
    name: str
    createdAt: str
    updatedAt: str


class ApiKey(Out):
    id: str
    orgId: str
    workspaceId: str | None
    name: str
    keyPrefix: str
    createdAt: str
    expiresAt: str | None


class EndUser(Out):
    id: str
    orgId: str
    workspaceId: str
    externalId: str
    displayName: str | None
    email: str | None
    metadata: dict[str, Any] | None
    createdAt: str
    updatedAt: str


class ConnectLink(Out):
    connectUrl: str
    expiresAt: str
    endUserId: str


class Connection(Out):
    id: str
    orgId: str
    workspaceId: str | None
    endUserId: str | None
    integrationName: str
    type: str
    displayName: str
    externalId: str
    baseUrl: str | None
    status: str
    createdAt: str
    updatedAt: str


class WorkspaceIntegration(Out):
    id: str
    workspaceId: str
    orgId: str
    integrationName: str
    integrationAlias: str
    connectionStrategy: str
    connectionId: str | None
    allowedActions: list[str] | None
    settings: dict[str, Any] | None
    createdAt: str
    updatedAt: str


class Partial(Out):
    id: str
    orgId: str
    workspaceId: str
    integrationName: str
    integrationAlias: str | None
    actionName: str | None
    name: str
    description: str | None
    values: dict[str, Any]
    enforcedKeys: list[str]
    isDefault: bool
    createdAt: str
    updatedAt: str


class ActivityEntry(Out):
    id: str
    orgId: str
    workspaceId: str | None
    type: str
    source: str
    actor: str | None
    status: str | None
    integrationName: str | None
    actionName: str | None
    durationMs: int | None
    errorCode: str | None
    createdAt: str


class ActivityPage(Out):
    activity: list[ActivityEntry]
    nextCursor: str | None


class Action(Out):
    name: str
    displayName: str
    description: str
    inputSchema: dict[str, Any]
    outputSchema: dict[str, Any] | None
    annotations: dict[str, bool]


class Integration(Out):
    name: str
    displayName: str
    description: str
    authKind: str
    settingsSchema: dict[str, Any] | None
    actions: dict[str, Action]


class ToolOverride(Out):
    integrationAlias: str
    actionName: str
    name: str | None
    partialIds: list[str] | None
    description: str | None
    enabled: bool


class McpServer(Out):
    id: str
    orgId: str
    workspaceId: str
    name: str
    mode: str
    endUserId: str | None
    toolOverrides: list[ToolOverride]
    tokenPrefix: str
    endpoint: str
    createdAt: str
    updatedAt: str


class ApprovalPolicy(Out):
    id: str
    orgId: str
    workspaceId: str | None
    name: str
    description: str | None
    enabled: bool
    priority: int
    createdAt: str
    updatedAt: str


class Approval(Out):
    id: str
    orgId: str
    workspaceId: str
    policyId: str | None
    status: str
    source: str
    integrationName: str
    actionName: str
    expiresAt: str
    createdAt: str


class ApprovalPage(Out):
    approvals: list[Approval]
    nextCursor: str | None


class OAuthApp(Out):
    id: str
    integrationName: str
    clientId: str
    clientSecretSet: bool
    scopes: list[str]
    authorizationUrl: str | None
    tokenUrl: str | None
    apiBaseUrl: str | None
    allowPrivateNetwork: bool
    createdAt: str
    updatedAt: str


class OAuthAppAnswer(Out):
    oauthApp: OAuthApp
    redirectUri: str


class Executed(Out):
    """A call that ran: `success` false when the provider answered an error (`output.error`)."""

    success: bool
    output: Any
    duration: int | float


class RetryWith(Out):
    idempotencyKey: str | None


class PendingApproval(Out):
    id: str
    status: str
    approvalUrl: str | None
    hostedApprovalUrl: str | None
    expiresAt: str
    retry: RetryWith


class ApprovalRequired(Out):
    success: bool
    status: str
    approval: PendingApproval


class UpstreamHealth(Out):
    connected: bool
    lastError: str | None
    protocolVersion: str | None
    lastRefreshAt: str | None
    serverName: str | None
    toolCount: int


class Upstream(Out):
    id: str
    orgId: str
    name: str
    displayName: str | None
    description: str | None
    transport: dict[str, Any]
    allowPrivateNetwork: bool
    auth: dict[str, Any]
    health: UpstreamHealth
    tools: list[str | None]
    createdAt: str
    updatedAt: str


class UpstreamRemoved(Out):
    success: bool
    id: str


class OAuthClient(Out):
    clientId: str
    clientName: str | None
    kind: str
    firstSeenAt: str
    lastSeenAt: str
    revokedAt: str | None


class OAuthGrant(Out):
    id: str
    orgId: str
    workspaceId: str
    serverId: str
    clientId: str
    endUserId: str | None
    signedInAs: str
    scopes: list[str]
    resource: str
    createdAt: str
    lastUsedAt: str | None
    revokedAt: str | None
