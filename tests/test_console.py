"""The web console over plain HTTP: sign-in, its cookie and session, CSRF on every form,
sign-out, idle expiry, and that no form reaches another org's (or workspace's) resources."""

from __future__ import annotations

import html
import json
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
import sqlalchemy as sa

from treadle.app import Gateway
from treadle.engine.api_keys import create_key
from treadle.http_app import build_http_app
from treadle.store import schema

from conftest import BASE_URL, Api, client_for
from mcp_harness import free_port, subprocess_env
from oidc_provider import Provider, oidc_provider

pytestmark = pytest.mark.anyio

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SECRET = "ghp_console_secret_never_shown"


@dataclass
class Browser:
    client: httpx2.AsyncClient

    async def page(self, path: str) -> httpx2.Response:
        return await self.client.get(path)

    async def csrf(self, path: str = "/console/keys") -> str:
        found = CSRF.search((await self.client.get(path)).text)
        assert found is not None
        return found.group(1)

    async def post(self, path: str, fields: dict[str, Any], **kwargs: Any) -> httpx2.Response:
        return await self.client.post(path, data=fields, **kwargs)

    async def submit(self, path: str, fields: dict[str, Any]) -> httpx2.Response:
        return await self.post(path, {"csrf": await self.csrf(), **fields})


@asynccontextmanager
async def browser(gateway: Gateway, base_url: str = BASE_URL) -> AsyncIterator[Browser]:
    transport = httpx2.ASGITransport(app=build_http_app(gateway))
    async with httpx2.AsyncClient(
        transport=transport, base_url=base_url, follow_redirects=True
    ) as client:
        yield Browser(client)


async def signed_in(gateway: Gateway, key: str, base_url: str = BASE_URL) -> Browser:
    """A browser signed in with `key`; the caller closes its client."""
    transport = httpx2.ASGITransport(app=build_http_app(gateway))
    found = Browser(
        httpx2.AsyncClient(transport=transport, base_url=base_url, follow_redirects=True)
    )
    form = await found.page("/console/signin")
    token = CSRF.search(form.text)
    assert token is not None
    answer = await found.post(
        "/console/signin", {"csrf": token.group(1), "api_key": key}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return found


@pytest.fixture
async def console(api: Api) -> AsyncIterator[Browser]:
    found = await signed_in(api.gateway, api.api_key)
    yield found
    await found.client.aclose()


def set_cookies(response: httpx2.Response) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}


async def test_sign_in_sets_a_strict_http_only_session_cookie_and_keeps_only_its_hash(
    api: Api,
) -> None:
    async with browser(api.gateway) as b:
        form = await b.page("/console/signin")
        assert form.status_code == 200
        assert form.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
        token = CSRF.search(form.text)
        assert token is not None
        answer = await b.post(
            "/console/signin",
            {"csrf": token.group(1), "api_key": api.api_key},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        cookie = set_cookies(answer)["treadle_console"]
        lowered = cookie.lower()
        assert "httponly" in lowered
        assert "samesite=strict" in lowered
        assert "path=/console" in lowered
        assert "secure" not in lowered
        secret = cookie.split("=", 1)[1].split(";", 1)[0]
        async with api.gateway.store.db.read() as conn:
            rows = list(await conn.execute(sa.select(schema.console_sessions)))
        assert len(rows) == 1
        assert secret not in repr(tuple(rows[0]))
        assert api.api_key not in repr(tuple(rows[0]))
        inbox = await b.page("/console/approvals")
        assert inbox.status_code == 200
        assert "Pending approvals" in inbox.text


async def test_over_https_the_cookies_are_secure(api: Api) -> None:
    b = await signed_in(api.gateway, api.api_key, "https://treadle.test")
    try:
        answer = await b.post("/console/signout", {"csrf": await b.csrf()}, follow_redirects=False)
        assert answer.status_code == 303
        form = await b.page("/console/signin")
        assert "secure" in set_cookies(form)["treadle_console_csrf"].lower()
    finally:
        await b.client.aclose()


async def test_a_wrong_key_opens_no_session(api: Api) -> None:
    async with browser(api.gateway) as b:
        token = CSRF.search((await b.page("/console/signin")).text)
        assert token is not None
        answer = await b.post(
            "/console/signin", {"csrf": token.group(1), "api_key": api.api_key + "x"}
        )
        assert answer.status_code == 401
        assert "treadle_console" not in set_cookies(answer)
        page = await b.page("/console/approvals")
        assert page.url.path == "/console/signin"


async def test_sign_in_without_its_csrf_value_is_refused(api: Api) -> None:
    async with browser(api.gateway) as b:
        await b.page("/console/signin")
        answer = await b.post("/console/signin", {"csrf": "forged", "api_key": api.api_key})
        assert answer.status_code == 403
        assert "treadle_console" not in set_cookies(answer)


async def test_sign_out_ends_the_session_on_the_server(console: Browser) -> None:
    kept = console.client.cookies.get("treadle_console")
    answer = await console.post(
        "/console/signout", {"csrf": await console.csrf()}, follow_redirects=False
    )
    assert answer.status_code == 303
    # Even replaying the old cookie: the session is gone.
    assert kept is not None
    console.client.cookies.set("treadle_console", kept, domain="treadle.test", path="/console")
    page = await console.page("/console/keys")
    assert page.url.path == "/console/signin"


async def test_an_idle_session_expires(api: Api, console: Browser) -> None:
    # The session store is one per application; the console's is reached through it.
    app = console.client._transport.app  # type: ignore[attr-defined]
    app.state.console_sessions.idle_seconds = 0
    page = await console.page("/console/approvals")
    assert page.url.path == "/console/signin"


async def test_a_revoked_key_signs_its_sessions_out(api: Api) -> None:
    key, token = await create_key(api.gateway.store, "test", api.org_id, name="person")
    b = await signed_in(api.gateway, token)
    try:
        assert (await b.page("/console/keys")).status_code == 200
        revoked = await api.delete(f"/api-keys/{key.id}")
        assert revoked.status_code == 200
        assert (await b.page("/console/keys")).url.path == "/console/signin"
    finally:
        await b.client.aclose()


# Every form of a signed-in page: (path, fields), each refused without CSRF.
def forms(api: Api, ids: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    ws = api.workspace_id
    return [
        ("/console/signout", {}),
        (f"/console/approvals/{ids['approval']}", {"decision": "approve"}),
        (
            f"/console/workspaces/{ws}/integrations",
            {"integrationName": "kv-store", "connectionStrategy": "fixed", "integrationAlias": "x"},
        ),
        (f"/console/workspaces/{ws}/integrations/{ids['integration']}/delete", {}),
        ("/console/keys", {"name": "made-by-forgery"}),
        ("/console/servers", {"name": "forged", "workspaceId": ws, "mode": "TOOLS"}),
        (f"/console/keys/{ids['key']}/revoke", {}),
        (f"/console/servers/{ids['server']}/rotate", {}),
        (f"/console/servers/{ids['server']}/mode", {"mode": "DISCOVERY"}),
        (
            f"/console/servers/{ids['server']}/overrides",
            {"row": "0", "alias.0": "notes", "action.0": "get", "name.0": "forged"},
        ),
        (f"/console/servers/{ids['server']}/delete", {}),
        (
            "/console/connections",
            {
                "integrationName": "github",
                "type": "bearer",
                "displayName": "forged",
                "externalId": "forged",
                "workspaceId": ws,
                "secret": "s",
            },
        ),
        (f"/console/connections/{ids['connection']}/delete", {}),
        (
            "/console/connections/oauth",
            {"oauthIntegration": "github", "oauthWorkspace": ws},
        ),
        ("/console/end-users", {"userWorkspace": ws, "userExternalId": "forged"}),
        (f"/console/end-users/{ids['end_user']}/delete", {}),
    ]


async def resources(api: Api) -> dict[str, str]:
    """A pending approval, an installed integration and a spare key of `api`'s org."""
    integration = await api.configure("kv-store", integrationAlias="notes")
    policy = await api.post(
        "/approval-policies",
        {
            "workspaceId": api.workspace_id,
            "name": "puts need a person",
            "decision": "require_approval",
            "actionNames": ["put"],
        },
    )
    assert policy.status_code == 201, policy.text
    _agent, agent_token = await create_key(api.gateway.store, "test", api.org_id, name="agent")
    async with client_for(api.gateway, agent_token) as agent:
        asked = await agent.post(
            "/api/v1/actions/execute",
            json={
                "workspaceId": api.workspace_id,
                "integrationName": "kv-store",
                "integrationAlias": "notes",
                "actionName": "put",
                "endUserId": "alice",
                "input": {"key": "k", "value": "v"},
                "idempotencyKey": "console-test-1",
            },
        )
    assert asked.status_code == 202, asked.text
    spare, _token = await create_key(api.gateway.store, "test", api.org_id, name="spare")
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "bot"})
    assert server.status_code == 201, server.text
    user = await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": "bob"})
    assert user.status_code == 201, user.text
    connection = await api.post(
        "/connections",
        {
            "integrationName": "github",
            "type": "bearer",
            "displayName": "team token",
            "externalId": "gh_team",
            "workspaceId": api.workspace_id,
            "values": {"token": SECRET},
        },
    )
    assert connection.status_code == 201, connection.text
    app = await api.client.put(
        "/api/v1/oauth-apps/github", json={"clientId": "Iv1.console", "clientSecret": "cs"}
    )
    assert app.status_code == 201, app.text
    return {
        "approval": asked.json()["approval"]["id"],
        "integration": integration["id"],
        "key": spare.id,
        "server": server.json()["server"]["id"],
        "end_user": user.json()["endUser"]["id"],
        "connection": connection.json()["connection"]["id"],
    }


async def state(api: Api) -> tuple[Any, ...]:
    approvals = (await api.get("/approvals")).json()["approvals"]
    integrations = (await api.get(f"/workspaces/{api.workspace_id}/integrations")).json()
    keys = (await api.get("/api-keys")).json()["apiKeys"]
    servers = (await api.get("/mcp/servers")).json()["servers"]
    connections = (await api.get("/connections")).json()["connections"]
    users = (await api.get("/end-users")).json()["endUsers"]
    async with api.gateway.store.db.read() as conn:
        tokens = sorted((await conn.execute(sa.select(schema.mcp_servers.c.token_hash))).scalars())
        oauth_states = (
            await conn.execute(sa.select(sa.func.count()).select_from(schema.oauth_states))
        ).scalar_one()
    return (
        sorted((s["id"], s["mode"], repr(s["toolOverrides"])) for s in servers),
        tokens,
        oauth_states,
        sorted(c["id"] for c in connections),
        sorted(u["id"] for u in users),
        [(a["id"], a["status"]) for a in approvals],
        sorted(i["id"] for i in integrations["integrations"]),
        sorted(k["id"] for k in keys),
    )


@pytest.mark.parametrize("forgery", ["no-field", "wrong-value", "foreign-origin", "other-session"])
async def test_every_form_refuses_a_forged_post_and_changes_nothing(
    api: Api, console: Browser, forgery: str
) -> None:
    ids = await resources(api)
    before = await state(api)
    other = await signed_in(api.gateway, api.api_key)
    try:
        for path, fields in forms(api, ids):
            headers = {}
            if forgery == "no-field":
                sent = fields
            elif forgery == "wrong-value":
                sent = {**fields, "csrf": "0" * 64}
            elif forgery == "foreign-origin":
                sent = {**fields, "csrf": await console.csrf()}
                headers = {"Origin": "https://evil.example"}
            else:
                # A valid token of another session (cookie and field agree, the session not).
                token = await other.csrf()
                console.client.cookies.set(
                    "treadle_console_csrf", token, domain="treadle.test", path="/console"
                )
                sent = {**fields, "csrf": token}
            answer = await console.client.post(path, data=sent, headers=headers)
            assert answer.status_code == 403, (path, answer.status_code)
            assert await state(api) == before
    finally:
        await other.client.aclose()


async def test_no_form_reaches_another_orgs_resources(api: Api, gateway: Gateway) -> None:
    ids = await resources(api)
    before = await state(api)
    async with gateway.store.db.write("test") as txn:
        org = await gateway.store.orgs.create(txn, "other org")
        await gateway.store.workspaces.create(txn, org.id, "theirs")
    _key, token = await create_key(gateway.store, "test", org.id, name="intruder")
    intruder = await signed_in(gateway, token)
    try:
        for path, fields in forms(api, ids):
            if path == "/console/signout" or path == "/console/keys":
                continue  # those act on the intruder's own session and org
            answer = await intruder.submit(path, fields)
            assert answer.status_code == 404, (path, answer.status_code)
            assert await state(api) == before
        for path in (
            f"/console/workspaces/{api.workspace_id}",
            "/console/approvals",
            "/console/keys",
            "/console/activity",
        ):
            page = await intruder.page(path)
            assert ids["approval"] not in page.text
            assert ids["key"] not in page.text
            assert page.status_code in (200, 404)
        assert "puts need a person" not in (await intruder.page("/console/approvals")).text
    finally:
        await intruder.client.aclose()


async def test_a_workspace_key_sees_only_its_workspace(api: Api) -> None:
    ids = await resources(api)
    async with api.gateway.store.db.write("test") as txn:
        other = await api.gateway.store.workspaces.create(txn, api.org_id, "second")
    _key, token = await create_key(
        api.gateway.store, "test", api.org_id, name="narrow", workspace_id=other.id
    )
    narrow = await signed_in(api.gateway, token)
    try:
        listed = (await narrow.page("/console/workspaces")).text
        assert other.id in listed
        assert api.workspace_id not in listed
        assert (await narrow.page(f"/console/workspaces/{api.workspace_id}")).status_code == 403
        inbox = await narrow.page("/console/approvals")
        assert ids["approval"] not in inbox.text
        before = await state(api)
        decided = await narrow.submit(
            f"/console/approvals/{ids['approval']}", {"decision": "approve"}
        )
        assert decided.status_code == 403
        removed = await narrow.submit(
            f"/console/workspaces/{api.workspace_id}/integrations/{ids['integration']}/delete", {}
        )
        assert removed.status_code == 403
        revoked = await narrow.submit(f"/console/keys/{ids['key']}/revoke", {})
        assert revoked.status_code == 404
        # Every form of the new pages refuses another workspace's resources alike.
        for path, fields in forms(api, ids)[7:]:
            answer = await narrow.submit(path, fields)
            assert answer.status_code == 403, (path, answer.status_code)
            assert "SCOPE_DENIED" in answer.text
        for path in ("/console/connections", f"/console/servers/{ids['server']}"):
            page = await narrow.page(path)
            assert ids["connection"] not in page.text
            assert "gh_team" not in page.text
        assert await state(api) == before
    finally:
        await narrow.client.aclose()


async def test_an_approval_decided_in_the_inbox_lets_the_retry_run(
    api: Api, console: Browser
) -> None:
    ids = await resources(api)
    inbox = await console.page("/console/approvals")
    assert ids["approval"] in inbox.text
    assert 'aria-label="1 pending"' in inbox.text
    decided = await console.submit(
        f"/console/approvals/{ids['approval']}", {"decision": "approve", "reason": "fine"}
    )
    assert decided.status_code == 200
    assert 'aria-label="0 pending"' in decided.text
    approval = (await api.get(f"/approvals/{ids['approval']}")).json()["approval"]
    assert (approval["status"], approval["reason"]) == ("approved", "fine")
    again = await console.submit(f"/console/approvals/{ids['approval']}", {"decision": "reject"})
    assert again.status_code == 409
    assert "APPROVAL_NOT_PENDING" in again.text


async def test_adding_an_integration_shows_a_documented_error_beside_its_field(
    api: Api, console: Browser
) -> None:
    path = f"/console/workspaces/{api.workspace_id}/integrations"
    fields = {
        "integrationName": "kv-store",
        "connectionStrategy": "fixed",
        "integrationAlias": "notes",
        "allowedActions": ["get", "put"],
    }
    added = await console.submit(path, fields)
    assert added.status_code == 200
    assert "Added notes." in added.text
    installed = (await api.get(f"/workspaces/{api.workspace_id}/integrations")).json()
    (only,) = installed["integrations"]
    assert (only["integrationAlias"], sorted(only["allowedActions"])) == ("notes", ["get", "put"])
    clash = await console.submit(path, {**fields, "allowedActions": ["nope"]})
    assert clash.status_code == 400
    assert 'id="allowedActions-error"' in clash.text
    assert "VALIDATION_ERROR" in clash.text


async def test_a_key_made_in_the_console_is_shown_once_and_works(
    api: Api, console: Browser
) -> None:
    made = await console.submit("/console/keys", {"name": "ci"})
    assert made.status_code == 201
    token = re.search(r'id="new-token" readonly value="([^"]+)"', made.text)
    assert token is not None
    async with client_for(api.gateway, token.group(1)) as client:
        assert (await client.get("/api/v1/workspaces")).status_code == 200
    listed = await console.page("/console/keys")
    assert token.group(1) not in listed.text
    assert "ci" in listed.text
    bad = await console.submit(
        "/console/keys", {"name": "late", "expiresAt": "2000-01-01T00:00:00Z"}
    )
    assert bad.status_code == 400
    assert 'id="expiresAt-error"' in bad.text


async def test_activity_lists_with_filters_and_opens_a_record(api: Api, console: Browser) -> None:
    await resources(api)
    page = await console.page("/console/activity?type=action_execution")
    assert page.status_code == 200
    link = re.search(r'href="(/console/activity/[^"]+)"', page.text)
    assert link is not None
    detail = await console.page(link.group(1))
    assert detail.status_code == 200
    assert "approval_pending" in detail.text
    bad = await console.page("/console/activity?status=nonsense")
    assert bad.status_code == 400
    assert "VALIDATION_ERROR" in bad.text


@pytest.mark.parametrize(("mode", "status"), [("dashboard_only", 200), ("hosted_link_only", 403)])
async def test_the_inbox_decides_by_the_policys_access_mode(
    api: Api, console: Browser, mode: str, status: int
) -> None:
    ids = await resources(api)
    policies = (await api.get("/approval-policies")).json()["policies"]
    changed = await api.patch(
        f"/approval-policies/{policies[0]['id']}", {"approvalAccessMode": mode}
    )
    assert changed.status_code == 200, changed.text
    decided = await console.submit(f"/console/approvals/{ids['approval']}", {"decision": "approve"})
    assert decided.status_code == status
    approval = (await api.get(f"/approvals/{ids['approval']}")).json()["approval"]
    assert approval["status"] == ("approved" if status == 200 else "pending")
    if status == 403:
        assert "FORBIDDEN" in decided.text


async def test_the_inbox_shows_the_approvals_input_preview_escaped(
    api: Api, console: Browser
) -> None:
    # The preview is the one REST answers (the engine redacts it when the approval is made).
    ids = await resources(api)
    inbox = (await console.page("/console/approvals")).text
    approval = (await api.get(f"/approvals/{ids['approval']}")).json()["approval"]
    assert approval["inputPreview"] == {"key": "k", "value": "v"}
    assert "&#34;key&#34;: &#34;k&#34;" in inbox or "&quot;key&quot;: &quot;k&quot;" in inbox


async def test_the_pending_badge_fragment_and_htmx_are_served_from_the_package(
    api: Api, console: Browser
) -> None:
    await resources(api)
    badge = await console.page("/console/pending")
    assert badge.status_code == 200
    assert 'id="pending-count"' in badge.text
    assert 'aria-label="1 pending"' in badge.text
    script = await console.page("/console/static/htmx.min.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    page = await console.page("/console/approvals")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    async with browser(api.gateway) as signed_out:
        assert (await signed_out.page("/console/pending")).status_code == 401


async def test_an_mcp_server_made_in_the_console_shows_its_token_once_and_a_client_entry(
    api: Api, console: Browser
) -> None:
    made = await console.submit(
        "/console/servers", {"name": "Support bot", "workspaceId": api.workspace_id, "mode": "AUTO"}
    )
    assert made.status_code == 201
    token = re.search(r'id="new-server-token" readonly value="([^"]+)"', made.text)
    assert token is not None
    (server,) = (await api.get("/mcp/servers")).json()["servers"]
    assert (server["name"], server["mode"]) == ("Support bot", "AUTO")
    assert f"/mcp/{server['id']}" in made.text
    assert "treadle-Support-bot" in made.text
    assert "--server" in made.text
    # The token is the server's bearer, and is never shown again.
    found = await api.gateway.store.mcp_servers.by_token(token.group(1))
    assert found is not None
    assert found.id == server["id"]
    assert token.group(1) not in (await console.page("/console/servers")).text


# Connections and end users ------------------------------------------------------------------


def field_error(page: httpx2.Response, field: str) -> str:
    found = re.search(rf'id="{re.escape(field)}-error">([^<]*)<', page.text)
    assert found is not None, page.text[:2000]
    return found.group(1)


async def test_a_connection_made_in_the_console_is_listed_without_its_secret(
    api: Api, console: Browser
) -> None:
    await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": "alice"})
    fields = {
        "integrationName": "github",
        "type": "bearer",
        "displayName": "Alice's GitHub",
        "externalId": "gh_alice",
        "workspaceId": api.workspace_id,
        "endUserId": "alice",
        "secret": SECRET,
    }
    made = await console.submit("/console/connections", fields)
    assert made.status_code == 200
    assert "Connected Alice&#39;s GitHub." in made.text or "Connected Alice's GitHub." in made.text
    (listed,) = (await api.get("/connections")).json()["connections"]
    assert (listed["externalId"], listed["endUserId"], listed["type"]) == (
        "gh_alice",
        "alice",
        "bearer",
    )
    found = await api.gateway.store.connections.find(
        api.org_id, workspace_id=api.workspace_id, connection_id=listed["id"], with_secret=True
    )
    assert (await api.gateway.store.connections.credentials(found[0])).values == {"token": SECRET}
    page = await console.page("/console/connections")
    # At phone width each cell says what it is; the stylesheet is served as CSS, unescaped.
    assert 'data-label="Status"' in page.text
    assert 'content:attr(data-label) ": "' in page.text
    assert "gh_alice" in page.text
    assert "healthy" in page.text
    assert SECRET not in page.text
    # A token that could not be refreshed: the list says so.
    async with api.gateway.store.db.write("test") as txn:
        await api.gateway.store.connections.set_status(txn, found[0], "needs_reauth")
    assert "needs re-authentication" in (await console.page("/console/connections")).text

    again = await console.submit("/console/connections", fields)
    assert again.status_code == 409
    assert "DUPLICATE" in again.text
    assert SECRET not in again.text  # a refused form is shown again without its secret
    nobody = await console.submit(
        "/console/connections", {**fields, "externalId": "gh_x", "endUserId": "nobody"}
    )
    assert nobody.status_code == 400
    assert "VALIDATION_ERROR" in field_error(nobody, "endUserId")
    unnamed = await console.submit("/console/connections", {**fields, "displayName": ""})
    assert unnamed.status_code == 400
    assert "VALIDATION_ERROR" in field_error(unnamed, "displayName")
    custom = await console.submit(
        "/console/connections", {**fields, "type": "custom", "externalId": "gh_c"}
    )
    assert custom.status_code == 400
    assert "VALIDATION_ERROR" in field_error(custom, "secretName")

    deleted = await console.submit(f"/console/connections/{listed['id']}/delete", {})
    assert deleted.status_code == 200
    assert (await api.get("/connections")).json()["connections"] == []
    missing = await console.submit(f"/console/connections/{listed['id']}/delete", {})
    assert missing.status_code == 404
    # Fields are taken whole: a long external ID is kept, an over-long name refused.
    long_id = "e" * 250
    kept = await console.submit(
        "/console/connections", {**fields, "externalId": long_id, "endUserId": ""}
    )
    assert kept.status_code == 200
    assert [c["externalId"] for c in (await api.get("/connections")).json()["connections"]] == [
        long_id
    ]
    too_long = await console.submit("/console/connections", {**fields, "displayName": "n" * 101})
    assert too_long.status_code == 400
    assert "VALIDATION_ERROR" in field_error(too_long, "displayName")


async def test_an_org_wide_connection_needs_an_org_wide_key(api: Api) -> None:
    _key, token = await create_key(
        api.gateway.store, "test", api.org_id, name="narrow", workspace_id=api.workspace_id
    )
    narrow = await signed_in(api.gateway, token)
    try:
        made = await narrow.submit(
            "/console/connections",
            {
                "integrationName": "github",
                "type": "api_key",
                "displayName": "org-wide",
                "externalId": "gh_org",
                "secret": SECRET,
            },
        )
        assert made.status_code == 403
        assert "SCOPE_DENIED" in made.text
        assert (await api.get("/connections")).json()["connections"] == []
    finally:
        await narrow.client.aclose()


async def test_end_users_are_added_and_deleted_with_documented_errors(
    api: Api, console: Browser
) -> None:
    fields = {"userWorkspace": api.workspace_id, "userExternalId": "carol", "userEmail": "c@x.io"}
    made = await console.submit("/console/end-users", fields)
    assert made.status_code == 200
    (user,) = (await api.get("/end-users")).json()["endUsers"]
    assert (user["externalId"], user["email"]) == ("carol", "c@x.io")
    twice = await console.submit("/console/end-users", fields)
    assert twice.status_code == 409
    assert "DUPLICATE" in field_error(twice, "userExternalId")
    bad = await console.submit("/console/end-users", {**fields, "userEmail": "not-an-address"})
    assert bad.status_code == 400
    assert "VALIDATION_ERROR" in field_error(bad, "userEmail")
    gone = await console.submit(f"/console/end-users/{user['id']}/delete", {})
    assert gone.status_code == 200
    assert (await api.get("/end-users")).json()["endUsers"] == []


async def test_the_oauth_button_starts_the_providers_flow(api: Api, console: Browser) -> None:
    page = await console.page("/console/connections")
    assert "No OAuth app is configured" in page.text
    put = await api.client.put(
        "/api/v1/oauth-apps/github",
        json={
            "clientId": "Iv1.console",
            "clientSecret": "cs",
            "authorizationUrl": "https://github.example/login/oauth/authorize",
        },
    )
    assert put.status_code == 201, put.text
    page = await console.page("/console/connections")
    # The form's answer redirects to the provider: the page's CSP lets it.
    assert "form-action 'self' https://github.example" in page.headers["content-security-policy"]
    started = await console.post(
        "/console/connections/oauth",
        {
            "csrf": await console.csrf(),
            "oauthIntegration": "github",
            "oauthWorkspace": api.workspace_id,
        },
        follow_redirects=False,
    )
    assert started.status_code == 303
    location = started.headers["location"]
    assert location.startswith("https://github.example/login/oauth/authorize?")
    assert "client_id=Iv1.console" in location
    assert "code_challenge=" in location
    unknown = await console.submit(
        "/console/connections/oauth",
        {"oauthIntegration": "github", "oauthWorkspace": api.workspace_id, "oauthEndUser": "x"},
    )
    assert unknown.status_code == 400
    assert "VALIDATION_ERROR" in field_error(unknown, "oauthEndUser")
    no_app = await console.submit(
        "/console/connections/oauth",
        {"oauthIntegration": "slack", "oauthWorkspace": api.workspace_id},
    )
    assert no_app.status_code == 404
    assert "NOT_FOUND" in no_app.text


# MCP servers --------------------------------------------------------------------------------


async def made_server(api: Api, console: Browser, mode: str = "TOOLS") -> tuple[str, str, str]:
    """(server id, its token, the page that showed it)."""
    made = await console.submit(
        "/console/servers", {"name": "Support bot", "workspaceId": api.workspace_id, "mode": mode}
    )
    assert made.status_code == 201
    token = re.search(r'id="new-server-token" readonly value="([^"]+)"', made.text)
    assert token is not None
    (server,) = (await api.get("/mcp/servers")).json()["servers"]
    return server["id"], token.group(1), made.text


async def test_client_configurations_name_the_endpoint_and_the_fresh_token(
    api: Api, console: Browser
) -> None:
    server_id, token, shown = await made_server(api, console)
    endpoint = f"{api.gateway.settings.public_url.rstrip('/')}/mcp/{server_id}"
    text = html.unescape(shown)
    for element in (
        "config-claude-desktop",
        "config-claude-code",
        "config-cursor",
        "config-vscode",
    ):
        assert f'id="{element}"' in shown
    desktop = json.loads(textarea(text, "config-claude-desktop"))
    entry = desktop["mcpServers"]["treadle-Support-bot"]
    assert entry["args"][:3] == ["stdio", "--server", server_id]
    cursor = json.loads(textarea(text, "config-cursor"))
    assert cursor["mcpServers"]["treadle-Support-bot"] == {
        "url": endpoint,
        "headers": {"Authorization": f"Bearer {token}"},
    }
    vscode = json.loads(textarea(text, "config-vscode"))
    assert vscode["servers"]["treadle-Support-bot"]["url"] == endpoint
    assert token not in textarea(text, "config-vscode")  # VS Code asks for it instead
    code = shlex.split(textarea(text, "config-claude-code"))
    assert code[:6] == ["claude", "mcp", "add", "--transport", "http", "treadle-Support-bot"]
    assert code[6:] == [endpoint, "--header", f"Authorization: Bearer {token}"]
    later = await console.page(f"/console/servers/{server_id}")
    assert later.status_code == 200
    assert token not in later.text
    assert "Bearer mcp_…" in html.unescape(later.text)


def textarea(text: str, element: str) -> str:
    found = re.search(rf'<textarea id="{element}"[^>]*>(.*?)</textarea>', text, re.S)
    assert found is not None
    return found.group(1)


async def test_rotating_a_token_refuses_the_old_one_at_once(api: Api, console: Browser) -> None:
    server_id, old, _shown = await made_server(api, console)
    rotated = await console.submit(f"/console/servers/{server_id}/rotate", {})
    assert rotated.status_code == 200
    new = re.search(r'id="new-server-token" readonly value="([^"]+)"', rotated.text)
    assert new is not None
    assert new.group(1) != old
    assert await api.gateway.store.mcp_servers.by_token(old) is None
    found = await api.gateway.store.mcp_servers.by_token(new.group(1))
    assert found is not None
    assert found.id == server_id


async def test_the_tool_list_is_the_mcp_faces_and_follows_overrides_and_mode(
    api: Api, console: Browser
) -> None:
    await api.configure("kv-store", integrationAlias="notes")
    server_id, _token, shown = await made_server(api, console)
    assert "<code>notes__get</code>" in shown
    assert "<code>notes__put</code>" in shown
    page = (await console.page(f"/console/servers/{server_id}")).text
    rows = dict(re.findall(r'name="action\.(\d+)" value="([^"]+)"', page))
    index = {action: i for i, action in rows.items()}
    fields: dict[str, Any] = {"row": list(rows)}
    for i, action in rows.items():
        fields[f"alias.{i}"] = "notes"
        fields[f"action.{i}"] = action
        if action != "delete":
            fields[f"enabled.{i}"] = "on"
    fields[f"name.{index['get']}"] = "read_note"
    fields[f"description.{index['get']}"] = "Read one note."
    saved = await console.submit(f"/console/servers/{server_id}/overrides", fields)
    assert saved.status_code == 200
    (server,) = (await api.get("/mcp/servers")).json()["servers"]
    overrides = {o["actionName"]: o for o in server["toolOverrides"]}
    assert overrides["get"]["name"] == "read_note"
    assert overrides["delete"]["enabled"] is False
    assert set(overrides) == {"get", "delete"}
    page = (await console.page(f"/console/servers/{server_id}")).text
    assert "<code>read_note</code>" in page
    assert "Read one note." in page
    assert "<code>notes__delete</code>" not in page

    bad = await console.submit(
        f"/console/servers/{server_id}/overrides",
        {**fields, f"name.{index['get']}": "no spaces allowed"},
    )
    assert bad.status_code == 400
    assert "VALIDATION_ERROR" in field_error(bad, f"name.{index['get']}")
    clash = await console.submit(
        f"/console/servers/{server_id}/overrides",
        {**fields, f"name.{index['put']}": "read_note"},
    )
    assert clash.status_code == 400
    assert "VALIDATION_ERROR" in field_error(clash, "overrides")

    moded = await console.submit(f"/console/servers/{server_id}/mode", {"mode": "DISCOVERY"})
    assert moded.status_code == 200
    assert (await api.get("/mcp/servers")).json()["servers"][0]["mode"] == "DISCOVERY"
    assert "discovery meta-tools" in moded.text
    assert "<code>read_note</code>" not in moded.text.split('id="tool-list"')[1].split("</ul>")[0]
    wrong = await console.submit(f"/console/servers/{server_id}/mode", {"mode": "LOUD"})
    assert wrong.status_code == 400
    assert "VALIDATION_ERROR" in field_error(wrong, "mode")
    threshold = await console.submit(
        f"/console/servers/{server_id}/mode", {"mode": "AUTO", "autoThreshold": "-1"}
    )
    assert threshold.status_code == 400
    assert "VALIDATION_ERROR" in field_error(threshold, "autoThreshold")

    deleted = await console.submit(f"/console/servers/{server_id}/delete", {})
    assert deleted.status_code == 200
    assert (await api.get("/mcp/servers")).json()["servers"] == []
    assert (await console.page(f"/console/servers/{server_id}")).status_code == 404


# Activity -------------------------------------------------------------------------------------


async def test_activity_filters_by_integration_and_action_pages_and_charts(
    api: Api, console: Browser
) -> None:
    await api.configure("kv-store", integrationAlias="notes")
    for index in range(3):
        ran = await api.execute(
            integrationName="kv-store",
            integrationAlias="notes",
            endUserId="alice",
            actionName="put",
            input={"key": f"k{index}", "value": index},
        )
        assert ran.status_code == 200, ran.text
    refused = await api.execute(
        integrationName="kv-store",
        integrationAlias="notes",
        endUserId="alice",
        actionName="put",
        input={},
    )
    assert refused.status_code == 400
    got = await api.execute(
        integrationName="kv-store",
        integrationAlias="notes",
        endUserId="alice",
        actionName="get",
        input={"key": "k0"},
    )
    assert got.status_code == 200

    puts = await console.page("/console/activity?integrationName=kv-store&actionName=put")
    assert puts.status_code == 200
    log = puts.text.split('id="activity-log"')[1]
    assert log.count("· put") == 4
    assert "· get" not in log
    # The chart: an accessible SVG and the same numbers as a table.
    assert (
        '<svg id="activity-chart" role="img" aria-labelledby="chart-title chart-desc"' in puts.text
    )
    assert '<title id="chart-title">Calls and errors per hour</title>' in puts.text
    assert "4 calls, 1 of them failed or refused" in puts.text
    table = puts.text.split('id="chart-table"')[1].split("</table>")[0]
    assert re.search(r"<td[^>]*>4</td><td[^>]*>1</td>", table)

    first = await console.page("/console/activity?type=action_execution&limit=2")
    older = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert older is not None
    second = await console.page(html.unescape(older.group(1)))
    assert second.status_code == 200
    ids_first = set(re.findall(r'href="/console/activity/([^"]+)"', first.text))
    ids_second = set(re.findall(r'href="/console/activity/([^"]+)"', second.text))
    assert len(ids_first) == len(ids_second) == 2
    assert not ids_first & ids_second
    assert "Newest entries" in second.text

    week = await console.page("/console/activity?range=7d&actionName=get")
    assert "Calls and errors per day" in week.text
    assert "1 calls, 0 of them failed" in week.text
    assert (await console.page("/console/activity?range=1y")).status_code == 400
    bad = await console.page("/console/activity?since=yesterday")
    assert bad.status_code == 400
    assert "VALIDATION_ERROR" in bad.text

    record = await console.page(f"/console/activity/{sorted(ids_first)[0]}")
    assert record.status_code == 200
    assert "<dt>Status</dt>" in record.text
    foreign = await console.page("/console/activity/nope")
    assert foreign.status_code == 404


# Sign-in at the org's OpenID Connect provider -------------------------------------------------


@pytest.fixture
def provider() -> Iterator[Provider]:
    with oidc_provider() as running:
        yield running


async def oidc_sign_in(
    api: Api, provider: Provider, b: Browser, idp_id: str, sub: str
) -> httpx2.Response:
    """The person clicks through: console start, the provider's page, treadle's callback,
    the console's finish (which answers the page that leads on)."""
    started = await b.client.get(f"/console/signin/oidc/start?idp={idp_id}", follow_redirects=False)
    assert started.status_code == 303, started.text
    async with httpx2.AsyncClient(trust_env=False) as at_provider:
        authorize = started.headers["location"]
        assert (await at_provider.get(authorize)).status_code == 200
        back = await at_provider.post(authorize, data={"sub": sub})
    assert back.status_code == 302, back.text
    parts = urlsplit(back.headers["location"])
    called = await b.client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
    assert called.status_code == 303, called.text
    return await b.client.get(called.headers["location"], follow_redirects=False)


async def add_oidc(api: Api, provider: Provider) -> str:
    created = await api.post(
        "/identity-providers",
        {
            "name": "corporate",
            "kind": "oidc",
            "issuer": provider.issuer,
            "clientId": "treadle-client",
            "clientSecret": "idp-secret",
            "allowPrivateNetwork": True,
        },
    )
    assert created.status_code == 201, created.text
    idp_id: str = created.json()["identityProvider"]["id"]
    return idp_id


async def test_a_person_signs_in_at_the_orgs_provider_as_the_key_named_after_them(
    api: Api, provider: Provider
) -> None:
    idp_id = await add_oidc(api, provider)
    key, _token = await create_key(
        api.gateway.store, "test", api.org_id, name="alice", workspace_id=api.workspace_id
    )
    async with browser(api.gateway) as b:
        page = await b.page(f"/console/signin?idp={idp_id}")
        assert f'href="/console/signin/oidc/start?idp={idp_id}"' in page.text
        assert "Sign in with corporate" in page.text
        done = await oidc_sign_in(api, provider, b, idp_id, "alice")
        assert done.status_code == 200
        assert 'http-equiv="refresh" content="0;url=/console/approvals"' in done.text
        cookie = set_cookies(done)["treadle_console"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        keys = await b.page("/console/keys")
        assert keys.url.path == "/console/keys"
        assert "alice (" in keys.text
        assert "one workspace" in keys.text  # the key's reach, not more
        # Revoking the key signs the person out.
        async with api.gateway.store.db.write("test") as txn:
            await api.gateway.store.api_keys.revoke(txn, key)
        assert (await b.page("/console/keys")).url.path == "/console/signin"


async def test_a_person_no_key_is_named_after_is_refused(api: Api, provider: Provider) -> None:
    idp_id = await add_oidc(api, provider)
    async with browser(api.gateway) as b:
        done = await oidc_sign_in(api, provider, b, idp_id, "mallory")
        assert done.status_code == 403
        assert "no_console_access" in done.text
        assert "treadle_console" not in set_cookies(done)
        assert (await b.page("/console/keys")).url.path == "/console/signin"


async def test_a_ticket_handed_to_another_browser_signs_nobody_in(
    api: Api, provider: Provider
) -> None:
    idp_id = await add_oidc(api, provider)
    await create_key(api.gateway.store, "test", api.org_id, name="attacker")
    async with browser(api.gateway) as attacker, browser(api.gateway) as victim:
        started = await attacker.client.get(
            f"/console/signin/oidc/start?idp={idp_id}", follow_redirects=False
        )
        async with httpx2.AsyncClient(trust_env=False) as at_provider:
            authorize = started.headers["location"]
            await at_provider.get(authorize)
            back = await at_provider.post(authorize, data={"sub": "attacker"})
        parts = urlsplit(back.headers["location"])
        called = await attacker.client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
        assert called.status_code == 303
        # The finish link (with its ticket) opened in the victim's browser.
        lured = await victim.client.get(called.headers["location"], follow_redirects=False)
        assert lured.status_code == 400
        assert "treadle_console" not in set_cookies(lured)
    async with browser(api.gateway) as b:
        unknown = await b.page("/console/signin/oidc/start?idp=nope")
        assert unknown.status_code == 404
        assert "NOT_FOUND" in unknown.text


def test_treadle_serve_prints_the_console_url(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = subprocess_env(data_dir)
    subprocess.run(
        [sys.executable, "-m", "treadle", "init"], env=env, check=True, capture_output=True
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "treadle", "serve", "--port", str(port)],
        env={**env, "TREADLE_PUBLIC_URL": f"http://127.0.0.1:{port}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # pytest-timeout bounds a hang
            seen.append(line)
            if "web console:" in line:
                break
        else:
            raise AssertionError("no console URL:\n" + "".join(seen))
        assert f"http://127.0.0.1:{port}/console" in line
        with httpx2.Client(timeout=30) as client:
            page = client.get(f"http://127.0.0.1:{port}/console", follow_redirects=True)
        assert page.status_code == 200
        assert str(page.url).endswith("/console/signin")
    finally:
        process.terminate()
        process.wait(timeout=10)
