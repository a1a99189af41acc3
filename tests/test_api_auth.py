"""Bearer API keys, workspace-restricted keys and the wall between orgs, on every endpoint.

Also home of the small helpers the other `test_api_*` files share: extra keys, a second org,
a populated workspace, the table of endpoints and a database snapshot that proves a refused
request changed nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from treadle.api.routes import build_app
from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.settings import Settings

from conftest import Api
from databases import ON_POSTGRESQL, clone, database_url, drop, rows_of_every_table

pytestmark = pytest.mark.anyio

SECRET = "sk-test-7f3a9c1e5b2d4f60a8e1c3d5b7f9a2c4"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    """The documented error shape: `{"error": CODE, "message": sentence, ...}`."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    assert "Traceback" not in response.text
    return body


async def add_key(api: Api, *, workspace_id: str | None = None, org_id: str | None = None) -> str:
    store = api.gateway.store
    async with store.db.write("test") as txn:
        _key, token = await store.api_keys.create(
            txn, org_id or api.org_id, name="extra", workspace_id=workspace_id
        )
    return token


async def add_workspace(api: Api, name: str = "second") -> str:
    response = await api.post("/workspaces", {"name": name})
    assert response.status_code == 201, response.text
    workspace_id: str = response.json()["workspace"]["id"]
    return workspace_id


@dataclass
class Tenant:
    org_id: str
    workspace_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


async def other_org(api: Api) -> Tenant:
    store = api.gateway.store
    async with store.db.write("test") as txn:
        org = await store.orgs.create(txn, "other org")
        workspace = await store.workspaces.create(txn, org.id, "default")
        _key, token = await store.api_keys.create(txn, org.id, name="other key")
    return Tenant(org.id, workspace.id, token)


@dataclass
class World:
    """One of each resource inside one workspace; `ids` fills endpoint templates."""

    workspace_id: str
    integration_id: str
    connection_id: str
    end_user_id: str
    partial_id: str

    @property
    def ids(self) -> dict[str, str]:
        return {
            "ws": self.workspace_id,
            "wi": self.integration_id,
            "conn": self.connection_id,
            "user": self.end_user_id,
            "partial": self.partial_id,
        }


async def populate(api: Api, workspace_id: str, headers: dict[str, str] | None = None) -> World:
    """A kv-store integration, a connection (with SECRET), an end user and a partial."""
    auth = {"headers": headers} if headers else {}

    async def create(path: str, body: dict[str, Any], key: str) -> str:
        response = await api.post(path, body, **auth)
        assert response.status_code == 201, response.text
        created: str = response.json()[key]["id"]
        return created

    integration_id = await create(
        f"/workspaces/{workspace_id}/integrations",
        {
            "integrationName": "kv-store",
            "connectionStrategy": "fixed",
            "settings": {"persistence": {"scope": "workspace"}},
        },
        "integration",
    )
    end_user_id = await create(
        "/end-users", {"workspaceId": workspace_id, "externalId": "user-1"}, "endUser"
    )
    connection_id = await create(
        "/connections",
        {
            "integrationName": "http",
            "type": "bearer",
            "displayName": "Upstream",
            "externalId": "conn-1",
            "values": {"token": SECRET},
            "workspaceId": workspace_id,
        },
        "connection",
    )
    partial_id = await create(
        "/partials",
        {
            "workspaceId": workspace_id,
            "integrationName": "kv-store",
            "actionName": "put",
            "name": "preset",
            "values": {"key": "k"},
        },
        "partial",
    )
    return World(workspace_id, integration_id, connection_id, end_user_id, partial_id)


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str
    # A body the endpoint accepts inside a populated world (None: the endpoint reads no body).
    body: dict[str, Any] | None = None
    # Names of the body's required fields.
    required: tuple[str, ...] = ()

    def path(self, ids: dict[str, str]) -> str:
        return self.template.format(**ids)

    def valid_body(self, ids: dict[str, str]) -> dict[str, Any] | None:
        if self.body is None:
            return None
        return {
            key: value.format(**ids) if isinstance(value, str) else value
            for key, value in self.body.items()
        }

    @property
    def id(self) -> str:
        return f"{self.method} {self.template}"


ENDPOINTS = [
    Endpoint("GET", "/workspaces"),
    Endpoint("POST", "/workspaces", {"name": "second"}, ("name",)),
    Endpoint("GET", "/workspaces/{ws}"),
    Endpoint("PATCH", "/workspaces/{ws}", {"name": "renamed"}),
    Endpoint("DELETE", "/workspaces/{ws}"),
    Endpoint("GET", "/workspaces/{ws}/integrations"),
    Endpoint(
        "POST",
        "/workspaces/{ws}/integrations",
        {"integrationName": "http", "connectionStrategy": "fixed"},
        ("integrationName", "connectionStrategy"),
    ),
    Endpoint("GET", "/workspaces/{ws}/integrations/{wi}"),
    Endpoint("PATCH", "/workspaces/{ws}/integrations/{wi}", {"allowedActions": ["get"]}),
    Endpoint("DELETE", "/workspaces/{ws}/integrations/{wi}"),
    Endpoint("GET", "/integrations"),
    Endpoint("GET", "/integrations/kv-store"),
    Endpoint("GET", "/connections"),
    Endpoint(
        "POST",
        "/connections",
        {
            "integrationName": "http",
            "type": "bearer",
            "displayName": "Second",
            "externalId": "conn-2",
            "values": {"token": "another-secret-value"},
            "workspaceId": "{ws}",
        },
        ("integrationName", "type", "displayName", "externalId", "values"),
    ),
    Endpoint("GET", "/connections/{conn}"),
    Endpoint("DELETE", "/connections/{conn}"),
    Endpoint("GET", "/end-users"),
    Endpoint(
        "POST",
        "/end-users",
        {"workspaceId": "{ws}", "externalId": "user-2"},
        ("workspaceId", "externalId"),
    ),
    Endpoint("GET", "/end-users/{user}"),
    Endpoint("DELETE", "/end-users/{user}"),
    Endpoint("POST", "/end-users/{user}/connect-token"),
    Endpoint("GET", "/partials?workspaceId={ws}"),
    Endpoint(
        "POST",
        "/partials",
        {
            "workspaceId": "{ws}",
            "integrationName": "kv-store",
            "actionName": "get",
            "name": "second preset",
            "values": {"key": "k"},
        },
        ("workspaceId", "integrationName", "name", "values"),
    ),
    Endpoint("GET", "/partials/{partial}"),
    Endpoint("PATCH", "/partials/{partial}", {"name": "renamed preset"}),
    Endpoint("DELETE", "/partials/{partial}"),
    Endpoint("POST", "/partials/{partial}/set-default", {"isDefault": True}, ("isDefault",)),
    Endpoint(
        "POST",
        "/actions/execute",
        {
            "integrationName": "kv-store",
            "actionName": "get",
            "workspaceId": "{ws}",
            "input": {"key": "k"},
        },
        ("actionName", "integrationName"),
    ),
    Endpoint("GET", "/activity"),
]
BODY_ENDPOINTS = [e for e in ENDPOINTS if e.body is not None]
ID_ENDPOINTS = [e for e in ENDPOINTS if "{" in e.template]


async def send(api: Api, endpoint: Endpoint, ids: dict[str, str], **kwargs: Any) -> httpx2.Response:
    if endpoint.body is not None and "json" not in kwargs and "content" not in kwargs:
        kwargs["json"] = endpoint.valid_body(ids)
    return await api.request(endpoint.method, endpoint.path(ids), **kwargs)


async def snapshot(api: Api, *, skip: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: equal snapshots mean a request changed nothing at all.

    Read with the standard library's sqlite3 beside the gateway's own connections (WAL lets a
    second reader see every commit): a few hundred microseconds instead of a dozen
    round trips through the async driver, so tests can afford one per refused request.
    (On PostgreSQL there is no file: the same rows, read through the gateway's engine.)"""
    if ON_POSTGRESQL:
        return await rows_of_every_table(api.gateway.store.db.engine, skip)
    path = api.gateway.settings.data_dir / "treadle.db"
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (name,) in names:
            if name not in skip:
                found = conn.execute(f'SELECT * FROM "{name}"').fetchall()
                rows[name] = sorted(found, key=repr)
    return rows


async def config_changes(api: Api, **params: str) -> list[dict[str, Any]]:
    response = await api.get(
        "/activity", params={"type": "config_change", "limit": "200", **params}
    )
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["activity"]
    return entries


# --------------------------------------------------------------------------------------------


def _refuse_network(request: httpx2.Request) -> httpx2.Response:
    raise AssertionError(f"unexpected outbound request to {request.url}")


def _offline_http() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(_refuse_network), trust_env=False)


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url(data_dir), secret_key=None)


@dataclass(frozen=True)
class Templates:
    """Data dirs prepared once per session; every test starts from its own copy of one."""

    initialised: Path
    populated: Path
    world: World


async def _build_templates(root: Path) -> Templates:
    initialised, populated = root / "initialised", root / "populated"
    for data_dir in (initialised, populated):
        http = _offline_http()
        opened = await Gateway.open(_settings(data_dir), http=http)
        try:
            result = await initialise(opened.store, data_dir)
            assert result.api_key is not None
            if data_dir == populated:
                transport = httpx2.ASGITransport(app=build_app(opened))
                async with httpx2.AsyncClient(
                    transport=transport,
                    base_url="http://treadle.test",
                    headers=bearer(result.api_key),
                ) as client:
                    api = Api(client, opened, result.org_id, result.workspace_id, result.api_key)
                    world = await populate(api, result.workspace_id)
        finally:
            await opened.close()
            await http.aclose()
    return Templates(initialised, populated, world)


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return anyio.run(_build_templates, tmp_path_factory.mktemp("templates"))


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, templates: Templates
) -> Iterator[Settings]:
    """A migrated, initialised data dir; for tests using `world`, one holding it too."""
    populated = "world" in request.fixturenames
    data_dir = tmp_path / "data"
    template = templates.populated if populated else templates.initialised
    shutil.copytree(template, data_dir)
    clone(template, data_dir)
    yield _settings(data_dir)
    drop(data_dir)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """The conftest gateway with an offline HTTP client: no network, and no TLS context to
    build for every test (with the migrations, most of a gateway's start-up time)."""
    http = _offline_http()
    opened = await Gateway.open(settings, http=http)
    try:
        yield opened
    finally:
        await opened.close()
        await http.aclose()


@pytest.fixture
def world(templates: Templates) -> World:
    """What every test asking for it finds in its own copy of the database."""
    return templates.world


async def test_request_without_api_key_is_unauthorized_and_changes_nothing(
    api: Api, world: World
) -> None:
    before = await snapshot(api)
    for endpoint in ENDPOINTS:
        response = await send(api, endpoint, world.ids, headers={"Authorization": ""})
        body = assert_error(response, 401, "UNAUTHORIZED")
        assert set(body) == {"error", "message"}, endpoint.id
    assert await snapshot(api) == before


async def test_request_with_unknown_api_key_is_unauthorized(api: Api, world: World) -> None:
    before = await snapshot(api)
    for endpoint in ENDPOINTS:
        response = await send(api, endpoint, world.ids, headers=bearer("trd_not-a-real-key"))
        assert_error(response, 401, "UNAUTHORIZED")
    assert await snapshot(api) == before


BAD_AUTHORIZATION = [
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Bearer ",
    "Bearer    ",
    "Token {key}",
    "{key}",
    "Bearer {key}x",
    "Bearer x{key}",
    "Bearer {key_upper}",
    "Bearer ' OR '1'='1",
    "Bearer \u00e9\u00e8",
    "Bearer {key}\x00",
]


async def test_malformed_or_wrong_authorization_header_is_unauthorized(api: Api) -> None:
    for header in BAD_AUTHORIZATION:
        value = header.format(key=api.api_key, key_upper=api.api_key.upper())
        response = await api.get("/workspaces", headers={"Authorization": value.encode()})
        assert response.status_code == 401, header
        assert_error(response, 401, "UNAUTHORIZED")


async def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    response = await api.get("/workspaces", headers={"Authorization": f"bearer {api.api_key}"})
    assert response.status_code == 200, response.text


async def test_authentication_is_checked_before_the_body_is_read(api: Api) -> None:
    response = await api.post(
        "/workspaces", content=b"{not json", headers={"Authorization": "Bearer nope"}
    )
    assert_error(response, 401, "UNAUTHORIZED")


async def test_workspace_restricted_key_works_on_its_own_workspace(api: Api, world: World) -> None:
    headers = bearer(await add_key(api, workspace_id=api.workspace_id))
    for path in (
        f"/workspaces/{api.workspace_id}",
        f"/workspaces/{api.workspace_id}/integrations",
        f"/workspaces/{api.workspace_id}/integrations/{world.integration_id}",
        f"/connections/{world.connection_id}",
        f"/end-users/{world.end_user_id}",
        f"/partials/{world.partial_id}",
        f"/partials?workspaceId={api.workspace_id}",
    ):
        response = await api.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
    created = await api.post(
        "/end-users", {"workspaceId": api.workspace_id, "externalId": "own"}, headers=headers
    )
    assert created.status_code == 201, created.text


async def test_workspace_restricted_key_is_denied_on_another_workspace(api: Api) -> None:
    other = await populate(api, await add_workspace(api))
    headers = bearer(await add_key(api, workspace_id=api.workspace_id))
    before = await snapshot(api)
    for endpoint in ID_ENDPOINTS:
        response = await send(api, endpoint, other.ids, headers=headers)
        assert response.status_code == 403, (endpoint.id, response.text)
        assert_error(response, 403, "SCOPE_DENIED")
    assert await snapshot(api) == before


async def test_workspace_restricted_key_cannot_write_into_another_workspace_by_body(
    api: Api,
) -> None:
    other = await populate(api, await add_workspace(api))
    headers = bearer(await add_key(api, workspace_id=api.workspace_id))
    before = await snapshot(api)
    for endpoint in BODY_ENDPOINTS:
        if "{ws}" not in str(endpoint.body):
            continue
        response = await send(api, endpoint, other.ids, headers=headers)
        assert response.status_code == 403, (endpoint.id, response.text)
        assert_error(response, 403, "SCOPE_DENIED")
    assert await snapshot(api) == before


async def test_workspace_restricted_key_lists_only_its_own_workspace(
    api: Api, world: World
) -> None:
    other = await populate(api, await add_workspace(api))
    headers = bearer(await add_key(api, workspace_id=api.workspace_id))

    listed = await api.get("/workspaces", headers=headers)
    assert [w["id"] for w in listed.json()["workspaces"]] == [api.workspace_id]
    assert listed.json()["total"] == 1
    connections = await api.get("/connections", headers=headers)
    assert [c["id"] for c in connections.json()["connections"]] == [world.connection_id]
    users = await api.get("/end-users", headers=headers)
    assert [u["id"] for u in users.json()["endUsers"]] == [world.end_user_id]
    activity = await api.get("/activity", headers=headers, params={"limit": "200"})
    seen = {entry["workspaceId"] for entry in activity.json()["activity"]}
    assert seen == {api.workspace_id}
    assert other.workspace_id not in activity.text


async def test_workspace_restricted_key_cannot_create_or_delete_workspaces(api: Api) -> None:
    headers = bearer(await add_key(api, workspace_id=api.workspace_id))
    before = await snapshot(api)
    created = await api.post("/workspaces", {"name": "sneaky"}, headers=headers)
    assert_error(created, 403, "SCOPE_DENIED")
    deleted = await api.delete(f"/workspaces/{api.workspace_id}", headers=headers)
    assert_error(deleted, 403, "SCOPE_DENIED")
    assert await snapshot(api) == before


async def test_workspace_restricted_key_reads_but_cannot_create_or_delete_org_wide_connections(
    api: Api,
) -> None:
    org_wide = await api.post(
        "/connections",
        {
            "integrationName": "http",
            "type": "api_key",
            "displayName": "Org wide",
            "externalId": "org-conn",
            "values": {"apiKey": SECRET},
        },
    )
    assert org_wide.status_code == 201, org_wide.text
    headers = bearer(await add_key(api, workspace_id=api.workspace_id))
    path = f"/connections/{org_wide.json()['connection']['id']}"
    read = await api.get(path, headers=headers)
    assert read.status_code == 200, read.text
    assert SECRET not in read.text
    before = await snapshot(api)
    assert_error(await api.delete(path, headers=headers), 403, "SCOPE_DENIED")
    created = await api.post(
        "/connections",
        {
            "integrationName": "http",
            "type": "api_key",
            "displayName": "Sneaky",
            "externalId": "sneaky",
            "values": {"apiKey": SECRET},
        },
        headers=headers,
    )
    assert_error(created, 403, "SCOPE_DENIED")
    assert await snapshot(api) == before


async def test_key_of_a_deleted_workspace_stops_working(api: Api) -> None:
    workspace_id = await add_workspace(api)
    headers = bearer(await add_key(api, workspace_id=workspace_id))
    assert (await api.get(f"/workspaces/{workspace_id}", headers=headers)).status_code == 200
    assert (await api.delete(f"/workspaces/{workspace_id}")).status_code == 200
    assert_error(await api.get("/workspaces", headers=headers), 401, "UNAUTHORIZED")


async def test_foreign_ids_answer_exactly_like_missing_ones(api: Api, world: World) -> None:
    tenant = await other_org(api)
    foreign = await populate(api, tenant.workspace_id, tenant.headers)
    missing = {key: str(uuid.uuid4()) for key in world.ids}
    missing["wi"] = f"pi_{uuid.uuid4()}"
    before = await snapshot(api)
    for endpoint in ID_ENDPOINTS:
        with_foreign = await send(api, endpoint, foreign.ids)
        with_missing = await send(api, endpoint, missing)
        assert with_foreign.status_code == 404, (endpoint.id, with_foreign.text)
        assert_error(with_foreign, 404, "NOT_FOUND")
        assert with_foreign.json() == with_missing.json(), endpoint.id
    assert await snapshot(api) == before


async def test_foreign_resource_id_under_own_workspace_path_is_not_found(
    api: Api, world: World
) -> None:
    tenant = await other_org(api)
    foreign = await populate(api, tenant.workspace_id, tenant.headers)
    before = await snapshot(api)
    for path in (
        f"/workspaces/{api.workspace_id}/integrations/{foreign.integration_id}",
        f"/connections/{foreign.connection_id}",
        f"/end-users/{foreign.end_user_id}",
        f"/partials/{foreign.partial_id}",
    ):
        for method in ("GET", "DELETE"):
            assert_error(await api.request(method, path), 404, "NOT_FOUND")
        # The other org still has it.
        own_path = path.replace(api.workspace_id, tenant.workspace_id)
        kept = await api.get(own_path, headers=tenant.headers)
        assert kept.status_code == 200, kept.text
    assert await snapshot(api) == before


async def test_nothing_of_another_org_is_listed(api: Api, world: World) -> None:
    tenant = await other_org(api)
    foreign = await populate(api, tenant.workspace_id, tenant.headers)
    texts = []
    for path in (
        "/workspaces",
        "/connections",
        "/end-users",
        f"/workspaces/{api.workspace_id}/integrations",
        f"/partials?workspaceId={api.workspace_id}",
        "/activity?limit=200",
    ):
        response = await api.get(path)
        assert response.status_code == 200, response.text
        texts.append(response.text)
    joined = "\n".join(texts)
    for foreign_id in (tenant.org_id, *foreign.ids.values()):
        assert foreign_id not in joined
    assert world.connection_id in joined


async def test_another_orgs_workspace_in_a_body_answers_like_a_missing_one(api: Api) -> None:
    tenant = await other_org(api)
    missing = str(uuid.uuid4())
    bodies = {
        "/end-users": {"externalId": "x"},
        "/partials": {"integrationName": "kv-store", "name": "p", "values": {}},
        "/connections": {
            "integrationName": "http",
            "type": "bearer",
            "displayName": "d",
            "externalId": "e",
            "values": {"token": "t"},
        },
    }
    before = await snapshot(api)
    for path, body in bodies.items():
        foreign = await api.post(path, {**body, "workspaceId": tenant.workspace_id})
        absent = await api.post(path, {**body, "workspaceId": missing})
        assert_error(foreign, 404, "NOT_FOUND")
        assert foreign.json() == absent.json()
    for path in ("/partials", "/connections", "/end-users", "/activity"):
        foreign_filter = await api.get(path, params={"workspaceId": tenant.workspace_id})
        missing_filter = await api.get(path, params={"workspaceId": missing})
        assert_error(foreign_filter, 404, "NOT_FOUND")
        assert foreign_filter.json() == missing_filter.json()
    execute = {"integrationName": "kv-store", "actionName": "get", "input": {"key": "k"}}
    foreign_run = await api.post(
        "/actions/execute", {**execute, "workspaceId": tenant.workspace_id}
    )
    missing_run = await api.post("/actions/execute", {**execute, "workspaceId": missing})
    assert_error(foreign_run, 404, "NOT_FOUND")
    assert foreign_run.json() == missing_run.json()
    assert await snapshot(api) == before
