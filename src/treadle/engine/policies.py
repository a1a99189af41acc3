"""Which approval policy governs a call: filters, input rules, priority and severity.

Rules look at the merged input (after partials), so a gate sees exactly what would run:
`{"match": "all" | "any", "conditions": [{"path": "amount", "op": "gt", "value": 100}]}` with
`op` one of equals, not_equals, in, not_in, contains, regex, gt, gte, lt, lte, exists,
not_exists, and `path` a dot-separated key path (`recipient.domain`, `items.0.price`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from treadle.store.gates import ApprovalPolicy

SEVERITY = {"block": 3, "require_approval": 2, "notify_only": 1, "auto_approve": 0}
OPERATORS = frozenset(
    {
        "equals",
        "not_equals",
        "in",
        "not_in",
        "contains",
        "regex",
        "gt",
        "gte",
        "lt",
        "lte",
        "exists",
        "not_exists",
    }
)
_MISSING = object()
MAX_REGEX_SUBJECT = 10_000


@dataclass(frozen=True, slots=True)
class CallFacts:
    source: str
    workspace_id: str
    integration_name: str
    integration_alias: str
    action_name: str
    connection_strategy: str
    end_user_id: str | None
    mcp_server_id: str | None
    input: dict[str, Any]


def lookup(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def condition_holds(condition: dict[str, Any], data: dict[str, Any]) -> bool:
    op, expected = condition["op"], condition.get("value")
    found = lookup(data, condition["path"])
    if op == "exists":
        return found is not _MISSING
    if op == "not_exists":
        return found is _MISSING
    if found is _MISSING:
        return op in ("not_equals", "not_in")
    if op == "equals":
        return bool(found == expected)
    if op == "not_equals":
        return bool(found != expected)
    if op == "in":
        return isinstance(expected, list) and found in expected
    if op == "not_in":
        return isinstance(expected, list) and found not in expected
    if op == "contains":
        return (isinstance(found, str) and isinstance(expected, str) and expected in found) or (
            isinstance(found, list) and expected in found
        )
    if op == "regex":
        subject = found if isinstance(found, str) else None
        return subject is not None and bool(re.search(str(expected), subject[:MAX_REGEX_SUBJECT]))
    left, right = _number(found), _number(expected)
    if left is None or right is None:
        return False
    return {
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }.get(op, False)


def rules_hold(rules: dict[str, Any] | None, data: dict[str, Any]) -> bool:
    if not rules or not rules.get("conditions"):
        return True
    results = (condition_holds(c, data) for c in rules["conditions"])
    return any(results) if rules.get("match") == "any" else all(results)


def _allows(allowed: tuple[str, ...] | None, value: str | None) -> bool:
    return allowed is None or (value is not None and value in allowed)


def _filters_allow(
    policy: ApprovalPolicy,
    *,
    source: str,
    workspace_id: str,
    integration_name: str,
    alias: str,
    action_name: str,
    connection_strategy: str,
    mcp_server_id: str | None,
) -> bool:
    """The policy is on and its filters (all but end users and rules) admit this call."""
    return (
        policy.enabled
        and policy.workspace_id in (None, workspace_id)
        and _allows(policy.sources, source)
        and _allows(policy.integration_names, integration_name)
        and _allows(policy.integration_aliases, alias)
        and _allows(policy.action_names, action_name)
        and _allows(policy.connection_strategies, connection_strategy)
        and _allows(policy.mcp_server_ids, mcp_server_id)
    )


def matches(policy: ApprovalPolicy, facts: CallFacts) -> bool:
    if policy.end_user_mode == "end_user_present" and facts.end_user_id is None:
        return False
    if policy.end_user_mode == "no_end_user" and facts.end_user_id is not None:
        return False
    return _filters_allow(
        policy,
        source=facts.source,
        workspace_id=facts.workspace_id,
        integration_name=facts.integration_name,
        alias=facts.integration_alias,
        action_name=facts.action_name,
        connection_strategy=facts.connection_strategy,
        mcp_server_id=facts.mcp_server_id,
    ) and rules_hold(policy.rules, facts.input)


def governing_policy(policies: Iterable[ApprovalPolicy], facts: CallFacts) -> ApprovalPolicy | None:
    """Lower priority wins; a tie goes to the most severe decision, then the policy ID."""
    candidates = [p for p in policies if matches(p, facts)]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (p.priority, -SEVERITY[p.decision], p.id))


def may_pause(
    policy: ApprovalPolicy,
    *,
    workspace_id: str,
    integration_name: str,
    alias: str,
    action_name: str,
    connection_strategy: str,
    mcp_server_id: str | None,
) -> bool:
    """Could this policy make an MCP call to this tool wait for approval? Judged on what is
    known before any call (rules and end users decide per call, so they count as "maybe")."""
    return policy.decision == "require_approval" and _filters_allow(
        policy,
        source="mcp_tools",
        workspace_id=workspace_id,
        integration_name=integration_name,
        alias=alias,
        action_name=action_name,
        connection_strategy=connection_strategy,
        mcp_server_id=mcp_server_id,
    )
