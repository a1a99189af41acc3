"""`/api/v1/partials`, as its operations in /api/v1/openapi.json describe them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from test_api_auth import (
    add_workspace,
    assert_error,
    config_changes,
    gateway,  # noqa: F401
    settings,  # noqa: F401
    snapshot,
    templates,  # noqa: F401
)

from conftest import Api

pytestmark = pytest.mark.anyio

DOC_FIELDS = {
    "id",
    "orgId",
    "workspaceId",
    "integrationName",
    "actionName",
    "name",
    "description",
    "values",
    "enforcedKeys",
    "isDefault",
    "createdAt",
    "updatedAt",
}


def partial_body(api: Api, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "workspaceId": api.workspace_id,
        "integrationName": "kv-store",
        "actionName": "put",
        "name": "Notes preset",
        "values": {"key": "notes"},
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


async def create(api: Api, **overrides: Any) -> dict[str, Any]:
    response = await api.post("/partials", partial_body(api, **overrides))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["partial"]
    return created


async def refused_create(api: Api, body: dict[str, Any], status: int, code: str) -> None:
    before = await snapshot(api)
    assert_error(await api.post("/partials", body), status, code)
    assert await snapshot(api) == before


# --- create, get, list ------------------------------------------------------------------------


async def test_created_partial_has_the_documented_shape(api: Api) -> None:
    response = await api.post(
        "/partials",
        partial_body(
            api,
            name="General Channel Preset",
            description="Always post to #general",
            values={"key": "general", "value": {"channel": "C01ABCDEF"}},
            enforcedKeys=["key"],
        ),
    )
    assert response.status_code == 201, response.text
    assert set(response.json()) == {"partial"}
    partial = response.json()["partial"]
    # The documented fields, plus treadle's optional `integrationAlias` scope.
    assert set(partial) == DOC_FIELDS | {"integrationAlias"}
    uuid.UUID(partial["id"])
    assert partial["orgId"] == api.org_id
    assert partial["workspaceId"] == api.workspace_id
    assert partial["integrationName"] == "kv-store"
    assert partial["integrationAlias"] is None
    assert partial["actionName"] == "put"
    assert partial["name"] == "General Channel Preset"
    assert partial["description"] == "Always post to #general"
    assert partial["values"] == {"key": "general", "value": {"channel": "C01ABCDEF"}}
    assert partial["enforcedKeys"] == ["key"]
    assert partial["isDefault"] is False
    assert partial["createdAt"] == partial["updatedAt"]
    got = await api.get(f"/partials/{partial['id']}")
    assert got.status_code == 200
    assert got.json() == {"partial": partial}


async def test_optional_fields_have_documented_defaults(api: Api) -> None:
    partial = await create(api, actionName=...)
    assert partial["actionName"] is None
    assert partial["description"] is None
    assert partial["enforcedKeys"] == []
    assert partial["isDefault"] is False


async def test_list_needs_a_workspace_and_filters_by_integration_and_action(api: Api) -> None:
    put = await create(api, name="put preset")
    get = await create(api, name="get preset", actionName="get")
    wide = await create(api, name="integration wide", actionName=None)
    http = await create(
        api, name="http preset", integrationName="http", actionName="send_request", values={}
    )
    await create(api, name="elsewhere", workspaceId=await add_workspace(api))

    def ids(response: Any) -> set[str]:
        body = response.json()
        assert body["total"] == len(body["partials"])
        return {p["id"] for p in body["partials"]}

    everything = await api.get("/partials", params={"workspaceId": api.workspace_id})
    assert everything.status_code == 200, everything.text
    assert ids(everything) == {put["id"], get["id"], wide["id"], http["id"]}
    kv = await api.get(
        "/partials", params={"workspaceId": api.workspace_id, "integrationName": "kv-store"}
    )
    assert ids(kv) == {put["id"], get["id"], wide["id"]}
    only_get = await api.get(
        "/partials",
        params={
            "workspaceId": api.workspace_id,
            "integrationName": "kv-store",
            "actionName": "get",
        },
    )
    assert ids(only_get) == {get["id"]}
    nothing = await api.get(
        "/partials",
        params={"workspaceId": api.workspace_id, "integrationName": "no-such-integration"},
    )
    assert nothing.json() == {"partials": [], "total": 0}

    assert_error(await api.get("/partials"), 400, "VALIDATION_ERROR")
    assert_error(await api.get("/partials", params={"workspaceId": ""}), 400, "VALIDATION_ERROR")
    unknown = await api.get("/partials", params={"workspaceId": str(uuid.uuid4())})
    assert_error(unknown, 404, "NOT_FOUND")


async def test_unknown_partial_is_not_found(api: Api) -> None:
    before = await snapshot(api)
    for partial_id in (str(uuid.uuid4()), "nope", "x" * 200):
        assert_error(await api.get(f"/partials/{partial_id}"), 404, "NOT_FOUND")
        assert_error(await api.patch(f"/partials/{partial_id}", {"name": "x"}), 404, "NOT_FOUND")
        assert_error(await api.delete(f"/partials/{partial_id}"), 404, "NOT_FOUND")
        response = await api.post(f"/partials/{partial_id}/set-default", {"isDefault": True})
        assert_error(response, 404, "NOT_FOUND")
    assert await snapshot(api) == before


# --- validation -------------------------------------------------------------------------------


async def test_name_and_description_lengths_are_bounded(api: Api) -> None:
    longest = await create(api, name="n" * 100, description="d" * 500)
    assert longest["name"] == "n" * 100
    assert longest["description"] == "d" * 500
    for overrides in (
        {"name": "n" * 101},
        {"name": ""},
        {"description": "d" * 501},
        {"name": "tab\there"},
        {"description": "esc\x1b[2J"},
    ):
        await refused_create(api, partial_body(api, **overrides), 400, "VALIDATION_ERROR")


async def test_missing_required_fields_are_refused(api: Api) -> None:
    for missing in ("workspaceId", "integrationName", "name", "values"):
        body = partial_body(api)
        del body[missing]
        before = await snapshot(api)
        response = await api.post("/partials", body)
        assert assert_error(response, 400, "VALIDATION_ERROR")["field"] == missing
        assert await snapshot(api) == before


BAD_CREATES: list[dict[str, Any]] = [
    {"integrationName": "no-such-integration"},
    {"actionName": "teleport"},
    {"actionName": "send_request"},
    {"values": []},
    {"values": "key=notes"},
    {"values": {"key": 42}},
    {"values": {"key": ""}},
    {"values": {"nonsense": 1}},
    {"enforcedKeys": ["value"]},
    {"enforcedKeys": "key"},
    {"enforcedKeys": [1]},
    {"isDefault": "true"},
    {"isDefault": 1},
    {"description": 5},
    {"name": ["x"]},
    {"bogus": True},
]


async def test_invalid_partial_is_refused(api: Api) -> None:
    for overrides in BAD_CREATES:
        body = partial_body(api, **overrides)
        before = await snapshot(api)
        response = await api.post("/partials", body)
        assert response.status_code == 400, (overrides, response.text)
        assert_error(response, 400, "VALIDATION_ERROR")
        assert await snapshot(api) == before


async def test_enforced_keys_must_be_keys_of_values(api: Api) -> None:
    created = await create(api, values={"key": "a", "value": 1}, enforcedKeys=["key", "value"])
    assert created["enforcedKeys"] == ["key", "value"]
    await refused_create(
        api,
        partial_body(api, name="other", values={"key": "a"}, enforcedKeys=["key", "value"]),
        400,
        "VALIDATION_ERROR",
    )


async def test_partial_in_an_unknown_workspace_is_not_found(api: Api) -> None:
    await refused_create(api, partial_body(api, workspaceId=str(uuid.uuid4())), 404, "NOT_FOUND")


# --- duplicates -------------------------------------------------------------------------------


async def test_same_name_in_the_same_scope_is_a_duplicate(api: Api) -> None:
    await create(api)
    await refused_create(api, partial_body(api, values={"key": "other"}), 409, "DUPLICATE")
    await create(api, name="wide", actionName=None)
    await refused_create(api, partial_body(api, name="wide", actionName=None), 409, "DUPLICATE")
    await create(api, name="aliased", integrationAlias="notes")
    await refused_create(
        api, partial_body(api, name="aliased", integrationAlias="notes"), 409, "DUPLICATE"
    )


async def test_same_name_in_another_scope_is_allowed(api: Api) -> None:
    first = await create(api)
    others = [
        await create(api, actionName="get"),
        await create(api, actionName=None),
        await create(api, integrationAlias="notes"),
        await create(api, integrationName="http", actionName="send_request", values={}),
        await create(api, workspaceId=await add_workspace(api)),
    ]
    assert {p["name"] for p in [first, *others]} == {"Notes preset"}
    assert len({p["id"] for p in [first, *others]}) == 6


async def test_renaming_onto_an_existing_name_in_the_scope_is_a_duplicate(api: Api) -> None:
    await create(api, name="taken")
    mine = await create(api, name="mine")
    other_scope = await create(api, name="elsewhere", actionName="get")
    before = await snapshot(api)
    response = await api.patch(f"/partials/{mine['id']}", {"name": "taken"})
    assert_error(response, 409, "DUPLICATE")
    response = await api.patch(f"/partials/{mine['id']}", {"name": "taken", "isDefault": True})
    assert_error(response, 409, "DUPLICATE")
    assert await snapshot(api) == before
    moved = await api.patch(f"/partials/{other_scope['id']}", {"name": "taken"})
    assert moved.status_code == 200, moved.text
    same = await api.patch(f"/partials/{mine['id']}", {"name": "mine"})
    assert same.status_code == 200, same.text


# --- update -----------------------------------------------------------------------------------


async def test_update_replaces_values_and_enforced_keys(api: Api) -> None:
    created = await create(api, values={"key": "notes"}, enforcedKeys=["key"])
    response = await api.patch(
        f"/partials/{created['id']}",
        {"values": {"key": "notes", "value": "weavz-bot"}, "enforcedKeys": ["key", "value"]},
    )
    assert response.status_code == 200, response.text
    updated = response.json()["partial"]
    assert set(updated) == DOC_FIELDS | {"integrationAlias"}
    assert updated["values"] == {"key": "notes", "value": "weavz-bot"}
    assert updated["enforcedKeys"] == ["key", "value"]
    assert updated["name"] == created["name"]
    assert updated["createdAt"] == created["createdAt"]
    assert updated["updatedAt"] >= created["updatedAt"]
    assert (await api.get(f"/partials/{created['id']}")).json() == {"partial": updated}


async def test_update_of_name_description_and_default(api: Api) -> None:
    created = await create(api, description="old")
    response = await api.patch(
        f"/partials/{created['id']}", {"name": "New", "description": None, "isDefault": True}
    )
    assert response.status_code == 200, response.text
    updated = response.json()["partial"]
    assert (updated["name"], updated["description"], updated["isDefault"]) == ("New", None, True)


async def test_update_without_fields_is_a_validation_error(api: Api) -> None:
    created = await create(api)
    before = await snapshot(api)
    assert_error(await api.patch(f"/partials/{created['id']}", {}), 400, "VALIDATION_ERROR")
    assert await snapshot(api) == before


BAD_UPDATES: list[dict[str, Any]] = [
    {"values": {"value": 1}},  # drops the enforced key
    {"enforcedKeys": ["missing"]},
    {"values": {"key": 7}},
    {"values": None},
    {"enforcedKeys": None},
    {"name": None},
    {"isDefault": None},
    {"name": "n" * 101},
    {"description": "d" * 501},
    {"isDefault": "yes"},
    {"actionName": "get"},
    {"workspaceId": str(uuid.uuid4())},
    {"name": "ok", "bogus": 1},
]


async def test_invalid_update_is_refused_and_changes_nothing(api: Api) -> None:
    created = await create(api, enforcedKeys=["key"])
    before = await snapshot(api)
    for body in BAD_UPDATES:
        response = await api.patch(f"/partials/{created['id']}", body)
        assert response.status_code == 400, (body, response.text)
        assert_error(response, 400, "VALIDATION_ERROR")
    assert await snapshot(api) == before


# --- default ----------------------------------------------------------------------------------


async def test_set_default_sets_and_unsets(api: Api) -> None:
    created = await create(api)
    response = await api.post(f"/partials/{created['id']}/set-default", {"isDefault": True})
    assert response.status_code == 200, response.text
    assert response.json()["partial"]["isDefault"] is True
    assert (await api.get(f"/partials/{created['id']}")).json()["partial"]["isDefault"] is True
    response = await api.post(f"/partials/{created['id']}/set-default", {"isDefault": False})
    assert response.json()["partial"]["isDefault"] is False


async def test_one_default_per_scope(api: Api) -> None:
    first = await create(api, name="first", isDefault=True)
    other_scope = await create(api, name="other scope", actionName="get", isDefault=True)
    second = await create(api, name="second")
    await api.post(f"/partials/{second['id']}/set-default", {"isDefault": True})

    async def is_default(partial: dict[str, Any]) -> bool:
        flag: bool = (await api.get(f"/partials/{partial['id']}")).json()["partial"]["isDefault"]
        return flag

    assert [await is_default(p) for p in (first, second, other_scope)] == [False, True, True]
    third = await create(api, name="third", isDefault=True)
    assert [await is_default(p) for p in (second, third)] == [False, True]


async def test_set_default_needs_a_boolean(api: Api) -> None:
    created = await create(api)
    before = await snapshot(api)
    for body in ({}, {"isDefault": None}, {"isDefault": "true"}, {"isDefault": 1}, {"x": True}):
        response = await api.post(f"/partials/{created['id']}/set-default", body)
        assert response.status_code == 400, body
        assert_error(response, 400, "VALIDATION_ERROR")
    assert await snapshot(api) == before


# --- delete and audit -------------------------------------------------------------------------


async def test_deleted_partial_is_gone(api: Api) -> None:
    created = await create(api)
    response = await api.delete(f"/partials/{created['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": True, "id": created["id"]}
    assert_error(await api.get(f"/partials/{created['id']}"), 404, "NOT_FOUND")
    assert_error(await api.delete(f"/partials/{created['id']}"), 404, "NOT_FOUND")
    listed = await api.get("/partials", params={"workspaceId": api.workspace_id})
    assert listed.json() == {"partials": [], "total": 0}
    # The name is free again.
    assert (await create(api))["id"] != created["id"]


async def test_hostile_strings_are_stored_verbatim(api: Api) -> None:
    hostile = {
        "key": "'); DELETE FROM partials; --",
        "value": {
            "html": "<img src=x onerror=alert(1)>",
            "text": "日本語 🚀 \u202e",
            "nul": "\x00",
        },
    }
    created = await create(api, name="<b>'\"; --", description="ünïcödé 💥", values=hostile)
    got = (await api.get(f"/partials/{created['id']}")).json()["partial"]
    assert got["values"] == hostile
    assert (got["name"], got["description"]) == ("<b>'\"; --", "ünïcödé 💥")


async def test_partial_changes_are_recorded_in_the_activity_log(api: Api) -> None:
    created = await create(api)
    await api.patch(f"/partials/{created['id']}", {"name": "renamed"})
    await api.post(f"/partials/{created['id']}/set-default", {"isDefault": True})
    await api.patch(f"/partials/{created['id']}", {})
    await api.delete(f"/partials/{created['id']}")
    entries = [e for e in await config_changes(api) if e["targetId"] == created["id"]]
    assert [e["change"] for e in entries] == ["deleted", "updated", "updated", "created"]
    for entry in entries:
        assert entry["targetType"] == "partial"
        assert entry["workspaceId"] == api.workspace_id
        assert entry["actor"].startswith("api_key:")
