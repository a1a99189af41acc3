"""Bring your own authorization server: an `external_as` identity provider authorizes MCP
servers, and treadle checks that server's JWT access tokens against its JWKS on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest
from joserfc.jwk import RSAKey

from treadle.auth import external_jwt
from treadle.auth.identity import discovery
from treadle.auth.identity.end_users import NoEndUser
from treadle.errors import ErrorCode
from treadle.http_app import build_http_app
from treadle.store.mcp_servers import McpServer

from conftest import Api
from jwks_server import AuthorizationServer, authorization_server
from loopback import serve

pytestmark = pytest.mark.anyio


@pytest.fixture
async def issuer() -> AsyncIterator[AuthorizationServer]:
    async with authorization_server() as running:
        yield running


async def new_server(api: Api, name: str = "support") -> McpServer:
    created = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": name})
    assert created.status_code == 201, created.text
    found = await api.gateway.store.mcp_servers.get(created.json()["server"]["id"], api.org_id)
    assert found is not None
    return found


async def point_at(
    api: Api, issuer: AuthorizationServer, server: McpServer, **fields: Any
) -> dict[str, Any]:
    body = {
        "name": "corporate-as",
        "kind": "external_as",
        "issuer": issuer.issuer,
        "allowPrivateNetwork": True,
        "allowCreateEndUsers": True,
        "mcpServerIds": [server.id],
        **fields,
    }
    created = await api.post("/identity-providers", body)
    assert created.status_code == 201, created.text
    idp: dict[str, Any] = created.json()["identityProvider"]
    return idp


def endpoint(server: McpServer) -> str:
    return f"http://127.0.0.1:8400/mcp/{server.id}"


async def refusal(
    api: Api, server: McpServer, token: str, **kwargs: Any
) -> external_jwt.ExternalTokenRefused:
    with pytest.raises(external_jwt.ExternalTokenRefused) as refused:
        await external_jwt.validate(api.gateway, server, token, **kwargs)
    return refused.value


async def test_a_valid_token_names_the_end_user_and_its_scopes(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    idp = await point_at(api, issuer, server)
    assert await external_jwt.authorization_server_for(api.gateway, server) == issuer.issuer

    claims = await external_jwt.validate(
        api.gateway, server, issuer.token(aud=endpoint(server), scope="mcp profile")
    )
    assert (claims.end_user_external_id, claims.issuer, claims.idp_id) == (
        "alice",
        issuer.issuer,
        idp["id"],
    )
    assert claims.scopes == ("mcp", "profile")
    user = await api.gateway.store.end_users.get(api.org_id, claims.end_user_id or "")
    assert user is not None
    assert (user.external_id, user.workspace_id) == ("alice", server.workspace_id)

    # Keys are cached: a second token needs no second fetch.
    again = await external_jwt.validate(api.gateway, server, issuer.token(aud=endpoint(server)))
    assert again.end_user_id == claims.end_user_id
    assert issuer.jwks_fetches == 1


async def test_the_endpoint_url_the_client_reached_is_the_audience(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server)
    reached = f"https://gateway.example.com/mcp/{server.id}"
    claims = await external_jwt.validate(
        api.gateway, server, issuer.token(aud=["other", reached]), resource=reached
    )
    assert claims.end_user_external_id == "alice"


async def test_a_token_for_another_audience_is_refused(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    other = await new_server(api, "other")
    await point_at(api, issuer, server)
    refused = await refusal(api, server, issuer.token(aud=endpoint(other)))
    assert (refused.code, refused.reason) == (ErrorCode.UNAUTHORIZED, "wrong_audience")


async def test_a_configured_audience_is_accepted_too(api: Api, issuer: AuthorizationServer) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server, audience="api://treadle")
    claims = await external_jwt.validate(api.gateway, server, issuer.token(aud="api://treadle"))
    assert claims.end_user_external_id == "alice"


async def test_an_expired_token_is_refused(api: Api, issuer: AuthorizationServer) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server)
    refused = await refusal(api, server, issuer.token(aud=endpoint(server), lifetime=-120))
    assert (refused.code, refused.reason) == (ErrorCode.UNAUTHORIZED, "expired")


async def test_a_token_from_another_issuer_is_refused(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server)
    forged = issuer.token(aud=endpoint(server), iss="https://someone-else.example.com")
    refused = await refusal(api, server, forged)
    assert (refused.code, refused.reason) == (ErrorCode.UNAUTHORIZED, "wrong_issuer")


async def test_a_token_signed_by_an_unknown_key_is_refused(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server)
    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-published"})
    refused = await refusal(api, server, issuer.token(aud=endpoint(server), key=stranger))
    assert (refused.code, refused.reason) == (ErrorCode.UNAUTHORIZED, "unknown_key")
    # A key under a published kid but not the published key: the signature fails.
    impostor = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    refused = await refusal(api, server, issuer.token(aud=endpoint(server), key=impostor))
    assert refused.reason == "bad_signature"


async def keys_just_fetched(api: Api, issuer: AuthorizationServer) -> McpServer:
    """A server the issuer authorizes, after one token of it was checked (its keys cached)."""
    server = await new_server(api)
    await point_at(api, issuer, server)
    await external_jwt.validate(api.gateway, server, issuer.token(aud=endpoint(server)))
    assert issuer.jwks_fetches == 1
    return server


async def test_a_rotated_key_is_fetched_again_at_most_once_per_interval(
    api: Api, issuer: AuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await keys_just_fetched(api, issuer)
    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    issuer.keys.append(rotated)
    # Just fetched: a token under an unknown kid does not make treadle fetch the keys again.
    refused = await refusal(api, server, issuer.token(aud=endpoint(server), key=rotated))
    assert (refused.reason, issuer.jwks_fetches) == ("unknown_key", 1)
    # Once the interval has passed, the unknown kid fetches the set again and the key is found.
    monkeypatch.setattr(discovery, "REFETCH_SECONDS", 0.0)
    claims = await external_jwt.validate(
        api.gateway, server, issuer.token(aud=endpoint(server), key=rotated)
    )
    assert (claims.end_user_external_id, issuer.jwks_fetches) == ("alice", 2)


async def test_a_key_replaced_under_the_same_kid_is_fetched_again_at_most_once_per_interval(
    api: Api, issuer: AuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await keys_just_fetched(api, issuer)
    # The provider is redeployed with a new key that keeps the old name.
    issuer.keys[0] = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    refused = await refusal(api, server, issuer.token(aud=endpoint(server)))
    assert (refused.reason, issuer.jwks_fetches) == ("bad_signature", 1)
    monkeypatch.setattr(discovery, "REFETCH_SECONDS", 0.0)
    claims = await external_jwt.validate(api.gateway, server, issuer.token(aud=endpoint(server)))
    assert (claims.end_user_external_id, issuer.jwks_fetches) == ("alice", 2)
    # The same for a provider whose tokens name no key at all.
    issuer.keys[0] = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    unnamed = issuer.token(aud=endpoint(server), name_the_key=False)
    claims = await external_jwt.validate(api.gateway, server, unnamed)
    assert (claims.end_user_external_id, issuer.jwks_fetches) == ("alice", 3)
    # A forged signature under the published kid fetches once more, then is still refused.
    impostor = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    refused = await refusal(api, server, issuer.token(aud=endpoint(server), key=impostor))
    assert (refused.reason, issuer.jwks_fetches) == ("bad_signature", 4)


async def test_a_token_without_the_required_scope_is_refused_with_the_scope_to_ask_for(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server, scopes=["mcp", "tools:call"])
    refused = await refusal(api, server, issuer.token(aud=endpoint(server), scope="mcp"))
    assert (refused.code, refused.reason) == (ErrorCode.SCOPE_DENIED, "insufficient_scope")
    assert refused.extra["scope"] == "mcp tools:call"
    # Okta and Entra ID send `scp` as a list.
    claims = await external_jwt.validate(
        api.gateway,
        server,
        issuer.token(aud=endpoint(server), scope=None, scp=["mcp", "tools:call"]),
    )
    assert claims.scopes == ("mcp", "tools:call")


async def test_an_unsigned_or_symmetric_token_is_refused(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server)
    for token in ("not-a-jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."):
        refused = await refusal(api, server, token)
        assert refused.reason in {"malformed", "algorithm_not_allowed"}
        assert refused.code is ErrorCode.UNAUTHORIZED


async def test_a_server_no_external_server_authorizes_refuses_external_tokens(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    assert await external_jwt.authorization_server_for(api.gateway, server) is None
    refused = await refusal(api, server, issuer.token(aud=endpoint(server)))
    assert refused.reason == "no_external_as"


async def test_an_unknown_end_user_is_refused_unless_creation_is_allowed(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server, allowCreateEndUsers=False)
    with pytest.raises(NoEndUser) as refused:
        await external_jwt.validate(api.gateway, server, issuer.token(aud=endpoint(server)))
    assert (refused.value.code, refused.value.reason) == (ErrorCode.FORBIDDEN, "end_user_unknown")
    users = await api.gateway.store.end_users.list(api.org_id, api.workspace_id, None)
    assert users == []


async def test_an_unreachable_authorization_server_is_a_provider_failure(api: Api) -> None:
    server = await new_server(api)
    async with authorization_server() as gone:
        await point_at(api, gone, server)
        token = gone.token(aud=endpoint(server))
    refused = await refusal(api, server, token)
    assert (refused.code, refused.reason) == (
        ErrorCode.IDENTITY_PROVIDER_UNAVAILABLE,
        "provider_unavailable",
    )


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


async def test_the_endpoint_names_the_external_server_and_admits_its_tokens(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server, scopes=["mcp", "tools"])
    async with (
        serve(build_http_app(api.gateway), lifespan="on") as port,
        httpx2.AsyncClient(trust_env=False, timeout=30) as http,
    ):
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/mcp/{server.id}"
        metadata = await http.get(f"{base}/.well-known/oauth-protected-resource/mcp/{server.id}")
        assert metadata.status_code == 200, metadata.text
        assert metadata.json()["authorization_servers"] == [issuer.issuer]
        assert metadata.json()["resource"] == url

        async def initialize(token: str | None) -> httpx2.Response:
            headers = {"Accept": "application/json, text/event-stream"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            return await http.post(url, json=INITIALIZE, headers=headers)

        challenge = await initialize(None)
        assert challenge.status_code == 401
        assert "resource_metadata=" in challenge.headers["www-authenticate"]
        admitted = await initialize(issuer.token(aud=url, scope="mcp tools"))
        assert admitted.status_code == 200, admitted.text
        elsewhere = await initialize(issuer.token(aud=f"{base}/mcp/srv_other", scope="mcp tools"))
        assert elsewhere.status_code == 401
        assert 'error="invalid_token"' in elsewhere.headers["www-authenticate"]
        narrow = await initialize(issuer.token(aud=url, scope="mcp"))
        assert narrow.status_code == 403
        assert 'scope="mcp tools"' in narrow.headers["www-authenticate"]


async def test_concurrent_first_tokens_of_one_person_make_one_end_user(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    await point_at(api, issuer, server)
    token = issuer.token(aud=endpoint(server), sub="newcomer")
    seen: list[str | None] = []

    async def use() -> None:
        seen.append((await external_jwt.validate(api.gateway, server, token)).end_user_id)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(use)
    users = await api.gateway.store.end_users.list(api.org_id, api.workspace_id, None)
    assert [u.external_id for u in users] == ["newcomer"]
    assert seen == [users[0].id] * 4


async def test_a_deleted_server_drops_out_of_its_providers_list(
    api: Api, issuer: AuthorizationServer
) -> None:
    server = await new_server(api)
    idp = await point_at(api, issuer, server)
    deleted = await api.delete(f"/mcp/servers/{server.id}")
    assert deleted.status_code == 200, deleted.text
    got = await api.get(f"/identity-providers/{idp['id']}")
    assert got.json()["identityProvider"]["mcpServerIds"] == []


async def test_a_document_cached_for_a_provider_allowed_private_networks_serves_no_other(
    api: Api, issuer: AuthorizationServer
) -> None:
    found = await discovery.provider_metadata(api.gateway.http, issuer.issuer, True)
    assert found.jwks_uri == f"{issuer.issuer}/jwks"
    with pytest.raises(discovery.ProviderUnavailable) as refused:
        await discovery.provider_metadata(api.gateway.http, issuer.issuer, False)
    assert refused.value.reason == "destination_not_allowed"
    await discovery.key_set(api.gateway.http, found.jwks_uri, True, kid=None)
    with pytest.raises(discovery.ProviderUnavailable):
        await discovery.key_set(api.gateway.http, found.jwks_uri, False, kid=None)


@pytest.mark.parametrize("jwks_uri", ["http://[", "http://127.0.0.1:1/jwks", "ftp://x/jwks"])
async def test_a_metadata_document_with_an_unusable_jwks_uri_is_a_provider_failure(
    api: Api, issuer: AuthorizationServer, jwks_uri: str
) -> None:
    issuer.metadata_overrides["jwks_uri"] = jwks_uri
    server = await new_server(api)
    await point_at(api, issuer, server)
    refused = await refusal(api, server, issuer.token(aud=endpoint(server)))
    assert (refused.code, refused.reason) == (
        ErrorCode.IDENTITY_PROVIDER_UNAVAILABLE,
        "provider_unavailable",
    )
