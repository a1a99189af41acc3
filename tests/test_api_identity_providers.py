"""`/api/v1/identity-providers`: create, list, get, update, delete; the client secret goes in
sealed and never comes out; refused writes change nothing."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from test_api_auth import SECRET, add_key, assert_error, bearer, config_changes, other_org, snapshot

from conftest import Api

pytestmark = pytest.mark.anyio

OIDC = {
    "name": "corporate",
    "kind": "oidc",
    "issuer": "https://login.example.com/realms/acme",
    "clientId": "treadle",
    "clientSecret": SECRET,
}


async def create(api: Api, body: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    response = await api.post("/identity-providers", {**(body or OIDC), **fields})
    assert response.status_code == 201, response.text
    assert SECRET not in response.text
    created: dict[str, Any] = response.json()["identityProvider"]
    return created


async def new_server(api: Api, name: str = "support") -> str:
    created = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": name})
    assert created.status_code == 201, created.text
    server_id: str = created.json()["server"]["id"]
    return server_id


async def test_an_oidc_provider_is_created_listed_and_read_without_its_secret(api: Api) -> None:
    created = await create(api)
    assert created == {
        "id": created["id"],
        "orgId": api.org_id,
        "name": "corporate",
        "kind": "oidc",
        "issuer": "https://login.example.com/realms/acme",
        "clientId": "treadle",
        "clientSecretSet": True,
        "scopes": [],
        "claim": "sub",
        "allowCreateEndUsers": False,
        "allowPrivateNetwork": False,
        "redirectUri": "http://127.0.0.1:8400/auth/oidc/callback",
        "createdAt": created["createdAt"],
        "updatedAt": created["updatedAt"],
    }
    listed = await api.get("/identity-providers")
    assert listed.status_code == 200
    assert listed.json() == {"identityProviders": [created], "total": 1}
    got = await api.get(f"/identity-providers/{created['id']}")
    assert got.json() == {"identityProvider": created}
    # Sealed at rest: no row of any table holds the secret in the clear.
    rows = await snapshot(api)
    assert SECRET not in repr(rows)
    # Nor does the activity log of the change.
    changes = await config_changes(api)
    assert ("identity_provider", created["id"], "created") in [
        (c["targetType"], c["targetId"], c["change"]) for c in changes
    ]
    assert SECRET not in repr(changes)


async def test_an_external_as_provider_lists_the_servers_it_authorizes(api: Api) -> None:
    server_id = await new_server(api)
    created = await create(
        api,
        {"name": "as", "kind": "external_as", "issuer": "https://as.example.com"},
        mcpServerIds=[server_id],
        claim="email",
    )
    assert created["mcpServerIds"] == [server_id]
    assert created["scopes"] == ["mcp"]  # the default required scope
    assert created["audience"] is None
    assert "clientSecretSet" not in created
    assert "clientId" not in created


async def test_an_update_changes_what_it_names_and_keeps_the_rest(api: Api) -> None:
    created = await create(api)
    path = f"/identity-providers/{created['id']}"
    updated = await api.patch(
        path, {"name": "sso", "claim": "email", "allowCreateEndUsers": True, "scopes": ["email"]}
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()["identityProvider"]
    assert (body["name"], body["claim"], body["allowCreateEndUsers"], body["scopes"]) == (
        "sso",
        "email",
        True,
        ["email"],
    )
    assert (body["issuer"], body["clientId"], body["clientSecretSet"]) == (
        created["issuer"],
        "treadle",
        True,
    )
    before = await snapshot(api)
    rotated = await api.patch(path, {"clientSecret": "a-new-secret-value"})
    assert rotated.status_code == 200
    assert "a-new-secret-value" not in rotated.text
    after = await snapshot(api)
    assert before != after
    assert "a-new-secret-value" not in repr(after)


async def test_a_provider_is_deleted_once(api: Api) -> None:
    created = await create(api)
    path = f"/identity-providers/{created['id']}"
    deleted = await api.delete(path)
    assert deleted.json() == {"deleted": True, "id": created["id"]}
    assert_error(await api.get(path), 404, "NOT_FOUND")
    assert_error(await api.delete(path), 404, "NOT_FOUND")
    assert (await api.get("/identity-providers")).json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**OIDC, "clientSecret": None}, "clientSecret"),
        ({k: v for k, v in OIDC.items() if k != "clientSecret"}, "clientSecret"),
        ({k: v for k, v in OIDC.items() if k != "clientId"}, "clientId"),
        ({**OIDC, "issuer": "http://login.example.com"}, "issuer"),
        ({**OIDC, "issuer": "https://login.example.com/?x=1"}, "issuer"),
        ({**OIDC, "issuer": "not a url"}, "issuer"),
        ({**OIDC, "issuer": "https://[::1"}, "issuer"),
        ({**OIDC, "issuer": "https://a]b/"}, "issuer"),
        ({**OIDC, "issuer": "https://login.example.com:99999"}, "issuer"),
        ({**OIDC, "issuer": "https://:443/"}, "issuer"),
        ({**OIDC, "kind": "saml"}, "kind"),
        ({**OIDC, "claim": "bad claim"}, "claim"),
        ({**OIDC, "name": ""}, "name"),
        ({**OIDC, "extra": 1}, "extra"),
        ({**OIDC, "allowCreateEndUsers": "yes"}, "allowCreateEndUsers"),
        ({**OIDC, "audience": "api://x"}, "audience"),
        ({**OIDC, "mcpServerIds": ["srv_x"]}, "mcpServerIds"),
        (
            {
                "name": "as",
                "kind": "external_as",
                "issuer": "https://as.example.com",
                "clientSecret": "s",
            },
            "clientId",
        ),
        (
            {
                "name": "as",
                "kind": "external_as",
                "issuer": "https://as.example.com",
                "mcpServerIds": ["srv_nope"],
            },
            "mcpServerIds",
        ),
    ],
)
async def test_bad_input_is_refused_with_its_field_and_changes_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    before = await snapshot(api)
    refused = assert_error(await api.post("/identity-providers", body), 400, "VALIDATION_ERROR")
    assert refused["field"] == field
    assert SECRET not in repr(refused)
    assert await snapshot(api) == before


async def test_bad_updates_are_refused_and_change_nothing(api: Api) -> None:
    created = await create(api)
    path = f"/identity-providers/{created['id']}"
    before = await snapshot(api)
    assert_error(await api.patch(path, {}), 400, "NO_UPDATES")
    for body, field in (
        ({"kind": "external_as"}, "kind"),
        ({"name": None}, "name"),
        ({"clientId": None}, "clientId"),
        ({"issuer": "http://plain.example.com"}, "issuer"),
    ):
        refused = assert_error(await api.patch(path, body), 400, "VALIDATION_ERROR")
        assert refused["field"] == field
    assert await snapshot(api) == before


async def test_names_and_servers_are_taken_once(api: Api) -> None:
    await create(api)
    assert_error(await api.post("/identity-providers", OIDC), 409, "DUPLICATE")
    server_id = await new_server(api)
    external = {"kind": "external_as", "issuer": "https://as.example.com"}
    await create(api, {**external, "name": "first-as", "mcpServerIds": [server_id]})
    before = await snapshot(api)
    taken = assert_error(
        await api.post(
            "/identity-providers", {**external, "name": "second-as", "mcpServerIds": [server_id]}
        ),
        409,
        "DUPLICATE",
    )
    assert taken["field"] == "mcpServerIds"
    assert await snapshot(api) == before
    # Renaming onto a taken name is a conflict too.
    second = await create(api, name="other")
    renamed = await api.patch(f"/identity-providers/{second['id']}", {"name": "corporate"})
    assert_error(renamed, 409, "DUPLICATE")


async def test_a_workspace_key_reads_but_cannot_change_providers(api: Api) -> None:
    created = await create(api)
    token = await add_key(api, workspace_id=api.workspace_id)
    headers = bearer(token)
    listed = await api.get("/identity-providers", headers=headers)
    assert listed.json()["total"] == 1
    for response in (
        await api.post("/identity-providers", {**OIDC, "name": "x"}, headers=headers),
        await api.patch(f"/identity-providers/{created['id']}", {"name": "y"}, headers=headers),
        await api.delete(f"/identity-providers/{created['id']}", headers=headers),
    ):
        assert_error(response, 403, "SCOPE_DENIED")


async def test_another_orgs_provider_is_not_found(api: Api) -> None:
    created = await create(api)
    stranger = await other_org(api)
    headers = bearer(stranger.token)
    assert (await api.get("/identity-providers", headers=headers)).json()["total"] == 0
    for method in ("GET", "DELETE"):
        response = await api.request(
            method, f"/identity-providers/{created['id']}", headers=headers
        )
        assert_error(response, 404, "NOT_FOUND")
    patched = await api.patch(
        f"/identity-providers/{created['id']}", {"name": "mine"}, headers=headers
    )
    assert_error(patched, 404, "NOT_FOUND")


async def test_an_external_as_cannot_claim_another_orgs_server(api: Api) -> None:
    server_id = await new_server(api)
    stranger = await other_org(api)
    response = await api.post(
        "/identity-providers",
        {
            "name": "as",
            "kind": "external_as",
            "issuer": "https://as.example.com",
            "mcpServerIds": [server_id],
        },
        headers=bearer(stranger.token),
    )
    assert assert_error(response, 400, "VALIDATION_ERROR")["field"] == "mcpServerIds"


async def test_answers_conform_to_the_openapi_document(api: Api) -> None:
    document = (await api.client.get("/api/v1/openapi.json")).json()

    def check(path: str, method: str, answer: Any) -> None:
        schema = document["paths"][f"/api/v1{path}"][method]["responses"][str(answer.status_code)]
        body = schema["content"]["application/json"]["schema"]
        jsonschema.validate(answer.json(), {**body, "components": document["components"]})

    server_id = await new_server(api)
    oidc = await api.post("/identity-providers", OIDC)
    check("/identity-providers", "post", oidc)
    external = await api.post(
        "/identity-providers",
        {
            "name": "as",
            "kind": "external_as",
            "issuer": "https://as.example.com",
            "mcpServerIds": [server_id],
        },
    )
    check("/identity-providers", "post", external)
    check("/identity-providers", "post", await api.post("/identity-providers", OIDC))
    check("/identity-providers", "get", await api.get("/identity-providers"))
    one_path = "/identity-providers/{idp_id}"
    idp_id = oidc.json()["identityProvider"]["id"]
    check(one_path, "get", await api.get(f"/identity-providers/{idp_id}"))
    check(one_path, "patch", await api.patch(f"/identity-providers/{idp_id}", {"claim": "email"}))
    check(one_path, "patch", await api.patch(f"/identity-providers/{idp_id}", {}))
    check(one_path, "delete", await api.delete(f"/identity-providers/{idp_id}"))
    check(one_path, "get", await api.get(f"/identity-providers/{idp_id}"))
