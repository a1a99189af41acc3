"""What the store alone costs a call, on each database: the floor under "PostgreSQL c=1 p50
within 1.3x of SQLite's".

A call that runs writes to the store twice on PostgreSQL (the admission statement, rate
window and quota, conditioned on the configuration version; the activity record, whose
commit waits for the WAL flush) and once on SQLite (the record, a WAL commit in a worker
thread; the rate window is in memory and the quota count rides in the record's group). Here
each is timed alone, in this process, at c=1, in alternating blocks:

- `sqlite`: the ledger's reservation and record on a fresh SQLite file (treadle's code, the
  path a call takes there);
- `postgresql`: the admission statement and the ledger's record on a fresh PostgreSQL
  database (treadle's code, the path a call takes there);
- `postgresqlRaw`: the same two statements sent straight through asyncpg on one connection,
  the SQL text and parameters treadle sends: what PostgreSQL and its driver take, with none
  of treadle's code in between.

The floor of the ratio is then (SQLite's p50 - its store path + PostgreSQL's raw
statements) / SQLite's p50: the ratio if everything treadle does outside the database cost
nothing more on PostgreSQL than on SQLite.

Timed in this process, a statement's round trip is waited for by a busy loop. In a server at
c=1 the loop sleeps while it waits and is woken by the answer. `measure_served` therefore
also serves the same store work from `bench.store_server`, one bare uvicorn app per database,
and measures it over HTTP at c=1, the way the calls are measured. The difference of the two
p50s is what PostgreSQL costs a server that does nothing else.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx2

from bench.load import Request, Side, WorkerFactory, interleaved
from bench.procs import StoreServer
from treadle.clock import now_iso
from treadle.ids import new_time_ordered_uuid
from treadle.store import Database
from treadle.store.database import GLOBAL_SCOPE, activity_params, numbered_activity_insert
from treadle.store.ledger import ExecutionLedger, _DirectGroup
from treadle.store.migrations import migrate
from treadle.store.rate_windows import DatabaseRateLimiter, RateAndQuota, _admission_statement
from treadle.store.state import UsageCounters

ORG = "bench-floor"
PERIOD = "2026-12"
LIMIT = 10**12


def _record() -> dict[str, Any]:
    """An activity row as the pipeline records a successful MCP call."""
    return {
        "org_id": ORG,
        "workspace_id": None,
        "type": "action_execution",
        "source": "mcp_tools",
        "actor": "mcp_server:bench",
        "status": "succeeded",
        "integration_name": "bench-one",
        "integration_alias": "b",
        "action_name": "echo",
        "end_user_id": None,
        "duration_ms": 1,
        "error_code": None,
        "input": {"text": "hello"},
    }


async def open_database(url: str) -> Database:
    db = await Database.open(url)
    await migrate(db.engine)
    return db


async def _sqlite_path(db: Database, ledger: ExecutionLedger) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        counted, _used = await ledger.reserve(ORG, PERIOD, LIMIT)
        assert counted
        await ledger.record(**_record())

    return call


async def _postgresql_path(db: Database, ledger: ExecutionLedger) -> Callable[[], Awaitable[None]]:
    admission = DatabaseRateLimiter(db).admission(lambda: PERIOD)
    assert isinstance(admission, RateAndQuota)
    version = await db.version()

    async def call() -> None:
        admitted = await admission.admit(ORG, LIMIT, 60, ORG, LIMIT, expected_version=version)
        assert admitted.quota_counted
        await ledger.record(**_record())

    return call


async def raw_postgresql(db: Database) -> tuple[Callable[[], Awaitable[None]], Callable[[], None]]:
    """The same two statements straight through asyncpg (treadle's SQL and parameters)."""
    statements = db._single
    assert statements is not None
    version = await db.version()
    admission = _admission_statement()
    record = numbered_activity_insert()
    conn = await statements._connections.take()

    def admission_params() -> dict[str, Any]:
        start = int(time.time()) // 60 * 60
        return {
            "key": ORG + "-raw",
            "start": start,
            "window": 60,
            "weight": 0.5,
            "limit": LIMIT,
            "org_id": ORG + "-raw",
            "period": PERIOD,
            "quota": LIMIT,
            "scope": GLOBAL_SCOPE,
            "expected": version,
        }

    first = admission_params()
    admit = statements._compile(admission, first)
    row = activity_params([{"id": new_time_ordered_uuid(), "created_at": now_iso(), **_record()}])
    insert = statements._compile(record, row[0])

    async def call() -> None:
        # Parameters are built outside the statements' own timing in a real call too
        # (the pipeline builds them); here they are built before each pair.
        admit_args = admit.positional(admission_params())
        rows = activity_params(
            [{"id": new_time_ordered_uuid(), "created_at": now_iso(), **_record()}]
        )
        insert_args = [insert.positional(r) for r in rows]
        await conn.fetch(admit.sql, *admit_args)
        await conn.executemany(insert.sql, insert_args)

    def release() -> None:
        statements._connections.give_back(conn, None)

    return call, release


def raw_sqlite(db: Database) -> Callable[[], Awaitable[None]]:
    """The one transaction the ledger commits for a lone call on SQLite (its record and its
    quota count, `_DirectGroup.write`), through `Database.write_direct` as the ledger runs it:
    for `bench.store_server`, with no reservation or group around it."""
    group = _DirectGroup(db.engine.dialect)
    counted = Counter({(ORG, PERIOD): 1})

    async def call() -> None:
        record = {"id": new_time_ordered_uuid(), "created_at": now_iso(), **_record()}
        await db.write_direct(partial(group.write, [record], counted))

    return call


async def _timed(call: Callable[[], Awaitable[None]], count: int) -> list[float]:
    taken = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        taken.append(time.perf_counter() - started)
    return taken


def _summary(samples: list[float]) -> dict[str, float]:
    """Milliseconds, as the other cases report."""
    ordered = sorted(samples)
    return {
        "p50": statistics.median(ordered) * 1000,
        "p90": ordered[int(len(ordered) * 0.9)] * 1000,
        "count": float(len(ordered)),
    }


async def measure(postgresql_url: str, *, calls: int = 600, blocks: int = 6) -> dict[str, Any]:
    """p50 and p90 ms per call of each store path, in alternating blocks of `calls / blocks`."""
    with tempfile.TemporaryDirectory(prefix="treadle-floor-") as tmp:
        lite = await open_database(f"sqlite+aiosqlite:///{Path(tmp) / 'treadle.db'}")
        pg = await open_database(postgresql_url)
        ledgers = [ExecutionLedger(db, UsageCounters(db)) for db in (lite, pg)]
        try:
            async with anyio.create_task_group() as tg:
                for ledger in ledgers:
                    tg.start_soon(ledger.run)
                while not all(ledger.running for ledger in ledgers):
                    await anyio.lowlevel.checkpoint()  # `record` groups only once they run
                paths: dict[str, Callable[[], Awaitable[None]]] = {
                    "sqlite": await _sqlite_path(lite, ledgers[0]),
                    "postgresql": await _postgresql_path(pg, ledgers[1]),
                }
                raw, release = await raw_postgresql(pg)
                paths["postgresqlRaw"] = raw
                try:
                    samples: dict[str, list[float]] = {name: [] for name in paths}
                    for call in paths.values():  # warm-up
                        await _timed(call, 50)
                    for _block in range(blocks):
                        for name, call in paths.items():
                            samples[name] += await _timed(call, max(1, calls // blocks))
                finally:
                    release()
                tg.cancel_scope.cancel()
        finally:
            await lite.close()
            await pg.close()
    return {name: _summary(taken) for name, taken in samples.items()}


async def measure_served(
    postgresql_url: str, *, calls: int = 600, blocks: int = 6
) -> dict[str, Any]:
    """The same store work served over HTTP by `bench.store_server` (one per database), c=1
    from this process in alternating blocks: p50 and p99 ms of each, and their difference."""
    servers = [StoreServer.start("sqlite"), StoreServer.start("postgresql", postgresql_url)]
    try:
        sides = [Side(server.database, _post(server.url), server.process.pid) for server in servers]
        found = await interleaved(sides, total=calls, concurrency=1, blocks=blocks)
    finally:
        for server in servers:
            server.stop()
    out: dict[str, Any] = {
        name: {"p50": side["p50"], "p99": side["p99"], "errors": side["errors"]}
        for name, side in found.items()
    }
    out["postgresqlMinusSqliteMs"] = out["postgresql"]["p50"] - out["sqlite"]["p50"]
    return out


def _post(url: str) -> WorkerFactory:
    async def make(http: httpx2.AsyncClient) -> tuple[Request, Callable[[], Awaitable[None]]]:
        async def request() -> None:
            answer = await http.post(url, content=b"{}")
            answer.raise_for_status()

        async def close() -> None:
            return None

        return request, close

    return make
