"""`/api/v1/mcp/servers`: MCP server records, their tokens, overrides and scoping."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx2
import pytest

from treadle.store import Store

from mcp_harness import McpEnv

pytestmark = pytest.mark.anyio

SERVERS = "/api/v1/mcp/servers"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _store(mcp_env: McpEnv) -> Store:
    return mcp_env.runtime.gateway.store


async def _create(mcp_env: McpEnv, **fields: Any) -> dict[str, Any]:
    body = {"workspaceId": mcp_env.workspace_id, "name": "assistant", **fields}
    response = await mcp_env.rest.post(SERVERS, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _workspace(mcp_env: McpEnv) -> str:
    store = _store(mcp_env)
    async with store.db.write("test") as txn:
        workspace = await store.workspaces.create(
            txn, mcp_env.org_id, f"ws-{uuid.uuid4().hex[:12]}"
        )
    return workspace.id


async def _api_key(mcp_env: McpEnv, workspace_id: str | None) -> str:
    store = _store(mcp_env)
    async with store.db.write("test") as txn:
        _key, token = await store.api_keys.create(
            txn, mcp_env.org_id, name="scoped", workspace_id=workspace_id
        )
    return token


def _as(mcp_env: McpEnv, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


# -- create, read, update, delete -----------------------------------------------------------


async def test_creating_a_server_returns_the_record_and_its_token(mcp_env: McpEnv) -> None:
    created = await _create(mcp_env, endUserId="alice")

    server, token = created["server"], created["token"]
    assert token.startswith("mcp_")
    assert len(token) > 20
    assert server["id"].startswith("srv_")
    assert server["workspaceId"] == mcp_env.workspace_id
    assert server["orgId"] == mcp_env.org_id
    assert server["name"] == "assistant"
    assert server["mode"] == "TOOLS"
    assert server["endUserId"] == "alice"
    assert server["toolOverrides"] == []
    assert server["endpoint"] == f"/mcp/{server['id']}"
    assert token.startswith(server["tokenPrefix"])
    assert TIMESTAMP.match(server["createdAt"])
    assert TIMESTAMP.match(server["updatedAt"])
    assert "token" not in server


async def test_the_token_is_never_shown_again_by_get_or_list(mcp_env: McpEnv) -> None:
    created = await _create(mcp_env)
    server_id, token = created["server"]["id"], created["token"]

    got = await mcp_env.rest.get(f"{SERVERS}/{server_id}")
    listed = await mcp_env.rest.get(SERVERS, params={"workspaceId": mcp_env.workspace_id})
    everything = await mcp_env.rest.get(SERVERS)

    for response in (got, listed, everything):
        assert response.status_code == 200, response.text
        assert token not in response.text
        assert token[10:] not in response.text
    assert got.json()["server"] == created["server"]
    assert "token" not in got.json()


async def test_a_server_is_created_with_its_tool_overrides(mcp_env: McpEnv) -> None:
    partial = await mcp_env.partial(
        integrationName="testkit", actionName="echo", name="p", values={"channel": "C"}
    )
    overrides = [
        {
            "integrationAlias": "kit",
            "actionName": "echo",
            "partialIds": [partial["id"]],
            "description": "Say it.",
            "enabled": True,
        },
        {"integrationAlias": "kit", "actionName": "wait", "enabled": False},
    ]
    created = await _create(mcp_env, toolOverrides=overrides)

    assert created["server"]["toolOverrides"] == [
        {**overrides[0], "name": None},
        {
            "integrationAlias": "kit",
            "actionName": "wait",
            "name": None,
            "partialIds": None,
            "description": None,
            "enabled": False,
        },
    ]


async def test_the_list_holds_the_servers_of_the_requested_workspace(mcp_env: McpEnv) -> None:
    other = await _workspace(mcp_env)
    first = (await _create(mcp_env, name="first"))["server"]["id"]
    second = (await _create(mcp_env, name="second"))["server"]["id"]
    elsewhere = (await _create(mcp_env, workspaceId=other))["server"]["id"]

    mine = await mcp_env.rest.get(SERVERS, params={"workspaceId": mcp_env.workspace_id})
    everything = await mcp_env.rest.get(SERVERS)

    assert mine.status_code == 200, mine.text
    assert [s["id"] for s in mine.json()["servers"]] == [first, second]
    assert mine.json()["total"] == 2
    all_ids = {s["id"] for s in everything.json()["servers"]}
    assert {first, second, elsewhere} <= all_ids


async def test_updating_a_server_changes_only_the_given_fields(mcp_env: McpEnv) -> None:
    created = (await _create(mcp_env, endUserId="alice"))["server"]
    path = f"{SERVERS}/{created['id']}"

    renamed = await mcp_env.rest.patch(path, json={"name": "renamed"})
    overridden = await mcp_env.rest.patch(
        path,
        json={
            "toolOverrides": [{"integrationAlias": "kit", "actionName": "echo", "enabled": False}]
        },
    )
    unpinned = await mcp_env.rest.patch(path, json={"endUserId": None})

    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["server"]["name"] == "renamed"
    assert renamed.json()["server"]["endUserId"] == "alice"
    assert overridden.status_code == 200, overridden.text
    assert overridden.json()["server"]["name"] == "renamed"
    assert [o["enabled"] for o in overridden.json()["server"]["toolOverrides"]] == [False]
    assert unpinned.status_code == 200, unpinned.text
    final = (await mcp_env.rest.get(path)).json()["server"]
    assert final["endUserId"] is None
    assert final["name"] == "renamed"
    assert len(final["toolOverrides"]) == 1
    assert final["createdAt"] == created["createdAt"]
    assert final["tokenPrefix"] == created["tokenPrefix"]


async def test_an_update_without_fields_is_refused(mcp_env: McpEnv) -> None:
    server_id = (await _create(mcp_env))["server"]["id"]

    response = await mcp_env.rest.patch(f"{SERVERS}/{server_id}", json={})

    assert _error(response, 400)["error"] == "NO_UPDATES"


async def test_a_name_cannot_be_cleared(mcp_env: McpEnv) -> None:
    server_id = (await _create(mcp_env))["server"]["id"]

    response = await mcp_env.rest.patch(f"{SERVERS}/{server_id}", json={"name": None})

    body = _error(response, 400)
    assert body["error"] == "VALIDATION_ERROR"
    assert body["field"] == "name"


async def test_a_deleted_server_is_gone(mcp_env: McpEnv) -> None:
    server_id = (await _create(mcp_env))["server"]["id"]
    path = f"{SERVERS}/{server_id}"

    deleted = await mcp_env.rest.delete(path)

    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": True, "id": server_id}
    assert _error(await mcp_env.rest.get(path), 404)["error"] == "NOT_FOUND"
    assert _error(await mcp_env.rest.delete(path), 404)["error"] == "NOT_FOUND"
    listed = await mcp_env.rest.get(SERVERS, params={"workspaceId": mcp_env.workspace_id})
    assert listed.json()["servers"] == []


# -- tokens ---------------------------------------------------------------------------------


async def test_rotating_the_token_returns_a_new_one_once(mcp_env: McpEnv) -> None:
    created = await _create(mcp_env)
    server_id, old = created["server"]["id"], created["token"]

    rotated = await mcp_env.rest.post(f"{SERVERS}/{server_id}/rotate-token")

    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["token"]
    assert new.startswith("mcp_")
    assert new != old
    assert rotated.json()["server"]["tokenPrefix"] == new[:10]
    got = await mcp_env.rest.get(f"{SERVERS}/{server_id}")
    assert new not in got.text
    assert got.json()["server"]["tokenPrefix"] == new[:10]
    store = _store(mcp_env)
    assert await store.mcp_servers.by_token(old) is None
    found = await store.mcp_servers.by_token(new)
    assert found is not None
    assert found.id == server_id


@pytest.mark.parametrize("transport", ["http"])
async def test_after_rotation_only_the_new_token_opens_the_http_endpoint(
    mcp_env: McpEnv, transport: str
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    await mcp_env.create_server()
    old = mcp_env.server_token

    rotated = await mcp_env.rest.post(f"{SERVERS}/{mcp_env.server_id}/rotate-token")
    assert rotated.status_code == 200, rotated.text
    mcp_env.server_token = rotated.json()["token"]

    async with httpx2.AsyncClient(timeout=10) as http:
        refused = await http.post(
            mcp_env.mcp_url,
            headers={
                "Authorization": f"Bearer {old}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
            },
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        )
    assert refused.status_code == 401
    async with mcp_env.connect(transport, "legacy") as client:
        tools = (await client.list_tools()).tools
    assert [tool.name for tool in tools] == ["kit__echo"]


# -- not found and scope --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/rotate-token")],
)
async def test_an_unknown_server_is_not_found(mcp_env: McpEnv, method: str, suffix: str) -> None:
    body = {"name": "x"} if method == "PATCH" else None
    response = await mcp_env.rest.request(
        method, f"{SERVERS}/srv_{uuid.uuid4().hex[:24]}{suffix}", json=body
    )

    assert _error(response, 404)["error"] == "NOT_FOUND"


async def test_a_server_of_another_org_is_not_found(mcp_env: McpEnv) -> None:
    store = _store(mcp_env)
    async with store.db.write("test") as txn:
        org = await store.orgs.create(txn, "other org")
        workspace = await store.workspaces.create(txn, org.id, "theirs")
        _key, token = await store.api_keys.create(txn, org.id, name="theirs")
    theirs = await mcp_env.rest.post(
        SERVERS, json={"workspaceId": workspace.id, "name": "theirs"}, headers=_as(mcp_env, token)
    )
    assert theirs.status_code == 201, theirs.text
    path = f"{SERVERS}/{theirs.json()['server']['id']}"

    for response in (
        await mcp_env.rest.get(path),
        await mcp_env.rest.patch(path, json={"name": "mine now"}),
        await mcp_env.rest.post(f"{path}/rotate-token"),
        await mcp_env.rest.delete(path),
    ):
        assert _error(response, 404)["error"] == "NOT_FOUND"
    # Nor may our key create a server in their workspace, or list it.
    created = await mcp_env.rest.post(SERVERS, json={"workspaceId": workspace.id, "name": "x"})
    assert _error(created, 404)["error"] == "NOT_FOUND"
    listed = await mcp_env.rest.get(SERVERS)
    assert theirs.json()["server"]["id"] not in listed.text
    still = await mcp_env.rest.get(path, headers=_as(mcp_env, token))
    assert still.status_code == 200
    assert still.json()["server"]["name"] == "theirs"


async def test_a_workspace_restricted_key_only_reaches_its_workspace(mcp_env: McpEnv) -> None:
    mine = (await _create(mcp_env, name="mine"))["server"]["id"]
    other = await _workspace(mcp_env)
    headers = _as(mcp_env, await _api_key(mcp_env, other))
    path = f"{SERVERS}/{mine}"

    for response in (
        await mcp_env.rest.get(path, headers=headers),
        await mcp_env.rest.patch(path, json={"name": "taken"}, headers=headers),
        await mcp_env.rest.post(f"{path}/rotate-token", headers=headers),
        await mcp_env.rest.delete(path, headers=headers),
        await mcp_env.rest.post(
            SERVERS, json={"workspaceId": mcp_env.workspace_id, "name": "x"}, headers=headers
        ),
        await mcp_env.rest.get(
            SERVERS, params={"workspaceId": mcp_env.workspace_id}, headers=headers
        ),
    ):
        assert _error(response, 403)["error"] == "SCOPE_DENIED"

    own = await mcp_env.rest.post(
        SERVERS, json={"workspaceId": other, "name": "own"}, headers=headers
    )
    assert own.status_code == 201, own.text
    listed = await mcp_env.rest.get(SERVERS, headers=headers)
    assert [s["id"] for s in listed.json()["servers"]] == [own.json()["server"]["id"]]
    untouched = await mcp_env.rest.get(path)
    assert untouched.json()["server"]["name"] == "mine"


async def test_a_request_without_an_api_key_is_unauthorized(mcp_env: McpEnv) -> None:
    response = await mcp_env.rest.get(SERVERS, headers={"Authorization": ""})

    assert _error(response, 401)["error"] == "UNAUTHORIZED"


# -- validation -----------------------------------------------------------------------------

OVERRIDE = {"integrationAlias": "kit", "actionName": "echo"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"bogus": 1}, "bogus"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"mode": "RESOURCES"}, "mode"),
        ({"endUserId": ""}, "endUserId"),
        ({"toolOverrides": {"integrationAlias": "kit"}}, "toolOverrides"),
        ({"toolOverrides": [{"actionName": "echo"}]}, "toolOverrides.0.integrationAlias"),
        ({"toolOverrides": [{"integrationAlias": "kit"}]}, "toolOverrides.0.actionName"),
        ({"toolOverrides": [{**OVERRIDE, "bogus": True}]}, "toolOverrides.0.bogus"),
        (
            {"toolOverrides": [{**OVERRIDE, "integrationAlias": "Not An Alias"}]},
            "toolOverrides.0.integrationAlias",
        ),
        (
            {"toolOverrides": [{**OVERRIDE, "actionName": "no spaces"}]},
            "toolOverrides.0.actionName",
        ),
        ({"toolOverrides": [{**OVERRIDE, "enabled": "no"}]}, "toolOverrides.0.enabled"),
        ({"toolOverrides": [{**OVERRIDE, "partialIds": "p1"}]}, "toolOverrides.0.partialIds"),
        (
            {"toolOverrides": [{**OVERRIDE, "description": "x" * 2001}]},
            "toolOverrides.0.description",
        ),
        ({"toolOverrides": [OVERRIDE] * 1001}, "toolOverrides"),
    ],
)
async def test_a_malformed_create_body_is_a_validation_error(
    mcp_env: McpEnv, fields: dict[str, Any], field: str
) -> None:
    body = {"workspaceId": mcp_env.workspace_id, "name": "assistant", **fields}

    response = await mcp_env.rest.post(SERVERS, json=body)

    error = _error(response, 400)
    assert (error["error"], error["field"]) == ("VALIDATION_ERROR", field)
    listed = await mcp_env.rest.get(SERVERS, params={"workspaceId": mcp_env.workspace_id})
    assert listed.json()["servers"] == []


async def test_a_create_body_missing_its_name_is_a_validation_error(mcp_env: McpEnv) -> None:
    response = await mcp_env.rest.post(SERVERS, json={"workspaceId": mcp_env.workspace_id})

    error = _error(response, 400)
    assert (error["error"], error["field"]) == ("VALIDATION_ERROR", "name")


async def test_an_unknown_workspace_is_not_found(mcp_env: McpEnv) -> None:
    response = await mcp_env.rest.post(
        SERVERS, json={"workspaceId": str(uuid.uuid4()), "name": "x"}
    )

    assert _error(response, 404)["error"] == "NOT_FOUND"


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_two_overrides_for_the_same_tool_are_refused(mcp_env: McpEnv, method: str) -> None:
    overrides = [
        {"integrationAlias": "kit", "actionName": "wait", "enabled": False},
        {**OVERRIDE, "description": "first"},
        {**OVERRIDE, "enabled": False},
    ]
    response = await _create_or_update(mcp_env, method, overrides)

    error = _error(response, 400)
    assert (error["error"], error["field"]) == ("VALIDATION_ERROR", "toolOverrides[2]")


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_an_override_naming_an_unknown_partial_is_refused(
    mcp_env: McpEnv, method: str
) -> None:
    real = await mcp_env.partial(
        integrationName="testkit", actionName="echo", name="real", values={"channel": "C"}
    )
    overrides = [{**OVERRIDE, "partialIds": [real["id"], str(uuid.uuid4())]}]

    response = await _create_or_update(mcp_env, method, overrides)

    error = _error(response, 400)
    assert error["error"] == "VALIDATION_ERROR"
    assert error["field"] == "toolOverrides[0].partialIds[1]"


async def test_an_override_naming_a_partial_of_another_workspace_is_refused(
    mcp_env: McpEnv,
) -> None:
    other = await _workspace(mcp_env)
    response = await mcp_env.rest.post(
        "/api/v1/partials",
        json={
            "workspaceId": other,
            "integrationName": "testkit",
            "name": "theirs",
            "values": {"channel": "C"},
        },
    )
    assert response.status_code == 201, response.text
    overrides = [{**OVERRIDE, "partialIds": [response.json()["partial"]["id"]]}]

    refused = await _create_or_update(mcp_env, "POST", overrides)

    error = _error(refused, 400)
    assert error["error"] == "VALIDATION_ERROR"
    assert error["field"] == "toolOverrides[0].partialIds[0]"


async def test_a_refused_update_leaves_the_server_as_it_was(mcp_env: McpEnv) -> None:
    created = (await _create(mcp_env, toolOverrides=[{**OVERRIDE, "description": "kept"}]))[
        "server"
    ]
    path = f"{SERVERS}/{created['id']}"

    refused = await mcp_env.rest.patch(
        path, json={"name": "changed", "toolOverrides": [OVERRIDE, OVERRIDE]}
    )

    assert _error(refused, 400)["error"] == "VALIDATION_ERROR"
    assert (await mcp_env.rest.get(path)).json()["server"] == created


async def _create_or_update(
    mcp_env: McpEnv, method: str, overrides: list[dict[str, Any]]
) -> httpx2.Response:
    if method == "POST":
        body = {"workspaceId": mcp_env.workspace_id, "name": "x", "toolOverrides": overrides}
        return await mcp_env.rest.post(SERVERS, json=body)
    server_id = (await _create(mcp_env))["server"]["id"]
    return await mcp_env.rest.patch(f"{SERVERS}/{server_id}", json={"toolOverrides": overrides})


# -- partials and overrides -----------------------------------------------------------------


async def test_deleting_a_partial_removes_its_id_from_every_tool_override(
    mcp_env: McpEnv,
) -> None:
    doomed = await mcp_env.partial(
        integrationName="testkit", actionName="echo", name="doomed", values={"channel": "C1"}
    )
    kept = await mcp_env.partial(
        integrationName="testkit", actionName="echo", name="kept", values={"count": 1}
    )
    first = await _create(
        mcp_env,
        toolOverrides=[
            {**OVERRIDE, "partialIds": [doomed["id"], kept["id"]], "description": "d"},
            {"integrationAlias": "kit", "actionName": "wait", "enabled": False},
        ],
    )
    second = await _create(mcp_env, toolOverrides=[{**OVERRIDE, "partialIds": [doomed["id"]]}])

    deleted = await mcp_env.rest.delete(f"/api/v1/partials/{doomed['id']}")
    assert deleted.status_code == 200, deleted.text

    one = (await mcp_env.rest.get(f"{SERVERS}/{first['server']['id']}")).json()["server"]
    two = (await mcp_env.rest.get(f"{SERVERS}/{second['server']['id']}")).json()["server"]
    assert one["toolOverrides"][0]["partialIds"] == [kept["id"]]
    assert one["toolOverrides"][0]["description"] == "d"
    assert one["toolOverrides"][1]["partialIds"] is None
    assert one["toolOverrides"][1]["enabled"] is False
    assert two["toolOverrides"][0]["partialIds"] == []
    # The cleaned overrides stay valid: saving them again is accepted.
    resaved = await mcp_env.rest.patch(
        f"{SERVERS}/{first['server']['id']}", json={"toolOverrides": one["toolOverrides"]}
    )
    assert resaved.status_code == 200, resaved.text
