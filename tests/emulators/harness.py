"""Calls an integration's actions through a real gateway face: REST execute or an MCP tool.

Both faces share one setup (a bearer connection whose base URL is the emulator, and a
workspace integration allowed to reach loopback) and report the same `Answer`, so one test
body checks both. Every answer, and after each test the activity log, is checked for the token.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal

import anyio
import httpx2
from jsonschema import Draft202012Validator
from mcp import Client
from mcp.types import Tool

from emulators.server import E, Switchboard, serve
from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.catalog.model import Integration
from treadle.catalog.providers.schema import OPTIONS_KEYWORD
from treadle.errors import ErrorCode
from treadle.http_app import build_http_app
from treadle.mcp.binds import bind_server
from treadle.mcp.naming import natural_name
from treadle.mcp.runtime import McpRuntime
from treadle.settings import Settings

from databases import database_url

FACES = ("rest", "mcp")
_REFUSAL_CODES = frozenset(code.value for code in ErrorCode)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the face answered: a success, an upstream error, or a refusal with a code."""

    kind: Literal["ok", "upstream", "refused"]
    body: dict[str, Any]
    # The REST face's HTTP status; None over MCP.
    status: int | None = None

    @property
    def error(self) -> str:
        """The upstream error code, or the refusal's documented code."""
        return str(self.body["error"])

    def output(self) -> dict[str, Any]:
        assert self.kind == "ok", self.body
        return self.body


class Tools:
    def __init__(
        self,
        face: str,
        rest: httpx2.AsyncClient,
        workspace_id: str,
        integration: str,
        alias: str,
        token: str,
        client: Client | None,
    ) -> None:
        self.face = face
        self._rest = rest
        self._workspace_id = workspace_id
        self._integration = integration
        self._alias = alias
        self._token = token
        self._client = client

    async def call(self, action: str, arguments: dict[str, Any]) -> Answer:
        answer = await (
            self._mcp(action, arguments) if self._client else self._execute(action, arguments)
        )
        assert self._token not in json.dumps(answer.body)
        return answer

    async def listed(self) -> dict[str, Tool]:
        """The MCP tools of this integration's configuration, by action name."""
        assert self._client is not None
        prefix = natural_name(self._alias, "")
        return {
            tool.name.removeprefix(prefix): tool
            for tool in (await self._client.list_tools()).tools
            if tool.name.startswith(prefix)
        }

    async def _execute(self, action: str, arguments: dict[str, Any]) -> Answer:
        response = await self._rest.post(
            "/api/v1/actions/execute",
            json={
                "workspaceId": self._workspace_id,
                "integrationName": self._integration,
                "integrationAlias": self._alias,
                "actionName": action,
                "input": arguments,
            },
        )
        assert self._token not in response.text
        body = response.json()
        if response.status_code != 200:
            assert body["error"] in _REFUSAL_CODES, body
            return Answer("refused", body, response.status_code)
        if body["success"]:
            return Answer("ok", body["output"], 200)
        return Answer("upstream", body["output"], 200)

    async def _mcp(self, action: str, arguments: dict[str, Any]) -> Answer:
        assert self._client is not None
        result = await self._client.call_tool(natural_name(self._alias, action), arguments)
        for block in result.content:
            assert self._token not in getattr(block, "text", "")
        structured = result.structured_content
        assert structured is not None, result.content
        if not result.is_error:
            return Answer("ok", structured)
        if "message" in structured and structured.get("error") in _REFUSAL_CODES:
            return Answer("refused", structured)
        return Answer("upstream", structured)


@dataclass
class Stage(Generic[E]):
    """One gateway, workspace and served emulator shared by a test module.

    Built once per module (a fresh database and uvicorn per test would cost more than the
    tests): each test takes a fresh emulator from the switchboard and calls the one configured
    integration through either face. REST runs on the real app over ASGI, MCP on the same
    gateway through the SDK's in-memory client.
    """

    gateway: Gateway
    rest: httpx2.AsyncClient
    runtime: McpRuntime
    workspace_id: str
    integration: str
    token: str
    board: Switchboard[E]
    base_url: str
    alias: str = ""
    server_id: str = ""

    def fresh(self) -> E:
        return self.board.fresh()

    async def configure(
        self, *, base_url: str | None = None, settings: dict[str, Any] | None = None
    ) -> str:
        """A new bearer connection and workspace integration; returns the alias.

        The emulators listen on loopback, so the settings allow private networks by default.
        """
        # No `-` in the alias, so MCP tool names are the natural `{alias}__{action}`.
        alias = f"{self.integration.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        created = await self.rest.post(
            "/api/v1/connections",
            json={
                "integrationName": self.integration,
                "type": "bearer",
                "displayName": f"{self.integration} test account",
                "externalId": f"conn_{alias}",
                "values": {"token": self.token},
                "workspaceId": self.workspace_id,
                "baseUrl": base_url or self.base_url,
            },
        )
        assert created.status_code == 201, created.text
        assert self.token not in created.text
        configured = await self.rest.post(
            f"/api/v1/workspaces/{self.workspace_id}/integrations",
            json={
                "integrationName": self.integration,
                "integrationAlias": alias,
                "connectionStrategy": "fixed",
                "connectionId": created.json()["connection"]["id"],
                "settings": {"allowPrivateNetwork": True} if settings is None else settings,
            },
        )
        assert configured.status_code == 201, configured.text
        return alias

    @asynccontextmanager
    async def tools(self, face: str, alias: str | None = None) -> AsyncIterator[Tools]:
        """Calls through `face` ("rest" or "mcp"); the activity log is checked afterwards."""
        chosen = alias or self.alias
        if face == "mcp":
            binding = await bind_server(self.gateway.store, self.server_id, None)
            server = self.runtime.bound_face(binding).server
            async with Client(server, mode="legacy") as client:
                yield self._tools(face, chosen, client)
        else:
            yield self._tools(face, chosen, None)
        assert self.token not in await self._activity()

    def _tools(self, face: str, alias: str, client: Client | None) -> Tools:
        return Tools(
            face, self.rest, self.workspace_id, self.integration, alias, self.token, client
        )

    async def _activity(self) -> str:
        response = await self.rest.get(
            "/api/v1/activity", params={"workspaceId": self.workspace_id, "limit": 200}
        )
        assert response.status_code == 200, response.text
        return response.text


@asynccontextmanager
async def open_stage(
    data_dir: Path,
    integration: str,
    token: str,
    make: Callable[[], E],
    *,
    api_path: str = "",
) -> AsyncIterator[Stage[E]]:
    """A gateway on `data_dir` with `integration` configured against a served emulator whose
    API lives under `api_path` (Slack's is /api)."""
    settings = Settings(data_dir=data_dir, database_url=database_url(data_dir), secret_key=None)
    gateway = await Gateway.open(settings)
    try:
        init = await initialise(gateway.store, data_dir)
        assert init.api_key is not None
        runtime = McpRuntime(gateway, poll_seconds=0.05)
        board = Switchboard(make)
        async with (
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=build_http_app(gateway, runtime)),
                base_url="http://treadle.test",
                headers={"Authorization": f"Bearer {init.api_key}"},
            ) as rest,
            serve(board) as url,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(runtime.hub.run)
            stage = Stage(
                gateway,
                rest,
                runtime,
                init.workspace_id,
                integration,
                token,
                board,
                f"{url}{api_path}",
            )
            stage.alias = await stage.configure()
            created = await rest.post(
                "/api/v1/mcp/servers", json={"workspaceId": init.workspace_id, "name": "tests"}
            )
            assert created.status_code == 201, created.text
            stage.server_id = created.json()["server"]["id"]
            yield stage
            tasks.cancel_scope.cancel()
    finally:
        await gateway.close()


def assert_well_described(
    integration: Integration, *, read_only: set[str], destructive: set[str]
) -> None:
    """Closed, valid, described input schemas; options naming a read-only action; honest hints.

    Actions neither read-only nor destructive create or send: never idempotent.
    """
    settings = integration.settings_schema
    assert settings["additionalProperties"] is False
    assert settings["properties"]["allowPrivateNetwork"]["type"] == "boolean"
    assert read_only | destructive <= set(integration.action_names)
    for action in integration.actions:
        schema = action.input_schema
        Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object", action.name
        assert schema["additionalProperties"] is False, action.name
        assert action.description, action.name
        for name, field in schema["properties"].items():
            assert field.get("description"), f"{action.name}.{name}"
            options = field.get(OPTIONS_KEYWORD)
            if options is not None:
                listed = integration.action(options["action"])
                assert listed is not None, options
                assert listed.annotations.read_only
                assert options["action"] in field["description"]
                for needed in options.get("dependsOn", []):
                    assert needed in listed.input_schema["properties"]
        hints = action.annotations
        assert hints.open_world
        assert hints.read_only == (action.name in read_only), action.name
        assert hints.destructive == (action.name in destructive), action.name
        if not hints.read_only and not hints.destructive:
            assert not hints.idempotent, action.name
