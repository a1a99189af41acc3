"""`treadle init` and a real `treadle serve` process, driven over real HTTP like the README."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import sqlalchemy as sa
from anyio.abc import ByteReceiveStream

from treadle.store import Database, schema

from databases import database_env, database_url, drop

pytestmark = pytest.mark.anyio

CONNECTION_SECRET = "sk-serve-3b5d7f9a1c"
QUERY_SECRET = "query-secret-0e2c4a6b8d"


def treadle_command() -> list[str]:
    script = Path(sys.executable).with_name("treadle")
    return [str(script)] if script.exists() else [sys.executable, "-m", "treadle"]


def environment(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TREADLE_")}
    env["TREADLE_DATA_DIR"] = str(data_dir)
    env.update(database_env(data_dir))
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def init(data_dir: Path, *args: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [*treadle_command(), "init", "--json", *args], env=environment(data_dir)
        )
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


@dataclass
class Output:
    """A process's stderr as it arrives; waiters wake on every new chunk, not on a timer."""

    text: str = ""
    version: int = 0
    closed: bool = False
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def pump(self, stream: ByteReceiveStream) -> None:
        try:
            async for chunk in stream:
                self.text += chunk.decode(errors="replace")
                self._bump()
        finally:
            self.closed = True
            self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_past(self, version: int) -> None:
        while self.version == version:
            await self._changed.wait()


async def wait_for_port(port: int, output: Output) -> None:
    """Poll the port; between attempts wait for the server to say something, not for time."""
    while True:
        seen = output.version
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            if output.closed:
                raise AssertionError(f"treadle serve exited early:\n{output.text}") from None
            await output.wait_past(seen)
        else:
            await stream.aclose()
            return


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"
    drop(tmp_path / "data")


async def test_init_twice_creates_nothing_twice(data_dir: Path) -> None:
    first = await init(data_dir)
    second = await init(data_dir, "--data-dir", str(data_dir))
    assert first == second
    assert first["apiKey"].startswith("trd_")
    key_file = data_dir / "api-key"
    assert key_file.read_text().strip() == first["apiKey"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    db = await Database.open(database_url(data_dir))
    try:
        async with db.read() as conn:
            counts = {
                table.name: (
                    await conn.execute(sa.select(sa.func.count()).select_from(table))
                ).scalar()
                for table in (schema.orgs, schema.workspaces, schema.api_keys)
            }
    finally:
        await db.close()
    assert counts == {"orgs": 1, "workspaces": 1, "api_keys": 1}


async def test_serve_answers_the_readme_flow_logs_one_safe_line_per_request_and_stops_cleanly(
    data_dir: Path,
) -> None:
    shown = await init(data_dir)
    workspace = shown["workspaceId"]
    port = free_port()
    output = Output()
    requests: list[tuple[str, str]] = []
    async with anyio.create_task_group() as tasks:
        process = await anyio.open_process(
            [*treadle_command(), "serve", "--port", str(port)],
            env=environment(data_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        assert process.stderr is not None
        tasks.start_soon(output.pump, process.stderr)
        try:
            with anyio.fail_after(30):
                await wait_for_port(port, output)
            async with httpx2.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {shown['apiKey']}"},
            ) as client:

                async def call(method: str, path: str, **kwargs: Any) -> httpx2.Response:
                    requests.append((method, path.split("?")[0]))
                    return await client.request(method, path, **kwargs)

                catalog = await call("GET", f"/api/v1/integrations?name=kv-store&t={QUERY_SECRET}")
                assert catalog.status_code == 200, catalog.text
                assert [i["name"] for i in catalog.json()["integrations"]] == ["kv-store"]

                configured = await call(
                    "POST",
                    f"/api/v1/workspaces/{workspace}/integrations",
                    json={
                        "integrationName": "kv-store",
                        "connectionStrategy": "fixed",
                        "settings": {"persistence": {"scope": "workspace"}},
                    },
                )
                assert configured.status_code == 201, configured.text

                partial = await call(
                    "POST",
                    "/api/v1/partials",
                    json={
                        "workspaceId": workspace,
                        "integrationName": "kv-store",
                        "actionName": "put",
                        "name": "notes",
                        "values": {"key": "notes"},
                        "enforcedKeys": ["key"],
                        "isDefault": True,
                    },
                )
                assert partial.status_code == 201, partial.text

                put = await call(
                    "POST",
                    "/api/v1/actions/execute",
                    json={
                        "integrationName": "kv-store",
                        "actionName": "put",
                        "workspaceId": workspace,
                        "input": {"key": "elsewhere", "value": {"text": "hello"}},
                    },
                )
                assert put.status_code == 200, put.text
                assert put.json()["output"] == {"key": "notes", "value": {"text": "hello"}}
                assert int(put.headers["X-RateLimit-Remaining"]) >= 0

                got = await call(
                    "POST",
                    "/api/v1/actions/execute",
                    json={
                        "pieceName": "kv-store",
                        "actionName": "get",
                        "projectId": workspace,
                        "input": {"key": "notes"},
                    },
                )
                assert got.status_code == 200, got.text
                assert got.json()["output"]["value"] == {"text": "hello"}

                connection = await call(
                    "POST",
                    "/api/v1/connections",
                    json={
                        "integrationName": "http",
                        "type": "api_key",
                        "displayName": "Example",
                        "externalId": "conn_example",
                        "values": {"api_key": CONNECTION_SECRET},
                        "workspaceId": workspace,
                    },
                )
                assert connection.status_code == 201, connection.text

                audit = await call("GET", "/api/v1/activity?type=action_execution&limit=10")
                assert audit.status_code == 200
                assert [e["actionName"] for e in audit.json()["activity"]] == ["get", "put"]

                anonymous = await call("GET", "/api/v1/workspaces", headers={"Authorization": ""})
                assert anonymous.status_code == 401
                missing = await call("GET", "/api/v1/nothing-here")
                assert missing.status_code == 404

            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                returncode = await process.wait()
                while not output.closed:
                    await output.wait_past(output.version)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert returncode == 0, output.text
    access = [line for line in output.text.splitlines() if "treadle.access" in line]
    assert len(access) == len(requests), output.text
    for line, (method, path) in zip(access, requests, strict=True):
        assert f"{method} {path} " in line
        assert "?" not in line
    for secret in (shown["apiKey"], CONNECTION_SECRET, QUERY_SECRET, "Bearer"):
        assert secret not in output.text
    assert "Traceback" not in output.text
