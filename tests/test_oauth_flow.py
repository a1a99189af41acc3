"""The authorization-code flow with PKCE, end to end: REST app settings, /oauth/start, the
emulated provider over real HTTP, /oauth/callback, and a call that uses the new connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import sqlalchemy as sa

from emulators.github import GitHubEmulator
from emulators.oauth import OAuthServer
from emulators.oauth_stage import CLIENT_SECRET, authorize, local, put_app, start
from emulators.server import serve
from treadle.store import schema

from conftest import Api

pytestmark = pytest.mark.anyio


@dataclass
class Provider:
    oauth: OAuthServer
    github: GitHubEmulator
    url: str
    github_url: str


@pytest.fixture
async def provider(api: Api) -> AsyncIterator[Provider]:
    github = GitHubEmulator("not-yet-issued")
    oauth = OAuthServer(
        "client-treadle-test",
        CLIENT_SECRET,
        api.gateway.oauth.flow.redirect_uri,
        on_token=lambda token: setattr(github, "token", token),
    )
    async with serve(oauth.app) as url, serve(github.app) as github_url:
        configured = await put_app(api.client, "github", url, github_url)
        assert configured.status_code == 201, configured.text
        yield Provider(oauth, github, url, github_url)


async def test_oauth_app_settings_keep_the_secret_and_fill_defaults(api: Api) -> None:
    put = await api.client.put(
        "/api/v1/oauth-apps/slack", json={"clientId": "123.456", "clientSecret": CLIENT_SECRET}
    )
    assert put.status_code == 201, put.text
    app = put.json()["oauthApp"]
    assert app["tokenUrl"] == "https://slack.com/api/oauth.v2.access"
    assert "chat:write" in app["scopes"]
    assert put.json()["redirectUri"].endswith("/oauth/callback")
    updated = await api.client.put("/api/v1/oauth-apps/slack", json={"clientId": "123.789"})
    assert updated.status_code == 200, updated.text
    got = await api.client.get("/api/v1/oauth-apps/slack")
    assert got.json()["oauthApp"]["clientId"] == "123.789"
    activity = await api.get("/activity", params={"limit": 200})
    for text in (put.text, updated.text, got.text, activity.text):
        assert CLIENT_SECRET not in text
    assert (await api.client.delete("/api/v1/oauth-apps/slack")).status_code == 200
    assert (await api.client.get("/api/v1/oauth-apps/slack")).status_code == 404
    new_without_secret = await api.client.put("/api/v1/oauth-apps/slack", json={"clientId": "1"})
    assert new_without_secret.json()["error"] == "VALIDATION_ERROR"


async def test_the_flow_creates_a_connection_that_a_call_then_uses(
    api: Api, provider: Provider
) -> None:
    location = await start(
        api.client, workspaceId=api.workspace_id, integrationName="github", externalId="gh_team"
    )
    assert location.startswith(f"{provider.url}/authorize?")
    sent = parse_qs(urlsplit(location).query)
    assert sent["code_challenge_method"] == ["S256"]
    assert "code_verifier" not in sent

    callback = await authorize(location)
    assert callback.startswith(api.gateway.oauth.flow.redirect_uri)
    finished = await api.client.get(local(callback))

    assert finished.status_code == 200, finished.text
    assert finished.headers["cache-control"] == "no-store"
    [connection] = (await api.get("/connections")).json()["connections"]
    assert (connection["type"], connection["externalId"]) == ("oauth2", "gh_team")
    configured = await api.configure(
        "github",
        connectionId=connection["id"],
        integrationAlias="gh",
        settings={"allowPrivateNetwork": True},
    )
    ran = await api.execute(
        integrationName="github",
        integrationAlias=configured["integrationAlias"],
        actionName="list_repos",
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["success"] is True
    activity = (await api.get("/activity", params={"limit": 200})).text
    for token in provider.oauth.access_tokens:
        assert token not in finished.text
        assert token not in activity
        assert token not in ran.text


async def test_a_state_works_once(api: Api, provider: Provider) -> None:
    callback = await authorize(
        await start(api.client, workspaceId=api.workspace_id, integrationName="github")
    )
    assert (await api.client.get(local(callback))).status_code == 200

    replayed = await api.client.get(local(callback))

    assert replayed.status_code == 400
    assert provider.oauth.exchanges == 1


async def test_an_unknown_state_is_a_clear_error_page(api: Api) -> None:
    answer = await api.client.get("/oauth/callback", params={"code": "x", "state": "forged"})

    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    empty = await api.client.get("/oauth/callback")
    assert empty.status_code == 400


async def test_an_expired_state_is_refused(api: Api, provider: Provider) -> None:
    callback = await authorize(
        await start(api.client, workspaceId=api.workspace_id, integrationName="github")
    )
    async with api.gateway.store.db.write("test") as txn:
        await txn.conn.execute(
            sa.update(schema.oauth_states).values(expires_at="2000-01-01T00:00:00.000Z")
        )

    answer = await api.client.get(local(callback))

    assert answer.status_code == 400
    assert provider.oauth.exchanges == 0
    assert (await api.get("/connections")).json()["connections"] == []


async def test_the_code_only_works_with_the_verifier_of_its_challenge(
    api: Api, provider: Provider
) -> None:
    location = await start(api.client, workspaceId=api.workspace_id, integrationName="github")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    query["code_challenge"] = "A" * 43  # an attacker's challenge, not ours
    tampered = f"{provider.url}/authorize?{urlencode(query)}"

    answer = await api.client.get(local(await authorize(tampered)))

    assert answer.status_code == 400
    assert provider.oauth.exchanges == 0
    assert (await api.get("/connections")).json()["connections"] == []


async def test_start_needs_an_api_key_and_a_configured_app(api: Api) -> None:
    anonymous = await api.client.get(
        "/oauth/start",
        params={"workspaceId": api.workspace_id, "integrationName": "github"},
        headers={"Authorization": ""},
    )
    assert anonymous.json()["error"] == "UNAUTHORIZED"
    unconfigured = await api.client.get(
        "/oauth/start", params={"workspaceId": api.workspace_id, "integrationName": "slack"}
    )
    assert unconfigured.json()["error"] == "NOT_FOUND"
    elsewhere = await api.client.get(
        "/oauth/start",
        params={
            "workspaceId": api.workspace_id,
            "integrationName": "slack",
            "redirect": "https://evil.example/",
        },
    )
    assert elsewhere.json()["error"] == "VALIDATION_ERROR"
