"""`POST /api/v1/actions/execute` accepts both documented request dialects (docs 000 and 001)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.builtin import kv_store
from treadle.catalog.model import JSONObject
from treadle.settings import Settings

from conftest import Api, open_api

pytestmark = pytest.mark.anyio


async def _echo(ctx: ActionContext, data: JSONObject) -> JSONObject:
    return {
        "input": data,
        "alias": ctx.integration_alias,
        "workspaceId": ctx.workspace_id,
        "endUserId": ctx.end_user_id,
        "connection": None if ctx.connection is None else ctx.connection.external_id,
    }


PROBE = Integration(
    name="probe",
    display_name="Probe",
    description="Test-only integration that echoes what it was given.",
    auth_kind=AuthKind.NONE,
    actions=(
        Action(
            name="echo",
            display_name="Echo",
            description="Echo the input.",
            input_schema={
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
            run=_echo,
        ),
        Action(
            name="anything",
            display_name="Anything",
            description="Echo any input; nothing is required.",
            input_schema={"type": "object"},
            run=_echo,
        ),
    ),
)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with open_api(settings, Catalog([PROBE, kv_store.integration])) as opened:
        yield opened


async def execute(api: Api, body: dict[str, Any]) -> httpx2.Response:
    return await api.post("/actions/execute", body)


async def add_workspace(api: Api, name: str) -> str:
    created = await api.post("/workspaces", {"name": name})
    assert created.status_code == 201, created.text
    workspace_id: str = created.json()["workspace"]["id"]
    return workspace_id


def assert_success(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"success", "output", "duration"}
    assert body["success"] is True
    assert isinstance(body["duration"], int)
    assert body["duration"] >= 0
    return body


async def test_current_dialect_runs_the_action_and_answers_success_output_duration(
    api: Api,
) -> None:
    await api.configure("probe")
    response = await execute(
        api,
        {
            "integrationName": "probe",
            "actionName": "echo",
            "workspaceId": api.workspace_id,
            "input": {"text": "hi"},
        },
    )
    body = assert_success(response)
    assert body["output"]["input"] == {"text": "hi"}
    assert body["output"]["workspaceId"] == api.workspace_id


async def test_older_dialect_with_piece_name_and_project_id_runs_the_same_action(
    api: Api,
) -> None:
    await api.configure("probe")
    response = await execute(
        api,
        {
            "pieceName": "probe",
            "actionName": "echo",
            "projectId": api.workspace_id,
            "input": {"text": "from 001"},
        },
    )
    body = assert_success(response)
    assert body["output"]["input"] == {"text": "from 001"}
    assert body["output"]["workspaceId"] == api.workspace_id


async def test_older_dialect_connection_id_selects_a_connection_by_external_id(api: Api) -> None:
    connection = await api.post(
        "/connections",
        {
            "integrationName": "probe",
            "type": "api_key",
            "displayName": "Probe",
            "externalId": "conn_probe_abc",
            "values": {"api_key": "sk-dialect-secret"},
            "workspaceId": api.workspace_id,
        },
    )
    assert connection.status_code == 201, connection.text
    await api.configure("probe")
    by_external = await execute(
        api,
        {
            "pieceName": "probe",
            "actionName": "echo",
            "input": {"text": "x"},
            "connectionId": "conn_probe_abc",
        },
    )
    assert assert_success(by_external)["output"]["connection"] == "conn_probe_abc"
    by_uuid = await execute(
        api,
        {
            "pieceName": "probe",
            "actionName": "echo",
            "input": {"text": "x"},
            "connectionId": connection.json()["connection"]["id"],
        },
    )
    assert assert_success(by_uuid)["output"]["connection"] == "conn_probe_abc"
    assert "sk-dialect-secret" not in by_external.text + by_uuid.text


async def test_current_dialect_accepts_every_documented_field(api: Api) -> None:
    configured = await api.configure("probe", integrationAlias="probe_main")
    response = await execute(
        api,
        {
            "integrationName": "probe",
            "actionName": "echo",
            "input": {"text": "all fields"},
            "workspaceId": api.workspace_id,
            "workspaceIntegrationId": configured["id"],
            "integrationAlias": "probe_main",
            "endUserId": "user-1",
            "partialIds": [],
            "idempotencyKey": "order-123",
        },
    )
    output = assert_success(response)["output"]
    assert output["alias"] == "probe_main"
    assert output["endUserId"] == "user-1"


async def test_omitted_input_defaults_to_an_empty_object(api: Api) -> None:
    await api.configure("probe")
    response = await execute(api, {"integrationName": "probe", "actionName": "anything"})
    assert assert_success(response)["output"]["input"] == {}


async def test_omitted_input_is_validated_like_an_empty_object(api: Api) -> None:
    await api.configure("probe")
    response = await execute(api, {"integrationName": "probe", "actionName": "echo"})
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"
    assert response.json()["field"] == "text"


async def test_both_integration_names_may_be_sent_when_they_agree(api: Api) -> None:
    await api.configure("probe")
    body = {"integrationName": "probe", "pieceName": "probe", "actionName": "anything"}
    assert_success(await execute(api, body))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"integrationName": "probe", "pieceName": "kv-store"}, "integrationName"),
        ({"integrationName": "probe", "projectId": "00000000-0000-0000-0000-000000000000"}, None),
    ],
    ids=["integration-vs-piece", "workspace-vs-project"],
)
async def test_disagreeing_dialect_synonyms_are_a_validation_error(
    api: Api, body: dict[str, Any], field: str | None
) -> None:
    await api.configure("probe")
    sent = {"actionName": "anything", "workspaceId": api.workspace_id, **body}
    response = await execute(api, sent)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "VALIDATION_ERROR"
    if field is not None:
        assert response.json()["field"] == field


async def test_missing_integration_name_in_both_dialects_is_a_validation_error(api: Api) -> None:
    response = await execute(api, {"actionName": "anything", "workspaceId": api.workspace_id})
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"
    assert response.json()["field"] == "integrationName"


async def test_missing_action_name_is_a_validation_error(api: Api) -> None:
    response = await execute(api, {"integrationName": "probe"})
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"
    assert response.json()["field"] == "actionName"


async def test_workspace_may_be_omitted_while_the_org_has_one_workspace(api: Api) -> None:
    await api.configure("probe")
    response = await execute(api, {"integrationName": "probe", "actionName": "anything"})
    assert assert_success(response)["output"]["workspaceId"] == api.workspace_id


async def test_omitted_workspace_is_a_validation_error_once_the_org_has_several(api: Api) -> None:
    await api.configure("probe")
    await add_workspace(api, "second")
    response = await execute(api, {"integrationName": "probe", "actionName": "anything"})
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"
    assert response.json()["field"] == "workspaceId"


async def test_workspace_restricted_key_runs_in_its_own_workspace_without_naming_it(
    api: Api,
) -> None:
    second = await add_workspace(api, "second")
    store = api.gateway.store
    async with store.db.write("test") as txn:
        _key, token = await store.api_keys.create(
            txn, api.org_id, name="scoped", workspace_id=second
        )
    headers = {"Authorization": f"Bearer {token}"}
    configured = await api.post(
        f"/workspaces/{second}/integrations",
        {"integrationName": "probe", "connectionStrategy": "fixed"},
        headers=headers,
    )
    assert configured.status_code == 201, configured.text
    own = await api.post(
        "/actions/execute",
        {"integrationName": "probe", "actionName": "anything"},
        headers=headers,
    )
    assert assert_success(own)["output"]["workspaceId"] == second
    other = await api.post(
        "/actions/execute",
        {"integrationName": "probe", "actionName": "anything", "projectId": api.workspace_id},
        headers=headers,
    )
    assert other.status_code == 403
    assert other.json()["error"] == "SCOPE_DENIED"


async def test_unknown_workspace_is_not_found(api: Api) -> None:
    response = await execute(
        api,
        {
            "integrationName": "probe",
            "actionName": "anything",
            "workspaceId": "00000000-0000-0000-0000-000000000000",
        },
    )
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "body",
    [
        {"integrationName": "probe", "actionName": "anything", "input": None},
        {"integrationName": "probe", "actionName": "anything", "input": ["a"]},
        {"integrationName": "probe", "actionName": "anything", "input": "text"},
        {"integrationName": "probe", "actionName": "anything", "surprise": 1},
        {"integrationName": "probe", "actionName": "anything", "partialIds": "p1"},
        {"integrationName": "Probe!", "actionName": "anything"},
        {"integrationName": "probe", "actionName": "any thing"},
        {"integrationName": "probe", "actionName": "anything", "endUserId": ""},
    ],
    ids=[
        "null-input",
        "list-input",
        "string-input",
        "unknown-field",
        "partial-ids-not-a-list",
        "bad-integration-name",
        "bad-action-name",
        "empty-end-user",
    ],
)
async def test_malformed_bodies_are_validation_errors_not_crashes(
    api: Api, body: dict[str, Any]
) -> None:
    await api.configure("probe")
    response = await execute(api, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"', b"{"])
async def test_a_body_that_is_not_a_json_object_is_a_validation_error(api: Api, raw: bytes) -> None:
    response = await api.request(
        "POST",
        "/actions/execute",
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"


async def test_execute_without_an_api_key_is_unauthorized(api: Api) -> None:
    await api.configure("probe")
    response = await api.client.post(
        "/api/v1/actions/execute",
        json={"integrationName": "probe", "actionName": "anything"},
        headers={"Authorization": ""},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "UNAUTHORIZED"
