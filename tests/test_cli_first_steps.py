"""What a new user meets first, as real subprocesses: a port already taken, links under
`--port`, a mistyped `--data-dir`, a server name with a space in a client config."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from treadle.app import Gateway
from treadle.demo import client_name
from treadle.settings import Settings, local_url

from databases import database_url
from mcp_harness import ServeProcess, subprocess_env

pytestmark = pytest.mark.anyio


def treadle(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "treadle", *args],
        env={**subprocess_env(data_dir), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_port_in_use_is_one_line_naming_port_and_nothing_says_ready(
    tmp_path: Path, taken_port: int, command: str
) -> None:
    data_dir = tmp_path / "data"
    done = treadle(data_dir, command, "--port", str(taken_port))
    assert done.returncode != 0
    assert done.stdout == ""  # no "ready", no endpoint, no token
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(taken_port) in lines[0]
    assert "--port" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_port_out_of_range_is_refused_not_wrapped(tmp_path: Path) -> None:
    done = treadle(tmp_path / "data", "serve", "--port", "70000")
    assert done.returncode == 2
    assert "--port" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- links for people follow the bound port ---------------------------------------------------


def test_links_use_the_port_served_on_unless_a_public_url_is_set() -> None:
    settings = Settings(data_dir=Path("/nowhere"), database_url="sqlite://", secret_key=None)
    assert settings.bound_to("127.0.0.1", 9000).public_url == "http://127.0.0.1:9000"
    assert settings.bound_to("0.0.0.0", 9000).public_url == "http://127.0.0.1:9000"
    assert settings.bound_to("::", 9000).public_url == "http://[::1]:9000"
    assert local_url("::1", 1) == "http://[::1]:1"
    chosen = Settings(
        data_dir=Path("/nowhere"),
        database_url="sqlite://",
        secret_key=None,
        public_url="https://gw.example.com",
        public_url_from_env=True,
    )
    assert chosen.bound_to("127.0.0.1", 9000).public_url == "https://gw.example.com"


async def connect_url(serve: ServeProcess, api_key: str, workspace_id: str) -> str:
    async with httpx2.AsyncClient(
        base_url=serve.base_url, headers={"Authorization": f"Bearer {api_key}"}
    ) as rest:
        made = await rest.post(
            "/api/v1/end-users", json={"workspaceId": workspace_id, "externalId": "alice"}
        )
        assert made.status_code == 201, made.text
        user_id = made.json()["endUser"]["id"]
        link = await rest.post(f"/api/v1/end-users/{user_id}/connect-token")
        assert link.status_code == 201, link.text
        url: str = link.json()["connectUrl"]
        return url


@pytest.mark.parametrize("public_url", [None, "https://gw.example.com"])
async def test_serve_hands_out_links_on_its_own_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, public_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    init = json.loads(treadle(data_dir, "init", "--json").stdout)
    monkeypatch.delenv("TREADLE_PUBLIC_URL", raising=False)
    if public_url is not None:
        monkeypatch.setenv("TREADLE_PUBLIC_URL", public_url)
    serve = ServeProcess.start(data_dir)  # on a free port, never 8400
    try:
        url = await connect_url(serve, init["apiKey"], init["workspaceId"])
    finally:
        serve.stop()
    assert url.startswith(f"{public_url or serve.base_url}/connect?token="), url


# -- stdio: a data dir that was never initialised ------------------------------------------------


def test_stdio_refuses_a_data_dir_never_initialised_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "dataa"
    done = treadle(
        typo, "stdio", "--server", "srv_000000000000000000000000", "--data-dir", str(typo)
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert str(typo) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (typo / "treadle.db").exists()


def test_stdio_names_the_data_dir_when_the_server_is_not_in_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert treadle(data_dir, "init").returncode == 0
    done = treadle(
        data_dir, "stdio", "--server", "srv_000000000000000000000000", "--data-dir", str(data_dir)
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert str(data_dir) in done.stderr


# -- mcp-config: names a client accepts -----------------------------------------------------------


async def test_mcp_config_names_a_server_with_a_space_in_letters_digits_dash_and_underscore(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    init = json.loads(treadle(data_dir, "init", "--json").stdout)
    settings = Settings(data_dir=data_dir, database_url=database_url(data_dir), secret_key=None)
    gateway = await Gateway.open(settings)
    try:
        async with gateway.store.db.write("test") as txn:
            server, _token = await gateway.store.mcp_servers.create(
                txn,
                org_id=init["orgId"],
                workspace_id=init["workspaceId"],
                name="team tools",
                mode="TOOLS",
                end_user_id=None,
                tool_overrides=(),
            )
    finally:
        await gateway.close()
    done = await anyio.to_thread.run_sync(
        lambda: treadle(data_dir, "mcp-config", "--server", server.id, "--data-dir", str(data_dir))
    )
    assert done.returncode == 0, done.stderr
    (name,) = json.loads(done.stdout)["mcpServers"]
    assert name == client_name(server) == "treadle-team-tools"
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
