"""Named, recorded schema migrations: the DDL matches the query tables, upgrades keep data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.settings import Settings
from treadle.store import Database, schema
from treadle.store.database import create_engine
from treadle.store.migrations import MIGRATIONS, Migration, migrate
from treadle.store.records import ConnectionStrategy

pytestmark = [pytest.mark.anyio, pytest.mark.empty_database]


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine set up the way `Database.open` sets it up, before any migration ran."""
    settings.data_dir.mkdir(parents=True)
    created = create_engine(settings.database_url)
    try:
        yield created
    finally:
        await created.dispose()


def _affinity(column_type: sa.types.TypeEngine[Any]) -> str:
    if isinstance(column_type, sa.types.TypeDecorator):
        column_type = column_type.impl_instance
    for kind, name in ((sa.Boolean, "BOOLEAN"), (sa.Integer, "INTEGER"), (sa.Text, "TEXT")):
        if isinstance(column_type, kind):
            return name
    return type(column_type).__name__


def _columns_in_database(sync: sa.Connection) -> dict[str, dict[str, tuple[str, bool, bool]]]:
    inspector = sa.inspect(sync)
    found = {}
    for table in inspector.get_table_names():
        primary = set(inspector.get_pk_constraint(table)["constrained_columns"])
        found[table] = {
            column["name"]: (
                _affinity(column["type"]),
                column["name"] in primary,
                # SQLite lets a TEXT primary key hold NULL; what matters is the declaration.
                bool(column["nullable"]) and column["name"] not in primary,
            )
            for column in inspector.get_columns(table)
        }
    return found


def _columns_in_schema() -> dict[str, dict[str, tuple[str, bool, bool]]]:
    return {
        table.name: {
            column.name: (
                _affinity(column.type),
                column.primary_key,
                bool(column.nullable) and not column.primary_key,
            )
            for column in table.columns
        }
        for table in schema.metadata.sorted_tables
    }


async def names_recorded(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT name FROM schema_migrations ORDER BY name"))
        return list(rows.scalars())


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def test_migrations_create_exactly_the_tables_and_columns_schema_py_queries(
    engine: AsyncEngine,
) -> None:
    await migrate(engine)
    async with engine.connect() as conn:
        in_database = await conn.run_sync(_columns_in_database)
    in_schema = _columns_in_schema()
    assert sorted(in_database) == sorted(in_schema)
    for table, columns in in_schema.items():
        assert in_database[table] == columns, table


def test_migration_names_are_unique_and_ordered() -> None:
    names = [step.name for step in MIGRATIONS]
    assert len(names) == len(set(names))
    assert names == sorted(names)
    assert all(step.statements or step.report for step in MIGRATIONS)


async def test_migrate_applies_every_step_once_and_records_it(engine: AsyncEngine) -> None:
    every = [step.name for step in MIGRATIONS]
    assert await migrate(engine) == every
    assert await names_recorded(engine) == sorted(every)
    assert await migrate(engine) == []
    assert await names_recorded(engine) == sorted(every)


async def test_rerunning_migrate_keeps_existing_data(settings: Settings) -> None:
    gateway = await Gateway.open(settings)
    try:
        first = await initialise(gateway.store, settings.data_dir)
        await gateway.store.kv("ns").put("k", {"kept": True})
    finally:
        await gateway.close()
    reopened = await Gateway.open(settings)
    try:
        assert await migrate(reopened.store.db.engine) == []
        again = await initialise(reopened.store, settings.data_dir)
        assert (again.org_id, again.workspace_id, again.created) == (
            first.org_id,
            first.workspace_id,
            False,
        )
        assert first.api_key is not None
        assert await reopened.store.api_keys.authenticate(first.api_key) is not None
        assert await reopened.store.kv("ns").get("k") == {"kept": True}
    finally:
        await reopened.close()


@pytest.mark.parametrize("applied", range(1, len(MIGRATIONS) + 1))
async def test_a_database_at_an_earlier_step_upgrades_and_keeps_its_data(
    engine: AsyncEngine, settings: Settings, applied: int
) -> None:
    assert await migrate(engine, MIGRATIONS[:applied]) == [s.name for s in MIGRATIONS[:applied]]
    async with engine.begin() as conn:
        # Tables of the first step, written the way that step's DDL left them.
        await conn.execute(
            sa.text(
                "INSERT INTO orgs (id, name, plan, monthly_quota, rate_limit,"
                " rate_window_seconds, created_at)"
                " VALUES ('org-1', 'old org', 'pro', 5, 7, 60, '2025-01-01T00:00:00.000Z')"
            )
        )
        await conn.execute(
            sa.text(
                "INSERT INTO kv_entries (namespace, key, value, updated_at)"
                " VALUES ('ns', 'k', '[1,2]', '2025-01-01T00:00:00.000Z')"
            )
        )
    await engine.dispose()

    db = await Database.open(settings.database_url)  # the real start-up path
    try:
        assert await names_recorded(db.engine) == sorted(s.name for s in MIGRATIONS)
        assert await table_names(db.engine) == set(schema.metadata.tables)
        async with db.read() as conn:
            org = (await conn.execute(schema.orgs.select())).one()
            value = (await conn.execute(sa.select(schema.kv_entries.c.value))).scalar()
        assert (org.id, org.name, org.plan, org.monthly_quota, org.rate_limit) == (
            "org-1",
            "old org",
            "pro",
            5,
            7,
        )
        assert value == [1, 2]
    finally:
        await db.close()


async def test_a_new_step_applies_on_top_of_existing_data(engine: AsyncEngine) -> None:
    await migrate(engine)
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO config_versions (scope, version) VALUES ('*', 41)"))
    extra = Migration(
        "9999_test_note",
        ("ALTER TABLE config_versions ADD COLUMN note TEXT",),
    )
    assert await migrate(engine, (*MIGRATIONS, extra)) == ["9999_test_note"]
    async with engine.connect() as conn:
        row = (
            await conn.execute(sa.text("SELECT scope, version, note FROM config_versions"))
        ).one()
    assert tuple(row) == ("*", 41, None)
    assert "9999_test_note" in await names_recorded(engine)


async def test_a_failing_step_leaves_no_trace_and_is_retried_next_time(
    engine: AsyncEngine,
) -> None:
    await migrate(engine)
    broken = Migration(
        "9999_test_broken",
        ("CREATE TABLE half_done (id TEXT PRIMARY KEY)", "THIS IS NOT SQL"),
    )
    with pytest.raises(sa.exc.DBAPIError):
        await migrate(engine, (*MIGRATIONS, broken))
    assert "half_done" not in await table_names(engine)
    assert "9999_test_broken" not in await names_recorded(engine)
    fixed = Migration("9999_test_broken", ("CREATE TABLE half_done (id TEXT PRIMARY KEY)",))
    assert await migrate(engine, (*MIGRATIONS, fixed)) == ["9999_test_broken"]
    assert "half_done" in await table_names(engine)


async def test_gateway_opens_a_data_dir_written_by_an_earlier_process(settings: Settings) -> None:
    gateway = await Gateway.open(settings)
    try:
        first = await initialise(gateway.store, settings.data_dir)
        async with gateway.store.db.write("test") as txn:
            await gateway.store.integrations.create(
                txn,
                org_id=first.org_id,
                workspace_id=first.workspace_id,
                integration_name="kv-store",
                alias="notes",
                strategy=ConnectionStrategy.FIXED,
                connection_id=None,
                allowed_actions=None,
                settings={},
            )
    finally:
        await gateway.close()
    reopened = await Gateway.open(settings)
    try:
        found = await reopened.store.integrations.list(first.workspace_id)
        assert [wi.alias for wi in found] == ["notes"]
    finally:
        await reopened.close()
