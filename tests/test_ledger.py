"""Execution records and quota counts, committed before each call answers and shared by calls
that finish together (store/ledger.py).

While `Gateway.run_background()` runs, a call queues its activity record and its quota count
and waits until they are committed: the first waiter commits everything queued in one
transaction, the others wait for it. These tests hold the ledger to what it promises: no
answer before its record is committed (another connection already sees it), a lone call in
one transaction, concurrent calls sharing them, exact quotas in a process and near the
limit, nothing lost at shutdown, after a failed write or when a caller stops waiting, on
both commit paths (plain sqlite3 in a worker thread, and SQLAlchemy as on PostgreSQL).

Failures are real database failures, made quickly with a plain sqlite3 connection: a trigger
that refuses inserts into `activity` (the writer's transaction fails at once and rolls back),
or a held write lock (the writer waits, as it would behind another process's transaction).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
import sqlalchemy as sa

from treadle.app import Gateway
from treadle.bootstrap import initialise
from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.model import JSONObject
from treadle.engine import Executor
from treadle.engine.limits import MonthlyQuota, SlidingWindowRateLimiter
from treadle.settings import Settings
from treadle.store import Database, ExecutionLedger
from treadle.store.activity import Activity
from treadle.store.database import create_engine
from treadle.store.state import UsageCounters

from conftest import Api, client_for
from databases import ON_POSTGRESQL, only_on_sqlite

pytestmark = pytest.mark.anyio

PERIOD = "2031-01"  # ledgers driven directly count in a month of their own


async def _ok(ctx: ActionContext, data: JSONObject) -> Any:
    return {"ok": True}


PROBE = Integration(
    name="probe",
    display_name="Probe",
    description="Test-only integration with one harmless action.",
    auth_kind=AuthKind.NONE,
    actions=(
        Action(
            name="ok",
            display_name="ok",
            description="Succeeds.",
            input_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
            run=_ok,
        ),
    ),
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- plumbing ---------------------------------------------------------------------------------

# The plain-sqlite3 commit path exists only for a SQLite file.
SQLITE_FILE = only_on_sqlite("the plain-sqlite3 commit path of a SQLite file")


async def wait_running(ledger: ExecutionLedger) -> None:
    """The writer task sets `running` as its first step; nothing to wait on but its start."""
    with anyio.fail_after(5):
        while not ledger.running:
            await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def background(gateway: Gateway) -> AsyncIterator[None]:
    """`Gateway.run_background()` as `treadle serve` runs it; cancelled (and drained) on exit."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(gateway.run_background)
        await wait_running(gateway.store.ledger)
        yield
        tg.cancel_scope.cancel()


@asynccontextmanager
async def writing(ledger: ExecutionLedger) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(ledger.run)
        await wait_running(ledger)
        yield
        tg.cancel_scope.cancel()


def use_ledger(gateway: Gateway, **tuning: Any) -> ExecutionLedger:
    """Give the gateway a ledger with other tuning, wired as `Gateway.open` wires its own.
    (`Gateway.close` drains the original one: stop the writer before closing, which drains.)"""
    store = gateway.store
    ledger = ExecutionLedger(store.db, store.usage, **tuning)
    store.ledger = ledger
    store.activity = Activity(store.db, ledger)
    gateway.executor = Executor(
        store,
        gateway.catalog,
        gateway.http,
        SlidingWindowRateLimiter(),
        MonthlyQuota(ledger),
    )
    return ledger


@asynccontextmanager
async def opened(settings: Settings, *, configure: bool = True) -> AsyncIterator[Api]:
    gateway = await Gateway.open(settings, catalog=Catalog([PROBE]))
    try:
        init = await initialise(gateway.store, settings.data_dir)
        token = init.api_key or (settings.data_dir / "api-key").read_text().strip()
        async with client_for(gateway, token) as client:
            api = Api(client, gateway, init.org_id, init.workspace_id, token)
            if configure:
                await api.configure("probe")
            yield api
    finally:
        await gateway.close()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with opened(settings) as made:
        yield made


@pytest.fixture(params=[pytest.param("direct", marks=SQLITE_FILE), "sqlalchemy"])
async def any_api(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Api]:
    """`api` on either commit path: plain sqlite3 in a worker thread (a file-backed SQLite
    database), or SQLAlchemy, the path PostgreSQL takes (here: the same SQLite file opened by
    a URI filename, which the direct path leaves alone)."""
    direct = request.param == "direct"
    if not direct and not ON_POSTGRESQL:  # on PostgreSQL the settings already take that path
        uri = f"sqlite+aiosqlite:///file:{settings.data_dir / 'treadle.db'}?uri=true"
        settings = dataclasses.replace(settings, database_url=uri)
    async with opened(settings) as made:
        assert made.gateway.store.db.writes_directly is direct
        yield made


async def queued(ledger: ExecutionLedger, items: int) -> None:
    """Wait until `items` records and counts are queued and unwritten (calls waiting)."""
    with anyio.fail_after(10):
        while ledger.waiting < items:
            await anyio.lowlevel.checkpoint()


async def run(api: Api, n: int = 0) -> httpx2.Response:
    return await api.execute(integrationName="probe", actionName="ok", input={"n": n})


async def run_all(api: Api, count: int, first: int = 0) -> list[httpx2.Response]:
    """`count` concurrent calls with inputs first, first + 1, ..."""
    responses: list[httpx2.Response] = []

    async def one(n: int) -> None:
        responses.append(await run(api, n))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n in range(first, first + count):
                tg.start_soon(one, n)
    return responses


async def set_limits(api: Api, **limits: Any) -> None:
    store = api.gateway.store
    async with store.db.write("test") as txn:
        await store.orgs.set_limits(txn, api.org_id, **limits)


async def executions(api: Api) -> list[dict[str, Any]]:
    """Every execution record, through the activity API (which flushes first)."""
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"type": "action_execution", "limit": 200}
        if cursor is not None:
            params["cursor"] = cursor
        page = await api.get("/activity", params=params)
        assert page.status_code == 200, page.text
        seen.extend(page.json()["activity"])
        cursor = page.json()["nextCursor"]
        if cursor is None:
            return seen


def inputs(entries: list[dict[str, Any]]) -> list[int]:
    return sorted(entry["input"]["n"] for entry in entries)


def this_month(api: Api) -> str:
    return MonthlyQuota(api.gateway.store.usage).period()


async def used(api: Api) -> int:
    return await api.gateway.store.usage.current(api.org_id, this_month(api))


# The database as another program sees it, on a connection of its own: nothing flushed,
# nothing cached. SQLite: plain sqlite3 in a worker thread (the event loop and the gateway's
# own transactions keep going meanwhile); PostgreSQL: a separate engine.


@dataclass(frozen=True)
class Outside:
    url: str
    path: Path


def database_file(gateway: Gateway) -> Outside:
    return Outside(gateway.settings.database_url, gateway.settings.data_dir / "treadle.db")


def _query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return list(conn.execute(sql, args).fetchall())
    finally:
        conn.close()


async def _rows(outside: Outside, sql: str, **args: Any) -> list[tuple[Any, ...]]:
    """`sql` with `:name` parameters, read from outside the gateway."""
    if not ON_POSTGRESQL:
        positional = sql
        for name in args:
            positional = positional.replace(f":{name}", "?")
        return await anyio.to_thread.run_sync(_query, outside.path, positional, *args.values())
    engine = create_engine(outside.url)
    try:
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(sa.text(sql), args)]
    finally:
        await engine.dispose()


async def _execute_outside(outside: Outside, *statements: str) -> None:
    if not ON_POSTGRESQL:
        for statement in statements:
            await anyio.to_thread.run_sync(_query, outside.path, statement)
        return
    engine = create_engine(outside.url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def stored_inputs(outside: Outside) -> list[int]:
    """The `n` of every execution record committed to the database."""
    n = "CAST(input AS json) ->> 'n'" if ON_POSTGRESQL else "json_extract(input, '$.n')"
    rows = await _rows(outside, f"SELECT {n} FROM activity WHERE type = 'action_execution'")
    return sorted(int(value) for (value,) in rows)


async def stored_executions(outside: Outside) -> int:
    sql = "SELECT count(*) FROM activity WHERE type = 'action_execution'"
    return int((await _rows(outside, sql))[0][0])


async def stored_count(outside: Outside, org_id: str, period: str) -> int:
    sql = "SELECT count FROM usage_counters WHERE org_id = :org AND period = :period"
    rows = await _rows(outside, sql, org=org_id, period=period)
    return int(rows[0][0]) if rows else 0


REFUSE = "test_refuse_activity"


@asynccontextmanager
async def activity_refused(outside: Outside) -> AsyncIterator[None]:
    """Inserts into `activity` fail (and with them the writer's whole transaction)."""
    if ON_POSTGRESQL:
        create = (
            f"CREATE FUNCTION {REFUSE}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by test'; END $$",
            f"CREATE TRIGGER {REFUSE} BEFORE INSERT ON activity "
            f"FOR EACH ROW EXECUTE FUNCTION {REFUSE}()",
        )
        drop: tuple[str, ...] = (
            f"DROP TRIGGER IF EXISTS {REFUSE} ON activity",
            f"DROP FUNCTION IF EXISTS {REFUSE}()",
        )
    else:
        create = (
            f"CREATE TRIGGER {REFUSE} BEFORE INSERT ON activity "
            "BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
        )
        drop = (f"DROP TRIGGER IF EXISTS {REFUSE}",)
    await _execute_outside(outside, *create)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await _execute_outside(outside, *drop)


class WriteLock:
    """Another connection's open transaction that keeps every writer of the activity log
    and the quota counts waiting (SQLite: BEGIN IMMEDIATE; PostgreSQL: an EXCLUSIVE lock on
    both tables, which lets reads through), held until released."""

    def __init__(self, release: Any) -> None:
        self._release = release

    async def release(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._release()


@asynccontextmanager
async def write_locked(outside: Outside) -> AsyncIterator[WriteLock]:
    if not ON_POSTGRESQL:
        conn = sqlite3.connect(outside.path, isolation_level=None, check_same_thread=False)

        async def rollback() -> None:
            if conn.in_transaction:
                conn.rollback()  # ending an empty transaction is immediate: fine on the loop

        try:
            conn.execute("BEGIN IMMEDIATE")
            yield WriteLock(rollback)
        finally:
            if conn.in_transaction:
                conn.rollback()
            conn.close()
        return
    engine = create_engine(outside.url)
    try:
        async with engine.connect() as pg:
            txn = await pg.begin()
            await pg.execute(sa.text("LOCK TABLE activity, usage_counters IN EXCLUSIVE MODE"))

            async def end() -> None:
                if txn.is_active:
                    await txn.rollback()

            try:
                yield WriteLock(end)
            finally:
                with anyio.CancelScope(shield=True):
                    await end()
    finally:
        await engine.dispose()


# -- without a running writer: inline, as before ---------------------------------------------


async def test_without_a_writer_each_call_is_written_before_it_returns(api: Api) -> None:
    assert not api.gateway.store.ledger.running
    path = database_file(api.gateway)
    for n in range(3):
        assert (await run(api, n)).status_code == 200
        # Read by another connection, with no flush: already committed.
        assert await stored_executions(path) == n + 1
        assert await stored_count(path, api.org_id, this_month(api)) == n + 1


# -- with a running writer --------------------------------------------------------------------


async def test_concurrent_calls_all_appear_in_the_activity_api_once_they_return(
    any_api: Api,
) -> None:
    api = any_api
    async with background(api.gateway):
        responses = await run_all(api, 40)
        assert [r.status_code for r in responses] == [200] * 40
        entries = await executions(api)
        assert inputs(entries) == list(range(40))
        assert {e["status"] for e in entries} == {"succeeded"}
        assert len({e["id"] for e in entries}) == 40
        assert await used(api) == 40
        # Committed for everyone, not only visible to this process.
        assert await stored_executions(database_file(api.gateway)) == 40


async def test_records_keep_their_order_and_paging_sees_each_once(api: Api) -> None:
    async with background(api.gateway):
        for first in range(0, 60, 20):
            await run_all(api, 20, first)
        seen: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"type": "action_execution", "limit": 7}
            if cursor is not None:
                params["cursor"] = cursor
            page = (await api.get("/activity", params=params)).json()
            seen.extend(page["activity"])
            cursor = page["nextCursor"]
            if cursor is None:
                break
    assert inputs(seen) == list(range(60))
    # Newest first, batch by batch: every call of a later batch after every earlier one.
    batches = [entry["input"]["n"] // 20 for entry in seen]
    assert batches == sorted(batches, reverse=True)


@pytest.mark.parametrize("margin", [0, 3, 256])
async def test_the_quota_counts_exactly_under_concurrent_calls(api: Api, margin: int) -> None:
    # A clock that stands still: counts are never re-read here (that race has its own test).
    ledger = use_ledger(api.gateway, exact_margin=margin, clock=FakeClock())
    await set_limits(api, monthly_quota=12)
    async with background(api.gateway):
        responses = await run_all(api, 30)
        codes = sorted("ok" if r.status_code == 200 else r.json()["error"] for r in responses)
        assert codes == ["QUOTA_EXCEEDED"] * 18 + ["ok"] * 12
        await ledger.flush()
        assert await used(api) == 12
        assert len(await executions(api)) == 30


async def test_two_gateways_with_running_writers_never_exceed_the_limit_together(
    settings: Settings,
) -> None:
    async with opened(settings) as a, opened(settings, configure=False) as b:
        await set_limits(a, monthly_quota=10)
        async with background(a.gateway), background(b.gateway):
            statuses: list[int] = []

            async def call(api: Api, n: int) -> None:
                statuses.append((await run(api, n)).status_code)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for n in range(15):
                        tg.start_soon(call, a, n)
                        tg.start_soon(call, b, 100 + n)
            assert sorted(statuses) == [200] * 10 + [403] * 20
            await a.gateway.store.ledger.flush()
            await b.gateway.store.ledger.flush()
            assert await used(a) == 10
            assert len(await executions(a)) == 30  # both processes' records, one database


@pytest.mark.parametrize("shared", [True, None], ids=["shared", "default"])
async def test_replicas_never_grant_past_the_limit_however_old_their_count(
    api: Api, shared: bool | None
) -> None:
    """Replica `a` read the count far from the limit and (its clock standing still) never
    reads it again; replica `b` then uses up the rest. A ledger deferring counts would grant
    `a` one more: a shared one (the default on PostgreSQL) asks the database."""
    store = api.gateway.store
    other = await Database.open(api.gateway.settings.database_url)  # another process
    try:
        a = ExecutionLedger(store.db, store.usage, clock=FakeClock(), exact_margin=2, shared=shared)
        b = ExecutionLedger(other, UsageCounters(other), clock=FakeClock(), shared=shared)
        async with writing(a), writing(b):
            assert await a.reserve(api.org_id, PERIOD, 10) == (True, 0)
            await a.flush()
            for n in range(1, 10):
                assert await b.reserve(api.org_id, PERIOD, 10) == (True, n)
            await b.flush()
            granted = await a.reserve(api.org_id, PERIOD, 10)
            await a.flush()
        if shared or ON_POSTGRESQL:
            assert granted == (False, 10)
            assert await store.usage.current(api.org_id, PERIOD) == 10
        else:
            # SQLite (`treadle stdio` beside `treadle serve`): the documented bound, one
            # margin inside one stale window.
            assert granted == (True, 1)
    finally:
        await other.close()


async def test_a_lone_call_is_committed_in_one_transaction_before_it_answers(
    any_api: Api,
) -> None:
    api = any_api
    path = database_file(api.gateway)
    ledger = api.gateway.store.ledger
    async with background(api.gateway):
        for n in range(3):
            before = ledger.attempts
            assert (await run(api, n)).status_code == 200
            # Read by another connection the moment the answer is in: committed, counted,
            # by one transaction for the record and the count (no waiting for company).
            assert await stored_inputs(path) == list(range(n + 1))
            assert await stored_count(path, api.org_id, this_month(api)) == n + 1
            assert ledger.attempts == before + 1


async def test_calls_waiting_for_the_database_answer_after_their_commit_and_share_it(
    api: Api,
) -> None:
    path = database_file(api.gateway)
    assert (await run(api, 0)).status_code == 200
    # Deferred counts (SQLite's default) on either database: a shared ledger's reservations
    # would wait behind the lock themselves, before the calls run.
    ledger = use_ledger(api.gateway, shared=False)
    answered: list[int] = []

    async def call(n: int) -> None:
        assert (await run(api, n)).status_code == 200
        assert n in await stored_inputs(path)  # committed before the answer arrived
        answered.append(n)

    async with background(api.gateway):
        async with write_locked(path) as lock, anyio.create_task_group() as tg:
            for n in range(1, 6):
                tg.start_soon(call, n)
            # Another connection holds the write lock: every call ran its action and
            # queued its count and record (two items each), and none may answer yet.
            await queued(ledger, 10)
            before = ledger.attempts  # the first waiter's commit has started
            assert answered == []
            await lock.release()
        assert sorted(answered) == [1, 2, 3, 4, 5]
        # The first waiter's commit, then one more for the four that queued behind it.
        assert ledger.attempts == before + 1
        assert await stored_count(path, api.org_id, this_month(api)) == 6


async def test_near_the_limit_each_reservation_is_committed_before_it_returns(
    api: Api,
) -> None:
    ledger = ExecutionLedger(api.gateway.store.db, api.gateway.store.usage, exact_margin=3)
    path = database_file(api.gateway)
    async with writing(ledger):
        for n in range(3):
            assert await ledger.reserve(api.org_id, PERIOD, 3) == (True, n)
            assert await stored_count(path, api.org_id, PERIOD) == n + 1
        assert await ledger.reserve(api.org_id, PERIOD, 3) == (False, 3)
        assert await stored_count(path, api.org_id, PERIOD) == 3


async def test_counts_older_than_stale_seconds_are_read_again(api: Api) -> None:
    clock = FakeClock()
    store = api.gateway.store
    # Deferred counts, as on SQLite, on either database (a shared ledger never defers).
    ledger = ExecutionLedger(store.db, store.usage, clock=clock, stale_seconds=0.5, shared=False)
    other = await Database.open(api.gateway.settings.database_url)  # another process
    try:
        async with writing(ledger):
            fresh, aged = "2031-01", "2031-02"
            for period in (fresh, aged):
                assert await ledger.reserve(api.org_id, period, 1000) == (True, 0)
            await ledger.flush()
            for period in (fresh, aged):
                for _ in range(4):
                    assert (await UsageCounters(other).reserve(api.org_id, period, 1000))[0]
            # Within stale_seconds the count this process knows is used as it is...
            clock.advance(0.25)
            assert await ledger.reserve(api.org_id, fresh, 1000) == (True, 1)
            # ...after it, it is read again.
            clock.advance(0.5)
            assert await ledger.reserve(api.org_id, aged, 1000) == (True, 5)
            await ledger.flush()
            assert await store.usage.current(api.org_id, fresh) == 6
            assert await store.usage.current(api.org_id, aged) == 6
    finally:
        await other.close()


# -- shutdown ---------------------------------------------------------------------------------


async def test_counts_no_record_followed_are_written_at_shutdown(api: Api) -> None:
    # Deferred counts, on either database (a shared ledger writes each one at once).
    ledger = ExecutionLedger(api.gateway.store.db, api.gateway.store.usage, shared=False)
    path = database_file(api.gateway)
    async with writing(ledger):
        for n in range(3):
            assert await ledger.reserve(api.org_id, PERIOD, 1000) == (True, n)
        # Queued for the next record's commit; none came.
        assert await stored_count(path, api.org_id, PERIOD) == 0
    assert await stored_count(path, api.org_id, PERIOD) == 3


async def test_records_of_calls_that_stopped_waiting_are_written_by_the_writer(
    api: Api,
) -> None:
    path = database_file(api.gateway)
    assert (await run(api, 0)).status_code == 200
    ledger = use_ledger(api.gateway, shared=False)  # deferred counts, on either database
    async with background(api.gateway):
        async with write_locked(path) as lock, anyio.create_task_group() as tg:
            for n in range(1, 4):
                tg.start_soon(run, api, n)
            await queued(ledger, 6)
            tg.cancel_scope.cancel()  # the clients went away while their calls waited
            await lock.release()
        # Nobody waits for these records any more; the background writer commits them.
        with anyio.fail_after(10):
            while ledger.waiting:
                await anyio.lowlevel.checkpoint()
        assert await stored_inputs(path) == [0, 1, 2, 3]
        assert await stored_count(path, api.org_id, this_month(api)) == 4


async def test_close_writes_what_the_writer_could_not(settings: Settings) -> None:
    async with opened(settings) as api:
        path = database_file(api.gateway)
        ledger = api.gateway.store.ledger
        per_call = 1 if ledger.shared else 2  # a record, and a deferred count unless shared
        async with activity_refused(path):
            async with background(api.gateway):
                async with anyio.create_task_group() as tg:
                    for n in range(3):
                        tg.start_soon(run, api, n)
                    await queued(ledger, 3 * per_call)
                    await ledger.flush()  # an attempt was made, and failed
                    tg.cancel_scope.cancel()  # the clients gave up
                assert await stored_executions(path) == 0
            # The writer stopped and could not drain either; the records are still in memory.
            assert await stored_executions(path) == 0
        # Writable again: Gateway.close (leaving `opened`) writes them.
    async with opened(settings, configure=False) as fresh:
        assert inputs(await executions(fresh)) == [0, 1, 2]
        assert await used(fresh) == 3


# -- failed writes ----------------------------------------------------------------------------


async def test_while_the_database_refuses_writes_calls_wait_and_nothing_is_lost(
    any_api: Api,
) -> None:
    api = any_api
    path = database_file(api.gateway)
    # Deferred counts on either database: neither records nor counts commit while refused.
    ledger = use_ledger(api.gateway, retry_seconds=0.05, shared=False)
    answered: list[int] = []

    async def call(n: int) -> None:
        assert (await run(api, n)).status_code == 200
        answered.append(n)

    async with background(api.gateway):
        async with anyio.create_task_group() as tg, activity_refused(path):
            for n in range(5):
                tg.start_soon(call, n)
            await queued(ledger, 10)
            await ledger.flush()  # gives up after a failed attempt; the calls do not
            assert answered == []
            # Each group failed as a whole: neither records nor counts were committed.
            assert await stored_executions(path) == 0
            assert await stored_count(path, api.org_id, this_month(api)) == 0
            # The quota still knows about them in this process.
            month = this_month(api)
            assert await ledger.reserve(api.org_id, month, 10**6) == (True, 5)
        # Writable again (the trigger went first): the calls' next attempt commits, they answer.
        assert sorted(answered) == [0, 1, 2, 3, 4]
        assert inputs(await executions(api)) == [0, 1, 2, 3, 4]
        assert await used(api) == 6  # five calls and the reservation made above


async def test_the_quota_holds_while_the_writer_cannot_write(api: Api) -> None:
    store = api.gateway.store
    ledger = ExecutionLedger(store.db, store.usage, exact_margin=1, retry_seconds=0.05)
    path = database_file(api.gateway)
    limit = 3
    record = {
        "org_id": api.org_id,
        "workspace_id": api.workspace_id,
        "type": "action_execution",
        "source": "rest",
        "actor": "test",
        "status": "succeeded",
    }
    allowed = 0
    async with writing(ledger):
        with anyio.fail_after(20):
            async with anyio.create_task_group() as records, activity_refused(path):
                for _ in range(limit + 3):
                    # As the pipeline does: an execution's count and its record. The
                    # records wait, and make every group fail until the database
                    # accepts them.
                    counted, _before = await ledger.reserve(api.org_id, PERIOD, limit)
                    allowed += counted
                    records.start_soon(partial(ledger.record, **record))
            # Writable again (the trigger went first): the waiting records were committed.
    assert allowed == limit
    assert await stored_count(path, api.org_id, PERIOD) == limit
    assert await stored_executions(path) == limit + 3


class PausedReads(UsageCounters):
    """The real counters, except that once armed a read of the count returns only when the
    test lets it: the read has happened (its snapshot is taken), its result is late."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.armed = False
        self.read_done = anyio.Event()
        self.proceed = anyio.Event()

    async def current(self, org_id: str, period: str) -> int:
        value = await super().current(org_id, period)
        if self.armed:
            self.armed = False
            self.read_done.set()
            await self.proceed.wait()
        return value


async def test_a_count_read_while_the_writer_commits_does_not_lose_executions(
    api: Api,
) -> None:
    clock = FakeClock()
    store = api.gateway.store
    usage = PausedReads(store.db)
    ledger = ExecutionLedger(
        store.db, usage, clock=clock, stale_seconds=0.5, exact_margin=2, shared=False
    )
    path = database_file(api.gateway)
    limit = 10
    allowed = 0
    async with writing(ledger):
        async with write_locked(path) as lock:
            # Five executions queued while the writer waits behind another transaction.
            for _ in range(5):
                allowed += (await ledger.reserve(api.org_id, PERIOD, limit))[0]
            clock.advance(1)  # the count is now stale: the next reservation reads it again
            usage.armed = True
            async with anyio.create_task_group() as tg:

                async def stale_reader() -> None:
                    nonlocal allowed
                    allowed += (await ledger.reserve(api.org_id, PERIOD, limit))[0]

                tg.start_soon(stale_reader)
                with anyio.fail_after(10):
                    await usage.read_done.wait()  # read 0: the five are not committed yet
                    await lock.release()
                    await ledger.flush()  # the writer commits the five
                usage.proceed.set()
        with anyio.fail_after(10):
            for _ in range(limit):
                allowed += (await ledger.reserve(api.org_id, PERIOD, limit))[0]
        await ledger.flush()
    assert await stored_count(path, api.org_id, PERIOD) == allowed
    assert allowed == limit
