"""Connection resolution per strategy, and secrets that never come back out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.model import JSONObject
from treadle.settings import Settings

from conftest import Api, open_api
from databases import ON_POSTGRESQL, rows_of_every_table

pytestmark = pytest.mark.anyio

SECRETS = {
    "team": "sk-team-7f3a9c1e5b",
    "alice": "sk-alice-2d8e4f6a0c",
    "bob": "sk-bob-9b1c3e5d7f",
    "spare": "sk-spare-4a6c8e0b2d",
    "elsewhere": "sk-elsewhere-1f2e3d4c5b",
    "orgwide": "sk-orgwide-6e5d4c3b2a",
}


async def _whoami(ctx: ActionContext, data: JSONObject) -> JSONObject:
    connection = ctx.connection
    if connection is None:
        return {"connection": None}
    # Prove the action got the decrypted secret without ever echoing it.
    expected = SECRETS.get(connection.external_id.removeprefix("conn_"))
    return {
        "connection": connection.external_id,
        "secretMatches": connection.values.get("api_key") == expected,
    }


def _integration(name: str, auth_kind: AuthKind) -> Integration:
    return Integration(
        name=name,
        display_name=name,
        description="Test-only integration reporting which connection it got.",
        auth_kind=auth_kind,
        actions=(
            Action(
                name="whoami",
                display_name="Who am I",
                description="Return the connection's externalId.",
                input_schema={"type": "object"},
                run=_whoami,
            ),
        ),
    )


KEYED = _integration("keyed", AuthKind.API_KEY)
OTHER = _integration("other", AuthKind.API_KEY)
OPEN = _integration("open", AuthKind.NONE)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with open_api(settings, Catalog([KEYED, OTHER, OPEN])) as configured:
        for user in ("alice", "bob", "carol"):
            created = await configured.post(
                "/end-users", {"workspaceId": configured.workspace_id, "externalId": user}
            )
            assert created.status_code == 201, created.text
        yield configured


async def connect(
    api: Api,
    name: str,
    *,
    end_user: str | None = None,
    integration: str = "keyed",
    workspace_id: str | None = "default",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "integrationName": integration,
        "type": "api_key",
        "displayName": f"{name} key",
        "externalId": f"conn_{name}",
        "values": {"api_key": SECRETS[name]},
    }
    if workspace_id is not None:
        body["workspaceId"] = api.workspace_id if workspace_id == "default" else workspace_id
    if end_user is not None:
        body["endUserId"] = end_user
    created = await api.post("/connections", body)
    assert created.status_code == 201, created.text
    assert SECRETS[name] not in created.text
    connection: dict[str, Any] = created.json()["connection"]
    return connection


async def whoami(api: Api, **fields: Any) -> httpx2.Response:
    fields.setdefault("integrationName", "keyed")
    response = await api.execute(actionName="whoami", **fields)
    for secret in SECRETS.values():
        assert secret not in response.text
    return response


def used(response: httpx2.Response) -> str | None:
    assert response.status_code == 200, response.text
    output: dict[str, Any] = response.json()["output"]
    assert output["connection"] is None or output["secretMatches"] is True
    connection: str | None = output["connection"]
    return connection


def refused(response: httpx2.Response, code: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    return body


async def test_fixed_uses_the_configured_connection_for_everyone(api: Api) -> None:
    team = await connect(api, "team")
    await connect(api, "alice", end_user="alice")
    await api.configure("keyed", connectionStrategy="fixed", connectionId=team["id"])
    assert used(await whoami(api)) == "conn_team"
    assert used(await whoami(api, endUserId="alice")) == "conn_team"
    assert used(await whoami(api, endUserId="carol")) == "conn_team"


async def test_fixed_accepts_the_connection_external_id_when_configured(api: Api) -> None:
    await connect(api, "team")
    await api.configure("keyed", connectionStrategy="fixed", connectionId="conn_team")
    assert used(await whoami(api)) == "conn_team"


async def test_per_user_uses_each_end_users_own_connection(api: Api) -> None:
    await connect(api, "alice", end_user="alice")
    await connect(api, "bob", end_user="bob")
    await api.configure("keyed", connectionStrategy="per_user")
    assert used(await whoami(api, endUserId="alice")) == "conn_alice"
    assert used(await whoami(api, endUserId="bob")) == "conn_bob"


async def test_per_user_without_the_end_users_connection_is_connection_required(
    api: Api,
) -> None:
    await connect(api, "team")
    await connect(api, "alice", end_user="alice")
    await api.configure("keyed", connectionStrategy="per_user")
    refused(await whoami(api, endUserId="carol"), "CONNECTION_REQUIRED")
    refused(await whoami(api, endUserId="nobody-known"), "CONNECTION_REQUIRED")


async def test_per_user_without_an_end_user_is_connection_required(api: Api) -> None:
    await connect(api, "alice", end_user="alice")
    await api.configure("keyed", connectionStrategy="per_user")
    refused(await whoami(api), "CONNECTION_REQUIRED")


async def test_per_user_ignores_the_end_users_connection_for_another_integration(
    api: Api,
) -> None:
    await connect(api, "alice", end_user="alice", integration="other")
    await api.configure("keyed", connectionStrategy="per_user")
    refused(await whoami(api, endUserId="alice"), "CONNECTION_REQUIRED")


async def test_per_user_with_fallback_prefers_the_end_users_connection(api: Api) -> None:
    team = await connect(api, "team")
    await connect(api, "alice", end_user="alice")
    await api.configure(
        "keyed", connectionStrategy="per_user_with_fallback", connectionId=team["id"]
    )
    assert used(await whoami(api, endUserId="alice")) == "conn_alice"
    assert used(await whoami(api, endUserId="carol")) == "conn_team"
    assert used(await whoami(api)) == "conn_team"


async def test_fallback_connection_deleted_after_configuration_is_connection_not_found(
    api: Api,
) -> None:
    team = await connect(api, "team")
    await api.configure(
        "keyed", connectionStrategy="per_user_with_fallback", connectionId=team["id"]
    )
    deleted = await api.delete(f"/connections/{team['id']}")
    assert deleted.status_code == 200
    refused(await whoami(api, endUserId="carol"), "CONNECTION_NOT_FOUND")


async def test_switching_strategy_to_per_user_drops_the_fallback(api: Api) -> None:
    team = await connect(api, "team")
    configured = await api.configure(
        "keyed", connectionStrategy="per_user_with_fallback", connectionId=team["id"]
    )
    assert used(await whoami(api, endUserId="carol")) == "conn_team"
    patched = await api.patch(
        f"/workspaces/{api.workspace_id}/integrations/{configured['id']}",
        {"connectionStrategy": "per_user"},
    )
    assert patched.status_code == 200, patched.text
    refused(await whoami(api, endUserId="carol"), "CONNECTION_REQUIRED")


async def test_explicit_connection_external_id_overrides_the_strategy(api: Api) -> None:
    team = await connect(api, "team")
    await connect(api, "spare")
    await connect(api, "alice", end_user="alice")
    await api.configure("keyed", connectionStrategy="fixed", connectionId=team["id"])
    assert used(await whoami(api, connectionExternalId="conn_spare")) == "conn_spare"
    chosen = await whoami(api, connectionExternalId="conn_spare", endUserId="alice")
    assert used(chosen) == "conn_spare"


async def test_explicit_connection_of_another_end_user_is_connection_not_found(
    api: Api,
) -> None:
    team = await connect(api, "team")
    alice = await connect(api, "alice", end_user="alice")
    await api.configure("keyed", connectionStrategy="fixed", connectionId=team["id"])
    refused(
        await whoami(api, connectionExternalId="conn_alice", endUserId="bob"),
        "CONNECTION_NOT_FOUND",
    )
    refused(await whoami(api, connectionId=alice["id"]), "CONNECTION_NOT_FOUND")
    own = await whoami(api, connectionExternalId="conn_alice", endUserId="alice")
    assert used(own) == "conn_alice"


async def test_explicit_connection_id_as_uuid_selects_that_connection(api: Api) -> None:
    team = await connect(api, "team")
    spare = await connect(api, "spare")
    await api.configure("keyed", connectionStrategy="fixed", connectionId=team["id"])
    assert used(await whoami(api, connectionId=spare["id"])) == "conn_spare"


async def test_explicit_org_wide_connection_is_visible_from_the_workspace(api: Api) -> None:
    await connect(api, "orgwide", workspace_id=None)
    await api.configure("keyed", connectionStrategy="per_user")
    assert used(await whoami(api, connectionExternalId="conn_orgwide")) == "conn_orgwide"


async def test_explicit_connection_of_another_workspace_is_connection_not_found(
    api: Api,
) -> None:
    elsewhere = await api.post("/workspaces", {"name": "elsewhere"})
    elsewhere_id = elsewhere.json()["workspace"]["id"]
    foreign = await connect(api, "elsewhere", workspace_id=elsewhere_id)
    team = await connect(api, "team")
    await api.configure("keyed", connectionStrategy="fixed", connectionId=team["id"])
    refused(await whoami(api, connectionExternalId="conn_elsewhere"), "CONNECTION_NOT_FOUND")
    refused(await whoami(api, connectionId=foreign["id"]), "CONNECTION_NOT_FOUND")


async def test_explicit_connection_of_another_integration_is_connection_not_found(
    api: Api,
) -> None:
    team = await connect(api, "team")
    await connect(api, "spare", integration="other")
    await api.configure("keyed", connectionStrategy="fixed", connectionId=team["id"])
    refused(await whoami(api, connectionExternalId="conn_spare"), "CONNECTION_NOT_FOUND")


async def test_unknown_explicit_connection_is_connection_not_found(api: Api) -> None:
    team = await connect(api, "team")
    await api.configure("keyed", connectionStrategy="fixed", connectionId=team["id"])
    refused(await whoami(api, connectionExternalId="conn_missing"), "CONNECTION_NOT_FOUND")
    refused(
        await whoami(api, connectionId="00000000-0000-0000-0000-000000000000"),
        "CONNECTION_NOT_FOUND",
    )


async def test_connection_id_and_external_id_naming_different_connections_is_not_found(
    api: Api,
) -> None:
    team = await connect(api, "team")
    await connect(api, "spare")
    await api.configure("keyed", connectionStrategy="fixed", connectionId=team["id"])
    response = await whoami(api, connectionId=team["id"], connectionExternalId="conn_spare")
    refused(response, "CONNECTION_NOT_FOUND")


async def test_integration_without_auth_runs_without_a_connection(api: Api) -> None:
    await api.configure("open", connectionStrategy="per_user")
    assert used(await whoami(api, integrationName="open", endUserId="carol")) is None
    assert used(await whoami(api, integrationName="open")) is None


async def test_secrets_never_appear_in_listings_activity_or_logs(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    team = await connect(api, "team")
    await connect(api, "alice", end_user="alice")
    await api.configure(
        "keyed", connectionStrategy="per_user_with_fallback", connectionId="conn_team"
    )
    used(await whoami(api, endUserId="alice"))
    used(await whoami(api, endUserId="carol", input={"note": "hello"}))
    refused(await whoami(api, connectionExternalId="conn_missing"), "CONNECTION_NOT_FOUND")
    seen = [
        await api.get("/connections"),
        await api.get(f"/connections/{team['id']}"),
        await api.get(f"/workspaces/{api.workspace_id}/integrations"),
        await api.get("/activity"),
        await api.get("/end-users"),
    ]
    for response in seen:
        assert response.status_code == 200, response.text
    text = "\n".join(response.text for response in seen) + caplog.text
    for secret in SECRETS.values():
        assert secret not in text
    assert all("values" not in c for c in seen[0].json()["connections"])


async def test_secrets_are_encrypted_at_rest(api: Api) -> None:
    await connect(api, "team")
    await connect(api, "alice", end_user="alice")
    data_dir = api.gateway.settings.data_dir
    stored = b"".join(path.read_bytes() for path in data_dir.iterdir() if path.is_file())
    if ON_POSTGRESQL:  # the database's files are the server's: every row, as it reads back
        stored += repr(await rows_of_every_table(api.gateway.store.db.engine)).encode()
    assert b"conn_team" in stored  # the connection row is there
    for secret in SECRETS.values():
        assert secret.encode() not in stored
