"""`/api/v1/workspaces`: CRUD, name rules, cascading delete and the activity record."""

from __future__ import annotations

import re
import uuid

import pytest

from test_api_auth import (
    assert_error,
    config_changes,
    gateway,  # noqa: F401
    populate,
    settings,  # noqa: F401
    snapshot,
    templates,  # noqa: F401
)

from conftest import Api

pytestmark = pytest.mark.anyio

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_created_workspace_is_returned_listed_and_readable(api: Api) -> None:
    created = await api.post("/workspaces", {"name": "Marketing"})
    assert created.status_code == 201, created.text
    workspace = created.json()["workspace"]
    assert set(workspace) == {"id", "orgId", "name", "createdAt", "updatedAt"}
    uuid.UUID(workspace["id"])
    assert workspace["orgId"] == api.org_id
    assert workspace["name"] == "Marketing"
    assert TIMESTAMP.match(workspace["createdAt"])
    assert TIMESTAMP.match(workspace["updatedAt"])

    listed = (await api.get("/workspaces")).json()
    assert listed["total"] == 2
    assert [w["id"] for w in listed["workspaces"]] == [api.workspace_id, workspace["id"]]

    got = await api.get(f"/workspaces/{workspace['id']}")
    assert got.status_code == 200
    assert got.json() == {"workspace": workspace}


async def test_workspace_is_renamed(api: Api) -> None:
    renamed = await api.patch(f"/workspaces/{api.workspace_id}", {"name": "Main"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["workspace"]["name"] == "Main"
    got = await api.get(f"/workspaces/{api.workspace_id}")
    assert got.json()["workspace"]["name"] == "Main"


async def test_renaming_a_workspace_to_its_own_name_is_allowed(api: Api) -> None:
    same = await api.patch(f"/workspaces/{api.workspace_id}", {"name": "default"})
    assert same.status_code == 200, same.text


@pytest.mark.parametrize("body", [{}, {"name": None}])
async def test_workspace_update_without_fields_is_refused_with_no_updates(
    api: Api, body: dict[str, object]
) -> None:
    before = await snapshot(api)
    response = await api.patch(f"/workspaces/{api.workspace_id}", body)
    assert_error(response, 400, "NO_UPDATES")
    assert await snapshot(api) == before


async def test_duplicate_workspace_name_is_refused_on_create_and_rename(api: Api) -> None:
    second = await api.post("/workspaces", {"name": "second"})
    assert second.status_code == 201
    before = await snapshot(api)
    assert_error(await api.post("/workspaces", {"name": "default"}), 409, "DUPLICATE")
    renamed = await api.patch(
        f"/workspaces/{second.json()['workspace']['id']}", {"name": "default"}
    )
    assert_error(renamed, 409, "DUPLICATE")
    assert await snapshot(api) == before


INVALID_NAMES: list[object] = [
    "",
    "x" * 101,
    "tab\there",
    "new\nline",
    "nul\x00byte",
    "bell\x07",
    "del\x7f",
    42,
    None,
    [],
    {"name": "x"},
]


async def test_invalid_workspace_name_is_refused(api: Api) -> None:
    before = await snapshot(api)
    for name in INVALID_NAMES:
        created = await api.post("/workspaces", {"name": name})
        assert created.status_code == 400, repr(name)
        assert_error(created, 400, "VALIDATION_ERROR")
        patched = await api.patch(f"/workspaces/{api.workspace_id}", {"name": name})
        assert patched.status_code == 400, repr(name)
        # `null` is no update at all; anything else is an invalid one.
        assert patched.json()["error"] == ("NO_UPDATES" if name is None else "VALIDATION_ERROR")
    assert await snapshot(api) == before


UNUSUAL_NAMES = [
    "x" * 100,
    "Robert'); DROP TABLE workspaces;--",
    "<script>alert('x')</script>",
    "名前 🚀 עברית",
    "%s %n {0} ${x}",
    "a\u202eb",
    "  padded  ",
]


async def test_unusual_but_printable_workspace_names_round_trip(api: Api) -> None:
    for name in UNUSUAL_NAMES:
        created = await api.post("/workspaces", {"name": name})
        assert created.status_code == 201, created.text
        got = await api.get(f"/workspaces/{created.json()['workspace']['id']}")
        assert got.json()["workspace"]["name"] == name
    listed = (await api.get("/workspaces")).json()
    assert listed["total"] == 1 + len(UNUSUAL_NAMES)
    assert sorted(w["name"] for w in listed["workspaces"]) == sorted(["default", *UNUSUAL_NAMES])


async def test_deleted_workspace_is_gone_with_everything_inside(api: Api) -> None:
    keep = await populate(api, api.workspace_id)
    created = await api.post("/workspaces", {"name": "doomed"})
    doomed = await populate(api, created.json()["workspace"]["id"])

    deleted = await api.delete(f"/workspaces/{doomed.workspace_id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": True, "id": doomed.workspace_id}

    assert_error(await api.get(f"/workspaces/{doomed.workspace_id}"), 404, "NOT_FOUND")
    assert_error(await api.delete(f"/workspaces/{doomed.workspace_id}"), 404, "NOT_FOUND")
    for path in (
        f"/connections/{doomed.connection_id}",
        f"/end-users/{doomed.end_user_id}",
        f"/partials/{doomed.partial_id}",
    ):
        assert_error(await api.get(path), 404, "NOT_FOUND")
    # The other workspace is untouched.
    for path in (
        f"/connections/{keep.connection_id}",
        f"/end-users/{keep.end_user_id}",
        f"/partials/{keep.partial_id}",
        f"/workspaces/{api.workspace_id}/integrations/{keep.integration_id}",
    ):
        assert (await api.get(path)).status_code == 200, path
    assert [w["id"] for w in (await api.get("/workspaces")).json()["workspaces"]] == [
        api.workspace_id
    ]


async def test_deleted_workspace_takes_its_mcp_servers_and_own_policies_along(api: Api) -> None:
    created = await api.post("/workspaces", {"name": "doomed"})
    doomed = created.json()["workspace"]["id"]

    async def create(path: str, body: dict[str, object], key: str) -> str:
        response = await api.post(path, body)
        assert response.status_code == 201, response.text
        found: str = response.json()[key]["id"]
        return found

    server = await create("/mcp/servers", {"workspaceId": doomed, "name": "s"}, "server")
    policy = await create(
        "/approval-policies",
        {"workspaceId": doomed, "name": "p", "decision": "block"},
        "policy",
    )
    kept_server = await create(
        "/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"}, "server"
    )
    org_policy = await create("/approval-policies", {"name": "o", "decision": "block"}, "policy")

    assert (await api.delete(f"/workspaces/{doomed}")).status_code == 200
    assert_error(await api.get(f"/mcp/servers/{server}"), 404, "NOT_FOUND")
    assert_error(await api.get(f"/approval-policies/{policy}"), 404, "NOT_FOUND")
    servers = (await api.get("/mcp/servers")).json()["servers"]
    assert [s["id"] for s in servers] == [kept_server]
    policies = (await api.get("/approval-policies")).json()["policies"]
    assert [p["id"] for p in policies] == [org_policy]


async def test_workspace_changes_are_recorded_in_the_activity_log(api: Api) -> None:
    created = await api.post("/workspaces", {"name": "audited"})
    workspace_id = created.json()["workspace"]["id"]
    await api.patch(f"/workspaces/{workspace_id}", {"name": "audited 2"})
    await api.delete(f"/workspaces/{workspace_id}")

    entries = [e for e in await config_changes(api) if e["targetId"] == workspace_id]
    assert [e["change"] for e in entries] == ["deleted", "updated", "created"]
    key_id = (await api.gateway.store.api_keys.list(api.org_id))[0].id
    for entry in entries:
        assert entry["type"] == "config_change"
        assert entry["targetType"] == "workspace"
        assert entry["actor"] == f"api_key:{key_id}"
        assert entry["orgId"] == api.org_id
        assert TIMESTAMP.match(entry["createdAt"])


async def test_refused_workspace_requests_leave_no_activity(api: Api) -> None:
    before = await config_changes(api)
    await api.post("/workspaces", {"name": ""})
    await api.post("/workspaces", {"name": "default"})
    await api.patch(f"/workspaces/{api.workspace_id}", {})
    await api.delete(f"/workspaces/{uuid.uuid4()}")
    assert await config_changes(api) == before
