"""`treadle migrate` and `treadle serve --no-migrate` as real processes, on an empty database
(SQLite file or fresh PostgreSQL database, tests/databases.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from treadle.store.database import create_engine
from treadle.store.migrations import MIGRATIONS

from databases import database_url, drop
from mcp_harness import free_port

pytestmark = pytest.mark.anyio

ALL = [step.name for step in MIGRATIONS]


def env_for(data_dir: Path, url: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TREADLE_")}
    env["TREADLE_DATA_DIR"] = str(data_dir)
    env["TREADLE_DATABASE_URL"] = url or database_url(data_dir, migrated=False)
    return env


async def treadle(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(60):
        return await anyio.run_process(
            [sys.executable, "-m", "treadle", *args], env=env, check=False
        )


def applied_lines(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    lines = done.stdout.decode().splitlines()
    return [line.removeprefix("applied ") for line in lines if line.startswith("applied ")]


async def ledger(data_dir: Path) -> list[str]:
    engine = create_engine(database_url(data_dir, migrated=False))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT name FROM schema_migrations"))
            return sorted(rows.scalars())
    finally:
        await engine.dispose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"
    drop(tmp_path / "data")


async def test_migrate_applies_every_step_once_and_then_nothing(data_dir: Path) -> None:
    env = env_for(data_dir)
    first = await treadle(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert applied_lines(first) == ALL
    assert f"applied {len(ALL)} of {len(ALL)} migrations" in first.stdout.decode()

    again = await treadle(env, "migrate", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert applied_lines(again) == []
    assert "already up to date" in again.stdout.decode()
    assert await ledger(data_dir) == sorted(ALL)


async def test_two_migrates_at_once_apply_each_step_exactly_once(data_dir: Path) -> None:
    env = env_for(data_dir)
    done: list[subprocess.CompletedProcess[bytes]] = []

    async def run() -> None:
        done.append(await treadle(env, "migrate"))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        tasks.start_soon(run)
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    first, second = (applied_lines(d) for d in done)
    assert sorted(first + second) == sorted(ALL)  # every step by exactly one of them
    assert await ledger(data_dir) == sorted(ALL)


async def test_an_unreachable_database_is_one_error_line_without_the_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql://treadle:pw-7f3a9c1e@127.0.0.1:{free_port()}/treadle"
    failed = await treadle(env_for(tmp_path / "data", url), "migrate")
    assert failed.returncode != 0
    errors = failed.stderr.decode().strip().splitlines()
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: database ")
    assert "pw-7f3a9c1e" not in failed.stderr.decode() + failed.stdout.decode()
    assert failed.stdout == b""


async def test_a_url_that_is_not_one_is_one_error_line(tmp_path: Path) -> None:
    failed = await treadle(env_for(tmp_path / "data", "not a url"), "migrate")
    assert failed.returncode != 0
    assert failed.stderr.decode().strip().count("\n") == 0
    assert failed.stderr.startswith(b"error: ")


async def test_serve_no_migrate_refuses_a_database_migrate_has_not_upgraded(
    data_dir: Path,
) -> None:
    env = env_for(data_dir)
    refused = await treadle(env, "serve", "--no-migrate", "--port", str(free_port()))
    assert refused.returncode != 0
    assert refused.stderr.decode().strip().splitlines() == [
        f"error: the database lacks {len(ALL)} migrations ({ALL[0]} first); run `treadle migrate`"
    ]
    # Nothing was created: the schema is still empty.
    engine = create_engine(database_url(data_dir, migrated=False))
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    assert tables == []


async def test_serve_no_migrate_serves_once_migrate_ran(data_dir: Path) -> None:
    env = env_for(data_dir)
    assert (await treadle(env, "migrate")).returncode == 0
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 (read line by line below, as mcp_harness does)
        [sys.executable, "-m", "treadle", "serve", "--no-migrate", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # pytest-timeout bounds a hang
            seen.append(line)
            if "Uvicorn running" in line:
                break
        else:
            raise AssertionError("treadle serve exited:\n" + "".join(seen))
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert await ledger(data_dir) == sorted(ALL)
