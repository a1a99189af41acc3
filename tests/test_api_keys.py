"""`/api/v1/api-keys`: listing (never a secret), creating (shown once), revoking and expiry,
refused at once on REST, on the approval endpoints and on an MCP endpoint whose admission
another process had cached."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx2
import pytest

from test_api_auth import (
    add_workspace,
    assert_error,
    bearer,
    gateway,  # noqa: F401
    settings,  # noqa: F401
    templates,  # noqa: F401
)
from test_gates_execute import Gates, gates_fixture, pending  # noqa: F401
from test_mcp_http_access import in_session, open_session
from treadle.clock import iso, utcnow
from treadle.http_app import build_http_app
from treadle.mcp import http as mcp_http
from treadle.store import records

from conftest import Api
from mcp_harness import McpEnv

pytestmark = pytest.mark.anyio

# A 2026-07-28 request: no session, so every request is admitted afresh or from memory.
ACCEPT = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/list",
}
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}}
KEY_FIELDS = {"id", "orgId", "workspaceId", "name", "keyPrefix", "createdAt", "expiresAt"}


async def create(api: Api, token: str | None = None, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "ci")
    headers = None if token is None else bearer(token)
    response = await api.post("/api-keys", body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def move_clock(monkeypatch: pytest.MonkeyPatch, ahead: timedelta) -> None:
    """Let time pass for the expiry checks (the key records' and the MCP admissions')."""
    later = iso(utcnow() + ahead)
    monkeypatch.setattr(records, "now_iso", lambda: later)
    monkeypatch.setattr(mcp_http, "now_iso", lambda: later)


# -- listing and creating ----------------------------------------------------------------------


async def test_a_created_key_is_shown_once_and_listed_without_its_secret(api: Api) -> None:
    created = await create(api, name="deploy bot")
    token = created["token"]
    key = created["apiKey"]
    assert set(key) == KEY_FIELDS
    assert token.startswith("trd_")
    assert token.startswith(key["keyPrefix"])
    assert (key["name"], key["workspaceId"], key["expiresAt"]) == ("deploy bot", None, None)

    listed = await api.get("/api-keys")
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 2  # the initial key and this one
    assert [k["id"] for k in body["apiKeys"]][-1] == key["id"]
    assert token not in listed.text
    assert api.api_key not in listed.text
    # The new key works.
    assert (await api.get("/workspaces", headers=bearer(token))).status_code == 200


async def test_a_key_restricted_to_a_workspace_sees_and_makes_only_its_workspaces_keys(
    api: Api,
) -> None:
    other = await add_workspace(api)
    scoped = (await create(api, workspaceId=api.workspace_id))["token"]
    await create(api, workspaceId=other)

    listed = (await api.get("/api-keys", headers=bearer(scoped))).json()["apiKeys"]
    assert {k["workspaceId"] for k in listed} == {api.workspace_id}
    made = await create(api, scoped, workspaceId=api.workspace_id)
    assert made["apiKey"]["workspaceId"] == api.workspace_id
    refused = await api.post("/api-keys", {"name": "wide"}, headers=bearer(scoped))
    assert_error(refused, 403, "SCOPE_DENIED")
    elsewhere = {"name": "x", "workspaceId": other}
    assert_error(
        await api.post("/api-keys", elsewhere, headers=bearer(scoped)), 403, "SCOPE_DENIED"
    )
    # The org-wide initial key is not the restricted key's to revoke, nor to see.
    keys = (await api.get("/api-keys")).json()["apiKeys"]
    org_wide = next(k["id"] for k in keys if k["workspaceId"] is None)
    assert_error(
        await api.delete(f"/api-keys/{org_wide}", headers=bearer(scoped)), 404, "NOT_FOUND"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "expiresAt": "soon"}, "expiresAt"),
        ({"name": "x", "expiresAt": "2020-01-01T00:00:00Z"}, "expiresAt"),
        ({"name": "x", "secret": "mine"}, "secret"),
    ],
)
async def test_bad_key_requests_are_refused_and_create_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    before = (await api.get("/api-keys")).json()
    refused = assert_error(await api.post("/api-keys", body), 400, "VALIDATION_ERROR")
    assert refused["field"] == field
    assert (await api.get("/api-keys")).json() == before


async def test_a_key_for_an_unknown_workspace_is_not_found(api: Api) -> None:
    missing = {"name": "x", "workspaceId": "00000000-0000-0000-0000-000000000000"}
    assert_error(await api.post("/api-keys", missing), 404, "NOT_FOUND")


# -- revoking and expiry ----------------------------------------------------------------------


async def test_a_revoked_key_is_refused_at_once_and_the_revocation_is_recorded(api: Api) -> None:
    created = await create(api)
    token, key_id = created["token"], created["apiKey"]["id"]
    # Used first, so the configuration cache holds it.
    assert (await api.get("/workspaces", headers=bearer(token))).status_code == 200

    revoked = await api.delete(f"/api-keys/{key_id}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"deleted": True, "id": key_id}
    assert_error(await api.get("/workspaces", headers=bearer(token)), 401, "UNAUTHORIZED")
    assert key_id not in (await api.get("/api-keys")).text
    assert_error(await api.delete(f"/api-keys/{key_id}"), 404, "NOT_FOUND")

    changes = await api.get("/activity", params={"type": "config_change"})
    entry = next(e for e in changes.json()["activity"] if e["targetId"] == key_id)
    assert (entry["targetType"], entry["change"]) == ("api_key", "deleted")


async def test_a_workspace_key_revoked_is_refused_and_other_keys_still_work(api: Api) -> None:
    scoped = await create(api, workspaceId=api.workspace_id)
    kept = await create(api, workspaceId=api.workspace_id)
    for made in (scoped, kept):
        assert (await api.get("/workspaces", headers=bearer(made["token"]))).status_code == 200
    revoked = await api.delete(f"/api-keys/{scoped['apiKey']['id']}", headers=bearer(kept["token"]))
    assert revoked.status_code == 200, revoked.text
    assert_error(await api.get("/workspaces", headers=bearer(scoped["token"])), 401, "UNAUTHORIZED")
    assert (await api.get("/workspaces", headers=bearer(kept["token"]))).status_code == 200
    assert (await api.get("/workspaces")).status_code == 200


async def test_an_expired_key_is_refused_on_rest_and_mcp_even_while_remembered(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = iso(utcnow() + timedelta(days=30))
    created = await create(api, expiresAt=later)
    assert created["apiKey"]["expiresAt"] == later
    token = created["token"]
    made = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    server_id = made.json()["server"]["id"]
    app = build_http_app(api.gateway)
    mcp_headers = {**bearer(token), **ACCEPT, "X-Treadle-End-User": "alice"}
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8400"
        ) as http,
    ):
        # Used first: the key cache and the MCP endpoint's admissions remember it.
        assert (await http.get("/api/v1/workspaces", headers=bearer(token))).status_code == 200
        first = await http.post(f"/mcp/{server_id}", json=LIST, headers=mcp_headers)
        assert first.is_success, first.text

        move_clock(monkeypatch, timedelta(days=29, hours=23))
        assert (await http.get("/api/v1/workspaces", headers=bearer(token))).status_code == 200
        move_clock(monkeypatch, timedelta(days=30, seconds=1))
        refused = await http.get("/api/v1/workspaces", headers=bearer(token))
        assert_error(refused, 401, "UNAUTHORIZED")
        mcp = await http.post(f"/mcp/{server_id}", json=LIST, headers=mcp_headers)
        assert mcp.status_code == 401, mcp.text


async def test_a_revoked_reviewer_key_can_neither_read_nor_decide_approvals(gates: Gates) -> None:
    await gates.policy()
    approval_id = pending(await gates.send({"to": "a@example.com"}))["id"]
    reviewer = await create(gates.api)
    token = reviewer["token"]
    assert (await gates.api.get("/approvals", headers=bearer(token))).status_code == 200

    assert (await gates.api.delete(f"/api-keys/{reviewer['apiKey']['id']}")).status_code == 200
    assert_error(await gates.api.get("/approvals", headers=bearer(token)), 401, "UNAUTHORIZED")
    decided = await gates.api.post(f"/approvals/{approval_id}/approve", {}, headers=bearer(token))
    assert_error(decided, 401, "UNAUTHORIZED")
    still = (await gates.api.get(f"/approvals/{approval_id}")).json()["approval"]
    assert still["status"] == "pending"


# -- across processes: the key revoked here, refused by `treadle serve` -------------------------


@pytest.mark.parametrize("transport", ["http"])
async def test_a_key_revoked_in_one_process_is_refused_at_once_by_another(
    mcp_env: McpEnv, transport: str
) -> None:
    assert mcp_env.serve is not None
    await mcp_env.create_server()
    made = await mcp_env.rest.post("/api/v1/api-keys", json={"name": "agent"})
    assert made.status_code == 201, made.text
    token, key_id = made.json()["token"], made.json()["apiKey"]["id"]
    remote = httpx2.AsyncClient(base_url=mcp_env.serve.base_url, headers=bearer(token))
    async with remote:
        # The other process admits the key (and remembers the admission) on REST and MCP.
        assert (await remote.get("/api/v1/workspaces")).status_code == 200
        headers = {"X-Treadle-End-User": "alice"}
        session = await open_session(mcp_env.mcp_url, token, headers)
        assert (await in_session(mcp_env.mcp_url, token, session, headers)).status_code == 200

        revoked = await mcp_env.rest.delete(f"/api/v1/api-keys/{key_id}")
        assert revoked.status_code == 200, revoked.text

        assert_error(await remote.get("/api/v1/workspaces"), 401, "UNAUTHORIZED")
        refused = await in_session(mcp_env.mcp_url, token, session, headers)
        assert refused.status_code == 401, refused.text
