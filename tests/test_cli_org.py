"""`treadle org create` as a real subprocess: a second org, its workspace and its API key."""

from __future__ import annotations

import json
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from test_cli_serve import environment, treadle_command
from treadle.app import Gateway
from treadle.settings import Settings
from treadle.store import schema

from conftest import client_for
from databases import database_url

pytestmark = pytest.mark.anyio


async def run(data_dir: Path, *args: str, check: bool = True) -> CompletedProcess[bytes]:
    with anyio.fail_after(30):
        return await anyio.run_process(
            [*treadle_command(), *args, "--data-dir", str(data_dir)],
            env=environment(data_dir),
            check=check,
        )


async def create_org(data_dir: Path, name: str) -> dict[str, Any]:
    done = await run(data_dir, "org", "create", "--name", name, "--json")
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


@asynccontextmanager
async def gateway_on(data_dir: Path) -> AsyncIterator[Gateway]:
    settings = Settings(data_dir=data_dir, database_url=database_url(data_dir), secret_key=None)
    opened = await Gateway.open(settings)
    try:
        yield opened
    finally:
        await opened.close()


async def workspaces_seen(gateway: Gateway, api_key: str) -> list[str]:
    async with client_for(gateway, api_key) as client:
        response = await client.get("/api/v1/workspaces")
    assert response.status_code == 200, response.text
    return [workspace["id"] for workspace in response.json()["workspaces"]]


async def test_org_create_makes_a_separate_org_whose_key_sees_only_its_workspace(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    first = json.loads((await run(data_dir, "init", "--json")).stdout)
    second = await create_org(data_dir, "second org")
    assert second["apiKey"].startswith("trd_")
    assert second["orgId"] != first["orgId"]
    assert second["workspaceId"] != first["workspaceId"]
    # `init` still shows the first org: its kept key is not replaced.
    assert json.loads((await run(data_dir, "init", "--json")).stdout) == first

    async with gateway_on(data_dir) as gateway:
        assert await workspaces_seen(gateway, second["apiKey"]) == [second["workspaceId"]]
        assert await workspaces_seen(gateway, first["apiKey"]) == [first["workspaceId"]]
        org = await gateway.store.orgs.get(second["orgId"])
    assert org is not None
    assert org.name == "second org"


async def test_org_create_before_init_leaves_the_first_org_to_init(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = await create_org(data_dir, "early")
    first = json.loads((await run(data_dir, "init", "--json")).stdout)
    assert first["orgId"] != created["orgId"]
    assert first["apiKey"] not in (None, created["apiKey"])


async def test_org_create_shell_and_text_output(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shell = (await run(data_dir, "org", "create", "--name", "shell", "--shell")).stdout.decode()
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in shell.splitlines()
    )
    assert set(exported) == {"TREADLE_API_KEY", "TREADLE_WORKSPACE_ID"}
    text = (await run(data_dir, "org", "create", "--name", "text")).stdout.decode()
    assert "trd_" in text
    async with gateway_on(data_dir) as gateway:
        seen = await workspaces_seen(gateway, exported["TREADLE_API_KEY"])
    assert seen == [exported["TREADLE_WORKSPACE_ID"]]


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "x" * 256])
async def test_org_create_refuses_a_bad_name_and_creates_nothing(tmp_path: Path, name: str) -> None:
    data_dir = tmp_path / "data"
    await run(data_dir, "init", "--json")
    done = await run(data_dir, "org", "create", "--name", name, "--json", check=False)
    assert done.returncode == 2
    assert done.stdout == b""
    async with gateway_on(data_dir) as gateway, gateway.store.db.read() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(schema.orgs))).scalar()
    assert count == 1
