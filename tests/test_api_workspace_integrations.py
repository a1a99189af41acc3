"""`/api/v1/workspaces/{workspaceId}/integrations`, as /api/v1/openapi.json describes it."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from test_api_auth import (
    SECRET,
    add_workspace,
    assert_error,
    config_changes,
    gateway,  # noqa: F401
    other_org,
    settings,  # noqa: F401
    snapshot,
    templates,  # noqa: F401
)
from treadle.catalog.model import Action, ActionContext, AuthKind, Integration

from conftest import Api

pytestmark = pytest.mark.anyio

DOC_FIELDS = {
    "id",
    "workspaceId",
    "orgId",
    "integrationName",
    "integrationAlias",
    "connectionStrategy",
    "connectionId",
    "allowedActions",
    "createdAt",
    "updatedAt",
}
PI_ID = re.compile(r"^pi_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def _noop(_ctx: ActionContext, _data: dict[str, Any]) -> dict[str, Any]:
    return {}


def _action(name: str) -> Action:
    schema = {"type": "object", "properties": {"channel": {"type": "string"}}}
    return Action(name=name, display_name=name, description=name, input_schema=schema, run=_noop)


# The documents' Slack examples need credentials. This stand-in (it replaces any built-in
# `slack` in the test's own catalog) keeps these tests off a real integration's action list.
SLACK = Integration(
    name="slack",
    display_name="Slack",
    description="Needs a connection.",
    auth_kind=AuthKind.BEARER,
    actions=(_action("send_channel_message"), _action("list_channels")),
)


@pytest.fixture
def slack(api: Api) -> Api:
    api.gateway.catalog.add(SLACK)
    return api


def path(api: Api, suffix: str = "", workspace_id: str | None = None) -> str:
    return f"/workspaces/{workspace_id or api.workspace_id}/integrations{suffix}"


async def add(api: Api, body: dict[str, Any], workspace_id: str | None = None) -> dict[str, Any]:
    response = await api.post(path(api, workspace_id=workspace_id), body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["integration"]
    return created


async def connection(
    api: Api,
    external_id: str = "conn_slack_default",
    integration: str = "slack",
    **extra: Any,
) -> str:
    body = {
        "integrationName": integration,
        "type": "bearer",
        "displayName": external_id,
        "externalId": external_id,
        "values": {"token": SECRET},
        "workspaceId": api.workspace_id,
        **extra,
    }
    response = await api.post("/connections", body)
    assert response.status_code == 201, response.text
    connection_id: str = response.json()["connection"]["id"]
    return connection_id


async def refused(api: Api, body: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    before = await snapshot(api)
    error = assert_error(await api.post(path(api), body), status, code)
    assert await snapshot(api) == before
    return error


# --- create -----------------------------------------------------------------------------------


async def test_created_workspace_integration_has_the_documented_shape(api: Api) -> None:
    response = await api.post(
        path(api), {"integrationName": "kv-store", "connectionStrategy": "fixed"}
    )
    assert response.status_code == 201, response.text
    assert set(response.json()) == {"integration"}
    created = response.json()["integration"]
    # The documented fields, plus treadle's `settings` object.
    assert set(created) == DOC_FIELDS | {"settings"}
    assert PI_ID.match(created["id"])
    assert created["workspaceId"] == api.workspace_id
    assert created["orgId"] == api.org_id
    assert created["integrationName"] == "kv-store"
    assert created["integrationAlias"] == "kv-store"
    assert created["connectionStrategy"] == "fixed"
    assert created["connectionId"] is None
    assert created["allowedActions"] is None
    assert created["settings"] == {}
    assert created["createdAt"] == created["updatedAt"]


async def test_workspace_integrations_are_listed_with_a_total(api: Api) -> None:
    first = await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    second = await add(api, {"integrationName": "http", "connectionStrategy": "per_user"})
    listed = await api.get(path(api))
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["total"] == 2
    assert sorted(body["integrations"], key=lambda i: i["id"]) == sorted(
        [first, second], key=lambda i: i["id"]
    )
    assert (await api.get(path(api, f"/{first['id']}"))).json() == {"integration": first}


async def test_list_of_a_workspace_without_integrations_is_empty(api: Api) -> None:
    response = await api.get(path(api, workspace_id=await add_workspace(api)))
    assert response.json() == {"integrations": [], "total": 0}


async def test_fixed_strategy_uses_the_given_connection(slack: Api) -> None:
    connection_id = await connection(slack)
    created = await add(
        slack,
        {"integrationName": "slack", "connectionStrategy": "fixed", "connectionId": connection_id},
    )
    assert created["connectionStrategy"] == "fixed"
    assert created["connectionId"] == connection_id


async def test_connection_may_be_named_by_its_external_id(slack: Api) -> None:
    connection_id = await connection(slack, "conn_slack_bot")
    created = await add(
        slack,
        {
            "integrationName": "slack",
            "integrationAlias": "slack_bot",
            "connectionStrategy": "fixed",
            "connectionId": "conn_slack_bot",
        },
    )
    assert created["connectionId"] == connection_id


async def test_org_wide_connection_may_serve_a_workspace(slack: Api) -> None:
    connection_id = await connection(slack, workspaceId=None)
    created = await add(
        slack,
        {"integrationName": "slack", "connectionStrategy": "fixed", "connectionId": connection_id},
    )
    assert created["connectionId"] == connection_id


async def test_strategy_that_needs_a_connection_refuses_to_go_without(slack: Api) -> None:
    for strategy in ("fixed", "per_user_with_fallback"):
        for body in (
            {"integrationName": "slack", "connectionStrategy": strategy},
            {"integrationName": "slack", "connectionStrategy": strategy, "connectionId": None},
        ):
            error = await refused(slack, body, 400, "VALIDATION_ERROR")
            assert error["field"] == "connectionId"


async def test_per_user_with_fallback_keeps_the_fallback_connection(slack: Api) -> None:
    connection_id = await connection(slack)
    created = await add(
        slack,
        {
            "integrationName": "slack",
            "connectionStrategy": "per_user_with_fallback",
            "connectionId": connection_id,
        },
    )
    assert created["connectionStrategy"] == "per_user_with_fallback"
    assert created["connectionId"] == connection_id


async def test_per_user_strategy_needs_no_connection(slack: Api) -> None:
    created = await add(slack, {"integrationName": "slack", "connectionStrategy": "per_user"})
    assert created["connectionStrategy"] == "per_user"
    assert created["connectionId"] is None


async def test_external_id_names_the_workspaces_own_connection_before_an_org_wide_one(
    slack: Api,
) -> None:
    # Older, org-wide, same external ID: the workspace's own connection is the closer match.
    await connection(slack, "shared", workspaceId=None)
    await slack.post("/end-users", {"workspaceId": slack.workspace_id, "externalId": "bob"})
    await connection(slack, "personal", endUserId="bob")
    own = await connection(slack, "shared")
    created = await add(
        slack,
        {"integrationName": "slack", "connectionStrategy": "fixed", "connectionId": "shared"},
    )
    assert created["connectionId"] == own


async def test_external_id_of_an_end_users_connection_falls_back_to_an_org_wide_one(
    slack: Api,
) -> None:
    await slack.post("/end-users", {"workspaceId": slack.workspace_id, "externalId": "bob"})
    await connection(slack, "team", endUserId="bob")
    org_wide = await connection(slack, "team", workspaceId=None)
    created = await add(
        slack,
        {"integrationName": "slack", "connectionStrategy": "fixed", "connectionId": "team"},
    )
    assert created["connectionId"] == org_wide


@pytest.mark.parametrize("integration", ["kv-store", "http"])
async def test_integration_without_auth_needs_no_connection_for_any_strategy(
    api: Api, integration: str
) -> None:
    for strategy in ("fixed", "per_user", "per_user_with_fallback"):
        created = await add(
            api,
            {
                "integrationName": integration,
                "integrationAlias": f"{integration}-{strategy}".replace("_", "-"),
                "connectionStrategy": strategy,
            },
        )
        assert created["connectionStrategy"] == strategy
        assert created["connectionId"] is None


async def test_unusable_connection_ids_are_refused(slack: Api) -> None:
    other_integration = await connection(slack, "http-conn", integration="http")
    await slack.post("/end-users", {"workspaceId": slack.workspace_id, "externalId": "alice"})
    personal = await connection(slack, "alice-slack", endUserId="alice")
    elsewhere_ws = await add_workspace(slack)
    elsewhere = await connection(slack, "elsewhere", workspaceId=elsewhere_ws)
    tenant = await other_org(slack)
    foreign = await slack.post(
        "/connections",
        {
            "integrationName": "slack",
            "type": "bearer",
            "displayName": "Foreign",
            "externalId": "conn_slack_default",
            "values": {"token": "t"},
            "workspaceId": tenant.workspace_id,
        },
        headers=tenant.headers,
    )
    assert foreign.status_code == 201, foreign.text
    candidates = [
        str(uuid.uuid4()),
        "no-such-connection",
        other_integration,
        personal,
        elsewhere,
        foreign.json()["connection"]["id"],
        "conn_slack_default",  # only the foreign org has one by this external ID
    ]
    for candidate in candidates:
        error = await refused(
            slack,
            {"integrationName": "slack", "connectionStrategy": "fixed", "connectionId": candidate},
            400,
            "VALIDATION_ERROR",
        )
        assert error["field"] == "connectionId", candidate


async def test_invalid_strategy_is_refused(api: Api) -> None:
    for strategy in ("", "FIXED", "per-user", "shared", None, 1, ["fixed"]):
        error = await refused(
            api,
            {"integrationName": "kv-store", "connectionStrategy": strategy},
            400,
            "VALIDATION_ERROR",
        )
        assert error["field"] == "connectionStrategy", strategy


async def test_missing_required_field_is_refused(api: Api) -> None:
    for missing in ("integrationName", "connectionStrategy"):
        body = {"integrationName": "kv-store", "connectionStrategy": "fixed"}
        del body[missing]
        error = await refused(api, body, 400, "VALIDATION_ERROR")
        assert error["field"] == missing


async def test_unknown_integration_is_refused(api: Api) -> None:
    for name in ("salesforce", "Kv-Store", "kv_store", "", "x" * 65, 7, None):
        error = await refused(
            api, {"integrationName": name, "connectionStrategy": "fixed"}, 400, "VALIDATION_ERROR"
        )
        assert error["field"] == "integrationName", name


# --- aliases ----------------------------------------------------------------------------------


BAD_ALIASES: list[object] = [
    "",
    "Slack",
    "1slack",
    "_slack",
    "-slack",
    "slack bot",
    "slack.bot",
    "slack/bot",
    "slack\n",
    "\nslack",
    "sláck",
    "a" * 65,
    "'; DROP TABLE workspace_integrations; --",
    "<b>x</b>",
    3,
    ["slack"],
]


async def test_alias_breaking_the_naming_rules_is_refused(api: Api) -> None:
    for alias in BAD_ALIASES:
        body = {
            "integrationName": "kv-store",
            "connectionStrategy": "fixed",
            "integrationAlias": alias,
        }
        error = await refused(api, body, 400, "VALIDATION_ERROR")
        assert error["field"] == "integrationAlias", alias


async def test_alias_following_the_naming_rules_is_accepted(api: Api) -> None:
    for alias in ("a", "a" * 64, "slack_bot", "kv-2", "x_1-y", "z9"):
        created = await add(
            api,
            {
                "integrationName": "kv-store",
                "connectionStrategy": "fixed",
                "integrationAlias": alias,
            },
        )
        assert created["integrationAlias"] == alias


async def test_alias_null_defaults_to_the_integration_name(api: Api) -> None:
    created = await add(
        api,
        {"integrationName": "kv-store", "connectionStrategy": "fixed", "integrationAlias": None},
    )
    assert created["integrationAlias"] == "kv-store"


async def test_same_integration_twice_under_different_aliases(slack: Api) -> None:
    bot = await connection(slack, "conn_slack_bot")
    first = await add(
        slack,
        {
            "integrationName": "slack",
            "integrationAlias": "slack_bot",
            "connectionStrategy": "fixed",
            "connectionId": bot,
        },
    )
    second = await add(
        slack,
        {
            "integrationName": "slack",
            "integrationAlias": "slack_user",
            "connectionStrategy": "per_user",
        },
    )
    assert {first["integrationAlias"], second["integrationAlias"]} == {"slack_bot", "slack_user"}
    assert (await slack.get(path(slack))).json()["total"] == 2


async def test_same_integration_under_an_existing_alias_is_a_duplicate(api: Api) -> None:
    await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    await refused(
        api, {"integrationName": "kv-store", "connectionStrategy": "per_user"}, 409, "DUPLICATE"
    )
    await add(
        api,
        {"integrationName": "kv-store", "connectionStrategy": "fixed", "integrationAlias": "notes"},
    )
    await refused(
        api,
        {"integrationName": "kv-store", "connectionStrategy": "fixed", "integrationAlias": "notes"},
        409,
        "DUPLICATE",
    )


async def test_alias_held_by_another_integration_is_an_alias_conflict(api: Api) -> None:
    await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    await refused(
        api,
        {"integrationName": "http", "connectionStrategy": "fixed", "integrationAlias": "kv-store"},
        409,
        "ALIAS_CONFLICT",
    )


async def test_aliases_are_per_workspace(api: Api) -> None:
    await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    other = await add(
        api,
        {"integrationName": "http", "connectionStrategy": "fixed", "integrationAlias": "kv-store"},
        workspace_id=await add_workspace(api),
    )
    assert other["integrationAlias"] == "kv-store"


# --- allowedActions and settings --------------------------------------------------------------


async def test_allowed_actions_restrict_and_null_means_all(api: Api) -> None:
    restricted = await add(
        api,
        {
            "integrationName": "kv-store",
            "connectionStrategy": "fixed",
            "allowedActions": ["get", "put", "get"],
        },
    )
    assert restricted["allowedActions"] == ["get", "put"]
    everything = await add(
        api,
        {
            "integrationName": "kv-store",
            "integrationAlias": "all",
            "connectionStrategy": "fixed",
            "allowedActions": None,
        },
    )
    assert everything["allowedActions"] is None


async def test_unknown_or_malformed_allowed_actions_are_refused(api: Api) -> None:
    for allowed in (
        ["get", "teleport"],
        ["send_request"],
        [""],
        ["GET"],
        "get",
        [1],
        {"get": True},
        [None],
        ["x" * 101],
    ):
        body = {
            "integrationName": "kv-store",
            "connectionStrategy": "fixed",
            "allowedActions": allowed,
        }
        error = await refused(api, body, 400, "VALIDATION_ERROR")
        assert error["field"].startswith("allowedActions"), allowed


async def test_valid_settings_are_stored(api: Api) -> None:
    created = await add(
        api,
        {
            "integrationName": "kv-store",
            "connectionStrategy": "fixed",
            "settings": {"persistence": {"scope": "workspace"}},
        },
    )
    assert created["settings"] == {"persistence": {"scope": "workspace"}}
    got = await api.get(path(api, f"/{created['id']}"))
    assert got.json()["integration"]["settings"] == {"persistence": {"scope": "workspace"}}


BAD_SETTINGS: list[tuple[str, object]] = [
    ("kv-store", {"persistence": {"scope": "everyone"}}),
    ("kv-store", {"persistence": "workspace"}),
    ("kv-store", {"persistence": {"scope": "workspace", "ttl": 5}}),
    ("kv-store", {"colour": "blue"}),
    ("kv-store", []),
    ("kv-store", "workspace"),
    ("http", {"allowPrivateNetwork": "yes"}),
    ("http", {"maxResponseBytes": 0}),
    ("http", {"maxResponseBytes": 1.5}),
    ("http", {"maxResponseBytes": True}),
    ("http", {"persistence": {"scope": "workspace"}}),
]


async def test_settings_breaking_the_integrations_schema_are_refused(api: Api) -> None:
    for integration, bad_settings in BAD_SETTINGS:
        error = await refused(
            api,
            {
                "integrationName": integration,
                "connectionStrategy": "fixed",
                "settings": bad_settings,
            },
            400,
            "VALIDATION_ERROR",
        )
        assert error["field"].startswith("settings"), (integration, bad_settings)


# --- update -----------------------------------------------------------------------------------


async def test_update_from_the_document_example(slack: Api) -> None:
    connection_id = await connection(slack)
    created = await add(
        slack,
        {"integrationName": "slack", "connectionStrategy": "fixed", "connectionId": connection_id},
    )
    response = await slack.patch(
        path(slack, f"/{created['id']}"),
        {
            "connectionStrategy": "per_user_with_fallback",
            "allowedActions": ["send_channel_message", "list_channels"],
        },
    )
    assert response.status_code == 200, response.text
    updated = response.json()["integration"]
    assert set(updated) == DOC_FIELDS | {"settings"}
    assert updated["id"] == created["id"]
    assert updated["connectionStrategy"] == "per_user_with_fallback"
    assert updated["connectionId"] == connection_id
    assert updated["allowedActions"] == ["send_channel_message", "list_channels"]
    assert updated["createdAt"] == created["createdAt"]
    assert updated["updatedAt"] >= created["updatedAt"]
    assert (await slack.get(path(slack, f"/{created['id']}"))).json() == {"integration": updated}


async def test_update_without_fields_is_no_updates(api: Api) -> None:
    created = await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    before = await snapshot(api)
    response = await api.patch(path(api, f"/{created['id']}"), {})
    assert_error(response, 400, "NO_UPDATES")
    assert await snapshot(api) == before


async def test_update_of_an_unknown_workspace_integration_is_not_found(api: Api) -> None:
    created = await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    other_ws = await add_workspace(api)
    before = await snapshot(api)
    for target in (
        path(api, f"/pi_{uuid.uuid4()}"),
        path(api, f"/{uuid.uuid4()}"),
        path(api, "/pi_"),
        path(api, f"/{created['id']}", workspace_id=other_ws),
        path(api, f"/{created['id']}", workspace_id=str(uuid.uuid4())),
    ):
        response = await api.patch(target, {"allowedActions": None})
        assert_error(response, 404, "NOT_FOUND")
        assert_error(await api.delete(target), 404, "NOT_FOUND")
        assert_error(await api.get(target), 404, "NOT_FOUND")
    assert await snapshot(api) == before


async def test_update_allowed_actions_to_null_allows_everything(api: Api) -> None:
    created = await add(
        api,
        {"integrationName": "kv-store", "connectionStrategy": "fixed", "allowedActions": ["get"]},
    )
    response = await api.patch(path(api, f"/{created['id']}"), {"allowedActions": None})
    assert response.status_code == 200, response.text
    assert response.json()["integration"]["allowedActions"] is None


BAD_UPDATES: list[dict[str, Any]] = [
    {"allowedActions": ["get", "teleport"]},
    {"allowedActions": "get"},
    {"connectionStrategy": "shared"},
    {"connectionStrategy": None},
    {"settings": {"persistence": {"scope": "nobody"}}},
    {"settings": []},
    {"integrationAlias": "Bad Alias"},
    {"integrationAlias": None},
    {"integrationName": "http"},
    {"bogus": 1},
    {"allowedActions": ["get"], "bogus": 1},
]


async def test_invalid_update_is_refused_and_changes_nothing(api: Api) -> None:
    created = await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    before = await snapshot(api)
    for body in BAD_UPDATES:
        response = await api.patch(path(api, f"/{created['id']}"), body)
        assert response.status_code == 400, body
        assert_error(response, 400, "VALIDATION_ERROR")
    assert await snapshot(api) == before


async def test_switching_to_per_user_drops_the_connection(slack: Api) -> None:
    connection_id = await connection(slack)
    created = await add(
        slack,
        {"integrationName": "slack", "connectionStrategy": "fixed", "connectionId": connection_id},
    )
    response = await slack.patch(
        path(slack, f"/{created['id']}"), {"connectionStrategy": "per_user"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["integration"]["connectionId"] is None


async def test_switching_to_fixed_without_a_connection_is_refused(slack: Api) -> None:
    created = await add(slack, {"integrationName": "slack", "connectionStrategy": "per_user"})
    before = await snapshot(slack)
    for body in (
        {"connectionStrategy": "fixed"},
        {"connectionStrategy": "per_user_with_fallback"},
        {"connectionStrategy": "fixed", "connectionId": None},
    ):
        response = await slack.patch(path(slack, f"/{created['id']}"), body)
        assert_error(response, 400, "VALIDATION_ERROR")
    assert await snapshot(slack) == before


async def test_update_replaces_the_connection(slack: Api) -> None:
    first = await connection(slack, "first")
    second = await connection(slack, "second")
    created = await add(
        slack, {"integrationName": "slack", "connectionStrategy": "fixed", "connectionId": first}
    )
    response = await slack.patch(path(slack, f"/{created['id']}"), {"connectionId": second})
    assert response.status_code == 200, response.text
    assert response.json()["integration"]["connectionId"] == second
    bad = await slack.patch(path(slack, f"/{created['id']}"), {"connectionId": str(uuid.uuid4())})
    assert_error(bad, 400, "VALIDATION_ERROR")
    got = await slack.get(path(slack, f"/{created['id']}"))
    assert got.json()["integration"]["connectionId"] == second


async def test_update_of_the_alias_follows_the_alias_rules(api: Api) -> None:
    kv = await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    await add(
        api,
        {"integrationName": "kv-store", "connectionStrategy": "fixed", "integrationAlias": "notes"},
    )
    await add(api, {"integrationName": "http", "connectionStrategy": "fixed"})
    before = await snapshot(api)
    target = path(api, f"/{kv['id']}")
    assert_error(await api.patch(target, {"integrationAlias": "http"}), 409, "ALIAS_CONFLICT")
    assert_error(await api.patch(target, {"integrationAlias": "notes"}), 409, "DUPLICATE")
    assert await snapshot(api) == before
    renamed = await api.patch(target, {"integrationAlias": "cache"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["integration"]["integrationAlias"] == "cache"


# --- delete -----------------------------------------------------------------------------------


async def test_deleted_workspace_integration_is_gone(api: Api) -> None:
    created = await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    response = await api.delete(path(api, f"/{created['id']}"))
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": True, "id": created["id"]}
    assert (await api.get(path(api))).json() == {"integrations": [], "total": 0}
    assert_error(await api.delete(path(api, f"/{created['id']}")), 404, "NOT_FOUND")
    # The alias is free again.
    again = await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    assert again["id"] != created["id"]


async def test_workspace_integration_changes_are_recorded_in_the_activity_log(api: Api) -> None:
    created = await add(api, {"integrationName": "kv-store", "connectionStrategy": "fixed"})
    await api.patch(path(api, f"/{created['id']}"), {"allowedActions": ["get"]})
    await api.patch(path(api, f"/{created['id']}"), {})
    await api.delete(path(api, f"/{created['id']}"))
    entries = [e for e in await config_changes(api) if e["targetId"] == created["id"]]
    assert [e["change"] for e in entries] == ["deleted", "updated", "created"]
    for entry in entries:
        assert entry["targetType"] == "workspace_integration"
        assert entry["workspaceId"] == api.workspace_id
        assert entry["actor"].startswith("api_key:")
