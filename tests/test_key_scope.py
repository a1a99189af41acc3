"""What a workspace-restricted API key sees, on every list and get endpoint.

The rule (`treadle.api.auth.Principal`): such a key reads its own workspace's resources and
the org-level ones (org-wide approval policies and connections, OAuth apps, org-level
activity); it changes only its own workspace's; another workspace's resources are left out
of every list and answer 403 SCOPE_DENIED by id. A list and a get always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from test_api_auth import SECRET, add_key, add_workspace, assert_error, bearer, snapshot

from conftest import Api

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Resource:
    """A resource kind: where it is listed, under which key, and how one is read by id."""

    name: str
    list_path: str  # may name {ws}: the list of one workspace
    list_key: str
    get_path: str  # names {id}
    id_field: str = "id"


RESOURCES = [
    Resource("workspace", "/workspaces", "workspaces", "/workspaces/{id}"),
    Resource(
        "workspace integration",
        "/workspaces/{ws}/integrations",
        "integrations",
        "/workspaces/{ws}/integrations/{id}",
    ),
    Resource("connection", "/connections", "connections", "/connections/{id}"),
    Resource("end user", "/end-users", "endUsers", "/end-users/{id}"),
    Resource("partial", "/partials?workspaceId={ws}", "partials", "/partials/{id}"),
    Resource("mcp server", "/mcp/servers", "servers", "/mcp/servers/{id}"),
    Resource("approval policy", "/approval-policies", "policies", "/approval-policies/{id}"),
    Resource("approval", "/approvals", "approvals", "/approvals/{id}"),
    Resource(
        "oauth app", "/oauth-apps", "oauthApps", "/oauth-apps/{id}", id_field="integrationName"
    ),
]


@dataclass
class Holdings:
    """The ids of each resource kind that one workspace (or the org itself) holds."""

    workspace_id: str | None
    ids: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, resource_id: str) -> None:
        self.ids.setdefault(kind, set()).add(resource_id)


@dataclass
class Org:
    own: Holdings  # the restricted key's workspace
    other: Holdings  # another workspace of the same org
    org_level: Holdings
    token: str  # restricted to `own`

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


async def created(api: Api, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    response = await api.post(path, body)
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()[key]
    return found


async def fill(api: Api, workspace_id: str, holdings: Holdings, suffix: str) -> None:
    """One of every workspace resource, and a pending approval with activity around it."""
    holdings.add("workspace", workspace_id)
    configured = await created(
        api,
        f"/workspaces/{workspace_id}/integrations",
        {"integrationName": "kv-store", "connectionStrategy": "fixed"},
        "integration",
    )
    holdings.add("workspace integration", configured["id"])
    for kind, path, body, key in (
        (
            "connection",
            "/connections",
            {
                "integrationName": "http",
                "type": "bearer",
                "displayName": f"Conn {suffix}",
                "externalId": f"conn-{suffix}",
                "values": {"token": SECRET},
                "workspaceId": workspace_id,
            },
            "connection",
        ),
        ("end user", "/end-users", {"workspaceId": workspace_id, "externalId": suffix}, "endUser"),
        (
            "partial",
            "/partials",
            {
                "workspaceId": workspace_id,
                "integrationName": "kv-store",
                "actionName": "get",
                "name": f"preset {suffix}",
                "values": {"key": "k"},
            },
            "partial",
        ),
        ("mcp server", "/mcp/servers", {"workspaceId": workspace_id, "name": suffix}, "server"),
        (
            "approval policy",
            "/approval-policies",
            {
                "workspaceId": workspace_id,
                "name": f"gate {suffix}",
                "decision": "require_approval",
                "integrationNames": ["kv-store"],
                "actionNames": ["put"],
            },
            "policy",
        ),
    ):
        holdings.add(kind, (await created(api, path, body, key))["id"])
    paused = await api.execute(
        workspaceId=workspace_id,
        integrationName="kv-store",
        actionName="put",
        endUserId=suffix,
        input={"key": "k", "value": 1},
    )
    assert paused.status_code == 202, paused.text
    holdings.add("approval", paused.json()["approval"]["id"])


@pytest.fixture
async def org(api: Api) -> Org:
    own = Holdings(api.workspace_id)
    other = Holdings(await add_workspace(api, "other"))
    org_level = Holdings(None)
    await fill(api, api.workspace_id, own, "own")
    assert other.workspace_id is not None
    await fill(api, other.workspace_id, other, "other")
    policy = await created(
        api,
        "/approval-policies",
        {
            "workspaceId": None,
            "name": "org gate",
            "decision": "block",
            "integrationNames": ["slack"],
            "notifyWebhookUrl": "https://hooks.example.com/org",
        },
        "policy",
    )
    org_level.add("approval policy", policy["id"])
    connection = await created(
        api,
        "/connections",
        {
            "integrationName": "http",
            "type": "bearer",
            "displayName": "Org wide",
            "externalId": "org-conn",
            "values": {"token": SECRET},
        },
        "connection",
    )
    org_level.add("connection", connection["id"])
    app = await api.client.put(
        "/api/v1/oauth-apps/github", json={"clientId": "Iv1.org", "clientSecret": SECRET}
    )
    assert app.status_code == 201, app.text
    org_level.add("oauth app", "github")
    return Org(own, other, org_level, await add_key(api, workspace_id=api.workspace_id))


def fill_path(template: str, workspace_id: str | None, resource_id: str = "") -> str:
    return template.format(ws=workspace_id, id=resource_id)


async def listed(api: Api, resource: Resource, workspace_id: str | None, **kw: Any) -> set[str]:
    response = await api.get(fill_path(resource.list_path, workspace_id), **kw)
    assert response.status_code == 200, (resource.name, response.text)
    return {item[resource.id_field] for item in response.json()[resource.list_key]}


def per_workspace(resource: Resource) -> bool:
    return "{ws}" in resource.list_path


# -- the matrix -------------------------------------------------------------------------------


async def test_an_org_wide_key_sees_every_resource_of_the_world(api: Api, org: Org) -> None:
    """The control: the world really holds resources of all three kinds of owner."""
    for resource in RESOURCES:
        expected = set()
        for holdings in (org.own, org.other, org.org_level):
            expected |= holdings.ids.get(resource.name, set())
        if per_workspace(resource):
            seen = set()
            for holdings in (org.own, org.other):
                seen |= await listed(api, resource, holdings.workspace_id)
            expected -= org.org_level.ids.get(resource.name, set())
        else:
            seen = await listed(api, resource, None)
        assert seen == expected, resource.name
        assert org.other.ids.get(resource.name) or resource.name == "oauth app", resource.name


async def test_every_list_shows_a_restricted_key_its_workspace_and_the_org_level_only(
    api: Api, org: Org
) -> None:
    for resource in RESOURCES:
        seen = await listed(api, resource, org.own.workspace_id, headers=org.headers)
        expected = org.own.ids.get(resource.name, set())
        if not per_workspace(resource):
            expected = expected | org.org_level.ids.get(resource.name, set())
        assert seen == expected, resource.name


async def test_every_get_answers_a_restricted_key_exactly_for_what_its_lists_show(
    api: Api, org: Org
) -> None:
    for resource in RESOURCES:
        visible = await listed(api, resource, org.own.workspace_id, headers=org.headers)
        for resource_id in visible:
            path = fill_path(resource.get_path, org.own.workspace_id, resource_id)
            got = await api.get(path, headers=org.headers)
            assert got.status_code == 200, (resource.name, got.text)
            assert SECRET not in got.text
        for resource_id in org.other.ids.get(resource.name, set()):
            path = fill_path(resource.get_path, org.other.workspace_id, resource_id)
            denied = await api.get(path, headers=org.headers)
            assert denied.status_code == 403, (resource.name, denied.text)
            assert_error(denied, 403, "SCOPE_DENIED")
            assert resource_id not in visible


async def test_every_list_filtered_to_another_workspace_is_denied(api: Api, org: Org) -> None:
    for template in (
        [r.list_path for r in RESOURCES if per_workspace(r)]
        + [
            f"{r.list_path}?workspaceId={{ws}}"
            for r in RESOURCES
            if not per_workspace(r) and r.name not in {"workspace", "oauth app"}
        ]
        + ["/activity?workspaceId={ws}"]
    ):
        denied = await api.get(fill_path(template, org.other.workspace_id), headers=org.headers)
        assert_error(denied, 403, "SCOPE_DENIED")


async def test_activity_shows_a_restricted_key_its_workspace_and_the_org_level_entries(
    api: Api, org: Org
) -> None:
    response = await api.get("/activity", params={"limit": 200}, headers=org.headers)
    assert response.status_code == 200, response.text
    seen = {entry["workspaceId"] for entry in response.json()["activity"]}
    assert seen == {org.own.workspace_id, None}
    everything = await api.get("/activity", params={"limit": 200})
    assert org.other.workspace_id in {e["workspaceId"] for e in everything.json()["activity"]}


async def test_org_level_resources_are_read_only_for_a_restricted_key(api: Api, org: Org) -> None:
    [policy_id] = org.org_level.ids["approval policy"]
    [connection_id] = org.org_level.ids["connection"]
    before = await snapshot(api)
    for method, path, body in (
        ("PATCH", f"/approval-policies/{policy_id}", {"enabled": False}),
        ("DELETE", f"/approval-policies/{policy_id}", None),
        ("DELETE", f"/connections/{connection_id}", None),
        ("PUT", "/oauth-apps/github", {"clientId": "Iv1.mine"}),
        ("DELETE", "/oauth-apps/github", None),
        ("POST", "/approval-policies", {"workspaceId": None, "name": "x", "decision": "block"}),
    ):
        response = await api.request(method, path, json=body, headers=org.headers)
        assert_error(response, 403, "SCOPE_DENIED")
    assert await snapshot(api) == before


async def test_a_restricted_key_still_changes_its_own_workspaces_policies(
    api: Api, org: Org
) -> None:
    [policy_id] = org.own.ids["approval policy"]
    changed = await api.patch(
        f"/approval-policies/{policy_id}", {"enabled": False}, headers=org.headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["policy"]["enabled"] is False
