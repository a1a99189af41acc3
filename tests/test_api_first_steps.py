"""Errors a new user meets first on REST say everything at once: every missing field of a
body, and which workspaces there are when a call must name one."""

from __future__ import annotations

import pytest

from test_api_auth import (
    add_workspace,
    assert_error,
    gateway,  # noqa: F401
    settings,  # noqa: F401
    templates,  # noqa: F401
)

from conftest import Api

pytestmark = pytest.mark.anyio


async def test_a_connection_missing_several_fields_names_them_all_in_one_error(api: Api) -> None:
    before = (await api.get("/connections")).json()
    refused = assert_error(
        await api.post("/connections", {"integrationName": "http"}), 400, "VALIDATION_ERROR"
    )
    assert refused["fields"] == ["type", "displayName", "externalId", "values"]
    assert refused["field"] == "type"
    assert (await api.get("/connections")).json() == before


async def test_one_missing_field_is_named_as_before(api: Api) -> None:
    body = {"integrationName": "http", "type": "bearer", "displayName": "d", "externalId": "e"}
    refused = assert_error(await api.post("/connections", body), 400, "VALIDATION_ERROR")
    assert refused["field"] == "values"
    assert "fields" not in refused


async def test_a_call_without_workspace_in_an_org_of_several_lists_them(api: Api) -> None:
    call = {"integrationName": "kv-store", "actionName": "get", "input": {"key": "k"}}
    await api.configure("kv-store", settings={"persistence": {"scope": "workspace"}})
    implied = await api.post("/actions/execute", call)
    assert implied.status_code == 200, implied.text  # one workspace: it is implied

    second = await add_workspace(api, "demo")
    refused = assert_error(await api.post("/actions/execute", call), 400, "VALIDATION_ERROR")
    assert refused["field"] == "workspaceId"
    assert refused["workspaces"] == [
        {"id": api.workspace_id, "name": "default"},
        {"id": second, "name": "demo"},
    ]
    assert api.workspace_id in refused["message"]
    assert second in refused["message"]
    named = await api.post("/actions/execute", {**call, "workspaceId": api.workspace_id})
    assert named.status_code == 200, named.text
