"""oauth2 connections stay usable: refresh before expiry, once after a 401, once under
concurrency, and a refused refresh asks the person to re-authenticate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest

from emulators.github import GitHubEmulator
from emulators.oauth import OAuthServer
from emulators.oauth_stage import CLIENT_SECRET, authorize, local, put_app, start
from emulators.server import serve

from conftest import Api

pytestmark = pytest.mark.anyio


@dataclass
class Connected:
    oauth: OAuthServer
    github: GitHubEmulator
    connection_id: str
    alias: str


@pytest.fixture
async def connected(api: Api) -> AsyncIterator[Connected]:
    """A per-user GitHub connection for end user `alice`, made through the flow, whose access
    token expires in 30 s (inside the refresh window)."""
    github = GitHubEmulator("not-yet-issued")
    oauth = OAuthServer(
        "client-treadle-test",
        CLIENT_SECRET,
        api.gateway.oauth.flow.redirect_uri,
        access_lifetime=30,
        on_token=lambda token: setattr(github, "token", token),
    )
    async with serve(oauth.app) as url, serve(github.app) as github_url:
        assert (await put_app(api.client, "github", url, github_url)).status_code == 201
        user = await api.post(
            "/end-users", {"workspaceId": api.workspace_id, "externalId": "alice"}
        )
        assert user.status_code == 201, user.text
        location = await start(
            api.client,
            workspaceId=api.workspace_id,
            integrationName="github",
            endUserId="alice",
        )
        finished = await api.client.get(local(await authorize(location)))
        assert finished.status_code == 200, finished.text
        [connection] = (await api.get("/connections")).json()["connections"]
        configured = await api.configure(
            "github",
            connectionStrategy="per_user",
            integrationAlias="gh",
            settings={"allowPrivateNetwork": True},
        )
        yield Connected(oauth, github, connection["id"], configured["integrationAlias"])


async def list_repos(api: Api, connected: Connected) -> httpx2.Response:
    return await api.execute(
        integrationName="github",
        integrationAlias=connected.alias,
        actionName="list_repos",
        endUserId="alice",
    )


def assert_no_tokens(connected: Connected, *texts: str) -> None:
    for text in texts:
        for token in connected.oauth.access_tokens:
            assert token not in text


async def test_a_token_about_to_expire_is_refreshed_before_the_call(
    api: Api, connected: Connected
) -> None:
    ran = await list_repos(api, connected)

    assert ran.status_code == 200, ran.text
    assert ran.json()["success"] is True
    assert connected.oauth.refresh_calls == 1
    assert_no_tokens(connected, ran.text, (await api.get("/activity")).text)


async def test_a_refused_token_is_refreshed_once_and_the_call_retried(
    api: Api, connected: Connected
) -> None:
    connected.oauth.access_lifetime = 3600
    assert (await list_repos(api, connected)).status_code == 200
    assert connected.oauth.refresh_calls == 1
    connected.github.token = "revoked-upstream"  # the provider stops accepting our token

    ran = await list_repos(api, connected)

    assert ran.status_code == 200, ran.text
    assert ran.json()["success"] is True
    assert connected.oauth.refresh_calls == 2
    assert len(connected.github.recorder.calls("/user/repos", "GET")) == 3


async def test_concurrent_calls_on_an_expiring_token_refresh_it_once(
    api: Api, connected: Connected
) -> None:
    connected.oauth.access_lifetime = 3600
    connected.oauth.hold = anyio.Event()
    answers: list[httpx2.Response] = []

    async def call() -> None:
        answers.append(await list_repos(api, connected))

    locks: Any = api.gateway.oauth.refresher._locks._locks
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            tasks.start_soon(call)
            await connected.oauth.entered.wait()
            # Both calls are in: one at the token endpoint, the other queued on its lock.
            while locks.get(connected.connection_id, (None, 0))[1] < 2:
                await anyio.wait_all_tasks_blocked()
            connected.oauth.hold.set()

    assert [a.status_code for a in answers] == [200, 200]
    assert connected.oauth.refresh_calls == 1


async def test_a_refused_refresh_asks_to_reconnect(api: Api, connected: Connected) -> None:
    connected.oauth.fail_refresh = "invalid_grant"

    refused = await list_repos(api, connected)

    assert refused.status_code == 400
    body = refused.json()
    assert body["error"] == "CONNECTION_ERROR"
    assert "/connect?token=" in body["connectUrl"]
    found = await api.get(f"/connections/{connected.connection_id}")
    assert found.json()["connection"]["status"] == "needs_reauth"
    again = await list_repos(api, connected)
    assert again.json()["error"] == "CONNECTION_ERROR"
    assert again.json()["connectUrl"]
    assert connected.oauth.refresh_calls == 1
    assert_no_tokens(connected, refused.text, again.text, (await api.get("/activity")).text)
