"""One MCP test body, three transports, two protocol eras (the MCP SDK's `connect` pattern).

- memory: the SDK's in-memory client against a server bound in this process;
- stdio:  a real `treadle stdio` subprocess on the same database;
- http:   a real `treadle serve` subprocess (shared by the session) at /mcp/{serverId}.

Every test gets its own workspace and MCP server record, so tests sharing the serve process
never see each other's tools.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from treadle.catalog import Catalog, load_catalog
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime

from databases import database_env

TESTS_DIR = Path(__file__).parent
EXTRA = "testkit_integrations:integrations"
TRANSPORTS = ("memory", "stdio", "http")
ERAS = ("legacy", "2026-07-28")


def subprocess_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TREADLE_DATA_DIR"] = str(data_dir)
    env["TREADLE_EXTRA_INTEGRATIONS"] = EXTRA
    env.update(database_env(data_dir))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    return env


def test_catalog() -> Catalog:
    import testkit_integrations

    catalog = load_catalog()
    for integration in testkit_integrations.integrations:
        if catalog.get(integration.name) is None:
            catalog.add(integration)
    return catalog


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServeProcess:
    """A real `treadle serve`; its stderr is collected for log assertions."""

    process: subprocess.Popen[str]
    base_url: str
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, data_dir: Path, *extra_args: str) -> ServeProcess:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "treadle", "serve", "--port", str(port), *extra_args],
            env=subprocess_env(data_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = cls(process, f"http://127.0.0.1:{port}")
        assert process.stderr is not None
        # Wait for uvicorn's own "running" line (pytest-timeout bounds a hang).
        for line in process.stderr:
            started.lines.append(line)
            if "Uvicorn running" in line:
                break
        else:
            raise RuntimeError("treadle serve exited:\n" + "".join(started.lines))
        threading.Thread(target=started._drain, daemon=True).start()
        return started

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=10)


def iterate_params() -> Iterator[tuple[str, str]]:
    for transport in TRANSPORTS:
        for era in ERAS:
            yield transport, era


@dataclass
class McpEnv:
    """A fresh workspace with an MCP server, and ways to configure and connect to it."""

    data_dir: Path
    serve: ServeProcess | None
    rest: httpx2.AsyncClient  # the in-process REST app on the same database
    runtime: McpRuntime
    org_id: str
    workspace_id: str
    api_key: str
    server_id: str = ""
    server_token: str = ""

    async def configure(self, integration: str, **fields: Any) -> dict[str, Any]:
        body = {"integrationName": integration, "connectionStrategy": "fixed", **fields}
        response = await self.rest.post(
            f"/api/v1/workspaces/{self.workspace_id}/integrations", json=body
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()["integration"]
        return created

    async def partial(self, **fields: Any) -> dict[str, Any]:
        body = {"workspaceId": self.workspace_id, **fields}
        response = await self.rest.post("/api/v1/partials", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()["partial"]
        return created

    async def activity(self, **query: str) -> list[dict[str, Any]]:
        """This workspace's execution records, asked of the process that served the calls.

        A running gateway writes execution records behind the calls and its activity API
        writes its own queue first; over HTTP the calls ran in `treadle serve`, so ask it
        (over memory they ran here; a stdio server drained its queue when it exited)."""
        params = {"workspaceId": self.workspace_id, "type": "action_execution", **query}
        if self.serve is None:
            response = await self.rest.get("/api/v1/activity", params=params)
        else:
            async with httpx2.AsyncClient(
                base_url=self.serve.base_url,
                headers={"Authorization": f"Bearer {self.api_key}"},
            ) as serve_rest:
                response = await serve_rest.get("/api/v1/activity", params=params)
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["activity"]
        return entries

    async def create_server(self, **fields: Any) -> str:
        body = {"workspaceId": self.workspace_id, "name": "test server", **fields}
        response = await self.rest.post("/api/v1/mcp/servers", json=body)
        assert response.status_code == 201, response.text
        self.server_id = response.json()["server"]["id"]
        self.server_token = response.json()["token"]
        return self.server_id

    def remote_rest(self) -> httpx2.AsyncClient:
        """REST on the `treadle serve` process (changes made where the HTTP clients are)."""
        assert self.serve is not None
        return httpx2.AsyncClient(
            base_url=self.serve.base_url, headers={"Authorization": f"Bearer {self.api_key}"}
        )

    @property
    def mcp_url(self) -> str:
        assert self.serve is not None
        return f"{self.serve.base_url}/mcp/{self.server_id}"

    @asynccontextmanager
    async def connect(
        self, transport: str, era: str, **client_kwargs: Any
    ) -> AsyncIterator[Client]:
        if not self.server_id:
            await self.create_server()
        if transport == "memory":
            binding = await bind_server(self.runtime.gateway.store, self.server_id, None)
            face = self.runtime.bound_face(binding)
            async with Client(face.server, mode=era, **client_kwargs) as client:
                yield client
        elif transport == "stdio":
            params = StdioServerParameters(
                command=sys.executable,
                args=["-m", "treadle", "stdio", "--server", self.server_id],
                env=subprocess_env(self.data_dir),
            )
            async with Client(params, mode=era, **client_kwargs) as client:
                yield client
        else:
            headers = {"Authorization": f"Bearer {self.server_token}"}
            async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http:
                transport_ = streamable_http_client(self.mcp_url, http_client=http)
                async with Client(transport_, mode=era, **client_kwargs) as client:
                    yield client


async def wait_for(event: anyio.Event, seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        await event.wait()
