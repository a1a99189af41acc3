"""Isolation matrix: every resource, verb and foreign principal, over REST and MCP.

Two orgs hold one of each resource (the second made by `create_org`, what `treadle org
create` runs). Another org's principal gets exactly the answer a missing id gets (404
`NOT_FOUND`), a workspace-restricted key gets 403 `SCOPE_DENIED` outside its workspace, and a
refused request changes nothing at all (every table compared before and after). MCP tokens do
not open other servers, sessions do not move between principals, and one end user's kv-store
keys are nobody else's, whichever face asks.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx2
import pytest
from mcp.types import CallToolResult

from probes.conftest import serving
from probes.generators import Endpoint, endpoints, param_kinds
from probes.world import Tenant, World
from test_api_auth import snapshot
from test_mcp_http_access import ERAS, client_of, in_session, open_session, post

from conftest import Api

pytestmark = pytest.mark.anyio

Snapshot = dict[str, list[tuple[Any, ...]]]

# A body each id-taking route accepts, so a refusal is about the id and not the body.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/workspaces/{workspace_id}"): {"name": "renamed"},
    ("POST", "/workspaces/{workspace_id}/integrations"): {
        "integrationName": "http",
        "integrationAlias": "sneaky",
        "connectionStrategy": "fixed",
    },
    ("PATCH", "/workspaces/{workspace_id}/integrations/{id}"): {"allowedActions": ["get"]},
    ("PATCH", "/partials/{id}"): {"name": "renamed"},
    ("POST", "/partials/{id}/set-default"): {"isDefault": True},
    ("PATCH", "/mcp/servers/{server_id}"): {"name": "renamed"},
    ("PATCH", "/approval-policies/{id}"): {"name": "renamed"},
    ("POST", "/approvals/{id}/approve"): {"reason": "probe"},
    ("POST", "/approvals/{id}/reject"): {"reason": "probe"},
}
# Parameters that name catalog entries (each org has its own `github` OAuth app), not ids.
NAME_PARAMS = {"name", "integration_name"}


def id_cells() -> list[tuple[Endpoint, str]]:
    """Every (route, method) whose path names a resource by id."""
    return [
        (endpoint, method)
        for endpoint in endpoints()
        if endpoint.params and not NAME_PARAMS & set(endpoint.params)
        for method in sorted(endpoint.methods)
    ]


CELLS = id_cells()


def fill(endpoint: Endpoint, tenant: Tenant, *, workspace: str = "workspace") -> str:
    """The endpoint's path naming the tenant's own resources."""
    path = endpoint.template
    for param, kind in param_kinds(endpoint).items():
        key = workspace if kind == "workspace" else kind
        assert key is not None, f"{endpoint.template}: which resource is {{{param}}}?"
        chosen = tenant.ids.get(key) or tenant.ids[f"{key}_bearer"]
        path = re.sub(r"\{" + param + r"(:[a-z]+)?\}", chosen, path)
    return path


# Resources of the org itself, in no workspace (or, for grants, made by a sign-in flow the
# matrix does not drive per workspace): test_api_keys, test_identity_providers, test_upstreams
# and test_mcp_oauth check what a restricted key may do with them.
ORG_LEVEL = {"api_key", "identity_provider", "upstream", "oauth_client", "oauth_grant"}


def org_wide_only(endpoint: Endpoint, absent: httpx2.Response) -> bool:
    return (
        bool(set(param_kinds(endpoint).values()) & ORG_LEVEL)
        and absent.status_code == 403
        and absent.json().get("error") == "SCOPE_DENIED"
    )


def fake_like(value: str) -> str:
    """An id of the same shape as `value` that nobody has."""
    prefix, _, rest = value.rpartition("_")
    fresh = str(uuid.uuid4()) if "-" in rest else uuid.uuid4().hex[: len(rest)]
    return f"{prefix}_{fresh}" if prefix else fresh


def missing(path: str, world: World) -> str:
    """The same path with every id of the world replaced by one nobody has."""
    for value in world.all_ids():
        if len(value) >= 20 and value in path:
            path = path.replace(value, fake_like(value))
    return path


def as_api(world: World) -> Api:
    return Api(world.a.client, world.gateway, world.a.org_id, world.a.workspace_id, world.a.api_key)


async def call(
    world: World, token: str, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx2.Response:
    return await world.a.client.request(
        method, f"/api/v1{path}", json=body, headers={"Authorization": f"Bearer {token}"}
    )


def body_for(endpoint: Endpoint, method: str) -> dict[str, Any] | None:
    return VALID_BODIES.get(
        (method, endpoint.template), {} if method in ("POST", "PATCH") else None
    )


def assert_not_found(response: httpx2.Response, like: httpx2.Response, cell: str) -> None:
    assert response.status_code == 404, (cell, response.text)
    if response.request.method != "HEAD":
        assert response.json()["error"] == "NOT_FOUND", (cell, response.text)
    assert response.content == like.content, (cell, response.text, like.text)


def changed(before: Snapshot, after: Snapshot) -> list[str]:
    """The tables whose rows differ: a readable failure instead of two database dumps."""
    return sorted(name for name in {*before, *after} if before.get(name) != after.get(name))


def test_the_matrix_covers_every_id_route() -> None:
    assert len(CELLS) >= 30
    assert {endpoint.template for endpoint, _ in CELLS} >= {
        "/workspaces/{workspace_id}/integrations/{id}",
        "/approvals/{id}/approve",
        "/mcp/servers/{server_id}/rotate-token",
    }


async def test_another_orgs_principals_get_what_a_missing_id_gets_and_change_nothing(
    world: World,
) -> None:
    api = as_api(world)
    own = {}
    for endpoint, method in CELLS:
        if method in ("GET", "HEAD"):
            path = fill(endpoint, world.a)
            own[path] = (await call(world, world.a.api_key, method, path)).status_code
    assert set(own.values()) == {200}, own  # the ids are real: their owner reads them
    before = await snapshot(api)
    for endpoint, method in CELLS:
        path = fill(endpoint, world.a)
        body = body_for(endpoint, method)
        for name, token in (("org key", world.b.api_key), ("restricted", world.b.restricted_key)):
            cell = f"{method} {endpoint.template} as the other org's {name}"
            foreign = await call(world, token, method, path, body)
            absent = await call(world, token, method, missing(path, world), body)
            if name == "restricted" and org_wide_only(endpoint, absent):
                # An operation only org-wide keys may use refuses a restricted key whatever
                # the id: the same refusal for another org's id as for a missing one.
                assert foreign.status_code == absent.status_code == 403, (cell, foreign.text)
                assert foreign.content == absent.content, (cell, foreign.text, absent.text)
                continue
            assert_not_found(foreign, absent, cell)
    assert changed(before, await snapshot(api)) == []


async def test_a_restricted_key_is_denied_every_resource_of_another_workspace(
    world: World,
) -> None:
    a = world.a
    ws2 = a.second_workspace_id
    elsewhere = Tenant(a.org_id, a.api_key, ws2, a.client, ids={"workspace": ws2})
    made = {
        "integration": (
            f"/workspaces/{ws2}/integrations",
            {"integrationName": "kv-store", "connectionStrategy": "fixed"},
            "integration",
        ),
        "end_user": ("/end-users", {"workspaceId": ws2, "externalId": "carol"}, "endUser"),
        "connection": (
            "/connections",
            {
                "integrationName": "http",
                "type": "bearer",
                "displayName": "elsewhere",
                "externalId": "elsewhere",
                "values": {"token": "cnry-elsewhere-7Hq2Xw9Lm4Zp8Rt3"},
                "workspaceId": ws2,
            },
            "connection",
        ),
        "partial": (
            "/partials",
            {"workspaceId": ws2, "integrationName": "kv-store", "name": "p", "values": {}},
            "partial",
        ),
        "policy": (
            "/approval-policies",
            {"workspaceId": ws2, "name": "p", "decision": "block"},
            "policy",
        ),
        "server": ("/mcp/servers", {"workspaceId": ws2, "name": "elsewhere"}, "server"),
    }
    for kind, (path, body, key) in made.items():
        elsewhere.ids[kind] = (await a.create(path, body, key))["id"]
    elsewhere.ids["approval"] = a.ids["approval"]  # approvals are checked below
    api = as_api(world)
    before = await snapshot(api)
    for endpoint, method in CELLS:
        if endpoint.template.startswith("/approvals/"):
            continue
        if set(param_kinds(endpoint).values()) & ORG_LEVEL:
            continue  # not in any workspace: restricted keys' rights on them are tested apart
        path = fill(endpoint, elsewhere)
        response = await call(world, a.restricted_key, method, path, body_for(endpoint, method))
        cell = f"{method} {endpoint.template} with a key of another workspace"
        assert response.status_code == 403, (cell, response.text)
        if method != "HEAD":
            assert response.json()["error"] == "SCOPE_DENIED", (cell, response.text)
    assert changed(before, await snapshot(api)) == []


async def test_what_a_restricted_key_lists_it_may_read_and_nothing_more(world: World) -> None:
    """One rule for lists and gets: no list shows what a get then refuses."""
    a = world.a
    lists = {
        "/workspaces": ("workspaces", "/workspaces/{id}"),
        "/connections": ("connections", "/connections/{id}"),
        "/end-users": ("endUsers", "/end-users/{id}"),
        "/mcp/servers": ("servers", "/mcp/servers/{id}"),
        "/approval-policies": ("policies", "/approval-policies/{id}"),
        "/approvals": ("approvals", "/approvals/{id}"),
    }
    for path, (key, one) in lists.items():
        for token in (a.api_key, a.restricted_key):
            listed = await call(world, token, "GET", path)
            assert listed.status_code == 200, (path, listed.text)
            for item in listed.json()[key]:
                read = await call(world, token, "GET", one.format(id=item["id"]))
                assert read.status_code == 200, (path, item["id"], read.text)
                workspace = item.get("workspaceId")
                if token == a.restricted_key:
                    assert workspace in (None, a.workspace_id), (path, item)


async def test_ids_of_another_org_in_a_body_answer_like_missing_ones(world: World) -> None:
    b, a = world.b, world.a
    execute = {
        "workspaceId": b.workspace_id,
        "integrationName": "kv-store",
        "actionName": "get",
        "input": {"key": "k1"},
    }
    cases = {
        "/end-users": ({"workspaceId": a.workspace_id, "externalId": "x"}, "workspaceId"),
        "/mcp/servers": ({"workspaceId": a.workspace_id, "name": "x"}, "workspaceId"),
        "/approval-policies": (
            {"workspaceId": a.workspace_id, "name": "x", "decision": "block"},
            "workspaceId",
        ),
        "/partials": (
            {
                "workspaceId": a.workspace_id,
                "integrationName": "kv-store",
                "name": "x",
                "values": {},
            },
            "workspaceId",
        ),
        "/connections": (
            {
                "integrationName": "http",
                "type": "bearer",
                "displayName": "x",
                "externalId": "x",
                "values": {"token": "t"},
                "workspaceId": a.workspace_id,
            },
            "workspaceId",
        ),
        "/actions/execute#workspace": ({**execute, "workspaceId": a.workspace_id}, "workspaceId"),
        "/actions/execute#integration": (
            {**execute, "workspaceIntegrationId": a.ids["integration"]},
            "workspaceIntegrationId",
        ),
        "/actions/execute#connection": (
            {**execute, "connectionId": a.ids["connection_bearer"]},
            "connectionId",
        ),
        "/actions/execute#partials": ({**execute, "partialIds": [a.ids["partial"]]}, "partialIds"),
    }
    api = as_api(world)
    before = await snapshot(api)
    for name, (body, field) in cases.items():
        path = name.split("#")[0]
        foreign = await call(world, b.api_key, "POST", path, body)
        value = body[field]
        replacement: Any = (
            [fake_like(v) for v in value] if isinstance(value, list) else fake_like(value)
        )
        absent = await call(world, b.api_key, "POST", path, {**body, field: replacement})
        assert 400 <= foreign.status_code < 500, (name, foreign.text)
        assert foreign.content == absent.content, (name, foreign.text, absent.text)
        for value in a.ids.values():
            assert value not in foreign.text, (name, foreign.text)
    for path in ("/partials", "/connections", "/end-users", "/activity", "/approvals"):
        foreign = await call(world, b.api_key, "GET", f"{path}?workspaceId={a.workspace_id}")
        absent = await call(world, b.api_key, "GET", f"{path}?workspaceId={uuid.uuid4()}")
        assert_not_found(foreign, absent, f"GET {path}?workspaceId=<other org's>")
    assert changed(before, await snapshot(api)) == []


async def test_nothing_of_another_org_appears_in_any_list(world: World) -> None:
    texts = []
    for endpoint in endpoints():
        if endpoint.params or "GET" not in endpoint.methods:
            continue
        path = f"{endpoint.template}?workspaceId={world.b.workspace_id}"
        response = await call(world, world.b.api_key, "GET", path)
        assert response.status_code == 200, (endpoint.template, response.text)
        texts.append(response.text)
    seen = "\n".join(texts)
    for value in (world.a.org_id, *world.a.ids.values()):
        if value != "github":
            assert value not in seen


# -- MCP ------------------------------------------------------------------------------------


async def test_mcp_tokens_and_keys_open_only_their_own_servers(world: World) -> None:
    a, b = world.a, world.b
    a_token, b_token = a.server_token, b.server_token
    api = as_api(world)
    async with serving(world.gateway) as base:
        url = f"{base}/mcp/{{}}"
        own = await post(url.format(a.ids["server"]), a_token)
        assert own.status_code == 200, own.text
        before = await snapshot(api, skip=("mcp_sessions",))
        for token in (b_token, b.api_key, b.restricted_key):
            refused = await post(url.format(a.ids["server"]), token)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"] == "UNAUTHORIZED"
        # A's own server token is for A's server only, and A's keys are for A's servers.
        for token in (a_token, a.api_key, a.restricted_key):
            refused = await post(url.format(b.ids["server"]), token)
            assert refused.status_code == 401, refused.text
        assert changed(before, await snapshot(api, skip=("mcp_sessions",))) == []


async def test_a_session_belongs_to_the_principal_and_end_user_that_opened_it(
    world: World,
) -> None:
    a, b = world.a, world.b
    a_token = a.server_token
    async with serving(world.gateway) as base:
        url = f"{base}/mcp/{a.ids['server']}"
        session = await open_session(url, a.api_key, {"X-Treadle-End-User": "alice"})
        mine = await in_session(url, a.api_key, session, {"X-Treadle-End-User": "alice"})
        assert mine.status_code == 200, mine.text
        for token, headers in (
            (a_token, {}),
            (a.restricted_key, {"X-Treadle-End-User": "alice"}),
            (a.api_key, {"X-Treadle-End-User": "bob"}),
            (a.api_key, {}),
        ):
            moved = await in_session(url, token, session, headers)
            assert moved.status_code == 404, (headers, moved.text)
        foreign = await in_session(url, b.api_key, session, {"X-Treadle-End-User": "alice"})
        assert foreign.status_code == 401, foreign.text


def structured(result: CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None, result
    return dict(result.structured_content)


async def rest_put(
    world: World, tenant: Tenant, end_user: str, key: str, value: Any
) -> httpx2.Response:
    return await call(
        world,
        tenant.api_key,
        "POST",
        "/actions/execute",
        {
            "workspaceId": tenant.workspace_id,
            "integrationName": "kv-store",
            "integrationAlias": "mine",
            "actionName": "put",
            "endUserId": end_user,
            "input": {"key": key, "value": value},
        },
    )


async def rest_get(world: World, tenant: Tenant, end_user: str, key: str) -> dict[str, Any]:
    response = await call(
        world,
        tenant.api_key,
        "POST",
        "/actions/execute",
        {
            "workspaceId": tenant.workspace_id,
            "integrationName": "kv-store",
            "integrationAlias": "mine",
            "actionName": "get",
            "endUserId": end_user,
            "input": {"key": key},
        },
    )
    assert response.status_code == 200, response.text
    output: dict[str, Any] = response.json()["output"]
    return output


@pytest.mark.parametrize("era", ERAS)
async def test_an_end_users_kv_keys_are_theirs_alone_over_rest_and_mcp(
    world: World, era: str
) -> None:
    a, b = world.a, world.b
    long_id = "u" * 255
    for user in ("alice", long_id):
        assert (await rest_put(world, a, user, "diary", {"owner": user})).status_code == 200
    api = as_api(world)
    async with serving(world.gateway) as base:
        url = f"{base}/mcp/{a.ids['server']}"
        before = await snapshot(api, skip=("mcp_sessions", "activity", "usage_counters"))

        async def mcp_get(token: str, server_url: str, user: str) -> dict[str, Any]:
            async with client_of(server_url, token, era, end_user=user) as client:
                return structured(await client.call_tool("mine__get", {"key": "diary"}))

        assert (await mcp_get(a.api_key, url, "alice"))["value"] == {"owner": "alice"}
        assert (await mcp_get(a.api_key, url, "bob"))["found"] is False
        # The other org's own "alice" is another person.
        b_url = f"{base}/mcp/{b.ids['server']}"
        assert (await mcp_get(b.api_key, b_url, "alice"))["found"] is False
        assert (await rest_get(world, b, "alice", "diary"))["found"] is False
        assert (await rest_get(world, a, "bob", "diary"))["found"] is False
        # Not cut to 255 characters: a 256-character id is refused, not read as another's.
        refused = await post(url, a.api_key, headers={"X-Treadle-End-User": "u" * 256})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["data"]["error"] == "VALIDATION_ERROR", refused.text
        after = await snapshot(api, skip=("mcp_sessions", "activity", "usage_counters"))
        assert changed(before, after) == []


async def test_end_user_ids_a_header_cannot_carry_are_refused_over_rest(world: World) -> None:
    """`"alice "` over REST would be a distinct person that MCP (whose header loses the space)
    could never name, or would name as alice."""
    api = as_api(world)
    before = await snapshot(api)
    for user in ("alice ", " alice", "ali\nce", "u" * 256):
        refused = await rest_put(world, world.a, user, "diary", {"owner": user})
        assert refused.status_code == 400, (user, refused.text)
        assert refused.json()["error"] == "VALIDATION_ERROR"
    assert changed(before, await snapshot(api)) == []
