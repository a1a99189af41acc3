"""The whole sign-in by URL alone with the org's OpenID provider: the MCP SDK's OAuth client
against treadle's HTTP app on loopback, a person who picks "Sign in with …" on the consent
page, signs in at a real OpenID provider (`oidc-provider-mock`) and allows; the client then
lists tools as the end user the provider's `sub` names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from mcp.shared.auth import AuthorizationCodeResult

from treadle.http_app import build_http_app

from conftest import Api
from loopback import serve
from oauth_signin import REDIRECT, MemoryStorage, form_of, provider, signed_in_client
from oidc_provider import Provider, oidc_provider

pytestmark = pytest.mark.anyio


@pytest.fixture
def idp_server() -> Iterator[Provider]:
    with oidc_provider() as running:
        yield running


@dataclass
class OidcPerson:
    """At the browser: chooses the org's provider, signs in there as `sub`, allows."""

    origin: str
    sub: str
    pages: list[str] = field(default_factory=list)
    answer: AuthorizationCodeResult | None = None

    async def redirect(self, url: str) -> None:
        async with (
            httpx2.AsyncClient(timeout=30, trust_env=False) as browser,
            httpx2.AsyncClient(timeout=30, trust_env=False) as at_provider,
        ):
            consent = await browser.get(url)
            assert consent.status_code == 200, consent.text
            (link,) = re.findall(r'<a class=idp href="([^"]+)"', consent.text)
            started = await browser.get(self.origin + unescape(link))
            assert started.status_code == 303, started.text
            authorize = started.headers["location"]
            assert (await at_provider.get(authorize)).status_code == 200
            signed = await at_provider.post(authorize, data={"sub": self.sub})
            assert signed.status_code == 302, signed.text
            # The provider sends the browser to the registered callback (TREADLE_PUBLIC_URL's);
            # here that is this test server's own origin.
            back = urlsplit(signed.headers["location"])
            returned = await browser.get(f"{self.origin}{back.path}?{back.query}")
            assert returned.status_code == 303, returned.text
            shown = await browser.get(self.origin + returned.headers["location"])
            assert shown.status_code == 200, shown.text
            self.pages.append(shown.text)
            fields = {**form_of(shown.text), "decision": "allow"}
            decided = await browser.post(
                f"{self.origin}/oauth/authorize", data=fields, headers={"Origin": self.origin}
            )
        assert decided.status_code == 303, decided.text
        location = decided.headers["location"]
        assert location.startswith(REDIRECT), location
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self.answer = AuthorizationCodeResult(
            code=query["code"], state=query.get("state"), iss=query.get("iss")
        )

    async def callback(self) -> AuthorizationCodeResult:
        assert self.answer is not None
        return self.answer


async def test_a_person_signs_in_with_the_orgs_openid_provider_from_the_consent_page(
    api: Api, idp_server: Provider
) -> None:
    created = await api.post(
        "/identity-providers",
        {
            "name": "Acme SSO",
            "kind": "oidc",
            "issuer": idp_server.issuer,
            "clientId": "treadle",
            "clientSecret": "s3cret",
            "allowPrivateNetwork": True,
            "allowCreateEndUsers": True,
        },
    )
    assert created.status_code == 201, created.text
    server = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "sso"})
    server_id = server.json()["server"]["id"]
    async with serve(build_http_app(api.gateway), lifespan="on") as port:
        origin = f"http://127.0.0.1:{port}"
        person = OidcPerson(origin, "alice")
        auth = provider(f"{origin}/mcp/{server_id}", person, MemoryStorage())
        async with signed_in_client(f"{origin}/mcp/{server_id}", auth, "2026-07-28") as client:
            listed: Any = await client.list_tools()
            assert listed.tools is not None
    assert "id=signed_in>alice<" in person.pages[0]
    grants = await api.get("/mcp/oauth-grants", params={"endUserId": "alice"})
    assert grants.status_code == 200, grants.text
    assert len(grants.json()["grants"]) == 1
    users = await api.gateway.store.end_users.list(api.org_id, api.workspace_id, None)
    assert [u.external_id for u in users] == ["alice"]
