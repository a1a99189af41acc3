"""`/api/v1/approval-policies`: create, read, list, update, delete, and refused bodies."""

from __future__ import annotations

from typing import Any

import pytest

from test_api_auth import add_key, add_workspace, bearer
from test_gates_execute import Gates, error, gates_fixture  # noqa: F401

pytestmark = pytest.mark.anyio

POLICY_FIELDS = {
    "id",
    "orgId",
    "workspaceId",
    "name",
    "description",
    "enabled",
    "priority",
    "sources",
    "integrationNames",
    "integrationAliases",
    "actionNames",
    "connectionStrategies",
    "mcpServerIds",
    "endUserMode",
    "rules",
    "decision",
    "timeoutSeconds",
    "defaultOnTimeout",
    "approvalAccessMode",
    "allowSelfApproval",
    "reuseWindowSeconds",
    "notifyWebhookUrl",
    "createdAt",
    "updatedAt",
}

FULL = {
    "name": "Large payments",
    "description": "Payments over 100 need a person",
    "enabled": True,
    "priority": 5,
    "sources": ["rest", "mcp_tools"],
    "integrationNames": ["outbox"],
    "integrationAliases": ["mailer"],
    "actionNames": ["send"],
    "connectionStrategies": ["fixed", "per_user"],
    "endUserMode": "no_end_user",
    "rules": {"match": "any", "conditions": [{"path": "amount", "op": "gt", "value": 100}]},
    "decision": "require_approval",
    "timeoutSeconds": 900,
    "defaultOnTimeout": "reject",
    "approvalAccessMode": "hosted_link_only",
    "allowSelfApproval": True,
    "reuseWindowSeconds": 60,
    "notifyWebhookUrl": "https://hooks.example.com/treadle",
}


async def test_create_returns_every_field_and_the_webhook_secret_once(gates: Gates) -> None:
    created = await gates.policy(**FULL)
    policy = created["policy"]
    assert set(policy) == POLICY_FIELDS
    assert {key: policy[key] for key in FULL} == FULL
    assert policy["workspaceId"] == gates.api.workspace_id
    assert policy["orgId"] == gates.api.org_id
    assert created["webhookSecret"].startswith("whsec_")
    fetched = await gates.api.get(f"/approval-policies/{policy['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == {"policy": policy}
    assert created["webhookSecret"] not in fetched.text
    listed = await gates.api.get("/approval-policies")
    assert created["webhookSecret"] not in listed.text


async def test_create_fills_in_the_defaults(gates: Gates) -> None:
    created = await gates.policy(name="Minimal", decision="block")
    assert "webhookSecret" not in created
    policy = created["policy"]
    assert policy["enabled"] is True
    assert policy["endUserMode"] == "any"
    assert policy["defaultOnTimeout"] in ("reject", "expire")
    assert policy["approvalAccessMode"] == "dashboard_and_hosted_link"
    assert policy["allowSelfApproval"] is False
    for filter_field in ("sources", "integrationNames", "actionNames", "rules"):
        assert policy[filter_field] is None


async def test_null_workspace_makes_an_org_wide_policy(gates: Gates) -> None:
    created = await gates.policy(workspaceId=None)
    assert created["policy"]["workspaceId"] is None


async def test_list_shows_workspace_and_org_wide_policies(gates: Gates) -> None:
    mine = (await gates.policy(name="mine"))["policy"]["id"]
    org_wide = (await gates.policy(name="everywhere", workspaceId=None))["policy"]["id"]
    other_workspace = await add_workspace(gates.api)
    theirs = (await gates.policy(name="theirs", workspaceId=other_workspace))["policy"]["id"]

    everything = (await gates.api.get("/approval-policies")).json()
    assert {p["id"] for p in everything["policies"]} == {mine, org_wide, theirs}
    assert everything["total"] == 3

    response = await gates.api.get(
        "/approval-policies", params={"workspaceId": gates.api.workspace_id}
    )
    assert {p["id"] for p in response.json()["policies"]} == {mine, org_wide}


async def test_update_changes_only_the_fields_sent(gates: Gates) -> None:
    policy = (await gates.policy(**FULL))["policy"]
    response = await gates.api.patch(
        f"/approval-policies/{policy['id']}",
        {"decision": "block", "priority": 1, "rules": None, "actionNames": ["send", "hold"]},
    )
    assert response.status_code == 200, response.text
    updated = response.json()["policy"]
    assert updated["decision"] == "block"
    assert updated["priority"] == 1
    assert updated["rules"] is None
    assert updated["actionNames"] == ["send", "hold"]
    unchanged = set(POLICY_FIELDS) - {"decision", "priority", "rules", "actionNames", "updatedAt"}
    assert {k: updated[k] for k in unchanged} == {k: policy[k] for k in unchanged}
    assert (await gates.api.get(f"/approval-policies/{policy['id']}")).json()["policy"] == updated


async def test_an_update_governs_the_next_call(gates: Gates) -> None:
    policy = (await gates.policy(decision="block"))["policy"]
    error(await gates.send({"to": "a@example.com"}), 403, "ACTION_BLOCKED")
    await gates.api.patch(f"/approval-policies/{policy['id']}", {"enabled": False})
    assert (await gates.send({"to": "a@example.com"})).status_code == 200


async def test_adding_a_webhook_later_returns_its_secret_once(gates: Gates) -> None:
    policy = (await gates.policy())["policy"]
    response = await gates.api.patch(
        f"/approval-policies/{policy['id']}", {"notifyWebhookUrl": "https://hooks.example.com/x"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["webhookSecret"].startswith("whsec_")
    again = await gates.api.patch(
        f"/approval-policies/{policy['id']}", {"notifyWebhookUrl": "https://hooks.example.com/y"}
    )
    assert "webhookSecret" not in again.json()


async def test_delete_removes_the_policy_and_its_effect(gates: Gates) -> None:
    policy = (await gates.policy(decision="block"))["policy"]
    deleted = await gates.api.delete(f"/approval-policies/{policy['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted": True, "id": policy["id"]}
    error(await gates.api.get(f"/approval-policies/{policy['id']}"), 404, "NOT_FOUND")
    assert (await gates.send({"to": "a@example.com"})).status_code == 200


async def test_unknown_policy_ids_are_not_found(gates: Gates) -> None:
    missing = "/approval-policies/00000000-0000-4000-8000-000000000000"
    error(await gates.api.get(missing), 404, "NOT_FOUND")
    error(await gates.api.patch(missing, {"priority": 1}), 404, "NOT_FOUND")
    error(await gates.api.delete(missing), 404, "NOT_FOUND")


async def test_policy_changes_are_recorded_as_config_changes(gates: Gates) -> None:
    policy = (await gates.policy())["policy"]
    await gates.api.patch(f"/approval-policies/{policy['id']}", {"priority": 3})
    await gates.api.delete(f"/approval-policies/{policy['id']}")
    activity = (await gates.api.get("/activity", params={"type": "config_change"})).json()
    changes = [e["change"] for e in activity["activity"] if e["targetType"] == "approval_policy"]
    assert changes == ["deleted", "updated", "created"]


async def test_a_workspace_key_cannot_create_org_wide_policies(gates: Gates) -> None:
    token = await add_key(gates.api, workspace_id=gates.api.workspace_id)
    body = {"workspaceId": None, "name": "x", "decision": "block"}
    response = await gates.api.post("/approval-policies", body, headers=bearer(token))
    error(response, 403, "SCOPE_DENIED")


async def test_a_workspace_key_cannot_touch_another_workspaces_policy(gates: Gates) -> None:
    other = await add_workspace(gates.api)
    policy = (await gates.policy(workspaceId=other))["policy"]
    token = await add_key(gates.api, workspace_id=gates.api.workspace_id)
    path = f"/approval-policies/{policy['id']}"
    error(await gates.api.get(path, headers=bearer(token)), 403, "SCOPE_DENIED")
    error(await gates.api.delete(path, headers=bearer(token)), 403, "SCOPE_DENIED")
    listed = await gates.api.get("/approval-policies", headers=bearer(token))
    assert policy["id"] not in {p["id"] for p in listed.json()["policies"]}


async def test_a_policy_for_an_unknown_workspace_is_not_found(gates: Gates) -> None:
    body = {"workspaceId": "no-such-workspace", "name": "x", "decision": "block"}
    error(await gates.api.post("/approval-policies", body), 404, "NOT_FOUND")


def _rule(**condition: Any) -> dict[str, Any]:
    return {"rules": {"conditions": [{"path": "amount", **condition}]}}


BAD_CREATES: list[tuple[str, dict[str, Any]]] = [
    ("missing name", {"name": ...}),
    ("missing decision", {"decision": ...}),
    ("unknown decision", {"decision": "maybe"}),
    ("empty name", {"name": ""}),
    ("negative priority", {"priority": -1}),
    ("priority as text", {"priority": "1"}),
    ("unknown source", {"sources": ["email"]}),
    ("empty filter list", {"integrationNames": []}),
    ("filter that is not a list", {"actionNames": "send"}),
    ("unknown strategy", {"connectionStrategies": ["sometimes"]}),
    ("unknown end user mode", {"endUserMode": "maybe"}),
    ("zero timeout", {"timeoutSeconds": 0}),
    ("unknown timeout outcome", {"defaultOnTimeout": "approve"}),
    ("unknown access mode", {"approvalAccessMode": "public"}),
    ("negative reuse window", {"reuseWindowSeconds": -5}),
    ("webhook that is not http", {"notifyWebhookUrl": "ftp://hooks.example.com/x"}),
    ("webhook that is not a url", {"notifyWebhookUrl": "hooks"}),
    ("unknown field", {"colour": "red"}),
    ("unknown rule match", {"rules": {"match": "some", "conditions": []}}),
    ("unknown operator", _rule(op="approximately", value=1)),
    ("rule without a path", {"rules": {"conditions": [{"op": "gt", "value": 1}]}}),
    ("invalid regex", _rule(op="regex", value="(unclosed")),
    ("in without a list", _rule(op="in", value=3)),
    ("number threshold that is text", _rule(op="gt", value="100")),
    ("number threshold that is missing", _rule(op="lte")),
    ("number threshold that is a boolean", _rule(op="gte", value=True)),
]


@pytest.mark.parametrize(("reason", "change"), BAD_CREATES, ids=[r for r, _ in BAD_CREATES])
async def test_invalid_policies_are_refused_and_nothing_is_created(
    gates: Gates, reason: str, change: dict[str, Any]
) -> None:
    body = {"workspaceId": gates.api.workspace_id, "name": "Gate", "decision": "block", **change}
    body = {key: value for key, value in body.items() if value is not ...}
    error(await gates.api.post("/approval-policies", body), 400, "VALIDATION_ERROR")
    assert (await gates.api.get("/approval-policies")).json()["total"] == 0


@pytest.mark.parametrize(
    "change",
    [
        {"name": None},
        {"decision": None},
        {"enabled": None},
        {"workspaceId": None},
        {"timeoutSeconds": 10**9},
        {"rules": {"conditions": [{"path": "amount", "op": "lt", "value": "ten"}]}},
    ],
)
async def test_invalid_updates_are_refused_and_change_nothing(
    gates: Gates, change: dict[str, Any]
) -> None:
    policy = (await gates.policy())["policy"]
    path = f"/approval-policies/{policy['id']}"
    error(await gates.api.patch(path, change), 400, "VALIDATION_ERROR")
    assert (await gates.api.get(path)).json()["policy"] == policy


async def test_an_empty_update_is_refused(gates: Gates) -> None:
    policy = (await gates.policy())["policy"]
    error(await gates.api.patch(f"/approval-policies/{policy['id']}", {}), 400, "NO_UPDATES")
