"""The console's integration settings, partials (with the tool preview) and approval policies
over plain HTTP: each form saves what REST would, shows the documented error beside its field,
refuses a forged post, and reaches nothing of another org or another workspace."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from mcp import Client

from test_console import Browser, signed_in
from treadle.app import Gateway
from treadle.engine.api_keys import create_key
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime

from conftest import Api

pytestmark = pytest.mark.anyio

SCHEMA = re.compile(r'<pre id="preview-schema">(.*?)</pre>', re.S)
NAME = re.compile(r'<code id="preview-name">(.*?)</code>')


@pytest.fixture
async def console(api: Api) -> AsyncIterator[Browser]:
    found = await signed_in(api.gateway, api.api_key)
    yield found
    await found.client.aclose()


def previewed(page: str) -> tuple[str, dict[str, Any]]:
    name, schema = NAME.search(page), SCHEMA.search(page)
    assert name is not None
    assert schema is not None, page
    return html.unescape(name.group(1)), json.loads(html.unescape(schema.group(1)))


async def listed_tools(gateway: Gateway, api: Api) -> dict[str, Any]:
    """The tools an MCP client lists on a new server of the workspace."""
    made = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "listing"})
    assert made.status_code == 201, made.text
    runtime = McpRuntime(gateway, poll_seconds=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.hub.run)
        binding = await bind_server(gateway.store, made.json()["server"]["id"], None)
        face = runtime.bound_face(binding)
        async with Client(face.server, mode="legacy") as client:
            tools = {t.name: t.input_schema for t in (await client.list_tools()).tools}
        tg.cancel_scope.cancel()
    return tools


def base(api: Api, integration_id: str) -> str:
    return f"/console/workspaces/{api.workspace_id}/integrations/{integration_id}"


async def partials(api: Api) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (
        await api.get("/partials", params={"workspaceId": api.workspace_id})
    ).json()["partials"]
    return found


# Integration settings -------------------------------------------------------------------------


async def test_the_workspace_page_links_each_integration_and_lists_each_actions_description(
    api: Api, console: Browser
) -> None:
    notes = await api.configure("kv-store", integrationAlias="notes")
    page = (await console.page(f"/console/workspaces/{api.workspace_id}")).text
    assert f'href="{base(api, notes["id"])}"' in page
    assert "Store a JSON value under a key, replacing any value already there." in page


async def test_editing_an_integration_saves_what_rest_reads_back(
    api: Api, console: Browser
) -> None:
    notes = await api.configure("kv-store", integrationAlias="notes")
    form = await console.page(base(api, notes["id"]))
    assert form.status_code == 200
    assert 'id="action-put"' in form.text
    saved = await console.submit(
        base(api, notes["id"]),
        {
            "integrationAlias": "memo",
            "connectionStrategy": "fixed",
            "connectionId": "",
            "allowedActions": ["get", "put"],
            "settings": '{"persistence": {"scope": "workspace"}}',
        },
    )
    assert saved.status_code == 200
    assert "Saved memo." in saved.text
    got = (await api.get(f"/workspaces/{api.workspace_id}/integrations/{notes['id']}")).json()
    found = got["integration"]
    assert found["integrationAlias"] == "memo"
    assert sorted(found["allowedActions"]) == ["get", "put"]
    assert found["settings"] == {"persistence": {"scope": "workspace"}}
    # Nothing ticked: every action again, as when adding.
    await console.submit(
        base(api, notes["id"]),
        {"integrationAlias": "memo", "connectionStrategy": "fixed", "settings": ""},
    )
    got = (await api.get(f"/workspaces/{api.workspace_id}/integrations/{notes['id']}")).json()
    assert got["integration"]["allowedActions"] is None


async def test_an_integration_edit_offers_shared_connections_and_never_their_secret(
    api: Api, console: Browser
) -> None:
    secret = "sk-console-edit-9f3a"
    made = await api.post(
        "/connections",
        {
            "workspaceId": api.workspace_id,
            "integrationName": "http",
            "type": "bearer",
            "displayName": "Upstream API",
            "externalId": "upstream",
            "values": {"token": secret},
        },
    )
    assert made.status_code == 201, made.text
    web = await api.configure("http", integrationAlias="web", connectionId="upstream")
    page = await console.page(base(api, web["id"]))
    assert f'<option value="{made.json()["connection"]["id"]}">' in page.text
    assert "<code>upstream</code>" in page.text
    assert secret not in page.text
    moved = await console.submit(
        base(api, web["id"]),
        {"integrationAlias": "web", "connectionStrategy": "fixed", "connectionId": "elsewhere"},
    )
    assert moved.status_code == 400  # no shared connection of this workspace has that ID
    assert 'id="connectionId-error"' in moved.text
    assert secret not in moved.text
    kept = await console.submit(
        base(api, web["id"]),
        {"integrationAlias": "web", "connectionStrategy": "fixed", "connectionId": "upstream"},
    )
    assert kept.status_code == 200
    got = (await api.get(f"/workspaces/{api.workspace_id}/integrations/{web['id']}")).json()
    assert got["integration"]["connectionId"] == made.json()["connection"]["id"]


@pytest.mark.parametrize(
    ("change", "field", "code", "status"),
    [
        ({"integrationAlias": "taken"}, "integrationAlias", "ALIAS_CONFLICT", 409),
        ({"integrationAlias": "Not A Slug"}, "integrationAlias", "VALIDATION_ERROR", 400),
        ({"allowedActions": ["put", "nope"]}, "allowedActions", "VALIDATION_ERROR", 400),
        (
            {"connectionStrategy": "per_user", "connectionId": "someone"},
            "connectionId",
            "VALIDATION_ERROR",
            400,
        ),
        ({"connectionStrategy": "sideways"}, "connectionStrategy", "VALIDATION_ERROR", 400),
        ({"settings": "{not json"}, "settings", "VALIDATION_ERROR", 400),
        ({"settings": '{"persistence": {"scope": "planet"}}'}, "settings", "VALIDATION_ERROR", 400),
    ],
)
async def test_an_integration_edit_shows_the_documented_error_beside_its_field(
    api: Api, console: Browser, change: dict[str, Any], field: str, code: str, status: int
) -> None:
    notes = await api.configure("kv-store", integrationAlias="notes")
    await api.configure("http", integrationAlias="taken")
    before = (await api.get(f"/workspaces/{api.workspace_id}/integrations/{notes['id']}")).json()
    fields = {"integrationAlias": "notes", "connectionStrategy": "fixed", **change}
    answer = await console.submit(base(api, notes["id"]), fields)
    assert answer.status_code == status
    assert f'id="{field}-error"' in answer.text
    error = re.search(rf'id="{field}-error">([^<]*)<', answer.text)
    assert error is not None
    assert code in error.group(1)
    after = (await api.get(f"/workspaces/{api.workspace_id}/integrations/{notes['id']}")).json()
    assert after == before


# Partials and the tool preview --------------------------------------------------------------


async def test_an_enforced_partial_leaves_the_previewed_schema_as_mcp_lists_it(
    api: Api, console: Browser, gateway: Gateway
) -> None:
    notes = await api.configure("kv-store", integrationAlias="notes")
    page = await console.page(base(api, notes["id"]) + "/partials/new?action=put")
    assert page.status_code == 200
    name, schema = previewed(page.text)
    assert name == "notes__put"
    assert "key" in schema["properties"]
    fields = {
        "actionName": "put",
        "name": "fixed key",
        "aliasOnly": "on",
        "isDefault": "on",
        "values.key": "greeting",
        "enforced": ["key"],
    }
    # Preview (the no-JavaScript button): the key is gone, and nothing was saved.
    shown = await console.submit(base(api, notes["id"]) + "/partials/preview", fields)
    assert shown.status_code == 200
    name, schema = previewed(shown.text)
    assert name == "notes__put"
    assert "key" not in schema["properties"]
    assert schema["required"] == ["value"]
    assert await partials(api) == []
    # htmx asks for the preview alone.
    fragment = await console.post(
        base(api, notes["id"]) + "/partials/preview",
        {"csrf": await console.csrf(), **fields},
        headers={"HX-Request": "true"},
    )
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<aside id="tool-preview"')
    assert previewed(fragment.text) == (name, schema)

    created = await console.submit(base(api, notes["id"]) + "/partials", fields)
    assert created.status_code == 200
    assert "Saved fixed key." in created.text
    (partial,) = await partials(api)
    assert (partial["values"], partial["enforcedKeys"]) == ({"key": "greeting"}, ["key"])
    assert (partial["integrationAlias"], partial["actionName"]) == ("notes", "put")
    assert partial["isDefault"] is True
    # The preview is what a model is given.
    assert (await listed_tools(gateway, api))["notes__put"] == schema
    assert previewed(created.text) == (name, schema)


async def test_editing_a_partial_shows_and_saves_the_new_shape(api: Api, console: Browser) -> None:
    notes = await api.configure("kv-store", integrationAlias="notes")
    made = await api.post(
        "/partials",
        {
            "workspaceId": api.workspace_id,
            "integrationName": "kv-store",
            "actionName": "list_keys",
            "name": "short lists",
            "values": {"limit": 5, "prefix": "a/"},
            "enforcedKeys": ["prefix"],
            "isDefault": True,
        },
    )
    assert made.status_code == 201, made.text
    path = base(api, notes["id"]) + f"/partials/{made.json()['partial']['id']}"
    page = await console.page(path)
    assert page.status_code == 200
    assert 'name="values.limit" value="5"' in page.text
    _name, schema = previewed(page.text)
    assert "prefix" not in schema["properties"]
    assert schema["properties"]["limit"]["default"] == 5
    saved = await console.submit(
        path,
        {"name": "short lists", "isDefault": "on", "values.limit": "7", "values.prefix": "a/"},
    )
    assert saved.status_code == 200
    _name, schema = previewed(saved.text)
    assert schema["properties"]["prefix"]["default"] == "a/"
    (partial,) = await partials(api)
    assert (partial["values"], partial["enforcedKeys"]) == ({"limit": 7, "prefix": "a/"}, [])
    gone = await console.submit(path + "/delete", {})
    assert gone.status_code == 200
    assert await partials(api) == []


@pytest.mark.parametrize(
    ("fields", "field", "code", "status"),
    [
        ({"values.limit": "many"}, "values.limit", "VALIDATION_ERROR", 400),
        ({"values.limit": "0"}, "values.limit", "VALIDATION_ERROR", 400),
        ({"enforced": ["prefix"]}, "values.prefix", "VALIDATION_ERROR", 400),
        ({"extra": '{"colour": "red"}'}, "extra", "VALIDATION_ERROR", 400),
        ({"extra": "[1]"}, "extra", "VALIDATION_ERROR", 400),
        ({"name": ""}, "name", "VALIDATION_ERROR", 400),
        ({"name": "taken"}, "name", "DUPLICATE", 409),
    ],
)
async def test_a_partial_form_shows_the_documented_error_beside_its_field(
    api: Api,
    console: Browser,
    fields: dict[str, Any],
    field: str,
    code: str,
    status: int,
) -> None:
    notes = await api.configure("kv-store", integrationAlias="notes")
    taken = await api.post(
        "/partials",
        {
            "workspaceId": api.workspace_id,
            "integrationName": "kv-store",
            "integrationAlias": "notes",
            "actionName": "list_keys",
            "name": "taken",
            "values": {"limit": 3},
        },
    )
    assert taken.status_code == 201, taken.text
    before = await partials(api)
    answer = await console.submit(
        base(api, notes["id"]) + "/partials",
        {"actionName": "list_keys", "aliasOnly": "on", "name": "new one", **fields},
    )
    assert answer.status_code == status
    error = re.search(rf'id="{re.escape(field.replace(".", "-"))}-error">([^<]*)<', answer.text)
    assert error is not None, answer.text
    assert code in error.group(1)
    assert await partials(api) == before


async def test_an_integration_wide_partial_previews_the_chosen_actions_tool(
    api: Api, console: Browser
) -> None:
    notes = await api.configure("kv-store", integrationAlias="notes", allowedActions=["get"])
    page = await console.page(base(api, notes["id"]) + "/partials/new")
    assert 'name="values.key"' in page.text
    assert 'name="values.limit"' in page.text  # every action's inputs
    fields = {"name": "k", "isDefault": "on", "values.key": "x", "enforced": ["key"]}
    get = await console.submit(
        base(api, notes["id"]) + "/partials/preview", {**fields, "previewAction": "get"}
    )
    name, schema = previewed(get.text)
    assert name == "notes__get"
    assert "key" not in schema["properties"]
    put = await console.submit(
        base(api, notes["id"]) + "/partials/preview", {**fields, "previewAction": "put"}
    )
    assert 'id="preview-unlisted"' in put.text  # not an allowed action: no tool


# Approval policies ---------------------------------------------------------------------------


async def test_a_policy_is_created_edited_and_deleted_as_rest_reads_it(
    api: Api, console: Browser
) -> None:
    assert (await console.page("/console/policies")).status_code == 200
    form = await console.page("/console/policies/new")
    assert 'value="dashboard_only"' in form.text
    made = await console.submit(
        "/console/policies",
        {
            "name": "big refunds",
            "workspaceId": api.workspace_id,
            "decision": "require_approval",
            "enabled": "on",
            "priority": "10",
            "approvalAccessMode": "dashboard_only",
            "sources": ["mcp_tools"],
            "integrationNames": ["kv-store"],
            "actionNames": "put, delete",
            "endUserMode": "any",
            "match": "any",
            "condition-0-path": "amount",
            "condition-0-op": "gt",
            "condition-0-value": "100",
            "condition-1-path": "currency",
            "condition-1-op": "in",
            "condition-1-value": '["EUR", "USD"]',
            "timeoutSeconds": "600",
            "defaultOnTimeout": "reject",
            "reuseWindowSeconds": "0",
        },
    )
    assert made.status_code == 200, made.text
    assert "Created big refunds." in made.text
    (policy,) = (await api.get("/approval-policies")).json()["policies"]
    assert policy["workspaceId"] == api.workspace_id
    assert policy["approvalAccessMode"] == "dashboard_only"
    assert policy["actionNames"] == ["put", "delete"]
    assert policy["sources"] == ["mcp_tools"]
    assert policy["rules"] == {
        "match": "any",
        "conditions": [
            {"path": "amount", "op": "gt", "value": 100},
            {"path": "currency", "op": "in", "value": ["EUR", "USD"]},
        ],
    }
    assert (policy["timeoutSeconds"], policy["defaultOnTimeout"]) == (600, "reject")
    listed = (await console.page("/console/policies")).text
    assert "big refunds" in listed
    assert "dashboard_only" in listed

    path = f"/console/policies/{policy['id']}"
    page = (await console.page(path)).text
    assert 'id="mode-dashboard_only" name="approvalAccessMode" value="dashboard_only" checked' in (
        page
    )
    saved = await console.submit(
        path,
        {
            "name": "big refunds",
            "decision": "block",
            "priority": "10",
            "approvalAccessMode": "hosted_link_only",
            "endUserMode": "no_end_user",
            "timeoutSeconds": "600",
            "defaultOnTimeout": "expire",
            "reuseWindowSeconds": "0",
            "notifyWebhookUrl": "https://hooks.example/treadle",
        },
    )
    assert saved.status_code == 200
    secret = re.search(r'id="webhook-secret" readonly value="([^"]+)"', saved.text)
    assert secret is not None
    got = (await api.get(f"/approval-policies/{policy['id']}")).json()["policy"]
    assert (got["decision"], got["approvalAccessMode"], got["enabled"]) == (
        "block",
        "hosted_link_only",
        False,
    )
    assert (got["rules"], got["sources"], got["actionNames"]) == (None, None, None)
    assert secret.group(1) not in (await console.page(path)).text
    gone = await console.submit(path + "/delete", {})
    assert gone.status_code == 200
    assert "Deleted big refunds." in gone.text
    assert (await api.get("/approval-policies")).json()["policies"] == []


@pytest.mark.parametrize(
    ("fields", "field", "code", "status"),
    [
        ({"name": ""}, "name", "VALIDATION_ERROR", 400),
        ({"priority": "soon"}, "priority", "VALIDATION_ERROR", 400),
        ({"priority": "-1"}, "priority", "VALIDATION_ERROR", 400),
        ({"decision": "maybe"}, "decision", "VALIDATION_ERROR", 400),
        ({"approvalAccessMode": "by_phone"}, "approvalAccessMode", "VALIDATION_ERROR", 400),
        ({"notifyWebhookUrl": "ftp://x"}, "notifyWebhookUrl", "VALIDATION_ERROR", 400),
        (
            {"condition-1-path": "note", "condition-1-op": "regex", "condition-1-value": "(("},
            "condition-1",
            "VALIDATION_ERROR",
            400,
        ),
        (
            {"condition-0-path": "amount", "condition-0-op": "gt", "condition-0-value": "lots"},
            "condition-0",
            "VALIDATION_ERROR",
            400,
        ),
        ({"workspaceId": "no-such-workspace"}, None, "NOT_FOUND", 404),
    ],
)
async def test_a_policy_form_shows_the_documented_error_beside_its_field(
    api: Api,
    console: Browser,
    fields: dict[str, Any],
    field: str | None,
    code: str,
    status: int,
) -> None:
    answer = await console.submit(
        "/console/policies",
        {
            "name": "p",
            "decision": "require_approval",
            "approvalAccessMode": "dashboard_only",
            "endUserMode": "any",
            "defaultOnTimeout": "expire",
            **fields,
        },
    )
    assert answer.status_code == status
    if field is None:
        assert code in answer.text
    else:
        error = re.search(rf'id="{field}-error">([^<]*)<', answer.text)
        assert error is not None, answer.text
        assert code in error.group(1)
    assert (await api.get("/approval-policies")).json()["policies"] == []


# CSRF, other orgs, workspace keys: every form above ---------------------------------------


async def my_resources(api: Api) -> dict[str, str]:
    notes = await api.configure("kv-store", integrationAlias="notes")
    partial = await api.post(
        "/partials",
        {
            "workspaceId": api.workspace_id,
            "integrationName": "kv-store",
            "integrationAlias": "notes",
            "actionName": "get",
            "name": "preset",
            "values": {"key": "k"},
            "isDefault": True,
        },
    )
    assert partial.status_code == 201, partial.text
    policy = await api.post(
        "/approval-policies",
        {"workspaceId": api.workspace_id, "name": "ws policy", "decision": "block"},
    )
    assert policy.status_code == 201, policy.text
    org_policy = await api.post("/approval-policies", {"name": "org policy", "decision": "block"})
    assert org_policy.status_code == 201, org_policy.text
    return {
        "integration": notes["id"],
        "partial": partial.json()["partial"]["id"],
        "policy": policy.json()["policy"]["id"],
        "org_policy": org_policy.json()["policy"]["id"],
    }


def my_forms(api: Api, ids: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    one = base(api, ids["integration"])
    policy = {"name": "changed", "decision": "notify_only", "endUserMode": "any"}
    return [
        (one, {"integrationAlias": "renamed", "connectionStrategy": "fixed"}),
        (f"{one}/partials", {"actionName": "get", "name": "new", "values.key": "x"}),
        (f"{one}/partials/preview", {"actionName": "get", "name": "new", "values.key": "x"}),
        (f"{one}/partials/{ids['partial']}", {"name": "renamed", "values.key": "y"}),
        (f"{one}/partials/{ids['partial']}/delete", {}),
        ("/console/policies", {**policy, "workspaceId": api.workspace_id}),
        (f"/console/policies/{ids['policy']}", policy),
        (f"/console/policies/{ids['policy']}/delete", {}),
    ]


def my_pages(api: Api, ids: dict[str, str]) -> list[str]:
    one = base(api, ids["integration"])
    return [
        one,
        f"{one}/partials/new",
        f"{one}/partials/{ids['partial']}",
        f"/console/policies/{ids['policy']}",
    ]


async def my_state(api: Api) -> tuple[Any, ...]:
    integrations = (await api.get(f"/workspaces/{api.workspace_id}/integrations")).json()
    policies = (await api.get("/approval-policies")).json()["policies"]
    return (
        integrations["integrations"],
        await partials(api),
        sorted(policies, key=lambda p: str(p["id"])),
    )


@pytest.mark.parametrize("forgery", ["no-field", "wrong-value", "foreign-origin", "other-session"])
async def test_every_form_here_refuses_a_forged_post_and_changes_nothing(
    api: Api, console: Browser, forgery: str
) -> None:
    ids = await my_resources(api)
    before = await my_state(api)
    other = await signed_in(api.gateway, api.api_key)
    try:
        for path, fields in my_forms(api, ids):
            headers = {}
            if forgery == "no-field":
                sent = fields
            elif forgery == "wrong-value":
                sent = {**fields, "csrf": "0" * 64}
            elif forgery == "foreign-origin":
                sent = {**fields, "csrf": await console.csrf()}
                headers = {"Origin": "https://evil.example"}
            else:
                token = await other.csrf()
                console.client.cookies.set(
                    "treadle_console_csrf", token, domain="treadle.test", path="/console"
                )
                sent = {**fields, "csrf": token}
            answer = await console.client.post(path, data=sent, headers=headers)
            assert answer.status_code == 403, (path, answer.status_code)
            assert 'id="tool-preview"' not in answer.text
            assert await my_state(api) == before
    finally:
        await other.client.aclose()


async def test_nothing_here_reaches_another_orgs_resources(api: Api, gateway: Gateway) -> None:
    ids = await my_resources(api)
    before = await my_state(api)
    async with gateway.store.db.write("test") as txn:
        org = await gateway.store.orgs.create(txn, "other org")
        await gateway.store.workspaces.create(txn, org.id, "theirs")
    _key, token = await create_key(gateway.store, "test", org.id, name="intruder")
    intruder = await signed_in(gateway, token)
    try:
        for path, fields in my_forms(api, ids):
            if path == "/console/policies":
                continue  # creates in the intruder's own org (tried below against ours)
            answer = await intruder.submit(path, fields)
            assert answer.status_code == 404, (path, answer.status_code)
            assert await my_state(api) == before
        into_ours = await intruder.submit(
            "/console/policies",
            {"name": "x", "decision": "block", "workspaceId": api.workspace_id},
        )
        assert into_ours.status_code == 404
        for path in my_pages(api, ids):
            page = await intruder.page(path)
            assert page.status_code == 404, path
            assert "notes" not in page.text
        listed = (await intruder.page("/console/policies")).text
        assert "ws policy" not in listed
        assert "org policy" not in listed
        assert await my_state(api) == before
    finally:
        await intruder.client.aclose()


async def test_a_workspace_key_reaches_only_its_workspace_here(api: Api) -> None:
    ids = await my_resources(api)
    async with api.gateway.store.db.write("test") as txn:
        second = await api.gateway.store.workspaces.create(txn, api.org_id, "second")
    _key, token = await create_key(
        api.gateway.store, "test", api.org_id, name="narrow", workspace_id=second.id
    )
    narrow = await signed_in(api.gateway, token)
    before = await my_state(api)
    try:
        for path, fields in my_forms(api, ids):
            if path == "/console/policies":
                fields = {**fields, "workspaceId": api.workspace_id}
            answer = await narrow.submit(path, fields)
            assert answer.status_code == 403, (path, answer.status_code)
            assert "SCOPE_DENIED" in answer.text
        for path in my_pages(api, ids):
            assert (await narrow.page(path)).status_code == 403, path
        # Org-wide policies: listed and readable, not changeable, and none can be made.
        listed = (await narrow.page("/console/policies")).text
        assert "org policy" in listed
        assert "ws policy" not in listed
        org_policy = f"/console/policies/{ids['org_policy']}"
        page = await narrow.page(org_policy)
        assert page.status_code == 200
        assert "Save policy" not in page.text
        for path, fields in (
            (org_policy, {"name": "mine now", "decision": "auto_approve", "endUserMode": "any"}),
            (f"{org_policy}/delete", {}),
            ("/console/policies", {"name": "org-wide", "decision": "block"}),
        ):
            answer = await narrow.submit(path, fields)
            assert answer.status_code == 403, path
            assert "SCOPE_DENIED" in answer.text
        assert await my_state(api) == before
        # Its own workspace it may configure.
        mine = await narrow.submit(
            "/console/policies",
            {"name": "second's", "decision": "notify_only", "workspaceId": second.id},
        )
        assert mine.status_code == 200
        made = [p for p in (await api.get("/approval-policies")).json()["policies"]]
        assert {p["name"] for p in made} == {"ws policy", "org policy", "second's"}
    finally:
        await narrow.client.aclose()
