"""The activity log: what is recorded, how it filters and pages, and what it never shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.builtin import kv_store
from treadle.catalog.model import JSONObject
from treadle.errors import ActionRuntimeError, UpstreamError
from treadle.settings import Settings

from conftest import Api, open_api

pytestmark = pytest.mark.anyio

SECRET = "sk-activity-8c6a4e2f0d"


async def _ok(ctx: ActionContext, data: JSONObject) -> Any:
    return {"done": True}


async def _upstream(ctx: ActionContext, data: JSONObject) -> Any:
    raise UpstreamError("not_found", "no such thing")


async def _broken(ctx: ActionContext, data: JSONObject) -> Any:
    raise ActionRuntimeError("unreachable", reason="unreachable")


def _action(name: str, run: Any) -> Action:
    return Action(
        name=name,
        display_name=name,
        description=f"Test action {name}.",
        input_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        run=run,
    )


PROBE = Integration(
    name="probe",
    display_name="Probe",
    description="Test-only integration with one action per outcome.",
    auth_kind=AuthKind.NONE,
    actions=(_action("ok", _ok), _action("upstream", _upstream), _action("broken", _broken)),
)
KEYED = Integration(
    name="keyed",
    display_name="Keyed",
    description="Test-only integration with a connection.",
    auth_kind=AuthKind.API_KEY,
    actions=(_action("ok", _ok),),
)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with open_api(settings, Catalog([PROBE, KEYED, kv_store.integration])) as opened:
        yield opened


async def activity(api: Api, **params: Any) -> dict[str, Any]:
    response = await api.get("/activity", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def executions(api: Api, **params: Any) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = (await activity(api, type="action_execution", **params))[
        "activity"
    ]
    return entries


async def latest_execution(api: Api) -> dict[str, Any]:
    return (await executions(api, limit=1))[0]


async def everything(api: Api, **params: Any) -> list[dict[str, Any]]:
    """Every entry, following nextCursor page by page."""
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await activity(api, **params, **({} if cursor is None else {"cursor": cursor}))
        seen.extend(page["activity"])
        cursor = page["nextCursor"]
        if cursor is None:
            return seen


async def test_a_successful_execution_is_recorded_with_its_context(api: Api) -> None:
    await api.configure("probe", integrationAlias="probe_main")
    response = await api.execute(
        integrationName="probe", actionName="ok", endUserId="alice", input={"n": 1}
    )
    assert response.status_code == 200
    entry = await latest_execution(api)
    assert entry["type"] == "action_execution"
    assert entry["source"] == "rest"
    assert entry["status"] == "succeeded"
    assert entry["workspaceId"] == api.workspace_id
    assert entry["orgId"] == api.org_id
    assert entry["integrationName"] == "probe"
    assert entry["integrationAlias"] == "probe_main"
    assert entry["actionName"] == "ok"
    assert entry["endUserId"] == "alice"
    assert entry["errorCode"] is None
    assert isinstance(entry["durationMs"], int)
    assert entry["durationMs"] >= 0
    assert entry["input"] == {"n": 1}
    assert entry["actor"].startswith("api_key:")
    assert entry["createdAt"].endswith("Z")


@pytest.mark.parametrize(
    ("action", "input", "status", "code"),
    [
        ("upstream", {}, "upstream_failed", None),
        ("broken", {}, "failed", "ACTION_FAILED"),
        ("ok", {"n": "one"}, "refused", "VALIDATION_ERROR"),
        ("missing_action", {}, None, None),
    ],
    ids=["upstream", "action-failed", "validation", "unknown-action"],
)
async def test_each_outcome_is_recorded_with_status_and_error_code(
    api: Api, action: str, input: dict[str, Any], status: str | None, code: str | None
) -> None:
    await api.configure("probe")
    await api.execute(integrationName="probe", actionName=action, input=input)
    entries = await executions(api)
    if status is None:
        assert entries == []  # refused before any workspace integration was selected
        return
    assert len(entries) == 1
    assert (entries[0]["status"], entries[0]["errorCode"]) == (status, code)
    assert isinstance(entries[0]["durationMs"], int)


async def test_refusals_after_selection_are_recorded(api: Api) -> None:
    await api.configure("probe", allowedActions=["ok"])
    await api.configure("keyed", connectionStrategy="per_user")
    await api.execute(integrationName="probe", actionName="broken")
    await api.execute(integrationName="keyed", actionName="ok", endUserId="bob")
    entries = await executions(api)
    assert [(e["status"], e["errorCode"]) for e in entries] == [
        ("refused", "CONNECTION_REQUIRED"),
        ("refused", "ACTION_NOT_ALLOWED"),
    ]
    assert entries[0]["endUserId"] == "bob"


async def test_configuration_changes_are_recorded(api: Api) -> None:
    configured = await api.configure("probe")
    created = await api.post(
        "/partials",
        {
            "workspaceId": api.workspace_id,
            "integrationName": "probe",
            "name": "preset",
            "values": {"n": 1},
        },
    )
    partial_id = created.json()["partial"]["id"]
    await api.patch(f"/partials/{partial_id}", {"values": {"n": 2}})
    await api.delete(f"/partials/{partial_id}")
    await api.patch(
        f"/workspaces/{api.workspace_id}/integrations/{configured['id']}",
        {"allowedActions": ["ok"]},
    )
    await api.delete(f"/workspaces/{api.workspace_id}/integrations/{configured['id']}")
    entries = (await activity(api, type="config_change", workspaceId=api.workspace_id))["activity"]
    changes = [(e["targetType"], e["change"], e["targetId"]) for e in entries]
    assert changes[:6] == [
        ("workspace_integration", "deleted", configured["id"]),
        ("workspace_integration", "updated", configured["id"]),
        ("partial", "deleted", partial_id),
        ("partial", "updated", partial_id),
        ("partial", "created", partial_id),
        ("workspace_integration", "created", configured["id"]),
    ]
    for entry in entries[:6]:
        assert (entry["status"], entry["source"], entry["type"]) == ("ok", "rest", "config_change")
        assert entry["actor"].startswith("api_key:")
    # The first run's own setup is recorded too, as done from the command line.
    assert (entries[-1]["targetType"], entries[-1]["source"]) == ("workspace", "cli")


async def test_entries_are_newest_first(api: Api) -> None:
    await api.configure("probe")
    for n in range(3):
        await api.execute(integrationName="probe", actionName="ok", input={"n": n})
    entries = await executions(api)
    assert [e["input"]["n"] for e in entries] == [2, 1, 0]
    stamps = [e["createdAt"] for e in entries]
    assert stamps == sorted(stamps, reverse=True)


async def test_cursor_pagination_visits_every_entry_once(api: Api) -> None:
    await api.configure("probe")
    for n in range(7):
        await api.execute(integrationName="probe", actionName="ok", input={"n": n})
    first = await activity(api, type="action_execution", limit=3)
    assert len(first["activity"]) == 3
    assert isinstance(first["nextCursor"], str)
    paged = await everything(api, type="action_execution", limit=3)
    assert [e["input"]["n"] for e in paged] == [6, 5, 4, 3, 2, 1, 0]
    assert len({e["id"] for e in paged}) == 7
    exact = await activity(api, type="action_execution", limit=7)
    assert exact["nextCursor"] is None


async def test_new_entries_do_not_shift_pages_already_being_read(api: Api) -> None:
    await api.configure("probe")
    for n in range(4):
        await api.execute(integrationName="probe", actionName="ok", input={"n": n})
    first = await activity(api, type="action_execution", limit=2)
    await api.execute(integrationName="probe", actionName="ok", input={"n": 99})
    second = await activity(api, type="action_execution", limit=2, cursor=first["nextCursor"])
    assert [e["input"]["n"] for e in second["activity"]] == [1, 0]


async def test_filters_by_workspace_type_and_status(api: Api) -> None:
    await api.configure("probe")
    other = (await api.post("/workspaces", {"name": "other"})).json()["workspace"]["id"]
    made = await api.post(
        f"/workspaces/{other}/integrations",
        {"integrationName": "probe", "connectionStrategy": "fixed"},
    )
    assert made.status_code == 201
    await api.execute(integrationName="probe", actionName="ok")
    await api.execute(integrationName="probe", actionName="broken")
    await api.execute(integrationName="probe", actionName="ok", workspaceId=other)

    here = await everything(api, workspaceId=api.workspace_id)
    assert {e["workspaceId"] for e in here} == {api.workspace_id}
    there = await executions(api, workspaceId=other)
    assert len(there) == 1
    configs = await everything(api, type="config_change")
    assert configs
    assert {e["type"] for e in configs} == {"config_change"}
    failed = await everything(api, status="failed")
    assert [(e["actionName"], e["errorCode"]) for e in failed] == [("broken", "ACTION_FAILED")]
    succeeded = await executions(api, status="succeeded", workspaceId=api.workspace_id)
    assert [e["actionName"] for e in succeeded] == ["ok"]


async def test_since_is_inclusive_and_until_exclusive(api: Api) -> None:
    await api.configure("probe")
    for n in range(5):
        await api.execute(integrationName="probe", actionName="ok", input={"n": n})
    entries = await everything(api)
    pivot = entries[len(entries) // 2]["createdAt"]
    since = await everything(api, since=pivot)
    until = await everything(api, until=pivot)
    assert [e["id"] for e in since] == [e["id"] for e in entries if e["createdAt"] >= pivot]
    assert [e["id"] for e in until] == [e["id"] for e in entries if e["createdAt"] < pivot]
    assert len(since) + len(until) == len(entries)
    assert await everything(api, since="2999-01-01T00:00:00Z") == []
    assert len(await everything(api, until="2999-01-01T00:00:00.000Z")) == len(entries)


@pytest.mark.parametrize(
    "params",
    [
        {"type": "everything"},
        {"status": "great"},
        {"since": "yesterday"},
        {"until": "2025-13-01"},
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "ten"},
        {"limit": "²"},
        {"limit": "١٢"},
        {"limit": " 5"},
        {"cursor": "9" * 5000},
        {"cursor": str(2**63)},
    ],
)
async def test_invalid_filters_are_validation_errors(api: Api, params: dict[str, str]) -> None:
    response = await api.get("/activity", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "VALIDATION_ERROR"


async def test_unknown_workspace_filter_is_not_found(api: Api) -> None:
    response = await api.get(
        "/activity", params={"workspaceId": "00000000-0000-0000-0000-000000000000"}
    )
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"


async def test_workspace_restricted_key_sees_only_its_workspace(api: Api) -> None:
    await api.configure("probe")
    other = (await api.post("/workspaces", {"name": "other"})).json()["workspace"]["id"]
    store = api.gateway.store
    async with store.db.write("test") as txn:
        _key, token = await store.api_keys.create(
            txn, api.org_id, name="scoped", workspace_id=other
        )
    await api.execute(integrationName="probe", actionName="ok")
    scoped = {"Authorization": f"Bearer {token}"}
    mine = await api.get("/activity", headers=scoped)
    assert mine.status_code == 200
    assert {e["workspaceId"] for e in mine.json()["activity"]} == {other}
    denied = await api.get("/activity", params={"workspaceId": api.workspace_id}, headers=scoped)
    assert denied.status_code == 403
    assert denied.json()["error"] == "SCOPE_DENIED"


async def test_another_orgs_activity_is_invisible(api: Api) -> None:
    await api.configure("probe")
    await api.execute(integrationName="probe", actionName="ok")
    store = api.gateway.store
    async with store.db.write("test") as txn:
        org = await store.orgs.create(txn, "other org")
        await store.workspaces.create(txn, org.id, "default")
        _key, token = await store.api_keys.create(txn, org.id, name="other")
    theirs = await api.get("/activity", headers={"Authorization": f"Bearer {token}"})
    assert theirs.status_code == 200
    assert all(e["orgId"] == org.id for e in theirs.json()["activity"])
    assert all(e["type"] != "action_execution" for e in theirs.json()["activity"])
    foreign = await api.get(
        "/activity",
        params={"workspaceId": api.workspace_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert foreign.status_code == 404


async def test_recorded_input_redacts_secret_named_keys_at_any_depth(api: Api) -> None:
    await api.configure("probe")
    sent = {
        "n": 1,
        "password": "hunter2",
        "token": "tok-1",
        "apiKey": "key-1",
        "api_key": "key-2",
        "Authorization": "Bearer abc",
        "nested": {"clientSecret": "s-1", "list": [{"access_token": "t-2"}, "plain"]},
        "channel": "C123",
    }
    response = await api.execute(integrationName="probe", actionName="ok", input=sent)
    assert response.status_code == 200
    entry = await latest_execution(api)
    assert entry["input"] == {
        "n": 1,
        "password": "[redacted]",
        "token": "[redacted]",
        "apiKey": "[redacted]",
        "api_key": "[redacted]",
        "Authorization": "[redacted]",
        "nested": {"clientSecret": "[redacted]", "list": [{"access_token": "[redacted]"}, "plain"]},
        "channel": "C123",
    }


async def test_recorded_input_is_the_merged_input_with_enforced_values_redacted(
    api: Api,
) -> None:
    await api.configure("kv-store", settings={"persistence": {"scope": "workspace"}})
    created = await api.post(
        "/partials",
        {
            "workspaceId": api.workspace_id,
            "integrationName": "kv-store",
            "actionName": "put",
            "name": "locked key",
            "values": {"key": "tenant-42-private"},
            "enforcedKeys": ["key"],
            "isDefault": True,
        },
    )
    assert created.status_code == 201
    response = await api.execute(
        integrationName="kv-store", actionName="put", input={"key": "mine", "value": "v"}
    )
    assert response.status_code == 200
    entry = await latest_execution(api)
    assert entry["input"] == {"key": "[redacted]", "value": "v"}
    assert "tenant-42-private" not in (await api.get("/activity")).text


async def test_refused_execution_records_the_redacted_runtime_input(api: Api) -> None:
    await api.configure("probe", allowedActions=["ok"])
    await api.execute(integrationName="probe", actionName="broken", input={"password": "pw-9"})
    entry = await latest_execution(api)
    assert entry["status"] == "refused"
    assert entry["input"] == {"password": "[redacted]"}


async def test_connection_secrets_never_reach_the_activity_log(api: Api) -> None:
    made = await api.post(
        "/connections",
        {
            "integrationName": "keyed",
            "type": "api_key",
            "displayName": "Keyed",
            "externalId": "conn_keyed",
            "values": {"api_key": SECRET},
            "workspaceId": api.workspace_id,
        },
    )
    assert made.status_code == 201
    await api.configure("keyed", connectionId="conn_keyed")
    assert (await api.execute(integrationName="keyed", actionName="ok")).status_code == 200
    text = (await api.get("/activity", params={"limit": "200"})).text
    assert "conn_keyed" in text or "keyed" in text
    assert SECRET not in text
