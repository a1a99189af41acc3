"""The web console over plain HTTP: sign-in, its cookie and session, CSRF on every form,
sign-out, idle expiry, and that no form reaches another org's (or workspace's) resources."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from treadle.app import Gateway
from treadle.engine.api_keys import create_key
from treadle.http_app import build_http_app
from treadle.store import schema

from conftest import BASE_URL, Api, client_for

pytestmark = pytest.mark.anyio

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


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
    return {
        "approval": asked.json()["approval"]["id"],
        "integration": integration["id"],
        "key": spare.id,
    }


async def state(api: Api) -> tuple[Any, ...]:
    approvals = (await api.get("/approvals")).json()["approvals"]
    integrations = (await api.get(f"/workspaces/{api.workspace_id}/integrations")).json()
    keys = (await api.get("/api-keys")).json()["apiKeys"]
    servers = (await api.get("/mcp/servers")).json()["servers"]
    return (
        sorted(s["id"] for s in servers),
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
