"""Step one of the pipeline: which configured workspace integration a call targets."""

from __future__ import annotations

from collections.abc import Sequence

from treadle.errors import ErrorCode, NotFound, Refusal, ValidationFailed
from treadle.store.records import WorkspaceIntegration


def select_workspace_integration(
    configured: Sequence[WorkspaceIntegration],
    *,
    integration_name: str,
    workspace_integration_id: str | None,
    alias: str | None,
) -> WorkspaceIntegration:
    """Pick from the workspace's configured integrations (all of them, in alias order)."""
    if workspace_integration_id is not None:
        found = next((wi for wi in configured if wi.id == workspace_integration_id), None)
        if found is None:
            raise NotFound("Workspace integration")
        if found.integration_name != integration_name:
            raise ValidationFailed(
                f"Workspace integration '{workspace_integration_id}' is configured for "
                f"'{found.integration_name}', not '{integration_name}'",
                field="workspaceIntegrationId",
            )
        # Both selectors sent: they must name the same instance, or the call is ambiguous.
        if alias is not None and alias != found.alias:
            raise ValidationFailed(
                f"Workspace integration '{workspace_integration_id}' has the alias "
                f"'{found.alias}', not '{alias}'; send one of them",
                field="integrationAlias",
            )
        return found
    candidates = [wi for wi in configured if wi.integration_name == integration_name]
    if alias is not None:
        for candidate in candidates:
            if candidate.alias == alias:
                return candidate
        raise Refusal(
            ErrorCode.INTEGRATION_NOT_FOUND,
            f"No integration with alias '{alias}' for '{integration_name}' in this workspace",
        )
    if not candidates:
        raise Refusal(
            ErrorCode.INTEGRATION_NOT_FOUND,
            f"Integration '{integration_name}' is not configured in this workspace",
        )
    if len(candidates) > 1:
        aliases = [c.alias for c in candidates]
        raise ValidationFailed(
            f"'{integration_name}' is configured several times in this workspace; "
            f"choose one with integrationAlias: {', '.join(aliases)}",
            field="integrationAlias",
            aliases=aliases,
        )
    return candidates[0]
