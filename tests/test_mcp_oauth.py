"""MCP clients sign in by OAuth 2.1 (the MCP authorization spec) against a real `treadle serve`.

The SDK's own `OAuthClientProvider` discovers everything from the endpoint's 401, registers
(by Dynamic Client Registration, or by a client ID metadata document served here over HTTPS
on loopback), sends a person to the consent page (driven by form posts), trades the code with
PKCE and calls tools as the end user the person chose. Refusals speak raw HTTP so that their
statuses and OAuth error codes are the server's own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
import sqlalchemy as sa
from mcp.types import CallToolResult

from treadle.auth.server.tables import oauth_tokens
from treadle.ids import hash_token

from loopback import serve
from mcp_harness import ERAS, McpEnv, ServeProcess, subprocess_env
from oauth_signin import (
    REDIRECT,
    MemoryStorage,
    Person,
    form_of,
    loopback_certificate,
    metadata_app,
    provider,
    signed_in_client,
)

pytestmark = pytest.mark.anyio

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return loopback_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def oauth_serve(shared_data_dir: Path, certificate: tuple[Path, Path]) -> Iterator[ServeProcess]:
    """`treadle serve` on the suite's shared database that trusts the test certificate and
    may fetch client metadata documents from loopback (development allowance)."""
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "treadle", "init"],
        env=subprocess_env(shared_data_dir),
        check=True,
        capture_output=True,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TREADLE_CLIENT_METADATA_ALLOW_PRIVATE", "1")
        patch.setenv("SSL_CERT_FILE", str(certificate[0]))
        started = ServeProcess.start(shared_data_dir)
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Site:
    env: McpEnv
    base: str

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp/{self.env.server_id}"


@pytest.fixture
async def site(mcp_env: McpEnv, oauth_serve: ServeProcess) -> AsyncIterator[Site]:
    await connect_keyed(mcp_env)
    await mcp_env.create_server()
    return Site(mcp_env, oauth_serve.base_url)


async def connect_keyed(env: McpEnv, *, fallback: bool = True) -> None:
    """`keyed` per user (with a workspace fallback); end users alice and bob with their own."""
    for user in ("alice", "bob", "carol"):
        made = await env.rest.post(
            "/api/v1/end-users", json={"workspaceId": env.workspace_id, "externalId": user}
        )
        assert made.status_code == 201, made.text
    owners = [("conn-alice", "alice"), ("conn-bob", "bob"), ("conn-shared", None)]
    for external_id, owner in owners:
        body: dict[str, Any] = {
            "integrationName": "keyed",
            "type": "api_key",
            "displayName": external_id,
            "externalId": external_id,
            "values": {"apiKey": f"secret-{external_id}"},
            "workspaceId": env.workspace_id,
            **({"endUserId": owner} if owner else {}),
        }
        made = await env.rest.post("/api/v1/connections", json=body)
        assert made.status_code == 201, made.text
    if fallback:
        await env.configure(
            "keyed", connectionStrategy="per_user_with_fallback", connectionId="conn-shared"
        )
    else:
        await env.configure("keyed", connectionStrategy="per_user")


async def whoami(client: Any) -> dict[str, Any]:
    result: CallToolResult = await client.call_tool("keyed__whoami", {})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


# -- raw OAuth steps, for the refusals ------------------------------------------------------


@dataclass
class Tokens:
    client_id: str
    client_secret: str | None
    access: str
    refresh: str
    body: dict[str, Any]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def register(base: str, **metadata: Any) -> dict[str, Any]:
    body = {"redirect_uris": [REDIRECT], "client_name": "raw", **metadata}
    async with httpx2.AsyncClient() as http:
        made = await http.post(f"{base}/oauth/register", json=body)
    assert made.status_code == 201, made.text
    answer: dict[str, Any] = made.json()
    return answer


def authorize_url(site: Site, client_id: str, challenge: str, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": "st-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": site.mcp_url,
        "scope": "mcp",
        **extra,
    }
    return f"{site.base}/oauth/authorize?{urlencode(params)}"


async def code_for(
    site: Site, client_id: str, challenge: str, end_user: str | None = "alice", **extra: str
) -> dict[str, str]:
    person = Person(site.env.api_key, end_user)
    answered = await person.consent(authorize_url(site, client_id, challenge, **extra))
    assert answered.status_code == 303, answered.text
    location = answered.headers["location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def token_request(base: str, **form: str) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        return await http.post(f"{base}/oauth/token", data=form)


async def tokens_for(site: Site, end_user: str | None = "alice", scope: str = "mcp") -> Tokens:
    client = await register(site.base, token_endpoint_auth_method="none")
    verifier, challenge = pkce()
    answer = await code_for(site, client["client_id"], challenge, end_user, scope=scope)
    got = await token_request(
        site.base,
        grant_type="authorization_code",
        code=answer["code"],
        code_verifier=verifier,
        redirect_uri=REDIRECT,
        client_id=client["client_id"],
        resource=site.mcp_url,
    )
    assert got.status_code == 200, got.text
    body = got.json()
    return Tokens(client["client_id"], None, body["access_token"], body["refresh_token"], body)


async def mcp_post(
    url: str, token: str | None, body: dict[str, Any] = INITIALIZE, **headers: str
) -> httpx2.Response:
    sent = {**ACCEPT, **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(url, content=json.dumps(body), headers=sent)


# -- the whole flow with the SDK's client ---------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_the_sdk_client_signs_in_by_registration_and_calls_tools_as_its_end_user(
    site: Site, era: str
) -> None:
    person = Person(site.env.api_key, end_user="alice")
    storage = MemoryStorage()
    auth = provider(site.mcp_url, person, storage)
    async with signed_in_client(site.mcp_url, auth, era) as client:
        assert await whoami(client) == {"connection": "conn-alice", "endUser": "alice"}
        # The consent page said who asks for what.
        page = person.seen_pages[0]
        assert "Test MCP client" in page
        assert "keyed__whoami" in page
        assert storage.client is not None
        assert storage.client.client_id.startswith("mcpc_")
        assert storage.tokens is not None
        first = storage.tokens
        # The access token runs out: the SDK refreshes it (rotation) and goes on.
        auth.context.token_expiry_time = time.time() - 1
        assert await whoami(client) == {"connection": "conn-alice", "endUser": "alice"}
        assert storage.tokens.access_token != first.access_token
        assert storage.tokens.refresh_token != first.refresh_token
    assert len(person.seen_pages) == 1  # one sign-in, then refreshes only
    # The old access token still works until it expires; the rotated-away refresh token not.
    reused = await token_request(
        site.base,
        grant_type="refresh_token",
        refresh_token=first.refresh_token or "",
        client_id=storage.client.client_id,
        client_secret=storage.client.client_secret or "",
    )
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # Reuse revoked the whole grant: the newest tokens stop too.
    refused = await mcp_post(site.mcp_url, storage.tokens.access_token)
    assert refused.status_code == 401
    activity = await site.env.rest.get(
        "/api/v1/activity", params={"workspaceId": site.env.workspace_id, "source": "oauth"}
    )
    kinds = {entry["type"] for entry in activity.json()["activity"]}
    assert {"oauth_sign_in", "oauth_consent", "oauth_refresh", "oauth_revocation"} <= kinds


@pytest.mark.parametrize("era", ERAS)
async def test_the_sdk_client_signs_in_by_a_client_metadata_document(
    site: Site, era: str, certificate: tuple[Path, Path]
) -> None:
    documents: dict[str, Any] = {}
    app = metadata_app(documents)
    async with serve(
        app, ssl_certfile=str(certificate[0]), ssl_keyfile=str(certificate[1])
    ) as port:
        url = f"https://127.0.0.1:{port}/clients/test.json"
        documents["/clients/test.json"] = {
            "client_id": url,
            "client_name": "Metadata client",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        person = Person(site.env.api_key, end_user="bob")
        storage = MemoryStorage()
        auth = provider(site.mcp_url, person, storage, metadata_url=url)
        async with signed_in_client(site.mcp_url, auth, era) as client:
            assert await whoami(client) == {"connection": "conn-bob", "endUser": "bob"}
        assert storage.client is not None
        assert storage.client.client_id == url
        assert "Metadata client" in person.seen_pages[0]
        # Revocation (RFC 7009) of the refresh token ends the grant: the access token stops.
        assert storage.tokens is not None
        async with httpx2.AsyncClient() as http:
            revoked = await http.post(
                f"{site.base}/oauth/revoke",
                data={"token": storage.tokens.refresh_token or "", "client_id": url},
            )
        assert revoked.status_code == 200
        assert (await mcp_post(site.mcp_url, storage.tokens.access_token)).status_code == 401
        listed = await site.env.rest.get("/api/v1/mcp/oauth-clients")
        assert url in {c["clientId"] for c in listed.json()["clients"]}


# -- discovery --------------------------------------------------------------------------------


async def test_an_unauthenticated_request_is_told_where_to_sign_in(site: Site) -> None:
    refused = await mcp_post(site.mcp_url, None)
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    found = re.search(r'resource_metadata="([^"]+)"', challenge)
    assert found is not None
    assert 'scope="mcp"' in challenge
    async with httpx2.AsyncClient() as http:
        resource = (await http.get(found.group(1))).json()
        assert resource["resource"] == site.mcp_url
        assert resource["authorization_servers"] == [site.base]
        server = (await http.get(f"{site.base}/.well-known/oauth-authorization-server")).json()
    assert server["issuer"] == site.base
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert server["client_id_metadata_document_supported"] is True
    assert server["authorization_response_iss_parameter_supported"] is True
    # Existing credentials keep working beside OAuth.
    for token in (site.env.server_token, site.env.api_key):
        assert (await mcp_post(site.mcp_url, token)).status_code == 200


# -- refusals ---------------------------------------------------------------------------------


async def test_a_token_is_refused_on_another_mcp_endpoint(site: Site) -> None:
    tokens = await tokens_for(site)
    assert (await mcp_post(site.mcp_url, tokens.access)).status_code == 200
    other = await site.env.rest.post(
        "/api/v1/mcp/servers", json={"workspaceId": site.env.workspace_id, "name": "other"}
    )
    other_url = f"{site.base}/mcp/{other.json()['server']['id']}"
    refused = await mcp_post(other_url, tokens.access)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    # Nor may the code or refresh be traded for another resource.
    again = await token_request(
        site.base,
        grant_type="refresh_token",
        refresh_token=tokens.refresh,
        client_id=tokens.client_id,
        resource=other_url,
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_target"


async def test_an_expired_token_is_refused(site: Site) -> None:
    tokens = await tokens_for(site)
    store = site.env.runtime.gateway.store
    async with store.db.write("test") as txn:
        await txn.conn.execute(
            sa.update(oauth_tokens)
            .where(oauth_tokens.c.token_hash == hash_token(tokens.access))
            .values(expires_at="2000-01-01T00:00:00.000Z")
        )
    refused = await mcp_post(site.mcp_url, tokens.access)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


async def test_a_grant_revoked_over_rest_stops_its_tokens_at_once(site: Site) -> None:
    tokens = await tokens_for(site, end_user="bob")
    assert (await mcp_post(site.mcp_url, tokens.access)).status_code == 200
    listed = await site.env.rest.get("/api/v1/mcp/oauth-grants", params={"endUserId": "bob"})
    assert listed.status_code == 200
    grants = [g for g in listed.json()["grants"] if g["clientId"] == tokens.client_id]
    assert len(grants) == 1
    assert grants[0]["serverId"] == site.env.server_id
    revoked = await site.env.rest.delete(f"/api/v1/mcp/oauth-grants/{grants[0]['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["grant"]["revokedAt"]
    assert (await mcp_post(site.mcp_url, tokens.access)).status_code == 401
    refreshed = await token_request(
        site.base,
        grant_type="refresh_token",
        refresh_token=tokens.refresh,
        client_id=tokens.client_id,
    )
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"
    missing = await site.env.rest.delete("/api/v1/mcp/oauth-grants/grt_nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "NOT_FOUND"


async def test_a_revoked_client_loses_its_grants_and_may_not_ask_again(site: Site) -> None:
    tokens = await tokens_for(site)
    revoked = await site.env.rest.delete(f"/api/v1/mcp/oauth-clients/{tokens.client_id}")
    assert revoked.status_code == 200
    assert revoked.json()["client"]["revokedAt"]
    assert (await mcp_post(site.mcp_url, tokens.access)).status_code == 401
    _verifier, challenge = pkce()
    async with httpx2.AsyncClient() as http:
        asked = await http.get(authorize_url(site, tokens.client_id, challenge))
    assert asked.status_code == 303
    answer = {k: v[0] for k, v in parse_qs(urlsplit(asked.headers["location"]).query).items()}
    assert answer["error"] == "access_denied"
    assert answer["iss"] == site.base


async def test_a_wrong_pkce_verifier_is_refused(site: Site) -> None:
    client = await register(site.base, token_endpoint_auth_method="none")
    _verifier, challenge = pkce()
    answer = await code_for(site, client["client_id"], challenge)
    assert answer["state"] == "st-1"
    assert answer["iss"] == site.base
    refused = await token_request(
        site.base,
        grant_type="authorization_code",
        code=answer["code"],
        code_verifier=secrets.token_urlsafe(48),
        redirect_uri=REDIRECT,
        client_id=client["client_id"],
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


async def test_a_reused_code_is_refused_and_revokes_what_it_gave(site: Site) -> None:
    client = await register(site.base, token_endpoint_auth_method="none")
    verifier, challenge = pkce()
    answer = await code_for(site, client["client_id"], challenge)
    form = {
        "grant_type": "authorization_code",
        "code": answer["code"],
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
        "client_id": client["client_id"],
    }
    first = await token_request(site.base, **form)
    assert first.status_code == 200
    assert (await mcp_post(site.mcp_url, first.json()["access_token"])).status_code == 200
    second = await token_request(site.base, **form)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert (await mcp_post(site.mcp_url, first.json()["access_token"])).status_code == 401


async def test_a_reused_refresh_token_revokes_the_grant(site: Site) -> None:
    tokens = await tokens_for(site)
    rotated = await token_request(
        site.base,
        grant_type="refresh_token",
        refresh_token=tokens.refresh,
        client_id=tokens.client_id,
    )
    assert rotated.status_code == 200
    fresh = rotated.json()
    assert fresh["refresh_token"] != tokens.refresh
    assert (await mcp_post(site.mcp_url, fresh["access_token"])).status_code == 200
    replayed = await token_request(
        site.base,
        grant_type="refresh_token",
        refresh_token=tokens.refresh,
        client_id=tokens.client_id,
    )
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_grant"
    assert (await mcp_post(site.mcp_url, fresh["access_token"])).status_code == 401
    after = await token_request(
        site.base,
        grant_type="refresh_token",
        refresh_token=fresh["refresh_token"],
        client_id=tokens.client_id,
    )
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"


async def test_an_unregistered_redirect_uri_is_shown_not_followed(site: Site) -> None:
    client = await register(site.base, token_endpoint_auth_method="none")
    _verifier, challenge = pkce()
    url = authorize_url(
        site, client["client_id"], challenge, redirect_uri="http://127.0.0.1:8765/elsewhere"
    )
    async with httpx2.AsyncClient() as http:
        shown = await http.get(url)
        assert shown.status_code == 400
        assert "location" not in shown.headers
        assert "<code id=error>invalid_request</code>" in shown.text
        # A loopback redirect may differ in its port only (RFC 8252 §7.3).
        moved = await http.get(
            authorize_url(
                site, client["client_id"], challenge, redirect_uri="http://127.0.0.1:9999/callback"
            )
        )
        assert moved.status_code == 200
        unknown = await http.get(authorize_url(site, "mcpc_unknown", challenge))
        assert unknown.status_code == 400
        assert "<code id=error>invalid_client</code>" in unknown.text
    refused = await http_register(site.base, redirect_uris=["javascript:alert(1)"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_redirect_uri"


async def http_register(base: str, **metadata: Any) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        return await http.post(f"{base}/oauth/register", json=metadata)


async def test_plain_pkce_and_a_foreign_resource_go_back_as_errors(site: Site) -> None:
    client = await register(site.base, token_endpoint_auth_method="none")
    async with httpx2.AsyncClient() as http:
        plain = await http.get(
            authorize_url(site, client["client_id"], "x" * 43, code_challenge_method="plain")
        )
        foreign = await http.get(
            authorize_url(site, client["client_id"], "x" * 43, resource="https://elsewhere/mcp")
        )
    for answered, error in ((plain, "invalid_request"), (foreign, "invalid_target")):
        assert answered.status_code == 303
        query = parse_qs(urlsplit(answered.headers["location"]).query)
        assert query["error"] == [error]
        assert query["state"] == ["st-1"]


async def test_a_metadata_document_not_naming_its_own_url_is_refused(
    site: Site, certificate: tuple[Path, Path]
) -> None:
    documents: dict[str, Any] = {}
    app = metadata_app(documents)
    async with serve(
        app, ssl_certfile=str(certificate[0]), ssl_keyfile=str(certificate[1])
    ) as port:
        url = f"https://127.0.0.1:{port}/clients/liar.json"
        documents["/clients/liar.json"] = {
            "client_id": "https://claude.ai/client.json",
            "redirect_uris": [REDIRECT],
        }
        async with httpx2.AsyncClient() as http:
            shown = await http.get(authorize_url(site, url, "x" * 43))
    assert shown.status_code == 400
    assert "<code id=error>invalid_client</code>" in shown.text


async def test_a_metadata_document_on_a_private_address_is_refused(
    mcp_env: McpEnv, certificate: tuple[Path, Path]
) -> None:
    """The in-process gateway has no development allowance: loopback is a private address."""
    await mcp_env.create_server()
    documents: dict[str, Any] = {}
    async with serve(
        metadata_app(documents),
        ssl_certfile=str(certificate[0]),
        ssl_keyfile=str(certificate[1]),
    ) as port:
        url = f"https://127.0.0.1:{port}/clients/near.json"
        documents["/clients/near.json"] = {"client_id": url, "redirect_uris": [REDIRECT]}
        site = Site(mcp_env, "http://treadle.test")
        shown = await mcp_env.rest.get(authorize_url(site, url, "x" * 43).removeprefix(site.base))
    assert shown.status_code == 400
    assert "<code id=error>invalid_client</code>" in shown.text


async def test_the_consent_page_refuses_a_key_of_another_workspace_and_unknown_end_users(
    site: Site,
) -> None:
    client = await register(site.base, token_endpoint_auth_method="none")
    _verifier, challenge = pkce()
    url = authorize_url(site, client["client_id"], challenge)
    for person in (Person("trd_not-a-key", None), Person(site.env.api_key, "mallory")):
        answered = await person.consent(url)
        assert answered.status_code == 400
        assert "location" not in answered.headers
    # The form without its CSRF cookie is refused.
    async with httpx2.AsyncClient() as http:
        page = await http.get(url)
        fields = {**form_of(page.text), "api_key": site.env.api_key, "decision": "allow"}
        forged = await httpx2.AsyncClient().post(f"{site.base}/oauth/authorize", data=fields)
    assert forged.status_code == 403
    declined = await Person(site.env.api_key, None, decision="deny").consent(url)
    assert declined.status_code == 303
    assert parse_qs(urlsplit(declined.headers["location"]).query)["error"] == ["access_denied"]


async def test_a_token_without_the_mcp_scope_gets_403_naming_it(site: Site) -> None:
    tokens = await tokens_for(site, scope="offline_access")
    refused = await mcp_post(site.mcp_url, tokens.access)
    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="mcp"' in challenge


async def test_end_user_a_cannot_use_end_user_b_session(site: Site) -> None:
    alice = await tokens_for(site, end_user="alice")
    bob = await tokens_for(site, end_user="bob")
    opened = await mcp_post(site.mcp_url, alice.access)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    headers = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    assert (await mcp_post(site.mcp_url, bob.access, listing, **headers)).status_code == 404


async def test_a_per_user_tool_without_a_connection_answers_with_the_connect_link(
    mcp_env: McpEnv, oauth_serve: ServeProcess
) -> None:
    await connect_keyed(mcp_env, fallback=False)
    await mcp_env.create_server()
    site = Site(mcp_env, oauth_serve.base_url)
    person = Person(mcp_env.api_key, end_user="carol")
    auth = provider(site.mcp_url, person, MemoryStorage())
    async with signed_in_client(site.mcp_url, auth, "2026-07-28") as client:
        result = await client.call_tool("keyed__whoami", {})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["error"] == "CONNECTION_REQUIRED"
    assert "/connect?token=" in result.structured_content["connectUrl"]


async def test_rest_refuses_bad_filters_and_a_workspace_key_revoking_a_client(
    site: Site,
) -> None:
    tokens = await tokens_for(site)
    store = site.env.runtime.gateway.store
    async with store.db.write("test") as txn:
        _key, scoped = await store.api_keys.create(
            txn, site.env.org_id, name="scoped", workspace_id=site.env.workspace_id
        )
    async with httpx2.AsyncClient(
        transport=site.env.rest._transport,
        base_url="http://treadle.test",
        headers={"Authorization": f"Bearer {scoped}"},
    ) as rest:
        denied = await rest.delete(f"/api/v1/mcp/oauth-clients/{tokens.client_id}")
        assert denied.status_code == 403
        assert denied.json()["error"] == "SCOPE_DENIED"
        seen = await rest.get("/api/v1/mcp/oauth-grants", params={"clientId": tokens.client_id})
        assert [g["endUserId"] for g in seen.json()["grants"]] == ["alice"]
    bad = await site.env.rest.get("/api/v1/mcp/oauth-grants", params={"endUserId": " x"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "VALIDATION_ERROR"
    unknown = await site.env.rest.delete("/api/v1/mcp/oauth-clients/mcpc_never")
    assert unknown.status_code == 404
    # Nothing was revoked by the refusals.
    assert (await mcp_post(site.mcp_url, tokens.access)).status_code == 200
