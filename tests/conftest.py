"""Shared fixtures: a real gateway on a temporary database, driven through ASGI.

Each test gets its own data dir, database and secret key file, so tests run in parallel. The
database is a SQLite file, or a fresh PostgreSQL database with TREADLE_TEST_DATABASE=postgresql
(tests/databases.py).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from treadle.app import Gateway
from treadle.auth.identity import discovery
from treadle.bootstrap import initialise
from treadle.catalog import Catalog
from treadle.http_app import build_http_app
from treadle.mcp.runtime import McpRuntime
from treadle.settings import Settings

from databases import database_url, drop, drop_all
from mcp_harness import McpEnv, ServeProcess, subprocess_env, test_catalog


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Session-wide, so module-scoped async fixtures (the emulator stages) may use it too."""
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """Databases of session-wide data dirs (and any a test left) go when the session ends."""
    yield
    drop_all()


@pytest.fixture(autouse=True)
def _forget_provider_documents() -> None:
    """Provider documents are cached per process by URL, and a later test's provider may
    get an earlier one's ephemeral port: each test starts with none cached."""
    discovery.forget("")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "empty_database: the `settings` database starts with no tables at all"
    )


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    data_dir = tmp_path / "data"
    empty = request.node.get_closest_marker("empty_database") is not None
    url = database_url(data_dir, migrated=not empty)
    yield Settings(data_dir=data_dir, database_url=url, secret_key=None)
    drop(data_dir)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    opened = await Gateway.open(settings)
    try:
        yield opened
    finally:
        await opened.close()


@dataclass
class Api:
    """An authenticated client on the default workspace of a fresh org."""

    client: httpx2.AsyncClient
    gateway: Gateway
    org_id: str
    workspace_id: str
    api_key: str

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        return await self.client.request(method, f"/api/v1{path}", **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx2.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx2.Response:
        return await self.request("POST", path, json=json, **kwargs)

    async def patch(self, path: str, json: Any = None, **kwargs: Any) -> httpx2.Response:
        return await self.request("PATCH", path, json=json, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx2.Response:
        return await self.request("DELETE", path, **kwargs)

    async def execute(self, **body: Any) -> httpx2.Response:
        body.setdefault("workspaceId", self.workspace_id)
        return await self.post("/actions/execute", body)

    async def configure(self, integration: str = "kv-store", **fields: Any) -> dict[str, Any]:
        """Create a workspace integration and return it."""
        body = {"integrationName": integration, "connectionStrategy": "fixed", **fields}
        response = await self.post(f"/workspaces/{self.workspace_id}/integrations", body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()["integration"]
        return created


BASE_URL = "http://treadle.test"


def client_for(gateway: Gateway, token: str, base_url: str = BASE_URL) -> httpx2.AsyncClient:
    """A client of `gateway`'s HTTP app, in process, that sends `token` as its bearer."""
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=build_http_app(gateway)),
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
    )


@asynccontextmanager
async def api_on(gateway: Gateway, base_url: str = BASE_URL) -> AsyncIterator[Api]:
    """Initialise `gateway` (opened and closed by the caller) and drive it with its API key."""
    result = await initialise(gateway.store, gateway.settings.data_dir)
    assert result.api_key is not None
    async with client_for(gateway, result.api_key, base_url) as client:
        yield Api(client, gateway, result.org_id, result.workspace_id, result.api_key)


@asynccontextmanager
async def open_api(settings: Settings, catalog: Catalog) -> AsyncIterator[Api]:
    """`api_on` a gateway of its own that serves only `catalog`."""
    gateway = await Gateway.open(settings, catalog=catalog)
    try:
        async with api_on(gateway) as api:
            yield api
    finally:
        await gateway.close()


@pytest.fixture
async def api(gateway: Gateway) -> AsyncIterator[Api]:
    async with api_on(gateway) as opened:
        yield opened


# -- MCP: one test body over memory, stdio and HTTP, in both protocol eras -------------------


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="session")
def serve_process(shared_data_dir: Path) -> Iterator[ServeProcess]:
    """One real `treadle serve` for the session (tests use their own workspaces)."""
    subprocess.run(
        [sys.executable, "-m", "treadle", "init"],
        env=subprocess_env(shared_data_dir),
        check=True,
        capture_output=True,
    )
    started = ServeProcess.start(shared_data_dir)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def mcp_env(request: pytest.FixtureRequest, shared_data_dir: Path) -> AsyncIterator[McpEnv]:
    """A fresh workspace on the shared database; starts `treadle serve` only if asked for."""
    callspec = getattr(request.node, "callspec", None)
    needs_http = callspec is not None and callspec.params.get("transport") == "http"
    serve = request.getfixturevalue("serve_process") if needs_http else None
    settings = Settings(
        data_dir=shared_data_dir, database_url=database_url(shared_data_dir), secret_key=None
    )
    gateway = await Gateway.open(settings, catalog=test_catalog())
    try:
        result = await initialise(gateway.store, shared_data_dir)
        assert result.api_key is not None
        async with gateway.store.db.write("test") as txn:
            workspace = await gateway.store.workspaces.create(
                txn, result.org_id, f"ws-{uuid.uuid4().hex[:12]}"
            )
        runtime = McpRuntime(gateway, poll_seconds=0.05)
        transport = httpx2.ASGITransport(app=build_http_app(gateway, runtime))
        async with (
            httpx2.AsyncClient(
                transport=transport,
                base_url="http://treadle.test",
                headers={"Authorization": f"Bearer {result.api_key}"},
            ) as rest,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(runtime.hub.run)
            yield McpEnv(
                data_dir=shared_data_dir,
                serve=serve,
                rest=rest,
                runtime=runtime,
                org_id=result.org_id,
                workspace_id=workspace.id,
                api_key=result.api_key,
            )
            tg.cancel_scope.cancel()
    finally:
        await gateway.close()
