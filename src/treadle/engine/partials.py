"""Which partials apply to a call, how they merge, and what that leaves of a schema.

The MCP toolset prunes schemas with the same functions the pipeline merges with, so what a
tool advertises and what a call enforces cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

from jsonschema import Draft202012Validator

from treadle.catalog.model import Integration
from treadle.errors import ValidationFailed
from treadle.store.records import Partial


def effective_partials(
    candidates: Iterable[Partial],
    *,
    integration_name: str,
    alias: str,
    action_name: str,
    partial_ids: Sequence[str] | None,
) -> list[Partial]:
    """The partials to apply, in merge order.

    Omitted ids: the default partials that apply to this alias and action. Explicit ids: those,
    each of which must apply. Either way integration-wide partials merge before action-specific
    ones; within each group defaults go by creation (alias-wide first), explicit ids by order.
    """
    applicable = [p for p in candidates if p.applies_to(integration_name, alias, action_name)]
    if partial_ids is None:
        chosen = sorted(
            (p for p in applicable if p.is_default),
            key=lambda p: (p.integration_alias is not None, p.created_at, p.id),
        )
    else:
        by_id = {p.id: p for p in applicable}
        chosen = []
        for index, partial_id in enumerate(partial_ids):
            found = by_id.get(partial_id)
            if found is None:
                raise ValidationFailed(
                    f"Partial '{partial_id}' does not exist or does not apply to "
                    f"{alias}.{action_name}",
                    field=f"partialIds[{index}]",
                )
            if found not in chosen:
                chosen.append(found)
    # sorted() is stable: explicit order survives inside each group.
    return sorted(chosen, key=lambda p: p.action_name is not None)


def enforced_values(partials: Sequence[Partial]) -> dict[str, Any]:
    fixed: dict[str, Any] = {}
    for partial in partials:
        for key in partial.enforced_keys:
            fixed[key] = partial.values[key]
    return fixed


def default_values(partials: Sequence[Partial]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for partial in partials:
        for key, value in partial.values.items():
            if key not in partial.enforced_keys:
                defaults[key] = value
    fixed = enforced_values(partials)
    return {key: value for key, value in defaults.items() if key not in fixed}


def merge_input(
    partials: Sequence[Partial], runtime: dict[str, Any], *, refuse_enforced: bool
) -> dict[str, Any]:
    """defaults of the partials → runtime input → enforced values (top-level keys)."""
    fixed = enforced_values(partials)
    if refuse_enforced:
        for key in sorted(runtime):
            if key in fixed:
                raise ValidationFailed(
                    f"'{key}' is fixed by the workspace configuration and cannot be set",
                    field=key,
                    reason="enforced_key",
                )
    merged = default_values(partials)
    merged.update(runtime)
    merged.update(fixed)
    return merged


def prune_schema(schema: dict[str, Any], partials: Sequence[Partial]) -> dict[str, Any]:
    """The schema a caller should see: enforced keys gone, partial values as defaults."""
    pruned = copy.deepcopy(schema)
    properties: dict[str, Any] = pruned.get("properties", {})
    required: list[str] = list(pruned.get("required", []))
    for key in enforced_values(partials):
        properties.pop(key, None)
        if key in required:
            required.remove(key)
    for key, value in default_values(partials).items():
        if key in properties and isinstance(properties[key], dict):
            properties[key]["default"] = value
            if key in required:
                required.remove(key)
    if "properties" in pruned:
        pruned["properties"] = properties
    if required:
        pruned["required"] = required
    else:
        pruned.pop("required", None)
    return pruned


def check_values(
    integration: Integration, action_name: str | None, values: dict[str, Any], enforced: list[str]
) -> None:
    """Enforced keys must be keys of `values`; for an action-specific partial, each value
    must fit its input's schema (and be an input, when the schema is closed)."""
    for index, key in enumerate(enforced):
        if key not in values:
            raise ValidationFailed(
                f"Enforced key '{key[:100]}' is not a key of values", field=f"enforcedKeys[{index}]"
            )
    if action_name is None:
        return
    action = integration.action(action_name)
    if action is None:  # gone from the catalog since the partial was made
        raise ValidationFailed(
            f"'{integration.name}' has no action '{action_name}'", field="actionName"
        )
    properties = action.input_schema.get("properties", {})
    closed = action.input_schema.get("additionalProperties") is False
    for key, value in values.items():
        if key not in properties:
            if closed:
                raise ValidationFailed(
                    f"'{action_name}' has no input '{key[:100]}'", field=f"values.{key[:100]}"
                )
            continue
        if not Draft202012Validator(properties[key]).is_valid(value):
            raise ValidationFailed(
                f"Invalid value for '{key}' of '{action_name}'", field=f"values.{key}"
            )
