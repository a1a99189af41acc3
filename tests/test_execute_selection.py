"""Which workspace integration a call targets, and the checks that come right after selecting it."""

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


async def _who(ctx: ActionContext, data: JSONObject) -> JSONObject:
    return {"alias": ctx.integration_alias, "action": ctx.action_name, "input": data}


def _action(name: str, schema: JSONObject | None = None) -> Action:
    return Action(
        name=name,
        display_name=name,
        description=f"Test action {name}.",
        input_schema=schema or {"type": "object"},
        run=_who,
    )


PROBE = Integration(
    name="probe",
    display_name="Probe",
    description="Test-only integration that reports which alias ran.",
    auth_kind=AuthKind.NONE,
    actions=(
        _action("read"),
        _action("write"),
        _action(
            "strict",
            {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "required": ["n"],
                "additionalProperties": False,
            },
        ),
    ),
)

KEYED = Integration(
    name="keyed",
    display_name="Keyed",
    description="Test-only integration that needs an API key.",
    auth_kind=AuthKind.API_KEY,
    actions=(_action("read", {"type": "object", "required": ["n"]}),),
)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with open_api(settings, Catalog([PROBE, KEYED, kv_store.integration])) as opened:
        yield opened


def refused(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str)
    return body


def ran_alias(response: httpx2.Response) -> str:
    assert response.status_code == 200, response.text
    alias: str = response.json()["output"]["alias"]
    return alias


async def two_aliases(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    first = await api.configure("probe", integrationAlias="probe_a")
    second = await api.configure("probe", integrationAlias="probe_b")
    return first, second


async def test_the_only_configured_instance_is_selected_without_alias_or_id(api: Api) -> None:
    await api.configure("probe", integrationAlias="solo")
    response = await api.execute(integrationName="probe", actionName="read")
    assert ran_alias(response) == "solo"


async def test_several_instances_without_alias_or_id_is_a_validation_error_naming_aliases(
    api: Api,
) -> None:
    await two_aliases(api)
    await api.configure("kv-store")
    response = await api.execute(integrationName="probe", actionName="read")
    body = refused(response, 400, "VALIDATION_ERROR")
    assert sorted(body["aliases"]) == ["probe_a", "probe_b"]
    assert body["field"] == "integrationAlias"


async def test_alias_selects_its_instance(api: Api) -> None:
    await two_aliases(api)
    for alias in ("probe_a", "probe_b"):
        response = await api.execute(
            integrationName="probe", actionName="read", integrationAlias=alias
        )
        assert ran_alias(response) == alias


async def test_workspace_integration_id_selects_its_instance(api: Api) -> None:
    first, second = await two_aliases(api)
    for configured in (first, second):
        response = await api.execute(
            integrationName="probe", actionName="read", workspaceIntegrationId=configured["id"]
        )
        assert ran_alias(response) == configured["integrationAlias"]


async def test_workspace_integration_id_and_a_matching_alias_may_be_sent_together(
    api: Api,
) -> None:
    first, _second = await two_aliases(api)
    response = await api.execute(
        integrationName="probe",
        actionName="read",
        workspaceIntegrationId=first["id"],
        integrationAlias="probe_a",
    )
    assert ran_alias(response) == "probe_a"


async def test_workspace_integration_id_and_a_different_alias_is_a_validation_error(
    api: Api,
) -> None:
    first, _second = await two_aliases(api)
    response = await api.execute(
        integrationName="probe",
        actionName="read",
        workspaceIntegrationId=first["id"],
        integrationAlias="probe_b",
    )
    refused(response, 400, "VALIDATION_ERROR")


async def test_unknown_alias_is_integration_not_found(api: Api) -> None:
    await two_aliases(api)
    response = await api.execute(
        integrationName="probe", actionName="read", integrationAlias="probe_c"
    )
    refused(response, 400, "INTEGRATION_NOT_FOUND")


async def test_alias_of_another_integration_is_integration_not_found(api: Api) -> None:
    await api.configure("probe", integrationAlias="probe_a")
    await api.configure("kv-store", integrationAlias="notes")
    response = await api.execute(
        integrationName="probe", actionName="read", integrationAlias="notes"
    )
    refused(response, 400, "INTEGRATION_NOT_FOUND")


async def test_integration_not_configured_in_the_workspace_is_integration_not_found(
    api: Api,
) -> None:
    await api.configure("kv-store")
    response = await api.execute(integrationName="probe", actionName="read")
    refused(response, 400, "INTEGRATION_NOT_FOUND")


async def test_integration_configured_only_in_another_workspace_is_integration_not_found(
    api: Api,
) -> None:
    other = await api.post("/workspaces", {"name": "other"})
    other_id = other.json()["workspace"]["id"]
    created = await api.post(
        f"/workspaces/{other_id}/integrations",
        {"integrationName": "probe", "connectionStrategy": "fixed"},
    )
    assert created.status_code == 201
    response = await api.execute(integrationName="probe", actionName="read")
    refused(response, 400, "INTEGRATION_NOT_FOUND")


async def test_workspace_integration_id_of_another_workspace_is_not_found(api: Api) -> None:
    await api.configure("probe")
    other = await api.post("/workspaces", {"name": "other"})
    other_id = other.json()["workspace"]["id"]
    foreign = await api.post(
        f"/workspaces/{other_id}/integrations",
        {"integrationName": "probe", "connectionStrategy": "fixed"},
    )
    response = await api.execute(
        integrationName="probe",
        actionName="read",
        workspaceIntegrationId=foreign.json()["integration"]["id"],
    )
    refused(response, 404, "NOT_FOUND")


async def test_unknown_workspace_integration_id_is_not_found(api: Api) -> None:
    await api.configure("probe")
    response = await api.execute(
        integrationName="probe",
        actionName="read",
        workspaceIntegrationId="pi_00000000-0000-0000-0000-000000000000",
    )
    refused(response, 404, "NOT_FOUND")


async def test_workspace_integration_id_of_another_integration_is_a_validation_error(
    api: Api,
) -> None:
    await api.configure("probe")
    notes = await api.configure("kv-store")
    response = await api.execute(
        integrationName="probe", actionName="read", workspaceIntegrationId=notes["id"]
    )
    body = refused(response, 400, "VALIDATION_ERROR")
    assert body["field"] == "workspaceIntegrationId"


async def test_integration_missing_from_the_catalog_is_integration_not_found(api: Api) -> None:
    response = await api.execute(integrationName="slack", actionName="send_channel_message")
    refused(response, 400, "INTEGRATION_NOT_FOUND")


async def test_action_missing_from_the_integration_is_not_found(api: Api) -> None:
    await api.configure("probe")
    response = await api.execute(integrationName="probe", actionName="send_msg")
    refused(response, 404, "NOT_FOUND")


async def test_action_outside_allowed_actions_is_refused_with_action_not_allowed(
    api: Api,
) -> None:
    await api.configure("probe", allowedActions=["read"])
    allowed = await api.execute(integrationName="probe", actionName="read")
    assert allowed.status_code == 200, allowed.text
    response = await api.execute(integrationName="probe", actionName="write")
    refused(response, 403, "ACTION_NOT_ALLOWED")


async def test_allowed_actions_apply_per_alias(api: Api) -> None:
    await api.configure("probe", integrationAlias="reader", allowedActions=["read"])
    await api.configure("probe", integrationAlias="writer", allowedActions=["write"])
    as_writer = await api.execute(
        integrationName="probe", actionName="write", integrationAlias="writer"
    )
    assert ran_alias(as_writer) == "writer"
    as_reader = await api.execute(
        integrationName="probe", actionName="write", integrationAlias="reader"
    )
    refused(as_reader, 403, "ACTION_NOT_ALLOWED")


async def test_empty_allowed_actions_allow_nothing(api: Api) -> None:
    await api.configure("probe", allowedActions=[])
    response = await api.execute(integrationName="probe", actionName="read")
    refused(response, 403, "ACTION_NOT_ALLOWED")


async def test_allowed_actions_updated_to_null_allow_everything_again(api: Api) -> None:
    configured = await api.configure("probe", allowedActions=["read"])
    before = await api.execute(integrationName="probe", actionName="write")
    refused(before, 403, "ACTION_NOT_ALLOWED")
    patched = await api.patch(
        f"/workspaces/{api.workspace_id}/integrations/{configured['id']}",
        {"allowedActions": None},
    )
    assert patched.status_code == 200, patched.text
    after = await api.execute(integrationName="probe", actionName="write")
    assert ran_alias(after) == "probe"


async def test_ambiguity_is_reported_before_allowed_actions(api: Api) -> None:
    await api.configure("probe", integrationAlias="probe_a", allowedActions=[])
    await api.configure("probe", integrationAlias="probe_b", allowedActions=[])
    response = await api.execute(integrationName="probe", actionName="read")
    refused(response, 400, "VALIDATION_ERROR")


async def test_allowed_actions_are_checked_before_the_input(api: Api) -> None:
    await api.configure("probe", allowedActions=["read"])
    response = await api.execute(integrationName="probe", actionName="strict", input={"n": "x"})
    refused(response, 403, "ACTION_NOT_ALLOWED")


async def test_input_is_validated_before_the_connection_is_resolved(api: Api) -> None:
    await api.configure("keyed", connectionStrategy="per_user")
    invalid = await api.execute(integrationName="keyed", actionName="read", endUserId="u1")
    body = refused(invalid, 400, "VALIDATION_ERROR")
    assert body["field"] == "n"
    valid = await api.execute(
        integrationName="keyed", actionName="read", endUserId="u1", input={"n": 1}
    )
    refused(valid, 400, "CONNECTION_REQUIRED")


@pytest.mark.parametrize(
    ("given", "field"),
    [({}, "n"), ({"n": "one"}, "n"), ({"n": 1, "extra": True}, "extra")],
    ids=["missing", "wrong-type", "unknown-key"],
)
async def test_input_failing_the_action_schema_is_a_validation_error_naming_the_field(
    api: Api, given: dict[str, Any], field: str
) -> None:
    await api.configure("probe")
    response = await api.execute(integrationName="probe", actionName="strict", input=given)
    body = refused(response, 400, "VALIDATION_ERROR")
    assert body["field"] == field


async def test_selection_follows_alias_renames(api: Api) -> None:
    configured = await api.configure("probe", integrationAlias="old_name")
    renamed = await api.patch(
        f"/workspaces/{api.workspace_id}/integrations/{configured['id']}",
        {"integrationAlias": "new_name"},
    )
    assert renamed.status_code == 200, renamed.text
    old = await api.execute(integrationName="probe", actionName="read", integrationAlias="old_name")
    refused(old, 400, "INTEGRATION_NOT_FOUND")
    new = await api.execute(integrationName="probe", actionName="read", integrationAlias="new_name")
    assert ran_alias(new) == "new_name"
