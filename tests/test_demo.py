"""`treadle demo` from scratch: it serves, and the entry it prints starts a working stdio server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mcp_harness import free_port, subprocess_env

pytestmark = pytest.mark.anyio


class Demo:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "treadle", "demo", "--port", str(self.port)],
            env=subprocess_env(data_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.printed: list[str] = []
        for line in self.process.stdout:
            self.printed.append(line)
            if line.startswith("Serving"):
                break
        self.log: list[str] = []
        for line in self.process.stderr:  # the server is up once uvicorn says so
            self.log.append(line)
            if "Uvicorn running" in line:
                break
        # Keep reading: a full stderr pipe would block the server.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    @property
    def text(self) -> str:
        return "".join(self.printed)

    def value(self, label: str) -> str:
        for line in self.printed:
            if label in line:
                return line.split(": ", 1)[1].strip()
        raise AssertionError(f"{label!r} not printed:\n{self.text}")

    def desktop_entry(self) -> dict[str, object]:
        start = self.text.index("{")
        end = self.text.rindex("}") + 1
        entry: dict[str, object] = json.loads(self.text[start:end])
        return entry

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=10)
        if code != 0:
            print("".join(self.log), file=sys.stderr)
        return code


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    started = Demo(tmp_path / "data")
    try:
        yield started
    finally:
        assert started.stop() == 0


async def test_demo_serves_its_mcp_server_over_http(demo: Demo) -> None:
    url = demo.value("MCP endpoint")
    token = demo.value("Bearer token")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        # two aliases of one integration, an allowedActions subset, an enforced key
        assert {"notes__put", "scratch__put", "scratch__delete", "web__send_request"} <= names
        assert "notes__delete" not in names
        web = next(t for t in (await client.list_tools()).tools if t.name == "web__send_request")
        assert "method" not in web.input_schema["properties"]
        stored = await client.call_tool("notes__put", {"key": "k", "value": {"a": 1}})
        assert not stored.is_error


async def test_printed_claude_desktop_entry_starts_a_working_stdio_server(demo: Demo) -> None:
    servers = demo.desktop_entry()["mcpServers"]
    assert isinstance(servers, dict)
    (entry,) = servers.values()
    params = StdioServerParameters(
        command=entry["command"], args=entry["args"], env=entry.get("env")
    )
    async with Client(params) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "notes__get" in names
        result = await client.call_tool("scratch__put", {"key": "from-stdio", "value": 1})
        assert not result.is_error
        assert result.structured_content == {"key": "from-stdio", "value": 1}


def test_demo_twice_reuses_the_workspace_and_prints_a_fresh_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    tokens = []
    for _ in range(2):
        run = Demo(data_dir)
        tokens.append(run.value("Bearer token"))
        endpoint = run.value("MCP endpoint")
        assert run.stop() == 0
    assert tokens[0] != tokens[1]
    assert tokens[0].startswith("mcp_")
    assert tokens[1].startswith("mcp_")
    listed = subprocess.run(
        [sys.executable, "-m", "treadle", "mcp-config", "--server", endpoint.rsplit("/", 1)[1]],
        env=subprocess_env(data_dir),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "treadle-demo" in json.loads(listed.stdout)["mcpServers"]


async def test_demo_says_how_to_choose_a_mode_and_the_stdio_flag_works(demo: Demo) -> None:
    assert "DISCOVERY" in demo.text
    assert "AUTO" in demo.text
    assert "--mode DISCOVERY" in demo.text
    servers = demo.desktop_entry()["mcpServers"]
    assert isinstance(servers, dict)
    (entry,) = servers.values()
    params = StdioServerParameters(
        command=entry["command"], args=[*entry["args"], "--mode", "DISCOVERY"], env=entry.get("env")
    )
    async with Client(params) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"search_tools", "describe_tools", "call_tool"}
        found = await client.call_tool("search_tools", {"query": "store a value under a key"})
        assert found.structured_content is not None
        assert "notes__put" in [tool["name"] for tool in found.structured_content["tools"]][:3]
