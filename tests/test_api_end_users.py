"""`/api/v1/end-users`: the people a workspace's integrations act for."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from test_api_auth import (
    SECRET,
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


async def create_user(api: Api, external_id: str = "alice", **fields: Any) -> dict[str, Any]:
    body = {"workspaceId": api.workspace_id, "externalId": external_id, **fields}
    response = await api.post("/end-users", body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["endUser"]
    return created


async def create_connection(
    api: Api, external_id: str, end_user: str | None = None, workspace_id: str | None = None
) -> str:
    body: dict[str, Any] = {
        "integrationName": "http",
        "type": "bearer",
        "displayName": "Personal",
        "externalId": external_id,
        "values": {"token": SECRET},
        "workspaceId": workspace_id or api.workspace_id,
    }
    if end_user is not None:
        body["endUserId"] = end_user
    response = await api.post("/connections", body)
    assert response.status_code == 201, response.text
    connection_id: str = response.json()["connection"]["id"]
    return connection_id


async def test_created_end_user_is_returned_listed_and_readable(api: Api) -> None:
    user = await create_user(
        api,
        "alice@example.com",
        displayName="Alice",
        email="alice@example.com",
        metadata={"team": "sales", "level": 3},
    )
    uuid.UUID(user["id"])
    assert user["orgId"] == api.org_id
    assert user["workspaceId"] == api.workspace_id
    assert user["externalId"] == "alice@example.com"
    assert user["displayName"] == "Alice"
    assert user["email"] == "alice@example.com"
    assert user["metadata"] == {"team": "sales", "level": 3}

    assert (await api.get("/end-users")).json() == {"endUsers": [user], "total": 1}
    assert (await api.get(f"/end-users/{user['id']}")).json() == {"endUser": user}


async def test_optional_end_user_fields_default_to_null(api: Api) -> None:
    user = await create_user(api)
    assert user["displayName"] is None
    assert user["email"] is None
    assert user["metadata"] is None


async def test_duplicate_external_id_in_the_same_workspace_is_refused(api: Api) -> None:
    await create_user(api)
    before = await snapshot(api)
    duplicate = await api.post(
        "/end-users", {"workspaceId": api.workspace_id, "externalId": "alice"}
    )
    assert_error(duplicate, 409, "DUPLICATE")
    assert await snapshot(api) == before


async def test_same_external_id_is_allowed_in_another_workspace(api: Api) -> None:
    await create_user(api)
    other = await api.post(
        "/end-users", {"workspaceId": await add_workspace(api), "externalId": "alice"}
    )
    assert other.status_code == 201, other.text
    assert (await api.get("/end-users")).json()["total"] == 2


async def test_list_filtered_by_workspace_shows_only_that_workspace(api: Api) -> None:
    mine = await create_user(api)
    other_workspace = await add_workspace(api)
    await api.post("/end-users", {"workspaceId": other_workspace, "externalId": "bob"})
    listed = await api.get("/end-users", params={"workspaceId": api.workspace_id})
    assert listed.json() == {"endUsers": [mine], "total": 1}
    unknown = await api.get("/end-users", params={"workspaceId": str(uuid.uuid4())})
    assert_error(unknown, 404, "NOT_FOUND")


async def test_deleting_an_end_user_deletes_their_connections_only(api: Api) -> None:
    alice = await create_user(api, "alice")
    await create_user(api, "bob")
    alice_conn = await create_connection(api, "alice-conn", end_user="alice")
    bob_conn = await create_connection(api, "bob-conn", end_user="bob")
    shared_conn = await create_connection(api, "shared")

    deleted = await api.delete(f"/end-users/{alice['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": True, "id": alice["id"]}

    assert_error(await api.get(f"/end-users/{alice['id']}"), 404, "NOT_FOUND")
    assert_error(await api.get(f"/connections/{alice_conn}"), 404, "NOT_FOUND")
    remaining = [c["id"] for c in (await api.get("/connections")).json()["connections"]]
    assert sorted(remaining) == sorted([bob_conn, shared_conn])
    assert_error(await api.delete(f"/end-users/{alice['id']}"), 404, "NOT_FOUND")
    # The external ID is free again, and the old connection does not come back with it.
    again = await create_user(api, "alice")
    assert again["id"] != alice["id"]
    assert alice_conn not in (await api.get("/connections")).text


INVALID: list[dict[str, Any]] = [
    {"externalId": ""},
    {"externalId": "x" * 256},
    {"externalId": "a\x00b"},
    {"externalId": "a\nb"},
    {"externalId": 12},
    {"externalId": None},
    {"displayName": ""},
    {"displayName": "x" * 101},
    {"displayName": "bad\x1b[31m"},
    {"email": "not-an-email"},
    {"email": "a@b"},
    {"email": "a b@example.com"},
    {"email": "x" * 250 + "@example.com"},
    {"metadata": []},
    {"metadata": "x"},
    {"metadata": {f"k{i}": i for i in range(51)}},
    {"workspaceId": None},
    {"workspaceId": ["x"]},
    {"bogus": True},
]


async def test_invalid_end_user_is_refused(api: Api) -> None:
    before = await snapshot(api)
    for overrides in INVALID:
        body = {"workspaceId": api.workspace_id, "externalId": "alice", **overrides}
        response = await api.post("/end-users", body)
        assert response.status_code == 400, overrides
        assert_error(response, 400, "VALIDATION_ERROR")
    assert await snapshot(api) == before


async def test_end_user_without_a_required_field_is_refused(api: Api) -> None:
    before = await snapshot(api)
    for missing in ("workspaceId", "externalId"):
        body = {"workspaceId": api.workspace_id, "externalId": "alice"}
        del body[missing]
        response = await api.post("/end-users", body)
        assert assert_error(response, 400, "VALIDATION_ERROR")["field"] == missing
    assert await snapshot(api) == before


async def test_end_user_in_an_unknown_workspace_is_not_found(api: Api) -> None:
    before = await snapshot(api)
    response = await api.post(
        "/end-users", {"workspaceId": str(uuid.uuid4()), "externalId": "alice"}
    )
    assert_error(response, 404, "NOT_FOUND")
    assert await snapshot(api) == before


UNUSUAL_EXTERNAL_IDS = [
    "x" * 255,
    "o'brien\"; DROP TABLE end_users; --",
    "<b>bold</b>",
    "ユーザー🙂",
    "a%20b/c?d",
]


async def test_unusual_external_ids_round_trip(api: Api) -> None:
    for index, external_id in enumerate(UNUSUAL_EXTERNAL_IDS):
        user = await create_user(api, external_id)
        got = await api.get(f"/end-users/{user['id']}")
        assert got.json()["endUser"]["externalId"] == external_id
        conn = await create_connection(api, f"personal-{index}", end_user=external_id)
        got_conn = await api.get(f"/connections/{conn}")
        assert got_conn.json()["connection"]["endUserId"] == external_id


async def test_end_user_changes_are_recorded_in_the_activity_log(api: Api) -> None:
    user = await create_user(api)
    await api.delete(f"/end-users/{user['id']}")
    entries = [e for e in await config_changes(api) if e["targetId"] == user["id"]]
    assert [(e["targetType"], e["change"]) for e in entries] == [
        ("end_user", "deleted"),
        ("end_user", "created"),
    ]
    assert all(e["actor"].startswith("api_key:") for e in entries)
