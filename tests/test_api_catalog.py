"""`/api/v1/integrations`: the catalog, each action with its input property definitions."""

from __future__ import annotations

from typing import Any

import pytest

from test_api_auth import (
    assert_error,
    gateway,  # noqa: F401
    settings,  # noqa: F401
    templates,  # noqa: F401
)

from conftest import Api

pytestmark = pytest.mark.anyio

KV_ACTIONS = {"put", "get", "delete", "list_keys", "add_to_list", "remove_from_list"}


async def test_catalog_lists_the_built_in_integrations(api: Api) -> None:
    response = await api.get("/integrations")
    assert response.status_code == 200, response.text
    body = response.json()
    names = [i["name"] for i in body["integrations"]]
    assert {"kv-store", "http"} <= set(names)
    assert body["total"] == len(names)
    assert names == sorted(names)


async def test_catalog_filtered_by_name_returns_only_that_integration(api: Api) -> None:
    response = await api.get("/integrations", params={"name": "kv-store"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 1
    [kv] = body["integrations"]
    assert kv["name"] == "kv-store"
    assert kv["authKind"] == "none"
    assert isinstance(kv["actions"], dict)
    assert set(kv["actions"]) == KV_ACTIONS


async def test_every_action_carries_its_input_property_definitions(api: Api) -> None:
    body = (await api.get("/integrations")).json()
    for integration in body["integrations"]:
        for name, action in integration["actions"].items():
            assert action["name"] == name
            assert isinstance(action["props"], dict)
            assert action["props"] == action["inputSchema"].get("properties", {})
            assert set(action["required"]) <= set(action["props"])
            for definition in action["props"].values():
                assert isinstance(definition, dict)


async def test_kv_store_put_declares_key_and_value_inputs(api: Api) -> None:
    kv = (await api.get("/integrations", params={"name": "kv-store"})).json()["integrations"][0]
    put: dict[str, Any] = kv["actions"]["put"]
    assert set(put["props"]) == {"key", "value"}
    assert put["props"]["key"]["type"] == "string"
    assert sorted(put["required"]) == ["key", "value"]
    assert kv["actions"]["get"]["annotations"]["readOnly"] is True


async def test_catalog_exposes_the_settings_schema_workspace_integrations_are_checked_against(
    api: Api,
) -> None:
    kv = (await api.get("/integrations", params={"name": "kv-store"})).json()["integrations"][0]
    scope = kv["settingsSchema"]["properties"]["persistence"]["properties"]["scope"]
    assert set(scope["enum"]) == {"end_user", "workspace"}


async def test_catalog_filter_with_unknown_name_is_empty(api: Api) -> None:
    for name in (
        "no-such-integration",
        "KV-STORE",
        "kv-store ",
        "' OR 1=1 --",
        "x" * 5000,
        "\u0000",
        "",
    ):
        response = await api.get("/integrations", params={"name": name})
        assert response.status_code == 200, response.text
        assert response.json() == {"integrations": [], "total": 0}, name


async def test_single_integration_is_readable_by_name(api: Api) -> None:
    response = await api.get("/integrations/http")
    assert response.status_code == 200, response.text
    integration = response.json()["integration"]
    assert integration["name"] == "http"
    assert "send_request" in integration["actions"]


async def test_unknown_integration_is_not_found(api: Api) -> None:
    for name in (
        "no-such-integration",
        "KV-STORE",
        "%00",
        "x" * 300,
        "..%2F..%2Fetc",
        "kv-store%0A",
    ):
        assert_error(await api.get(f"/integrations/{name}"), 404, "NOT_FOUND")


async def test_workspace_restricted_key_may_read_the_catalog(api: Api) -> None:
    store = api.gateway.store
    async with store.db.write("test") as txn:
        _key, token = await store.api_keys.create(
            txn, api.org_id, name="ws", workspace_id=api.workspace_id
        )
    response = await api.get("/integrations", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.json()["total"] >= 2
