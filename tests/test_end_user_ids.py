"""One rule for end-user ids on every face: REST bodies, the MCP `X-Treadle-End-User` header,
`treadle stdio --end-user`, server records pinned to an end user, and ids already stored.

The defect this guards against: HTTP trims header whitespace and the MCP face cut the header
to 255 characters, while REST kept `"alice "` distinct and refused 256 characters, so an MCP
caller named `"alice "` or a 256-character id read and deleted another end user's kv-store keys.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import sqlalchemy as sa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from sqlalchemy.ext.asyncio import create_async_engine

from treadle.app import Gateway
from treadle.engine.end_user_ids import end_user_id_problem
from treadle.http_app import build_http_app
from treadle.settings import sqlite_url
from treadle.store.migrations import MIGRATIONS, migrate

from conftest import Api
from mcp_harness import ERAS, McpEnv, subprocess_env

pytestmark = pytest.mark.anyio

LONG = "x" * 255
REFUSED = {
    "trailing space": "alice ",
    "leading space": " alice",
    "trailing tab": "alice\t",
    "leading no-break space": "\u00a0alice",
    "newline inside": "ali\nce",
    "tab inside": "ali\tce",
    "NUL inside": "al\x00ice",
    "DEL inside": "al\x7fice",
    "C1 control inside": "al\x85ice",
    "line separator inside": "ali\u2028ce",
    "256 characters": LONG + "x",
    "empty": "",
}
ACCEPTED = ["alice", "josé", "Alice Smith", "user:42@example.com", "名前", LONG]
HEADER = "X-Treadle-End-User"


def test_the_rule_accepts_ordinary_ids_and_refuses_lookalikes() -> None:
    assert [end_user_id_problem(value) for value in ACCEPTED] == [None] * len(ACCEPTED)
    assert all(end_user_id_problem(value) for value in REFUSED.values())
    # A reason never quotes the id: reasons reach logs.
    assert all("alice" not in (end_user_id_problem(v) or "") for v in REFUSED.values())


# -- REST: every place a body names an end user -----------------------------------------------


def assert_validation_error(response: httpx2.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "VALIDATION_ERROR"
    assert response.json()["field"] == field


async def everything(api: Api) -> dict[str, Any]:
    listed = {}
    for path in ("/end-users", "/connections", "/mcp/servers"):
        response = await api.get(path)
        assert response.status_code == 200, response.text
        listed[path] = response.json()
    return listed


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
async def test_rest_refuses_the_id_wherever_a_body_names_an_end_user(api: Api, value: str) -> None:
    made = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "pinned"})
    assert made.status_code == 201, made.text
    server_id = made.json()["server"]["id"]
    await api.configure("kv-store")
    before = await everything(api)

    workspace = {"workspaceId": api.workspace_id}
    end_user = await api.post("/end-users", {**workspace, "externalId": value})
    assert_validation_error(end_user, "externalId")
    connection = await api.post(
        "/connections",
        {
            **workspace,
            "integrationName": "http",
            "type": "bearer",
            "displayName": "Personal",
            "externalId": "personal",
            "values": {"token": "t"},
            "endUserId": value,
        },
    )
    assert_validation_error(connection, "endUserId")
    server = await api.post("/mcp/servers", {**workspace, "name": "s", "endUserId": value})
    assert_validation_error(server, "endUserId")
    pinned = await api.patch(f"/mcp/servers/{server_id}", {"endUserId": value})
    assert_validation_error(pinned, "endUserId")
    executed = await api.execute(
        integrationName="kv-store",
        actionName="put",
        input={"key": "k", "value": 1},
        endUserId=value,
    )
    assert_validation_error(executed, "endUserId")
    assert await everything(api) == before


# -- the leak itself: alice's keys, looked up under lookalike ids ------------------------------


async def kv(api: Api, action: str, end_user: str, **input: Any) -> httpx2.Response:
    return await api.execute(
        integrationName="kv-store", actionName=action, input=input, endUserId=end_user
    )


async def stored(api: Api, end_user: str, key: str) -> Any:
    response = await kv(api, "get", end_user, key=key)
    assert response.status_code == 200, response.text
    output = response.json()["output"]
    return output["value"] if output["found"] else None


async def test_rest_cannot_reach_alices_keys_under_a_lookalike_id(api: Api) -> None:
    await api.configure("kv-store")
    for owner, key in (("alice", "diary"), (LONG, "ledger")):
        assert (await kv(api, "put", owner, key=key, value=f"{key} of {owner[:5]}")).is_success
    for lookalike in ("alice ", " alice", "alice\t", LONG + "x"):
        for action, input in (("get", {"key": "diary"}), ("delete", {"key": "ledger"})):
            assert_validation_error(await kv(api, action, lookalike, **input), "endUserId")
        assert_validation_error(await kv(api, "list_keys", lookalike), "endUserId")
    assert await stored(api, "alice", "diary") == "diary of alice"
    assert await stored(api, LONG, "ledger") == "ledger of xxxxx"


# -- MCP over HTTP ------------------------------------------------------------------------------

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
MODERN = "2026-07-28"
GET_DIARY = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {
        "name": "kv__get",
        "arguments": {"key": "diary"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}
MODERN_HEADERS = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "kv__get"}


@asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[httpx2.AsyncClient]:
    """The whole HTTP app in process, its lifespan entered, so the MCP endpoint sees each
    header exactly as sent (a real HTTP server would trim the whitespace first)."""
    app = build_http_app(gateway)
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8400"
        ) as client,
    ):
        yield client


@pytest.mark.parametrize("value", [v for v in REFUSED.values() if v], ids=list(REFUSED)[:-1])
async def test_mcp_refuses_a_header_naming_no_valid_end_user_in_both_eras(
    api: Api, value: str
) -> None:
    await api.configure("kv-store", integrationAlias="kv")
    assert (await kv(api, "put", "alice", key="diary", value="mine")).is_success
    made = await api.post("/mcp/servers", {"workspaceId": api.workspace_id, "name": "s"})
    url = f"/mcp/{made.json()['server']['id']}"
    headers = {
        "Authorization": f"Bearer {api.api_key}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        HEADER: value.encode(),
    }
    async with running(api.gateway) as mcp:
        for body, extra in ((INITIALIZE, {}), (GET_DIARY, MODERN_HEADERS)):
            answer = await mcp.post(url, content=json.dumps(body), headers={**headers, **extra})
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert error["data"]["error"] == "VALIDATION_ERROR"
            assert error["data"]["field"] == HEADER
            assert "mcp-session-id" not in answer.headers
    assert await stored(api, "alice", "diary") == "mine"


@asynccontextmanager
async def mcp_client(env: McpEnv, era: str, end_user: bytes) -> AsyncIterator[Client]:
    headers: dict[str, str | bytes] = {"Authorization": f"Bearer {env.api_key}", HEADER: end_user}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http,
        Client(streamable_http_client(env.mcp_url, http_client=http), mode=era) as client,
    ):
        yield client


async def read_over_mcp(env: McpEnv, era: str, end_user: bytes, key: str) -> Any:
    async with mcp_client(env, era, end_user) as client:
        result: CallToolResult = await client.call_tool("kv__get", {"key": key})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content["value"] if result.structured_content["found"] else None


def leaves(group: BaseExceptionGroup[MCPError]) -> list[MCPError]:
    """The errors in a group, however deeply the client's task groups nested it."""
    found: list[MCPError] = []
    for error in group.exceptions:
        found += leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return found


@pytest.mark.parametrize("transport", ["http"])
@pytest.mark.parametrize("era", ERAS)
async def test_over_a_real_server_a_long_id_is_refused_not_cut_and_utf8_names_the_same_user(
    mcp_env: McpEnv, transport: str, era: str
) -> None:
    await mcp_env.configure("kv-store", integrationAlias="kv")
    await mcp_env.create_server()
    for owner, key in ((LONG, "ledger"), ("josé", "diary")):
        body = {
            "workspaceId": mcp_env.workspace_id,
            "integrationName": "kv-store",
            "actionName": "put",
            "input": {"key": key, "value": f"{key} kept"},
            "endUserId": owner,
        }
        put = await mcp_env.rest.post("/api/v1/actions/execute", json=body)
        assert put.status_code == 200, put.text

    assert await read_over_mcp(mcp_env, era, LONG.encode(), "ledger") == "ledger kept"
    assert await read_over_mcp(mcp_env, era, "josé".encode(), "diary") == "diary kept"
    refusals: list[MCPError] = []
    try:
        async with mcp_client(mcp_env, era, (LONG + "x").encode()) as client:
            await client.call_tool("kv__delete", {"key": "ledger"})
    except* MCPError as group:
        refusals = leaves(group)
    assert [refusal.error.data["error"] for refusal in refusals] == ["VALIDATION_ERROR"]
    assert await read_over_mcp(mcp_env, era, LONG.encode(), "ledger") == "ledger kept"


# -- treadle stdio --end-user -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["alice ", LONG + "x", ""], ids=["space", "long", "empty"])
async def test_stdio_refuses_an_invalid_end_user_before_serving(
    mcp_env: McpEnv, value: str
) -> None:
    server_id = await mcp_env.create_server()
    with anyio.fail_after(30):
        finished = await anyio.run_process(
            [sys.executable, "-m", "treadle", "stdio", "--server", server_id, "--end-user", value],
            env=subprocess_env(mcp_env.data_dir),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    assert finished.returncode == 2
    assert finished.stdout == b""
    assert b"--end-user" in finished.stderr


# -- ids stored before the rule -----------------------------------------------------------------


async def test_upgrading_reports_stored_ids_that_are_now_refused_and_changes_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_async_engine(sqlite_url(tmp_path / "upgrade.db"))
    try:
        await migrate(engine, [step for step in MIGRATIONS if step.name < "0006"])
        stored_ids = {"eu-1": "alice", "eu-2": "alice ", "eu-3": LONG + "x", "eu-4": "bo\x01b"}
        pins = {"srv-1": "carol", "srv-2": " carol", "srv-3": None}
        async with engine.begin() as conn:
            for row_id, external_id in stored_ids.items():
                await conn.execute(
                    sa.text(
                        "INSERT INTO end_users (id, org_id, workspace_id, external_id,"
                        " created_at, updated_at) VALUES (:id, 'o', 'w', :e, 't', 't')"
                    ),
                    {"id": row_id, "e": external_id},
                )
            for row_id, pinned in pins.items():
                await conn.execute(
                    sa.text(
                        "INSERT INTO mcp_servers (id, org_id, workspace_id, name, mode,"
                        " end_user_id, tool_overrides, token_hash, token_prefix, created_at,"
                        " updated_at) VALUES (:id, 'o', 'w', 'n', 'TOOLS', :e, '[]', :id, 'p',"
                        " 't', 't')"
                    ),
                    {"id": row_id, "e": pinned},
                )

        with caplog.at_level(logging.WARNING, logger="treadle.store.migrations"):
            assert "0006_end_user_ids_report" in await migrate(engine)
        reports = [r for r in caplog.records if r.name == "treadle.store.migrations"]
        assert [(r.levelno, r.args[0], r.args[-1]) for r in reports] == [
            (logging.WARNING, 3, "eu-2, eu-3, eu-4"),
            (logging.WARNING, 1, "srv-2"),
        ]
        logged = "\n".join(r.getMessage() for r in reports)
        assert all(value not in logged for value in ("alice ", LONG, "bo\x01b", " carol"))

        async with engine.connect() as conn:
            users = dict(
                (await conn.execute(sa.text("SELECT id, external_id FROM end_users"))).all()
            )
            servers = dict(
                (await conn.execute(sa.text("SELECT id, end_user_id FROM mcp_servers"))).all()
            )
        assert users == stored_ids
        assert servers == pins

        caplog.clear()
        assert await migrate(engine) == []
        assert not [r for r in caplog.records if r.name == "treadle.store.migrations"]
    finally:
        await engine.dispose()
