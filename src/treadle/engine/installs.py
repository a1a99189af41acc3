"""Installing an integration in a workspace: the rules every face (REST, the console) shares.

The integration must be in the org's catalog, allowed actions must be its own, settings must
match its settings schema, and the connection must suit the strategy: none for per_user, a
shared (not an end user's) connection of the workspace or the org otherwise, unless the
integration needs no credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from treadle.catalog import Catalog
from treadle.catalog.model import AuthKind, Integration
from treadle.errors import ErrorCode, Refusal, ValidationFailed
from treadle.ids import is_uuid
from treadle.store import Store
from treadle.store.records import ConnectionStrategy, Workspace, WorkspaceIntegration


def integration_of(catalog: Catalog, name: str, org_id: str) -> Integration:
    found = catalog.get(name, org_id)
    if found is None:
        raise ValidationFailed(f"Unknown integration '{name}'", field="integrationName")
    return found


def allowed_actions(integration: Integration, names: list[str] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    for index, name in enumerate(names):
        if integration.action(name) is None:
            raise ValidationFailed(
                f"'{integration.name}' has no action '{name}'", field=f"allowedActions[{index}]"
            )
    return tuple(dict.fromkeys(names))


def checked_settings(integration: Integration, settings: dict[str, Any]) -> dict[str, Any]:
    error = next(
        iter(Draft202012Validator(integration.settings_schema).iter_errors(settings)), None
    )
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path)
        raise ValidationFailed(
            f"Invalid settings for '{integration.name}': failed '{error.validator}' check"
            + (f" at {path}" if path else ""),
            field="settings" + (f".{path}" if path else ""),
        )
    return settings


async def shared_connection_id(
    store: Store,
    org_id: str,
    workspace: Workspace,
    integration: Integration,
    strategy: ConnectionStrategy,
    given: str | None,
) -> str | None:
    if strategy is ConnectionStrategy.PER_USER:
        if given is not None:
            raise ValidationFailed(
                "per_user resolves each end user's own connection; omit connectionId",
                field="connectionId",
            )
        return None
    if given is None:
        if integration.auth_kind is AuthKind.NONE:
            return None
        raise ValidationFailed(
            f"connectionId is required for the {strategy.value} strategy", field="connectionId"
        )
    # Accept the connection's UUID or its externalId, as the documents' examples do both.
    found = await store.connections.find(
        org_id,
        workspace_id=workspace.id,
        connection_id=given if is_uuid(given) else None,
        external_id=None if is_uuid(given) else given,
        integration_name=integration.name,
    )
    # An external ID is unique per workspace, so it may name both the workspace's connection
    # and an org-wide one: the workspace's own is the closer match. An end user's connection
    # cannot serve everyone.
    shared = [c for c in found if c.end_user_id is None]
    shared.sort(key=lambda c: c.workspace_id is None)
    if not shared:
        raise ValidationFailed(
            "No workspace connection with this ID for this integration", field="connectionId"
        )
    return shared[0].id


async def install(
    store: Store,
    catalog: Catalog,
    actor: str,
    workspace: Workspace,
    *,
    integration_name: str,
    strategy: ConnectionStrategy,
    alias: str | None = None,
    connection_id: str | None = None,
    allowed: list[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> WorkspaceIntegration:
    """Install `integration_name` in `workspace` (ALIAS_CONFLICT/DUPLICATE from the store)."""
    integration = integration_of(catalog, integration_name, workspace.org_id)
    resolved = await shared_connection_id(
        store, workspace.org_id, workspace, integration, strategy, connection_id
    )
    async with store.db.write(actor) as txn:
        return await store.integrations.create(
            txn,
            org_id=workspace.org_id,
            workspace_id=workspace.id,
            integration_name=integration.name,
            alias=alias or integration.name,
            strategy=strategy,
            connection_id=resolved,
            allowed_actions=allowed_actions(integration, allowed),
            settings=checked_settings(integration, settings or {}),
        )


@dataclass(frozen=True, slots=True)
class Reconfiguration:
    """What to change of an installed integration: only the fields named in `given`
    (`strategy`, `connection_id`, `allowed`, `settings`, `alias`); None there means null."""

    given: frozenset[str]
    strategy: ConnectionStrategy | None = None
    connection_id: str | None = None
    allowed: list[str] | None = None
    settings: dict[str, Any] | None = None
    alias: str | None = None


async def reconfigure(
    store: Store,
    catalog: Catalog,
    actor: str,
    workspace: Workspace,
    current: WorkspaceIntegration,
    change: Reconfiguration,
) -> WorkspaceIntegration:
    """Apply `change` to `current` (NO_UPDATES when it names nothing, ALIAS_CONFLICT from the
    store)."""
    given = change.given
    if not given:
        raise Refusal(ErrorCode.NO_UPDATES, "No fields provided to update")
    integration = integration_of(catalog, current.integration_name, workspace.org_id)
    # Unlike connectionId and allowedActions, a strategy has no "unset" meaning for null.
    if "strategy" in given and change.strategy is None:
        raise ValidationFailed("connectionStrategy cannot be null", field="connectionStrategy")
    changes: dict[str, Any] = {}
    strategy = change.strategy or current.connection_strategy
    if "strategy" in given or "connection_id" in given:
        keep = current.connection_id if "connection_id" not in given else change.connection_id
        if strategy is ConnectionStrategy.PER_USER and "connection_id" not in given:
            keep = None
        changes["connection_strategy"] = strategy
        changes["connection_id"] = await shared_connection_id(
            store, workspace.org_id, workspace, integration, strategy, keep
        )
    if "allowed" in given:
        changes["allowed_actions"] = allowed_actions(integration, change.allowed)
    if "settings" in given:
        changes["settings"] = checked_settings(integration, change.settings or {})
    if "alias" in given:
        if change.alias is None:
            raise ValidationFailed("integrationAlias cannot be null", field="integrationAlias")
        changes["alias"] = change.alias
    async with store.db.write(actor) as txn:
        return await store.integrations.update(txn, current, changes)
