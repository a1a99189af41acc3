"""An upstream MCP server that requires OAuth (issue 15): treadle signs in as an MCP OAuth client.

The upstream and its authorization server (the SDK's) run on loopback (`upstream_oauth.py`).
treadle discovers the authorization server from the upstream's 401 (RFC 9728, RFC 8414),
registers itself (RFC 7591), sends people through its own connect page and callback with PKCE
S256 and the `resource` indicator (RFC 8707), keeps each end user's tokens as their own
connection and refreshes them once, with rotation, when they expire.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from mcp import Client

from emulators.oauth_stage import local, start
from treadle.app import Gateway
from treadle.catalog.upstream.sessions import SessionPool, Target
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime
from treadle.settings import Settings
from upstream_fixture import Upstream, http_app
from upstream_oauth import Protected, protected_upstream

from conftest import Api, api_on, client_for
from loopback import serve

pytestmark = pytest.mark.anyio

PUBLIC = "http://127.0.0.1:8400"


@pytest.fixture
async def protected() -> AsyncIterator[Protected]:
    async with protected_upstream() as running:
        yield running


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    gateway = await Gateway.open(settings)
    try:
        async with api_on(gateway, PUBLIC) as opened:
            yield opened
    finally:
        await gateway.close()


class Browser:
    """A person's browser: treadle's pages in process, the authorization server over HTTP.
    Keeps every page it saw, to look for secrets in them."""

    def __init__(self, api: Api, public: str = PUBLIC) -> None:
        self.api = api
        self.public = public
        self.pages: list[str] = []

    async def sign_in_at(self, location: str, username: str) -> httpx2.Response:
        """At the authorization server: follow /authorize to the sign-in form, post it, and
        bring the code back to treadle's callback."""
        async with httpx2.AsyncClient(follow_redirects=False) as browser:
            authorize = await browser.get(location)
            assert authorize.status_code == 302, authorize.text
            form = await browser.get(authorize.headers["location"])
            assert form.status_code == 200, form.text
            [request_id] = re.findall(r'name=request value="([^"]+)"', form.text)
            login_url = urlsplit(authorize.headers["location"])
            posted = await browser.post(
                f"{login_url.scheme}://{login_url.netloc}/login",
                data={"request": request_id, "username": username},
            )
        assert posted.status_code == 302, posted.text
        callback = posted.headers["location"]
        assert callback.startswith(f"{self.public}/oauth/callback?")
        finished = await self.api.client.get(local(callback))
        self.pages.append(finished.text)
        return finished

    async def connect(self, connect_url: str, username: str, button: str) -> httpx2.Response:
        """From the connect link: press the upstream's sign-in button and sign in."""
        page = await self.api.client.get(local(connect_url))
        assert page.status_code == 200, page.text
        self.pages.append(page.text)
        assert button in page.text
        fields = dict(re.findall(r'name=(\w+) value="([^"]*)"', page.text))
        started = await self.api.client.post(
            "/connect/oauth", data=fields, headers={"Origin": self.public}
        )
        assert started.status_code == 303, started.text
        return await self.sign_in_at(started.headers["location"], username)


async def register(api: Api, url: str, **auth: Any) -> dict[str, Any]:
    response = await api.post(
        "/upstreams",
        {
            "name": "fixture",
            "displayName": "Fixture server",
            "transport": {"type": "streamable_http", "url": url},
            "allowPrivateNetwork": True,
            "auth": {"type": "oauth", **auth},
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["upstream"]
    return created


async def signed_in_catalog(api: Api, browser: Browser, protected: Protected) -> dict[str, Any]:
    """An admin signs in for the catalog connection; the upstream's tools are read with it."""
    created = await register(api, protected.url)
    assert created["health"]["connected"] is False
    # The health says where the tool list's sign-in starts.
    assert "/oauth/start?integrationName=fixture" in created["health"]["lastError"]
    location = await start(
        api.client, workspaceId=api.workspace_id, integrationName="fixture", externalId="catalog"
    )
    query = parse_qs(urlsplit(location).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["resource"] == [protected.url]
    assert query["redirect_uri"] == [f"{PUBLIC}/oauth/callback"]
    finished = await browser.sign_in_at(location, "admin")
    assert finished.status_code == 200, finished.text
    connections = (await api.get("/connections")).json()["connections"]
    [catalog] = [c for c in connections if c["externalId"] == "catalog"]
    patched = await api.patch(
        f"/upstreams/{created['id']}", {"auth": {"type": "oauth", "connectionId": catalog["id"]}}
    )
    assert patched.status_code == 200, patched.text
    upstream: dict[str, Any] = patched.json()["upstream"]
    assert upstream["health"]["connected"] is True, upstream
    assert "whoami" in upstream["tools"]
    return upstream


async def whoami(api: Api, user: str) -> httpx2.Response:
    return await api.execute(
        integrationName="fixture", actionName="whoami", input={}, endUserId=user
    )


async def test_each_end_user_signs_in_to_the_upstream_and_their_own_token_reaches_it(
    api: Api, protected: Protected, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    browser = Browser(api)
    answers: list[str] = []
    await signed_in_catalog(api, browser, protected)
    await api.configure("fixture", integrationAlias="fx", connectionStrategy="per_user")
    for user in ("alice", "bob"):
        made = await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": user})
        assert made.status_code == 201, made.text

    for user in ("alice", "bob"):
        # No connection yet: the refusal carries the connect link, as for built-in OAuth.
        refused = await whoami(api, user)
        answers.append(refused.text)
        assert refused.json()["error"] == "CONNECTION_REQUIRED"
        finished = await browser.connect(
            refused.json()["connectUrl"], user, "Sign in to Fixture server"
        )
        assert finished.status_code == 200, finished.text
    # One client registration served the admin and both end users.
    assert len(protected.auth.registered) == 1

    for user in ("alice", "bob", "alice"):
        ran = await whoami(api, user)
        answers.append(ran.text)
        assert ran.status_code == 200, ran.text
    assert [protected.auth.subject_of(s) for s in protected.upstream.seen] == [
        "alice",
        "bob",
        "alice",
    ]

    # Alice's access token expires: the upstream's 401 makes treadle refresh it (the
    # authorization server rotates the refresh token) and the call goes through.
    protected.auth.expire("alice")
    ran = await whoami(api, "alice")
    answers.append(ran.text)
    assert ran.status_code == 200, ran.text
    assert protected.auth.refreshes == 1
    assert protected.auth.subject_of(protected.upstream.seen[-1]) == "alice"
    assert protected.upstream.seen[-1] != protected.upstream.seen[0]

    # Expired again, three calls at once: one refresh between them.
    protected.auth.expire("alice")
    results: list[httpx2.Response] = []

    async def call() -> None:
        results.append(await whoami(api, "alice"))

    async with anyio.create_task_group() as tasks:
        for _ in range(3):
            tasks.start_soon(call)
    assert [r.status_code for r in results] == [200, 200, 200], [r.text for r in results]
    assert protected.auth.refreshes == 2
    answers.extend(r.text for r in results)

    # Bob's grant is revoked: no refresh helps, and the answer is the connect link again.
    protected.auth.revoke("bob")
    refused = await whoami(api, "bob")
    answers.append(refused.text)
    assert refused.json()["error"] == "CONNECTION_ERROR"
    assert "/connect?token=" in refused.json()["connectUrl"]
    again = await whoami(api, "bob")
    assert again.json()["error"] == "CONNECTION_ERROR"
    assert again.json()["connectUrl"]
    # He signs in again from it, and his calls work.
    finished = await browser.connect(again.json()["connectUrl"], "bob", "Sign in to Fixture server")
    assert finished.status_code == 200, finished.text
    ran = await whoami(api, "bob")
    assert ran.status_code == 200, ran.text
    assert protected.auth.subject_of(protected.upstream.seen[-1]) == "bob"

    # No token and no client secret in any answer, page, record or log line.
    for path in ("/activity", "/connections", "/upstreams", "/oauth-apps"):
        answers.append((await api.get(path)).text)
    secrets = [*protected.auth.issued, protected.auth.registered[0].client_secret or ""]
    assert all(secrets)
    everything = "\n".join([*answers, *browser.pages, caplog.text])
    leaked = [s for s in secrets if s in everything]
    assert leaked == []


async def test_a_refused_refresh_sends_the_end_user_to_the_connect_page(
    api: Api, protected: Protected
) -> None:
    browser = Browser(api)
    await signed_in_catalog(api, browser, protected)
    await api.configure("fixture", integrationAlias="fx", connectionStrategy="per_user")
    await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": "alice"})
    refused = await whoami(api, "alice")
    await browser.connect(refused.json()["connectUrl"], "alice", "Sign in to Fixture server")
    assert (await whoami(api, "alice")).status_code == 200
    # An end user's own connection never reads the catalog for everyone.
    connections = (await api.get("/connections")).json()["connections"]
    [own] = [c for c in connections if c["integrationName"] == "fixture" and c["endUserId"]]
    [upstream] = (await api.get("/upstreams")).json()["upstreams"]
    borrowed = await api.patch(
        f"/upstreams/{upstream['id']}", {"auth": {"type": "oauth", "connectionId": own["id"]}}
    )
    assert borrowed.status_code == 400
    assert borrowed.json()["field"] == "auth.connectionId"

    protected.auth.refuse_refreshes = True
    protected.auth.expire("alice")
    answer = await whoami(api, "alice")

    assert answer.json()["error"] == "CONNECTION_ERROR"
    assert answer.json()["providerError"] == "invalid_grant"
    assert "/connect?token=" in answer.json()["connectUrl"]
    page = await api.client.get(local(answer.json()["connectUrl"]))
    assert "Needs to be connected again" in page.text


async def test_a_token_about_to_expire_is_refreshed_before_the_call(
    api: Api, protected: Protected
) -> None:
    browser = Browser(api)
    await signed_in_catalog(api, browser, protected)
    await api.configure("fixture", integrationAlias="fx", connectionStrategy="per_user")
    await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": "alice"})
    refused = await whoami(api, "alice")
    # Tokens that live 30 seconds are inside treadle's early-refresh window from the start.
    protected.auth.access_lifetime = 30
    await browser.connect(refused.json()["connectUrl"], "alice", "Sign in to Fixture server")
    before = protected.auth.refreshes

    ran = await whoami(api, "alice")

    assert ran.status_code == 200, ran.text
    assert protected.auth.refreshes == before + 1
    # The upstream never saw the token that was about to expire.
    assert len(protected.upstream.seen) == 1


async def test_the_authorization_server_is_reached_only_as_the_record_allows(
    api: Api, protected: Protected
) -> None:
    # A record that does not allow private networks (written past the API's own check, as a
    # name that resolved publicly at registration and privately later would be).
    async with api.gateway.store.db.write("test") as txn:
        created = await api.gateway.federation.records.create(
            txn,
            org_id=api.org_id,
            name="fixture",
            display_name="Fixture server",
            description=None,
            transport={"type": "streamable_http", "url": protected.url},
            allow_private_network=False,
            auth={"type": "oauth"},
        )
    api.gateway.federation.apply(created)
    started = await api.client.get(
        "/oauth/start", params={"workspaceId": api.workspace_id, "integrationName": "fixture"}
    )
    assert started.status_code == 400, started.text
    assert started.json()["error"] == "CONNECTION_ERROR"
    assert started.json()["reason"] == "upstream_sign_in_unavailable"
    assert protected.auth.registered == []
    assert (await api.get("/oauth-apps")).json()["total"] == 0


async def test_a_client_registered_by_hand_is_used_and_its_secret_never_shown(
    api: Api, protected: Protected
) -> None:
    from mcp.shared.auth import OAuthClientInformationFull
    from pydantic import AnyUrl

    await protected.auth.register_client(
        OAuthClientInformationFull(
            client_id="by-hand",
            client_secret="cs_by-hand-secret-0123456789",
            redirect_uris=[AnyUrl(f"{PUBLIC}/oauth/callback")],
            token_endpoint_auth_method="client_secret_post",
            grant_types=["authorization_code", "refresh_token"],
            scope="mcp",
        )
    )
    created = await register(
        api, protected.url, clientId="by-hand", clientSecret="cs_by-hand-secret-0123456789"
    )
    assert created["auth"] == {"type": "oauth", "clientId": "by-hand", "clientSecretSet": True}
    location = await start(api.client, workspaceId=api.workspace_id, integrationName="fixture")
    assert parse_qs(urlsplit(location).query)["client_id"] == ["by-hand"]
    finished = await Browser(api).sign_in_at(location, "admin")
    assert finished.status_code == 200, finished.text
    # Only the hand-made client: treadle registered none of its own.
    assert [c.client_id for c in protected.auth.registered] == ["by-hand"]

    # Its secret is rotated: the same client, so the tokens made with it stay good and are
    # refreshed with the new secret.
    protected.auth.clients["by-hand"].client_secret = "cs_by-hand-rotated-9876543210"
    connections = (await api.get("/connections")).json()["connections"]
    [catalog] = [c for c in connections if c["integrationName"] == "fixture"]
    protected.auth.expire("admin")
    rotated = await api.patch(
        f"/upstreams/{created['id']}",
        {
            "auth": {
                "type": "oauth",
                "clientId": "by-hand",
                "clientSecret": "cs_by-hand-rotated-9876543210",
                "connectionId": catalog["id"],
            }
        },
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["upstream"]["health"]["connected"] is True
    assert protected.auth.refreshes == 1
    for path in ("/upstreams", "/oauth-apps", "/activity"):
        text = (await api.get(path)).text
        assert "cs_by-hand-secret" not in text
        assert "cs_by-hand-rotated" not in text


async def test_oauth_fields_belong_to_auth_type_oauth_only(api: Api, protected: Protected) -> None:
    for auth, field in (
        ({"type": "bearer", "clientId": "x"}, "auth.clientId"),
        ({"type": "oauth", "clientSecret": "s"}, "auth.clientSecret"),
        ({"type": "none", "scopes": ["mcp"]}, "auth.scopes"),
    ):
        refused = await api.post(
            "/upstreams",
            {
                "name": "fixture",
                "transport": {"type": "streamable_http", "url": protected.url},
                "allowPrivateNetwork": True,
                "auth": auth,
            },
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "VALIDATION_ERROR"
        assert refused.json()["field"] == field
    assert (await api.get("/upstreams")).json()["total"] == 0


async def test_over_mcp_the_connect_link_comes_first_and_the_signed_in_token_after(
    api: Api, protected: Protected
) -> None:
    browser = Browser(api)
    await signed_in_catalog(api, browser, protected)
    await api.configure("fixture", integrationAlias="fx", connectionStrategy="per_user")
    await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": "carol"})
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    assert server.status_code == 201, server.text
    binding = await bind_server(api.gateway.store, server.json()["server"]["id"], "carol")
    face = McpRuntime(api.gateway).bound_face(binding).server

    async with Client(face, mode="legacy") as client:
        listed = [tool.name for tool in (await client.list_tools()).tools]
        assert "fx__whoami" in listed
        refused = await client.call_tool("fx__whoami", {})
        assert refused.is_error
        assert refused.structured_content is not None
        assert refused.structured_content["error"] == "CONNECTION_REQUIRED"
        link = refused.structured_content["connectUrl"]
        await browser.connect(link, "carol", "Sign in to Fixture server")
        ran = await client.call_tool("fx__whoami", {})

    assert not ran.is_error, ran
    assert [protected.auth.subject_of(s) for s in protected.upstream.seen] == ["carol"]


async def test_without_dynamic_registration_the_sign_in_says_so_and_changes_nothing(
    api: Api,
) -> None:
    async with protected_upstream(registration=False) as bare:
        await register(api, bare.url)
        await api.configure("fixture", integrationAlias="fx", connectionStrategy="per_user")
        person = await api.post(
            "/end-users", {"workspaceId": api.workspace_id, "externalId": "alice"}
        )
        # No tool list yet (nobody could sign in to read it): the link is minted directly.
        minted = await api.post(f"/end-users/{person.json()['endUser']['id']}/connect-token")
        assert minted.status_code == 201, minted.text
        page = await api.client.get(local(minted.json()["connectUrl"]))
        assert "Sign in to Fixture server" in page.text
        fields = dict(re.findall(r'name=(\w+) value="([^"]*)"', page.text))

        pressed = await api.client.post("/connect/oauth", data=fields, headers={"Origin": PUBLIC})
        started = await api.client.get(
            "/oauth/start", params={"workspaceId": api.workspace_id, "integrationName": "fixture"}
        )

        assert pressed.status_code == 502
        assert started.status_code == 400
        assert started.json()["error"] == "CONNECTION_ERROR"
        assert started.json()["reason"] == "upstream_sign_in_unavailable"
        assert (await api.get("/oauth-apps")).json()["total"] == 0


async def test_the_registered_client_goes_with_the_url_it_was_made_for(
    api: Api, protected: Protected
) -> None:
    browser = Browser(api)
    upstream = await signed_in_catalog(api, browser, protected)
    assert (await api.get("/oauth-apps")).json()["total"] == 1
    path = f"/upstreams/{upstream['id']}"

    # The catalog connection changes nothing about the client ...
    same = await api.patch(path, {"auth": {"type": "oauth", "connectionId": None}})
    assert same.status_code == 200, same.text
    assert (await api.get("/oauth-apps")).json()["total"] == 1
    # ... another server needs another client (tokens are bound to the resource).
    async with protected_upstream() as elsewhere:
        moved = await api.patch(
            path, {"transport": {"type": "streamable_http", "url": elsewhere.url}}
        )
        assert moved.status_code == 200, moved.text
        assert (await api.get("/oauth-apps")).json()["total"] == 0
        location = await start(api.client, workspaceId=api.workspace_id, integrationName="fixture")
        assert location.startswith(elsewhere.auth.issuer)
        assert len(elsewhere.auth.registered) == 1
        assert parse_qs(urlsplit(location).query)["resource"] == [elsewhere.url]
    # Removing the upstream removes its client.
    assert (await api.delete(path)).status_code == 200
    assert (await api.get("/oauth-apps")).json()["total"] == 0


async def test_an_authorization_server_that_takes_client_metadata_documents_gets_treadle_s(
    settings: Settings,
) -> None:
    public = "https://treadle.example"
    gateway = await Gateway.open(dataclasses.replace(settings, public_url=public))
    try:
        async with (
            api_on(gateway, public) as api,
            protected_upstream(registration=False, client_metadata=True) as protected,
        ):

            async def fetch(url: str) -> dict[str, Any]:
                # The authorization server reaches treadle's public URL (here: in process).
                answer = await api.client.get(local(url))
                assert answer.status_code == 200, answer.text
                document: dict[str, Any] = answer.json()
                return document

            protected.auth.fetch_document = fetch
            created = await register(api, protected.url)
            location = await start(
                api.client, workspaceId=api.workspace_id, integrationName="fixture"
            )
            document_url = f"{public}/oauth/client-metadata.json"
            assert parse_qs(urlsplit(location).query)["client_id"] == [document_url]
            finished = await Browser(api, public).sign_in_at(location, "admin")
            assert finished.status_code == 200, finished.text
            assert protected.auth.documents_fetched[0] == document_url
            assert protected.auth.registered == []

            # A public client refreshes with no secret at all.
            connections = (await api.get("/connections")).json()["connections"]
            [catalog] = [c for c in connections if c["integrationName"] == "fixture"]
            protected.auth.expire("admin")
            read = await api.patch(
                f"/upstreams/{created['id']}",
                {"auth": {"type": "oauth", "connectionId": catalog["id"]}},
            )
            assert read.status_code == 200, read.text
            assert read.json()["upstream"]["health"]["connected"] is True
            assert protected.auth.refreshes == 1
    finally:
        await gateway.close()


async def test_treadle_publishes_a_client_metadata_document_only_on_an_https_url(
    api: Api,
) -> None:
    assert (await api.client.get("/oauth/client-metadata.json")).status_code == 404


async def test_two_replicas_refresh_an_expired_token_once(
    api: Api, protected: Protected, settings: Settings
) -> None:
    browser = Browser(api)
    await signed_in_catalog(api, browser, protected)
    await api.configure("fixture", integrationAlias="fx", connectionStrategy="per_user")
    await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": "alice"})
    refused = await whoami(api, "alice")
    await browser.connect(refused.json()["connectUrl"], "alice", "Sign in to Fixture server")
    other = await Gateway.open(settings)
    try:
        async with client_for(other, api.api_key, PUBLIC) as second:
            await other.federation.load()
            protected.auth.expire("alice")
            answers: list[httpx2.Response] = []

            async def call(client: httpx2.AsyncClient) -> None:
                body = {
                    "workspaceId": api.workspace_id,
                    "integrationName": "fixture",
                    "actionName": "whoami",
                    "input": {},
                    "endUserId": "alice",
                }
                answers.append(await client.post("/api/v1/actions/execute", json=body))

            async with anyio.create_task_group() as tasks:
                for client in (api.client, second, api.client, second):
                    tasks.start_soon(call, client)
    finally:
        await other.close()

    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    # The authorization server rotates refresh tokens: a second refresh with the old one
    # would have been refused.
    assert protected.auth.refreshes == 1


async def test_a_refreshed_token_s_session_replaces_the_old_one_of_its_connection() -> None:
    state = Upstream()
    async with serve(http_app(state), lifespan="on", timeout_graceful_shutdown=1) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        pool = SessionPool(connect_timeout=10)

        def target(token: str, connection: str) -> Target:
            return Target(
                "ups_x",
                {"type": "streamable_http", "url": url},
                allow_private_network=True,
                headers=(("Authorization", f"Bearer {token}"),),
                connection_id=connection,
            )

        try:
            old = await pool.session(target("at_old", "conn-a"))
            other = await pool.session(target("at_b", "conn-b"))
            new = await pool.session(target("at_new", "conn-a"))
            assert old.closed
            assert not new.closed
            assert not other.closed
            assert len(pool) == 2
        finally:
            await pool.close()
