"""An expiring OAuth token is refreshed once across replicas: two gateways on one database
call with the same expiring connection at the same moment, and the provider (the OAuth
emulator, which rotates refresh tokens: a second refresh with the old one is refused) sees
exactly one refresh; both calls run with the new token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import httpx2
import pytest
import sqlalchemy as sa

from emulators.github import GitHubEmulator
from emulators.oauth import OAuthServer
from emulators.oauth_stage import CLIENT_SECRET, authorize, local, put_app, start
from emulators.server import serve
from treadle.app import Gateway
from treadle.settings import Settings

from conftest import Api, api_on, client_for
from databases import ON_POSTGRESQL

pytestmark = pytest.mark.anyio


@dataclass
class Pair:
    a: Api
    b: Api
    oauth: OAuthServer
    connection_id: str
    alias: str


@pytest.fixture
async def pair(settings: Settings) -> AsyncIterator[Pair]:
    """Gateways A and B on one database; through A, end user `alice` connected GitHub, with
    an access token that expires within the refresh window."""
    async with AsyncExitStack() as stack:
        a_gateway = await Gateway.open(settings)
        stack.push_async_callback(a_gateway.close)
        b_gateway = await Gateway.open(settings)
        stack.push_async_callback(b_gateway.close)
        a = await stack.enter_async_context(api_on(a_gateway))
        b_client = await stack.enter_async_context(client_for(b_gateway, a.api_key))
        b = Api(b_client, b_gateway, a.org_id, a.workspace_id, a.api_key)
        github = GitHubEmulator("not-yet-issued")
        oauth = OAuthServer(
            "client-treadle-test",
            CLIENT_SECRET,
            a_gateway.oauth.flow.redirect_uri,
            access_lifetime=30,
            on_token=lambda token: setattr(github, "token", token),
        )
        url = await stack.enter_async_context(serve(oauth.app))
        github_url = await stack.enter_async_context(serve(github.app))
        assert (await put_app(a.client, "github", url, github_url)).status_code == 201
        user = await a.post("/end-users", {"workspaceId": a.workspace_id, "externalId": "alice"})
        assert user.status_code == 201, user.text
        location = await start(
            a.client, workspaceId=a.workspace_id, integrationName="github", endUserId="alice"
        )
        finished = await a.client.get(local(await authorize(location)))
        assert finished.status_code == 200, finished.text
        [connection] = (await a.get("/connections")).json()["connections"]
        configured = await a.configure(
            "github",
            connectionStrategy="per_user",
            integrationAlias="gh",
            settings={"allowPrivateNetwork": True},
        )
        oauth.access_lifetime = 3600  # the refreshed token lasts: one refresh is enough
        yield Pair(a, b, oauth, connection["id"], configured["integrationAlias"])


async def list_repos(api: Api, pair: Pair) -> httpx2.Response:
    return await api.execute(
        integrationName="github",
        integrationAlias=pair.alias,
        actionName="list_repos",
        endUserId="alice",
    )


async def waits_for_the_refresh_lock(pair: Pair) -> bool:
    """Whether B is queued behind A's refresh in the database (not at the provider)."""
    if ON_POSTGRESQL:
        async with pair.b.gateway.store.db.read() as conn:
            waiting = await conn.execute(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            )
            return int(waiting.scalar() or 0) > 0
    # SQLite: B is inside its write transaction's turn, waiting for the file's write lock.
    locks = pair.b.gateway.oauth.refresher._locks._locks
    db = pair.b.gateway.store.db
    held = locks.get(pair.connection_id, (None, 0))[1] == 1
    return held and db._write_lock.locked()


async def test_two_replicas_refresh_one_expiring_connection_once(pair: Pair) -> None:
    pair.oauth.hold = anyio.Event()
    answers: dict[str, httpx2.Response] = {}

    async def call(name: str, api: Api) -> None:
        answers[name] = await list_repos(api, pair)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call, "a", pair.a)
            await pair.oauth.entered.wait()  # A is at the token endpoint, holding the lock
            tasks.start_soon(call, "b", pair.b)
            while not await waits_for_the_refresh_lock(pair):
                await anyio.lowlevel.checkpoint()
            pair.oauth.hold.set()

    assert [answers[name].status_code for name in "ab"] == [200, 200], answers["b"].text
    assert all(answers[name].json()["success"] for name in "ab")
    assert pair.oauth.refresh_calls == 1
    [connection] = (await pair.b.get("/connections")).json()["connections"]
    assert connection["status"] == "active"
