"""`/api/v1/connections`: create, list, get, delete; secrets go in and never come out."""

from __future__ import annotations

import logging
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
from databases import ON_POSTGRESQL, rows_of_every_table

pytestmark = pytest.mark.anyio

CONNECTION_FIELDS = {
    "id",
    "orgId",
    "workspaceId",
    "endUserId",
    "integrationName",
    "type",
    "displayName",
    "externalId",
    "baseUrl",
    "status",
    "createdAt",
    "updatedAt",
}


def connection_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "integrationName": "http",
        "type": "bearer",
        "displayName": "Upstream API",
        "externalId": "upstream",
        "values": {"token": SECRET},
    }
    body.update(overrides)
    return body


async def create(api: Api, **overrides: Any) -> dict[str, Any]:
    overrides.setdefault("workspaceId", api.workspace_id)
    response = await api.post("/connections", connection_body(**overrides))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["connection"]
    return created


async def test_created_connection_is_returned_without_its_secret(api: Api) -> None:
    response = await api.post(
        "/connections",
        connection_body(workspaceId=api.workspace_id, baseUrl="https://api.example.com/v2"),
    )
    assert response.status_code == 201, response.text
    assert SECRET not in response.text
    connection = response.json()["connection"]
    assert set(connection) == CONNECTION_FIELDS
    uuid.UUID(connection["id"])
    assert connection["orgId"] == api.org_id
    assert connection["workspaceId"] == api.workspace_id
    assert connection["endUserId"] is None
    assert connection["integrationName"] == "http"
    assert connection["type"] == "bearer"
    assert connection["displayName"] == "Upstream API"
    assert connection["externalId"] == "upstream"
    assert connection["baseUrl"] == "https://api.example.com/v2"


async def test_connection_is_listed_and_readable_without_its_secret(api: Api) -> None:
    created = await create(api)
    listed = await api.get("/connections")
    assert listed.status_code == 200
    assert listed.json() == {"connections": [created], "total": 1}
    got = await api.get(f"/connections/{created['id']}")
    assert got.json() == {"connection": created}
    filtered = await api.get("/connections", params={"workspaceId": api.workspace_id})
    assert filtered.json()["total"] == 1
    for response in (listed, got, filtered):
        assert SECRET not in response.text


async def test_secret_is_encrypted_at_rest(api: Api) -> None:
    created = await create(api)
    store = api.gateway.store
    record = await store.connections.get(api.org_id, created["id"])
    assert record is not None
    # Stored, and recoverable by the gateway itself...
    credentials = await store.connections.credentials(record)
    assert credentials.values == {"token": SECRET}
    if ON_POSTGRESQL:  # no files of its own to read: no row holds it in plain text
        assert SECRET not in repr(await rows_of_every_table(store.db.engine))
        return
    # ...but nowhere in the database files in plain text (main file, WAL, shared memory).
    db_files = list(api.gateway.settings.data_dir.glob("treadle.db*"))
    assert db_files
    for path in db_files:
        assert SECRET.encode() not in path.read_bytes(), path.name


async def test_secret_is_never_logged_nor_echoed_in_errors(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await create(api)
    responses = [
        await api.get("/connections"),
        await api.get(f"/connections/{created['id']}"),
        # Refusals of requests that carry the secret.
        await api.post("/connections", connection_body(workspaceId=api.workspace_id)),
        await api.post("/connections", connection_body(baseUrl="javascript:alert(1)")),
        await api.post("/connections", connection_body(type="password")),
        await api.post("/connections", connection_body(integrationName="nope")),
        await api.post("/connections", connection_body(values={"token": SECRET * 1000})),
        await api.post("/connections", connection_body(values={"token": [SECRET]})),
        await api.post("/connections", connection_body(values={"": SECRET})),
        await api.post("/connections", connection_body(bogus=SECRET)),
        await api.post("/connections", connection_body(workspaceId=str(uuid.uuid4()))),
        await api.post("/connections", connection_body(endUserId="nobody")),
        await api.get("/activity", params={"limit": "200"}),
        await api.delete(f"/connections/{created['id']}"),
    ]
    assert [r.status_code for r in responses] == [
        200,
        200,
        409,
        400,
        400,
        400,
        400,
        400,
        400,
        400,
        404,
        400,
        200,
        200,
    ]
    for response in responses:
        assert SECRET not in response.text
    assert caplog.records, "the access log should have recorded the requests"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in (record.exc_text or "")
        assert SECRET not in str(record.args)


async def test_duplicate_external_id_in_the_same_workspace_is_refused(api: Api) -> None:
    await create(api)
    before = await snapshot(api)
    duplicate = await api.post(
        "/connections",
        connection_body(workspaceId=api.workspace_id, integrationName="kv-store", type="custom"),
    )
    assert_error(duplicate, 409, "DUPLICATE")
    assert await snapshot(api) == before


async def test_same_external_id_is_allowed_in_another_workspace(api: Api) -> None:
    await create(api)
    other = await create(api, workspaceId=await add_workspace(api))
    assert other["externalId"] == "upstream"
    assert (await api.get("/connections")).json()["total"] == 2


async def test_org_wide_connection_has_no_workspace_and_its_external_id_is_unique(
    api: Api,
) -> None:
    response = await api.post("/connections", connection_body())
    assert response.status_code == 201, response.text
    assert response.json()["connection"]["workspaceId"] is None
    assert_error(await api.post("/connections", connection_body()), 409, "DUPLICATE")


async def test_connection_for_an_end_user_names_them_by_external_id(api: Api) -> None:
    user = await api.post(
        "/end-users", {"workspaceId": api.workspace_id, "externalId": "alice@example.com"}
    )
    assert user.status_code == 201
    created = await create(api, endUserId="alice@example.com", externalId="alice-upstream")
    assert created["endUserId"] == "alice@example.com"
    got = await api.get(f"/connections/{created['id']}")
    assert got.json()["connection"]["endUserId"] == "alice@example.com"


async def test_connection_for_an_unknown_end_user_is_refused(api: Api) -> None:
    other_workspace = await add_workspace(api)
    await api.post("/end-users", {"workspaceId": other_workspace, "externalId": "bob"})
    before = await snapshot(api)
    for body in (
        connection_body(workspaceId=api.workspace_id, endUserId="nobody"),
        # Bob exists, but in another workspace.
        connection_body(workspaceId=api.workspace_id, endUserId="bob"),
        # An end user belongs to a workspace: an org-wide connection cannot name one.
        connection_body(endUserId="bob"),
    ):
        assert_error(await api.post("/connections", body), 400, "VALIDATION_ERROR")
    assert await snapshot(api) == before


INVALID: list[dict[str, Any]] = [
    {"integrationName": "no-such-integration"},
    {"integrationName": "KV-STORE"},
    {"type": "password"},
    {"type": ""},
    {"displayName": ""},
    {"displayName": "x" * 101},
    {"displayName": "line\nbreak"},
    {"externalId": ""},
    {"externalId": "x" * 256},
    {"externalId": "nul\x00"},
    {"values": []},
    {"values": "token"},
    {"values": {"token": 123}},
    {"values": {"token": None}},
    {"values": {f"k{i}": "v" for i in range(51)}},
    {"baseUrl": "ftp://example.com"},
    {"baseUrl": "javascript:alert(1)"},
    {"baseUrl": "http://"},
    {"baseUrl": "https://exa mple.com"},
    {"baseUrl": "https://example.com/\n"},
    {"baseUrl": "https://" + "a" * 2050},
    {"workspaceId": 7},
    {"endUserId": ""},
]


async def test_invalid_connection_is_refused(api: Api) -> None:
    before = await snapshot(api)
    for overrides in INVALID:
        body = connection_body(**({"workspaceId": api.workspace_id} | overrides))
        response = await api.post("/connections", body)
        assert response.status_code == 400, overrides
        assert_error(response, 400, "VALIDATION_ERROR")
    assert await snapshot(api) == before


async def test_connection_without_a_required_field_is_refused(api: Api) -> None:
    before = await snapshot(api)
    for missing in ("integrationName", "type", "displayName", "externalId", "values"):
        body = connection_body(workspaceId=api.workspace_id)
        del body[missing]
        response = await api.post("/connections", body)
        assert assert_error(response, 400, "VALIDATION_ERROR")["field"] == missing
    assert await snapshot(api) == before


async def test_every_documented_connection_type_is_accepted(api: Api) -> None:
    for connection_type in ("api_key", "bearer", "basic", "oauth2", "custom"):
        created = await create(api, type=connection_type, externalId=connection_type)
        assert created["type"] == connection_type


async def test_unknown_workspace_filter_is_not_found(api: Api) -> None:
    response = await api.get("/connections", params={"workspaceId": str(uuid.uuid4())})
    assert_error(response, 404, "NOT_FOUND")


async def test_list_filtered_by_workspace_shows_only_that_workspace(api: Api) -> None:
    mine = await create(api)
    other = await create(api, workspaceId=await add_workspace(api))
    listed = await api.get("/connections", params={"workspaceId": other["workspaceId"]})
    assert [c["id"] for c in listed.json()["connections"]] == [other["id"]]
    assert mine["id"] in (await api.get("/connections")).text


async def test_deleted_connection_is_gone(api: Api) -> None:
    created = await create(api)
    deleted = await api.delete(f"/connections/{created['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": True, "id": created["id"]}
    assert_error(await api.get(f"/connections/{created['id']}"), 404, "NOT_FOUND")
    assert_error(await api.delete(f"/connections/{created['id']}"), 404, "NOT_FOUND")
    assert (await api.get("/connections")).json() == {"connections": [], "total": 0}


async def test_connection_changes_are_recorded_in_the_activity_log_without_secrets(
    api: Api,
) -> None:
    created = await create(api)
    await api.delete(f"/connections/{created['id']}")
    entries = [e for e in await config_changes(api) if e["targetId"] == created["id"]]
    assert [(e["targetType"], e["change"]) for e in entries] == [
        ("connection", "deleted"),
        ("connection", "created"),
    ]
    for entry in entries:
        assert entry["actor"].startswith("api_key:")
        assert entry["workspaceId"] == api.workspace_id
        assert SECRET not in str(entry)
