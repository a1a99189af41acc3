"""One configuration snapshot per request, invalidated per workspace.

A request reads the configuration version once and makes every lookup at it (credential,
server record, tool list, pipeline). A change in one workspace reloads that workspace's
configuration only, and loads of different workspaces do not wait for each other.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
import sqlalchemy as sa

from treadle.app import Gateway
from treadle.http_app import build_http_app
from treadle.settings import Settings
from treadle.store import Database
from treadle.store.mcp_sessions import McpSessions, SessionMark
from treadle.store.versioned_memo import VersionedMemo

from conftest import Api, api_on
from mcp_harness import test_catalog as kit_catalog

pytestmark = pytest.mark.anyio

HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}

# Version reads made by the task that set this (and the tasks it starts), not by the resync
# hub's poll, which runs in a task started before.
_reads: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("reads", default=None)


async def configure(api: Api, workspace_id: str) -> None:
    response = await api.post(
        f"/workspaces/{workspace_id}/integrations",
        {"integrationName": "testkit", "integrationAlias": "kit", "connectionStrategy": "fixed"},
    )
    assert response.status_code == 201, response.text


@pytest.fixture
async def kit_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    opened = await Gateway.open(settings, catalog=kit_catalog())
    try:
        yield opened
    finally:
        await opened.close()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[httpx2.AsyncClient, Api]]:
    gateway = await Gateway.open(settings, catalog=kit_catalog())
    try:
        async with api_on(gateway) as api:
            app = build_http_app(gateway)
            async with (
                app.router.lifespan_context(app),
                httpx2.AsyncClient(
                    transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8400"
                ) as http,
            ):
                yield http, api
    finally:
        await gateway.close()


def count_version_reads(monkeypatch: pytest.MonkeyPatch, db: Database) -> None:
    """Each read of the version counts once, alone or beside something else."""
    original = db.config_version
    beside = db.config_version_beside

    def seen() -> None:
        reads = _reads.get()
        if reads is not None:
            reads.append(1)

    async def counted() -> int:
        seen()
        return await original()

    async def counted_beside(
        statement: sa.Select[Any], params: dict[str, Any]
    ) -> tuple[int, tuple[Any, ...]] | None:
        found = await beside(statement, params)
        if found is not None:
            seen()
        return found

    monkeypatch.setattr(db, "config_version", counted)
    monkeypatch.setattr(db, "config_version_beside", counted_beside)


def count_mark_reads(monkeypatch: pytest.MonkeyPatch, sessions: McpSessions) -> list[int]:
    """Reads of a session's mark on their own (not beside the version)."""
    reads: list[int] = []
    original = sessions.get

    async def counted(key: str) -> SessionMark | None:
        reads.append(1)
        return await original(key)

    monkeypatch.setattr(sessions, "get", counted)
    return reads


def rpc(method: str, params: dict[str, Any], request_id: int = 1) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, sent as JSON or as one SSE event."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        found: dict[str, Any] = json.loads(data[-1])
        return found
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("era", ["legacy", MODERN])
async def test_a_warm_tool_call_reads_the_configuration_version_at_most_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, era: str
) -> None:
    async with serving(settings) as (http, api):
        await configure(api, api.workspace_id)
        made = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
        assert made.status_code == 201, made.text
        path, token = f"/mcp/{made.json()['server']['id']}", made.json()["token"]
        count_version_reads(monkeypatch, api.gateway.store.db)
        mark_reads = count_mark_reads(monkeypatch, api.gateway.store.mcp_sessions)
        reads: list[int] = []
        _reads.set(reads)
        headers = {**ACCEPT, "Authorization": f"Bearer {token}"}
        call: dict[str, Any] = {"name": "kit__echo", "arguments": {"text": "hi", "channel": "c"}}
        if era == MODERN:
            headers["MCP-Protocol-Version"] = MODERN
            headers["Mcp-Method"] = "tools/call"
            headers["Mcp-Name"] = "kit__echo"
            call["_meta"] = MODERN_META
        else:
            opened = await http.post(
                path,
                content=rpc(
                    "initialize",
                    {
                        "protocolVersion": HANDSHAKE,
                        "capabilities": {},
                        "clientInfo": {"name": "probe", "version": "1"},
                    },
                ),
                headers=headers,
            )
            assert opened.status_code == 200, opened.text
            headers["mcp-session-id"] = opened.headers["mcp-session-id"]
            headers["MCP-Protocol-Version"] = HANDSHAKE
            done = await http.post(
                path,
                content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                headers=headers,
            )
            assert done.status_code == 202, done.text
        for attempt in range(3):
            reads.clear()
            mark_reads.clear()
            response = await http.post(path, content=rpc("tools/call", call, 2), headers=headers)
            result = answer(response)["result"]
            assert result.get("isError") is not True, result
            if attempt:  # the first call warmed the caches
                # On PostgreSQL a 2026-07-28 call reads none: the admission statement
                # confirms the version it assumed (ConfigCache.assumed_snapshot).
                on_postgresql = not api.gateway.store.db.is_sqlite
                assert len(reads) == (0 if on_postgresql and era == MODERN else 1)
            if era == "legacy":
                # The session's mark: beside the version where each read is a round trip
                # (PostgreSQL), on its own (through the file probe) on SQLite.
                assert len(mark_reads) == (1 if api.gateway.store.db.is_sqlite else 0)


@pytest.mark.parametrize("named", ["workspaceId", "no workspace"])
async def test_a_warm_rest_execute_reads_the_configuration_version_at_most_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, named: str
) -> None:
    """The key, the workspace and the pipeline's configuration come from one read (on
    PostgreSQL each read is a round trip)."""
    async with serving(settings) as (http, api):
        await configure(api, api.workspace_id)
        count_version_reads(monkeypatch, api.gateway.store.db)
        reads: list[int] = []
        _reads.set(reads)
        body: dict[str, Any] = {
            "integrationName": "testkit",
            "actionName": "echo",
            "input": {"text": "hi", "channel": "c"},
        }
        if named == "workspaceId":
            body["workspaceId"] = api.workspace_id
        for attempt in range(3):
            reads.clear()
            response = await http.post(
                "/api/v1/actions/execute",
                json=body,
                headers={"Authorization": f"Bearer {api.api_key}"},
            )
            assert response.status_code == 200, response.text
            if attempt:  # the first call warmed the caches
                # None on PostgreSQL: the admission statement confirms the assumed version.
                assert len(reads) == (1 if api.gateway.store.db.is_sqlite else 0)


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements run on `db`'s engine (the version probe's reads are not among
    them: it reads the file through its own connection)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine.sync_engine, "before_cursor_execute", record)


def loads_of_configuration(seen: list[str]) -> list[str]:
    return [s for s in seen if "FROM workspace_integrations" in s or "FROM partials" in s]


async def test_a_change_in_one_workspace_does_not_reload_another(kit_gateway: Gateway) -> None:
    gateway = kit_gateway
    async with api_on(gateway) as api:
        other = await api.post("/workspaces", {"name": "other"})
        assert other.status_code == 201, other.text
        other_id = other.json()["workspace"]["id"]
        cache = gateway.store.config
        mine = await cache.workspace(api.org_id, api.workspace_id)
        assert await cache.workspace(api.org_id, other_id) is not None

        await configure(api, other_id)  # a change in the other workspace
        with statements(gateway.store.db) as seen:
            assert await cache.workspace(api.org_id, api.workspace_id) is mine
        assert loads_of_configuration(seen) == []

        with statements(gateway.store.db) as seen:
            changed = await cache.workspace(api.org_id, other_id)
        assert loads_of_configuration(seen) != []
        assert changed is not None
        assert [wi.alias for wi in changed.integrations] == ["kit"]


async def test_an_org_wide_change_reaches_every_workspace_of_the_org(gateway: Gateway) -> None:
    """Limits are an org's, but part of each workspace's configuration."""
    async with api_on(gateway) as api:
        other = await api.post("/workspaces", {"name": "other"})
        other_id = other.json()["workspace"]["id"]
        cache = gateway.store.config
        for workspace_id in (api.workspace_id, other_id):
            assert await cache.workspace(api.org_id, workspace_id) is not None
        async with gateway.store.db.write("test") as txn:
            await gateway.store.orgs.set_limits(txn, api.org_id, rate_limit=7)
        for workspace_id in (api.workspace_id, other_id):
            config = await cache.workspace(api.org_id, workspace_id)
            assert config is not None
            assert config.org.rate_limit == 7


async def test_loads_of_different_keys_do_not_wait_for_each_other() -> None:
    memo: VersionedMemo[str, str] = VersionedMemo()
    release = anyio.Event()
    slow_started = anyio.Event()
    loads: list[str] = []

    async def slow() -> str:
        loads.append("slow")
        slow_started.set()
        await release.wait()
        return "slow"

    async def quick() -> str:
        loads.append("quick")
        return "quick"

    results: list[str | None] = []

    async def get_slow() -> None:
        results.append(await memo.get("a", 1, slow))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(get_slow)
            tg.start_soon(get_slow)  # the same key: waits for the first load, loads nothing
            await slow_started.wait()
            # Another key loads while the first is still loading.
            assert await memo.get("b", 1, quick) == "quick"
            release.set()
    assert results == ["slow", "slow"]
    assert loads == ["slow", "quick"]
    assert len(memo._loading) == 0  # no lock is kept once nobody waits


async def test_an_entry_whose_workspace_did_not_move_is_kept_without_a_load() -> None:
    versions = {"w1": 1, "w2": 1}

    async def scope_version(scope: str) -> int:
        return versions[scope]

    memo: VersionedMemo[str, str] = VersionedMemo(
        scope_of=lambda key, _value: key, scope_version=scope_version
    )
    loads: list[str] = []

    def loader(key: str) -> Any:
        async def load() -> str:
            loads.append(key)
            await anyio.lowlevel.checkpoint()
            return f"{key}@{versions[key]}"

        return load

    assert await memo.get("w1", 10, loader("w1")) == "w1@1"
    assert await memo.get("w2", 10, loader("w2")) == "w2@1"
    versions["w2"] = 2  # a change in w2: the global version moves to 11
    assert await memo.get("w1", 11, loader("w1")) == "w1@1"
    assert await memo.get("w2", 11, loader("w2")) == "w2@2"
    assert loads == ["w1", "w2", "w2"]
    # Tagged with 11 now: no check at all while the version holds.
    versions["w1"] = 99
    assert await memo.get("w1", 11, loader("w1")) == "w1@1"
    assert loads == ["w1", "w2", "w2"]
