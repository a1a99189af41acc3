"""Signing in at an org's OpenID Connect provider: a real provider (`oidc-provider-mock`) on
loopback, treadle's callback driven in process, the browser played by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx2
import pytest
import sqlalchemy as sa

from treadle.auth.identity import consent, tickets
from treadle.auth.identity.signin import begin_oidc
from treadle.errors import ErrorCode, Refusal
from treadle.store import schema

from conftest import Api, client_for
from oidc_provider import Provider, oidc_provider

pytestmark = pytest.mark.anyio


@pytest.fixture
def provider() -> Iterator[Provider]:
    with oidc_provider() as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(trust_env=False, follow_redirects=False) as client:
        yield client


async def add_idp(api: Api, provider: Provider, **fields: Any) -> dict[str, Any]:
    body = {
        "name": "corporate",
        "kind": "oidc",
        "issuer": provider.issuer,
        "clientId": "treadle-client",
        "clientSecret": "s3cret:with/odd chars",
        "allowPrivateNetwork": True,
        **fields,
    }
    response = await api.post("/identity-providers", body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["identityProvider"]
    return created


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_params(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = {**query(url), **changes}
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


@dataclass
class Callback:
    response: httpx2.Response

    @property
    def ticket(self) -> str:
        assert self.response.status_code == 303, self.response.text
        return query(self.response.headers["location"])["ticket"]

    @property
    def reason(self) -> str:
        return self.response.headers["x-treadle-sign-in-error"]


async def at_provider(browser: httpx2.AsyncClient, authorize_url: str, sub: str) -> str:
    """The person signs in as `sub` on the provider's page; returns where it sends them."""
    page = await browser.get(authorize_url)
    assert page.status_code == 200, page.text
    answer = await browser.post(authorize_url, data={"sub": sub})
    assert answer.status_code == 302, answer.text
    location: str = answer.headers["location"]
    return location


async def callback(api: Api, location: str) -> Callback:
    parts = urlsplit(location)
    assert parts.path == "/auth/oidc/callback"
    return Callback(await api.client.get(f"/auth/oidc/callback?{parts.query}"))


async def sign_in(
    api: Api, browser: httpx2.AsyncClient, idp_id: str, sub: str, **tamper: str
) -> Callback:
    url = await begin_oidc(
        api.gateway, idp_id, "/oauth/authorize?client_id=x", workspace_id=api.workspace_id
    )
    if tamper:
        url = with_params(url, **tamper)
    return await callback(api, await at_provider(browser, url, sub))


async def sign_in_activity(api: Api) -> list[Any]:
    table = schema.activity
    async with api.gateway.store.db.read() as conn:
        rows = await conn.execute(
            sa.select(table).where(table.c.type == "idp_sign_in").order_by(table.c.seq)
        )
        return list(rows)


async def end_user_ids(api: Api) -> list[str]:
    users = await api.gateway.store.end_users.list(api.org_id, api.workspace_id, None)
    return [u.external_id for u in users]


async def test_a_person_signs_in_and_the_ticket_names_their_end_user_once(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider, allowCreateEndUsers=True)
    url = await begin_oidc(
        api.gateway, idp["id"], "/oauth/authorize?client_id=x", workspace_id=api.workspace_id
    )
    asked = query(url)
    assert urlsplit(url).netloc == f"127.0.0.1:{provider.port}"
    assert asked["code_challenge_method"] == "S256"
    assert len(asked["nonce"]) >= 43
    assert len(asked["state"]) >= 43
    assert "openid" in asked["scope"].split()
    assert asked["redirect_uri"] == "http://127.0.0.1:8400/auth/oidc/callback"

    done = await callback(api, await at_provider(browser, url, "alice"))
    location = done.response.headers["location"]
    assert location.startswith("/oauth/authorize?client_id=x&ticket=")
    shown = await tickets.peek(api.gateway, done.ticket)  # leaves the ticket redeemable
    signed_in = await tickets.verify(api.gateway, done.ticket)
    assert shown == signed_in
    assert (signed_in.org_id, signed_in.idp_id, signed_in.external_id) == (
        api.org_id,
        idp["id"],
        "alice",
    )
    user = await api.gateway.store.end_users.get(api.org_id, signed_in.end_user_id or "")
    assert user is not None
    assert (user.external_id, user.workspace_id) == ("alice", api.workspace_id)

    with pytest.raises(tickets.TicketRefused) as reused:
        await tickets.verify(api.gateway, done.ticket)
    assert reused.value.reason == "ticket_used"
    with pytest.raises(tickets.TicketRefused) as peeked:
        await tickets.peek(api.gateway, done.ticket)
    assert peeked.value.reason == "ticket_used"
    assert reused.value.code is ErrorCode.UNAUTHORIZED

    (record,) = await sign_in_activity(api)
    assert (record.status, record.end_user_id, record.target_id) == ("ok", user.id, idp["id"])
    assert record.input == {"externalId": "alice", "endUserCreated": True}

    # The second sign-in finds the same end user: nobody is created twice.
    again = await sign_in(api, browser, idp["id"], "alice")
    assert (await tickets.verify(api.gateway, again.ticket)).end_user_id == user.id
    assert await end_user_ids(api) == ["alice"]


async def test_the_email_claim_can_name_the_end_user(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider, claim="email", allowCreateEndUsers=True)
    async with httpx2.AsyncClient(trust_env=False) as admin:
        # The provider's own API for a user's claims.
        await admin.put(
            f"{provider.issuer}/users/u-1",
            json={"email": "bob@example.com", "email_verified": True},
        )
    done = await sign_in(api, browser, idp["id"], "u-1")
    assert (await tickets.verify(api.gateway, done.ticket)).external_id == "bob@example.com"


async def test_an_unknown_person_is_refused_unless_the_provider_may_create_end_users(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider)  # allowCreateEndUsers defaults to false
    refused = await sign_in(api, browser, idp["id"], "mallory")
    assert refused.response.status_code == 403
    assert refused.reason == "end_user_unknown"
    assert await end_user_ids(api) == []

    created = await api.post("/end-users", {"workspaceId": api.workspace_id, "externalId": "carol"})
    assert created.status_code == 201, created.text
    done = await sign_in(api, browser, idp["id"], "carol")
    assert (await tickets.verify(api.gateway, done.ticket)).external_id == "carol"
    records = await sign_in_activity(api)
    assert [(r.status, r.error_code) for r in records] == [
        ("refused", "end_user_unknown"),
        ("ok", None),
    ]


async def test_an_id_token_with_another_nonce_is_refused(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider, allowCreateEndUsers=True)
    refused = await sign_in(api, browser, idp["id"], "alice", nonce="an-attackers-nonce")
    assert (refused.response.status_code, refused.reason) == (400, "nonce_mismatch")
    assert "ticket" not in refused.response.headers.get("location", "")
    assert await end_user_ids(api) == []


async def test_an_expired_id_token_is_refused(api: Api, browser: httpx2.AsyncClient) -> None:
    with oidc_provider(token_max_age=timedelta(minutes=-10)) as stale:
        idp = await add_idp(api, stale, allowCreateEndUsers=True)
        refused = await sign_in(api, browser, idp["id"], "alice")
    assert (refused.response.status_code, refused.reason) == (400, "id_token_expired")
    assert await end_user_ids(api) == []


async def test_an_id_token_from_a_foreign_issuer_is_refused(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider, allowCreateEndUsers=True)
    provider.foreign_paths.add("/oauth2/token")
    refused = await sign_in(api, browser, idp["id"], "alice")
    assert (refused.response.status_code, refused.reason) == (400, "wrong_issuer")


async def test_a_discovery_document_naming_another_issuer_is_refused(
    api: Api, provider: Provider
) -> None:
    idp = await add_idp(api, provider, name="mixed-up")
    provider.foreign_paths.add("/.well-known/openid-configuration")
    with pytest.raises(Refusal) as refused:
        await begin_oidc(api.gateway, idp["id"], "/", workspace_id=api.workspace_id)
    assert refused.value.code is ErrorCode.IDENTITY_PROVIDER_UNAVAILABLE
    assert refused.value.extra["reason"] == "issuer_mismatch"


async def test_a_code_the_provider_issued_to_another_client_is_refused(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider, allowCreateEndUsers=True)
    refused = await sign_in(api, browser, idp["id"], "alice", client_id="someone-else")
    assert (refused.response.status_code, refused.reason) == (400, "code_refused")


async def test_a_state_that_was_never_issued_or_is_replayed_is_refused(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider, allowCreateEndUsers=True)
    url = await begin_oidc(api.gateway, idp["id"], "/", workspace_id=api.workspace_id)
    location = await at_provider(browser, url, "alice")
    forged = await callback(api, with_params(location, state="not-the-state"))
    assert (forged.response.status_code, forged.reason) == (400, "state_unknown")
    done = await callback(api, location)
    assert done.response.status_code == 303
    replayed = await callback(api, location)
    assert (replayed.response.status_code, replayed.reason) == (400, "state_used")


async def test_a_provider_that_denies_the_sign_in_spends_the_state(
    api: Api, provider: Provider
) -> None:
    idp = await add_idp(api, provider)
    url = await begin_oidc(api.gateway, idp["id"], "/", workspace_id=api.workspace_id)
    state = query(url)["state"]
    denied = f"/auth/oidc/callback?error=access_denied&state={state}"
    refused = await callback(api, denied)
    assert (refused.response.status_code, refused.reason) == (400, "provider_denied")
    again = await callback(api, denied)
    assert again.reason == "state_used"


async def test_an_unknown_or_non_oidc_provider_cannot_begin_a_sign_in(api: Api) -> None:
    with pytest.raises(Refusal) as unknown:
        await begin_oidc(api.gateway, "00000000-0000-0000-0000-000000000000", "/")
    assert unknown.value.code is ErrorCode.NOT_FOUND
    external = await api.post(
        "/identity-providers",
        {"name": "as", "kind": "external_as", "issuer": "https://as.example.com"},
    )
    assert external.status_code == 201, external.text
    with pytest.raises(Refusal) as wrong_kind:
        await begin_oidc(api.gateway, external.json()["identityProvider"]["id"], "/")
    assert wrong_kind.value.code is ErrorCode.NOT_FOUND


@pytest.mark.parametrize(
    "return_to",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "relative", "", "/a b"],
)
async def test_return_to_must_be_a_path_on_this_gateway(
    api: Api, provider: Provider, return_to: str
) -> None:
    idp = await add_idp(api, provider)
    with pytest.raises(Refusal) as refused:
        await begin_oidc(api.gateway, idp["id"], return_to)
    assert refused.value.code is ErrorCode.VALIDATION_ERROR


async def test_a_provider_on_a_private_address_is_refused_without_the_allowance(
    api: Api,
) -> None:
    created = await api.post(
        "/identity-providers",
        {
            "name": "intranet",
            "kind": "oidc",
            "issuer": "https://127.0.0.1:9",
            "clientId": "c",
            "clientSecret": "s",
        },
    )
    assert created.status_code == 201, created.text
    with pytest.raises(Refusal) as refused:
        await begin_oidc(api.gateway, created.json()["identityProvider"]["id"], "/")
    assert refused.value.code is ErrorCode.IDENTITY_PROVIDER_UNAVAILABLE
    assert refused.value.extra["reason"] == "destination_not_allowed"


async def test_a_ticket_that_was_never_issued_is_refused(api: Api) -> None:
    with pytest.raises(tickets.TicketRefused) as refused:
        await tickets.verify(api.gateway, "made-up")
    assert refused.value.reason == "ticket_unknown"


async def test_a_ticket_past_its_lifetime_is_refused(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider, allowCreateEndUsers=True)
    done = await sign_in(api, browser, idp["id"], "alice")
    table = schema.idp_sign_ins
    async with api.gateway.store.db.write("test") as txn:
        await txn.conn.execute(
            table.update()
            .where(table.c.ticket_hash.is_not(None))
            .values(ticket_expires_at="2020-01-01T00:00:00.000Z")
        )
    with pytest.raises(tickets.TicketRefused) as refused:
        await tickets.verify(api.gateway, done.ticket)
    assert refused.value.reason == "ticket_expired"


async def test_the_start_link_binds_the_sign_in_to_the_browser_that_followed_it(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider, allowCreateEndUsers=True)
    params = {"idp": idp["id"], "return_to": "/done", "workspace": api.workspace_id}
    started = await api.client.get("/auth/oidc/start", params=params)
    assert started.status_code == 303, started.text
    cookie = started.headers["set-cookie"]
    assert "treadle_oidc_browser=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    location = await at_provider(browser, started.headers["location"], "alice")

    # The attacker's move: somebody else's browser opens the callback URL.
    async with client_for(api.gateway, api.api_key) as other_browser:
        stolen = await other_browser.get(f"/auth/oidc/callback?{urlsplit(location).query}")
    assert stolen.status_code == 400
    assert stolen.headers["x-treadle-sign-in-error"] == "browser_mismatch"
    assert await end_user_ids(api) == []

    # The browser that started the next sign-in finishes it (its cookie is sent back).
    again = await api.client.get("/auth/oidc/start", params=params)
    location = await at_provider(browser, again.headers["location"], "alice")
    done = await callback(api, location)
    assert done.response.headers["location"].startswith("/done?ticket=")
    assert (await tickets.verify(api.gateway, done.ticket)).external_id == "alice"


async def test_the_start_link_answers_a_page_for_an_unknown_provider(api: Api) -> None:
    started = await api.client.get("/auth/oidc/start", params={"idp": "nope", "return_to": "/done"})
    assert started.status_code == 404
    assert started.headers["x-treadle-sign-in-error"] == "not_found"
    evil = await api.client.get(
        "/auth/oidc/start", params={"idp": "nope", "return_to": "https://evil.example/"}
    )
    assert (evil.status_code, evil.headers["x-treadle-sign-in-error"]) == (400, "validation_error")


async def test_the_consent_page_links_each_oidc_provider_and_checks_the_ticket_it_gets_back(
    api: Api, provider: Provider, browser: httpx2.AsyncClient
) -> None:
    idp = await add_idp(api, provider, allowCreateEndUsers=True)
    await api.post(
        "/identity-providers",
        {"name": "as", "kind": "external_as", "issuer": "https://as.example.com"},
    )
    created = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    server = await api.gateway.store.mcp_servers.get(created.json()["server"]["id"], api.org_id)
    assert server is not None
    return_to = "/oauth/authorize?client_id=x&state=s"
    (link,) = await consent.sign_in_links(api.gateway, server, return_to)
    assert (link.idp_id, link.name) == (idp["id"], "corporate")
    started = await api.client.get(link.url)
    assert started.status_code == 303
    done = await callback(api, await at_provider(browser, started.headers["location"], "alice"))
    assert done.response.headers["location"].startswith(return_to + "&ticket=")

    shown = await consent.signed_in_for(api.gateway, server, done.ticket, redeem=False)
    assert shown.external_id == "alice"
    other_workspace = await api.post("/workspaces", {"name": "elsewhere"})
    elsewhere = await api.post(
        "/mcp/servers", {"workspaceId": other_workspace.json()["workspace"]["id"], "name": "e"}
    )
    other = await api.gateway.store.mcp_servers.get(elsewhere.json()["server"]["id"], api.org_id)
    assert other is not None
    with pytest.raises(Refusal) as refused:
        await consent.signed_in_for(api.gateway, other, done.ticket, redeem=False)
    assert refused.value.extra["reason"] == "ticket_for_another_server"
    decided = await consent.signed_in_for(api.gateway, server, done.ticket, redeem=True)
    assert decided == shown
    with pytest.raises(tickets.TicketRefused):
        await consent.signed_in_for(api.gateway, server, done.ticket, redeem=True)
