"""`treadle keys list|create|revoke`, `treadle workspaces list`, `treadle servers list`.

The commands run in this process (`cli.main`) on a data dir of their own, on the suite's
database; what they do is checked through the REST API of a gateway on the same database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from treadle import cli
from treadle.app import Gateway
from treadle.settings import Settings

from conftest import client_for
from databases import database_env, database_url


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.delenv("TREADLE_DATA_DIR", raising=False)
    monkeypatch.delenv("TREADLE_DATABASE_URL", raising=False)
    for name, value in database_env(path).items():
        monkeypatch.setenv(name, value)
    return path


def treadle(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([*args, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def shown(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> Any:
    code, out, err = treadle(capsys, data_dir, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def status_with(data_dir: Path, token: str) -> int:
    """The status of `GET /api/v1/workspaces` with `token`, from a gateway of its own."""

    async def ask() -> int:
        settings = Settings(data_dir=data_dir, database_url=database_url(data_dir), secret_key=None)
        gateway = await Gateway.open(settings)
        try:
            async with client_for(gateway, token) as client:
                return (await client.get("/api/v1/workspaces")).status_code
        finally:
            await gateway.close()

    return anyio.run(ask)


def test_keys_are_created_listed_without_secrets_and_revoked(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    init = shown(capsys, data_dir, "init")
    created = shown(capsys, data_dir, "keys", "create", "--name", "ci", "--expires-in-days", "7")
    assert created["apiKey"].startswith("trd_")
    assert created["expiresAt"] is not None
    assert status_with(data_dir, created["apiKey"]) == 200

    listed = shown(capsys, data_dir, "keys", "list")["apiKeys"]
    assert [k["name"] for k in listed] == ["initial key", "ci"]
    code, table, _err = treadle(capsys, data_dir, "keys", "list")
    assert code == 0
    assert created["id"] in table
    for text in (json.dumps(listed), table):
        assert created["apiKey"] not in text
        assert init["apiKey"] not in text

    code, out, err = treadle(capsys, data_dir, "keys", "revoke", created["id"])
    assert code == 0, err
    assert created["id"] in out
    assert status_with(data_dir, created["apiKey"]) == 401
    assert status_with(data_dir, init["apiKey"]) == 200
    assert [k["id"] for k in shown(capsys, data_dir, "keys", "list")["apiKeys"]] == [
        listed[0]["id"]
    ]
    code, _out, err = treadle(capsys, data_dir, "keys", "revoke", created["id"])
    assert code == 2
    assert created["id"] in err


def test_a_key_for_an_unknown_workspace_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    shown(capsys, data_dir, "init")
    code, out, err = treadle(capsys, data_dir, "keys", "create", "--workspace", "nope")
    assert (code, out) == (2, "")
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1


def test_workspaces_and_servers_are_listed(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    init = shown(capsys, data_dir, "init")
    assert [w["id"] for w in shown(capsys, data_dir, "workspaces", "list")["workspaces"]] == [
        init["workspaceId"]
    ]
    assert shown(capsys, data_dir, "servers", "list")["servers"] == []

    async def make_demo() -> str:
        from treadle.demo import ensure_demo

        settings = Settings(data_dir=data_dir, database_url=database_url(data_dir), secret_key=None)
        gateway = await Gateway.open(settings)
        try:
            return (await ensure_demo(gateway.store, data_dir)).server.id
        finally:
            await gateway.close()

    server_id = anyio.run(make_demo)
    workspaces = shown(capsys, data_dir, "workspaces", "list")["workspaces"]
    assert [w["name"] for w in workspaces] == ["default", "demo"]
    servers = shown(capsys, data_dir, "servers", "list")["servers"]
    assert [s["id"] for s in servers] == [server_id]
    code, table, _err = treadle(capsys, data_dir, "servers", "list")
    assert code == 0
    assert server_id in table
    assert "demo" in table


@pytest.mark.parametrize("command", [["keys", "list"], ["workspaces", "list"], ["servers", "list"]])
def test_listing_a_data_dir_never_initialised_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str], data_dir: Path, command: list[str]
) -> None:
    code, out, err = treadle(capsys, data_dir, *command)
    assert (code, out) == (2, "")
    assert str(data_dir) in err
    assert len(err.strip().splitlines()) == 1
