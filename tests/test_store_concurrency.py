"""Two gateways on one database, as two replicas are, racing on the writes that must serialise.

Each gateway has its own engine and connection pool, so the two only meet in the database:
what holds here holds across processes. The suite runs on SQLite and on PostgreSQL
(TREADLE_TEST_DATABASE); on PostgreSQL every race below once lost data or answered 500.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import sqlalchemy as sa

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.settings import Settings
from treadle.store import schema

from conftest import Api, api_on
from databases import database_url, drop
from mcp_harness import subprocess_env

pytestmark = pytest.mark.anyio

WORKSPACE_SCOPE = {"persistence": {"scope": "workspace"}}


@dataclass
class Pair:
    """The same org, workspace and API key, served by two gateways on one database."""

    a: Api
    b: Api

    def either(self, i: int) -> Api:
        return self.a if i % 2 == 0 else self.b


@pytest.fixture
async def pair(settings: Settings) -> AsyncIterator[Pair]:
    async with AsyncExitStack() as stack:
        apis = []
        for _ in range(2):
            gateway = await Gateway.open(settings)
            stack.push_async_callback(gateway.close)
            apis.append(await stack.enter_async_context(api_on(gateway)))
        assert apis[0].org_id == apis[1].org_id
        yield Pair(*apis)


async def together(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run every call concurrently; their results in the order given."""
    results: list[Any] = [None] * len(calls)

    async def run(i: int, call: Callable[[], Awaitable[Any]]) -> None:
        results[i] = await call()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for i, call in enumerate(calls):
                tasks.start_soon(run, i, call)
    return results


def add_to_list(api: Api, value: int, **body: Any) -> Callable[[], Awaitable[httpx2.Response]]:
    async def call() -> httpx2.Response:
        return await api.execute(
            integrationName="kv-store",
            actionName="add_to_list",
            input={"key": "items", "value": value},
            **body,
        )

    return call


def posts(pair: Pair, path: str, body: dict[str, Any]) -> list[Callable[[], Awaitable[Any]]]:
    """The same POST, once through each gateway."""
    return [lambda api=api: api.post(path, body) for api in (pair.a, pair.b)]


async def stored_items(api: Api) -> list[Any]:
    response = await api.execute(
        integrationName="kv-store", actionName="get", input={"key": "items"}
    )
    assert response.status_code == 200, response.text
    value: list[Any] = response.json()["output"]["value"] or []
    return value


async def test_concurrent_appends_to_one_key_keep_every_item(pair: Pair) -> None:
    await pair.a.configure("kv-store", settings=WORKSPACE_SCOPE)
    responses = await together(*(add_to_list(pair.either(i), i) for i in range(40)))
    assert [r.status_code for r in responses] == [200] * 40
    assert sorted(await stored_items(pair.a)) == list(range(40))
    assert sorted(await stored_items(pair.b)) == list(range(40))


async def test_one_idempotency_key_sent_to_both_gateways_at_once_runs_once(pair: Pair) -> None:
    await pair.a.configure("kv-store", settings=WORKSPACE_SCOPE)
    for round_ in range(6):
        key = f"once-{round_}"
        first, second = await together(
            add_to_list(pair.a, round_, idempotencyKey=key),
            add_to_list(pair.b, round_, idempotencyKey=key),
        )
        for response in (first, second):
            # The other one either still runs (in use) or has finished (its answer, replayed).
            assert response.status_code in (200, 409), response.text
            if response.status_code == 409:
                assert response.json()["error"] == "IDEMPOTENCY_KEY_IN_USE"
        assert 200 in (first.status_code, second.status_code)
    assert sorted(await stored_items(pair.a)) == list(range(6))


async def test_one_workspace_name_created_on_both_gateways_at_once_exists_once(
    pair: Pair,
) -> None:
    for round_ in range(5):
        name = f"team-{round_}"
        responses = await together(*posts(pair, "/workspaces", {"name": name}))
        assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
        refused = next(r for r in responses if r.status_code == 409)
        assert refused.json()["error"] == "DUPLICATE"
    listed = (await pair.b.get("/workspaces")).json()["workspaces"]
    assert Counter(w["name"] for w in listed) == Counter(
        {"default": 1, **{f"team-{i}": 1 for i in range(5)}}
    )


async def test_one_alias_configured_on_both_gateways_at_once_exists_once(pair: Pair) -> None:
    path = f"/workspaces/{pair.a.workspace_id}/integrations"
    for round_ in range(4):
        body = {
            "integrationName": "kv-store",
            "integrationAlias": f"notes-{round_}",
            "connectionStrategy": "fixed",
        }
        responses = await together(*posts(pair, path, body))
        assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    listed = (await pair.a.get(path)).json()["integrations"]
    assert sorted(i["integrationAlias"] for i in listed) == [f"notes-{i}" for i in range(4)]


async def test_one_end_user_created_on_both_gateways_at_once_exists_once(pair: Pair) -> None:
    body = {"workspaceId": pair.a.workspace_id, "externalId": "alice"}
    responses = await together(*posts(pair, "/end-users", body))
    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    listed = (await pair.a.get("/end-users")).json()["endUsers"]
    assert [u["externalId"] for u in listed] == ["alice"]


async def test_quota_reservations_near_the_limit_grant_exactly_the_limit(pair: Pair) -> None:
    usages = [pair.a.gateway.store.usage, pair.b.gateway.store.usage]
    org, period = pair.a.org_id, "2030-01"
    granted = await together(
        *(lambda i=i: usages[i % 2].reserve(org, period, 20) for i in range(40))
    )
    counted = [before for ok, before in granted if ok]
    # Each grant saw a different count before it: 0, 1, ..., 19 (in some order).
    assert sorted(counted) == list(range(20))
    assert all(before >= 20 for ok, before in granted if not ok)
    assert await usages[1].current(org, period) == 20


async def test_activity_written_by_both_gateways_at_once_is_numbered_without_gaps_or_clashes(
    pair: Pair,
) -> None:
    ledgers = [pair.a.gateway.store.ledger, pair.b.gateway.store.ledger]

    def record(i: int) -> Callable[[], Awaitable[None]]:
        return lambda: ledgers[i % 2].record(
            org_id=pair.a.org_id,
            workspace_id=pair.a.workspace_id,
            type="action_execution",
            source="rest",
            actor="test",
            status="ok",
            action_name=f"call-{i}",
        )

    await together(*(record(i) for i in range(60)))
    table = schema.activity
    async with pair.b.gateway.store.db.read() as conn:
        rows = await conn.execute(
            sa.select(table.c.seq, table.c.action_name).where(table.c.type == "action_execution")
        )
        numbered = list(rows)
    assert len(numbered) == 60
    assert len({row.seq for row in numbered}) == 60
    assert sorted(row.action_name for row in numbered) == sorted(f"call-{i}" for i in range(60))


async def test_gateways_starting_together_on_an_empty_database_make_one_schema_and_one_org(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "empty"
    settings = Settings(
        data_dir=data_dir, database_url=database_url(data_dir, migrated=False), secret_key=None
    )

    async def start() -> tuple[Gateway, str]:
        gateway = await Gateway.open(settings)
        return gateway, (await initialise(gateway.store, data_dir)).org_id

    opened = await together(*(start for _ in range(4)))
    try:
        assert len({org_id for _gateway, org_id in opened}) == 1
        async with opened[0][0].store.db.read() as conn:
            orgs = (
                await conn.execute(sa.select(sa.func.count()).select_from(schema.orgs))
            ).scalar()
            steps = await conn.execute(
                sa.text("SELECT name, COUNT(*) FROM schema_migrations GROUP BY name")
            )
            counts = {name: count for name, count in steps}
        assert orgs == 1
        assert set(counts.values()) == {1}
    finally:
        for gateway, _org in opened:
            await gateway.close()
        drop(data_dir)


async def test_two_treadle_init_processes_at_once_agree_on_one_org(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    database_url(data_dir, migrated=False)  # an empty database: both processes migrate it
    env = subprocess_env(data_dir)

    async def init() -> dict[str, Any]:
        done = await anyio.run_process(
            [sys.executable, "-m", "treadle", "init", "--json"], env=env, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        shown: dict[str, Any] = json.loads(done.stdout)
        return shown

    try:
        first, second = await together(init, init)
    finally:
        drop(data_dir)
    assert first["orgId"] == second["orgId"]
    assert first["workspaceId"] == second["workspaceId"]
    assert first["apiKey"] == second["apiKey"] is not None
