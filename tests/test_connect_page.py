"""The connect page: a signed link lets an end user save their own key, which per_user calls
then use; a missing connection's refusal carries that link."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx2
import pytest

from emulators.oauth_stage import local
from treadle.app import Gateway
from treadle.settings import Settings

import mcp_harness
from conftest import Api, api_on

pytestmark = pytest.mark.anyio

KEY = "sk_live_personal-key-of-alice-0123456789"


@pytest.fixture
async def kit(settings: Settings) -> AsyncIterator[Api]:
    """The `keyed` test integration (API key auth), per_user, and end user alice."""
    gateway = await Gateway.open(settings, catalog=mcp_harness.test_catalog())
    try:
        async with api_on(gateway, "http://127.0.0.1:8400") as api:
            await api.configure("keyed", connectionStrategy="per_user", integrationAlias="keyed")
            created = await api.post(
                "/end-users", {"workspaceId": api.workspace_id, "externalId": "alice"}
            )
            assert created.status_code == 201
            yield api
    finally:
        await gateway.close()


async def whoami(api: Api) -> httpx2.Response:
    return await api.execute(
        integrationName="keyed", integrationAlias="keyed", actionName="whoami", endUserId="alice"
    )


async def test_a_missing_connection_points_the_end_user_to_the_connect_page(kit: Api) -> None:
    refused = await whoami(kit)

    assert refused.json()["error"] == "CONNECTION_REQUIRED"
    url = refused.json()["connectUrl"]
    assert url.startswith("http://127.0.0.1:8400/connect?token=")
    page = await kit.client.get(local(url))
    assert page.status_code == 200


async def test_the_key_form_creates_the_connection_a_per_user_call_uses(kit: Api) -> None:
    [user] = (await kit.get("/end-users")).json()["endUsers"]
    minted = await kit.post(f"/end-users/{user['id']}/connect-token")
    assert minted.status_code == 201, minted.text
    page = await kit.client.get(local(minted.json()["connectUrl"]))
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    fields = dict(re.findall(r'name=(\w+) value="([^"]*)"', page.text))

    saved = await kit.client.post(
        "/connect",
        data={**fields, "key": KEY},
        headers={"Origin": "http://127.0.0.1:8400"},
    )

    assert saved.status_code == 200, saved.text
    ran = await whoami(kit)
    assert ran.status_code == 200, ran.text
    assert ran.json()["output"]["connection"] == "user_alice_keyed"
    for text in (saved.text, ran.text, (await kit.get("/activity")).text):
        assert KEY not in text


async def test_the_form_needs_its_csrf_cookie_and_a_valid_link(kit: Api) -> None:
    [user] = (await kit.get("/end-users")).json()["endUsers"]
    minted = await kit.post(f"/end-users/{user['id']}/connect-token")
    page = await kit.client.get(local(minted.json()["connectUrl"]))
    fields = dict(re.findall(r'name=(\w+) value="([^"]*)"', page.text))

    forged = await kit.client.post("/connect", data={**fields, "csrf": "x", "key": KEY})
    foreign = await kit.client.post(
        "/connect", data={**fields, "key": KEY}, headers={"Origin": "https://evil.example"}
    )
    bad_link = await kit.client.get("/connect", params={"token": "trd_connect_v1_x.y"})

    assert (forged.status_code, foreign.status_code, bad_link.status_code) == (403, 403, 403)
    assert (await whoami(kit)).json()["error"] == "CONNECTION_REQUIRED"
