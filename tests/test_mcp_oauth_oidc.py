"""The consent page's OpenID Connect sign-in: the org's provider (a real one, on loopback)
names the end user, and the client's token acts as that person. In process, on the app's
own routes; the provider is the one tests/oidc_provider.py runs."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from conftest import Api
from oauth_signin import REDIRECT, form_of
from oidc_provider import Provider, oidc_provider
from test_mcp_oauth import pkce

pytestmark = pytest.mark.anyio


@pytest.fixture
def provider() -> Iterator[Provider]:
    with oidc_provider() as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(trust_env=False, follow_redirects=False) as client:
        yield client


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_a_person_signs_in_by_the_orgs_oidc_provider_on_the_consent_page(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    made = await api.post(
        "/identity-providers",
        {
            "name": "corporate",
            "kind": "oidc",
            "issuer": provider.issuer,
            "clientId": "treadle-client",
            "clientSecret": "s3cret",
            "allowPrivateNetwork": True,
            "allowCreateEndUsers": True,
        },
    )
    assert made.status_code == 201, made.text
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    server_id = server.json()["server"]["id"]
    app = api.client  # the in-process app (its default bearer is ignored by these pages)
    registered = await app.post(
        "/oauth/register",
        json={
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
        },
    )
    client_id = registered.json()["client_id"]
    verifier, challenge = pkce()
    asked = "/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "state": "st",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": f"http://treadle.test/mcp/{server_id}",
        }
    )
    page = await app.get(asked)
    assert page.status_code == 200
    found = re.search(r'<a class=idp href="([^"]+)">Sign in with corporate</a>', page.text)
    assert found is not None
    started = await app.get(html.unescape(found.group(1)))
    assert started.status_code == 303
    at_provider = started.headers["location"]
    assert (await browser.get(at_provider)).status_code == 200
    answered = await browser.post(at_provider, data={"sub": "dana"})
    assert answered.status_code == 302, answered.text
    back = urlsplit(answered.headers["location"])
    finished = await app.get(f"{back.path}?{back.query}")
    assert finished.status_code == 303, finished.text
    returned = finished.headers["location"]
    assert returned.startswith("/oauth/authorize?")
    assert "ticket=" in returned
    consent = await app.get(returned)
    assert consent.status_code == 200
    assert "<strong id=signed_in>dana</strong>" in consent.text
    fields = {**form_of(consent.text), "decision": "allow"}
    decided = await app.post(
        "/oauth/authorize", data=fields, headers={"Origin": "http://treadle.test"}
    )
    assert decided.status_code == 303, decided.text
    code = query(decided.headers["location"])["code"]
    # The ticket is spent: the same form again is refused.
    again = await app.post(
        "/oauth/authorize", data=fields, headers={"Origin": "http://treadle.test"}
    )
    assert again.status_code == 401
    token = await app.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
        },
    )
    assert token.status_code == 200, token.text
    grants = await api.get("/mcp/oauth-grants", params={"endUserId": "dana"})
    (grant,) = grants.json()["grants"]
    assert grant["signedInAs"].startswith("idp:")
    assert grant["serverId"] == server_id
