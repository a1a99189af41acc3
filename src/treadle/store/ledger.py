"""Execution records and quota counts: committed before each call answers, shared by calls
that finish together (group commit).

Every call ends with an activity record and (if it reached the action) one more execution
counted against the org's monthly quota. Written per call, that is two transactions on the
hot path; with SQLite's single writer they also serialise every concurrent call. While the
gateway runs (`run`, started by `treadle serve` and `treadle stdio`), a call hands both to this
ledger, and `record` returns once its record is committed, leader/follower style:
- a call that finds no commit under way commits at once, in one transaction, its record and
  whatever else is queued (it leads): a lone call pays one commit and never waits for others;
- calls that queue while a commit is under way wait for it to end (they follow); then the
  first of them leads the next commit, for all of them: concurrent calls share commits.
On a file-backed SQLite database a commit is one hop to a worker thread running plain sqlite3
(`Database.write_direct`); elsewhere (PostgreSQL) an ordinary SQLAlchemy transaction.

What that keeps:
- A call that answered is in the activity log and the quota, even after `kill -9`: its
  record was committed before the answer, together with (or after) every quota count queued
  before it, its own included. A process killed outright loses only what calls still in
  flight had queued; none of them answered. The count of such a call may survive without
  its record (it reached the action, which may have run), never the other way round. On
  PostgreSQL the count's own commit does not wait for the WAL to reach the disk (the
  admission statement, store/rate_windows.py): the record's commit, which does wait, flushes
  the WAL up to itself, the earlier count included.
- Quotas stay exact within one process. The count is re-read when it is older than
  `STALE_SECONDS` (and after every group this process commits), and within `EXACT_MARGIN`
  executions of the limit every reservation is a synchronous database write. So several
  processes sharing a SQLite file (`treadle stdio` beside `treadle serve`) can only
  overshoot together if they make more than `EXACT_MARGIN` executions inside one
  `STALE_SECONDS` window right at the limit. On PostgreSQL, where replicas run at any volume,
  every reservation is that write (`shared`): one conditional statement the database
  decides, so replicas together never grant one past the limit; records still share commits.
- While the database refuses writes, calls wait for their records, and whoever leads
  retries every `RETRY_SECONDS`; `flush()` gives up after a failed attempt instead. What nobody
  waits for any more (a cancelled call, a reservation not followed by a record) is written by
  `run`, or by a graceful stop (SIGINT/SIGTERM, `Gateway.close`), which writes everything.
Without a running writer (tests, one-shot CLI commands) everything is written inline.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from sqlalchemy.engine import Dialect

from treadle.clock import now_iso
from treadle.ids import new_time_ordered_uuid
from treadle.store import schema
from treadle.store.database import (
    Database,
    activity_params,
    insert_activity,
    insert_activity_rows,
    numbered_activity_insert,
)
from treadle.store.state import UsageCounters

log = logging.getLogger(__name__)

STALE_SECONDS = 0.5
EXACT_MARGIN = 256
RETRY_SECONDS = 0.5
# Beyond this many queued records the database is failing for good; keep memory bounded.
MAX_QUEUED = 100_000

_Period = tuple[str, str]  # (org_id, "YYYY-MM")


@dataclass(slots=True)
class _Tally:
    """One org-month: the count last read or written, and what this process added since."""

    committed: int
    pending: int
    synced_at: float


class ExecutionLedger:
    def __init__(
        self,
        db: Database,
        usage: UsageCounters,
        *,
        clock: Callable[[], float] = time.monotonic,
        stale_seconds: float = STALE_SECONDS,
        exact_margin: int = EXACT_MARGIN,
        retry_seconds: float = RETRY_SECONDS,
        shared: bool | None = None,
    ) -> None:
        """`shared`: whether other processes count against the same quotas at any volume
        (default: on PostgreSQL, where replicas run). Then every reservation is the
        database's own conditional count, since no margin bounds what other replicas
        granted since this process last read the count."""
        self._db = db
        self._shared = not db.is_sqlite if shared is None else shared
        self._usage = usage
        self._clock = clock
        self._stale = stale_seconds
        self._margin = exact_margin
        self._retry = retry_seconds
        self._direct = _DirectGroup(db.engine.dialect) if db.writes_directly else None
        self._running = False
        self._records: list[dict[str, Any]] = []
        self._increments: Counter[_Period] = Counter()
        self._tallies: dict[_Period, _Tally] = {}
        self._leading = False  # a commit (or the pause after a failed one) is under way
        self._commit_ended = anyio.Event()  # set, and replaced, whenever a commit ends
        self._orphaned = anyio.Event()  # queued items nobody may be waiting for: wakes `run`
        # Progress, in items (an activity record or one quota count) and write attempts.
        # Groups are taken from the front of the queue and put back there when they fail,
        # so what is written is always a prefix of what was queued.
        self._queued = 0  # items ever queued
        self._settled = 0  # items ever written (or dropped: see MAX_QUEUED)
        self._attempts = 0  # write attempts ever started
        self._last_failed = 0  # the number of the latest attempt that failed

    @property
    def running(self) -> bool:
        return self._running

    @property
    def shared(self) -> bool:
        """Whether every reservation is the database's own count (nothing deferred)."""
        return self._shared

    @property
    def attempts(self) -> int:
        """Group commits started so far (one transaction each)."""
        return self._attempts

    @property
    def waiting(self) -> int:
        """Items queued and not yet written."""
        return self._queued - self._settled

    # -- activity ---------------------------------------------------------------------------

    async def record(self, **values: Any) -> None:
        """An `activity` row (columns as keyword arguments) for an execution; returns once
        it is committed."""
        if not self._running:
            async with self._db.write("system") as txn:
                await insert_activity(txn.conn, **values)
            return
        if len(self._records) >= MAX_QUEUED:
            log.error("activity writer is behind by %d records; dropping the oldest", MAX_QUEUED)
            self._records.pop(0)
            self._settled += 1
        self._records.append({"id": new_time_ordered_uuid(), "created_at": now_iso(), **values})
        self._queued += 1
        await self._settle(self._queued)

    # -- quota ------------------------------------------------------------------------------

    async def reserve(self, org_id: str, period: str, limit: int) -> tuple[bool, int]:
        """Count one execution unless `limit` is reached: (counted, count before this one).

        Far from the limit the count is queued, not written: the execution's record, which
        the pipeline writes next, commits it (in its group or after an earlier one)."""
        if not self._running or self._shared:
            return await self._usage.reserve(org_id, period, limit)
        key = (org_id, period)
        tally = self._tallies.get(key)
        now = self._clock()
        if tally is None or now - tally.synced_at > self._stale:
            committed = await self._usage.current(org_id, period)
            tally = self._tallies.get(key)  # a commit may have created it meanwhile
            if tally is None:
                tally = self._tallies[key] = _Tally(committed, 0, now)
            else:
                # Counts only grow within a month: a group committed while this read was in
                # flight must not be undone by the older number.
                tally.committed = max(tally.committed, committed)
                tally.synced_at = now
        used = tally.committed + tally.pending
        if limit - used <= self._margin:
            # Near the limit: settle what is queued, then count in the database itself,
            # leaving room for whatever of ours is still unwritten (a failing database).
            await self.flush()
            pending = tally.pending
            counted, before = await self._usage.reserve(org_id, period, limit - pending)
            tally.committed = max(tally.committed, before + (1 if counted else 0))
            tally.synced_at = self._clock()
            return counted, before + pending
        tally.pending += 1
        self._increments[key] += 1
        self._queued += 1
        return True, used

    # -- group commit -----------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until everything queued before this call is written, or until a write
        attempt that started after this call failed (the database refuses: do not hang)."""
        await self._settle(self._queued, give_up_after=self._attempts)

    async def drain(self) -> None:
        """Write everything queued now (for shutdown; a no-op when nothing is queued)."""
        await self._settle(self._queued, give_up_after=self._attempts)

    async def run(self) -> None:
        """Write what nobody waits for until cancelled; then write what is left."""
        self._running = True
        try:
            while True:
                await self._orphaned.wait()
                self._orphaned = anyio.Event()
                await self._settle(self._queued)
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                await self.drain()

    async def _settle(self, target: int, *, give_up_after: int | None = None) -> None:
        """Return once the first `target` items ever queued are written: lead a commit when
        none is under way, otherwise follow the one that is and look again when it ends.
        With `give_up_after`, also return once an attempt after that one failed."""
        try:
            while self._settled < target:
                if give_up_after is not None and self._last_failed > give_up_after:
                    return
                if self._leading:
                    await self._commit_ended.wait()
                elif self._records or self._increments:
                    await self._lead(back_off=give_up_after is None)
                else:
                    return  # nothing left to write: only dropped items are missing
        except BaseException:
            if self._settled < target:
                self._orphaned.set()  # the next leader may have been this caller
            raise

    async def _lead(self, *, back_off: bool) -> None:
        self._leading = True
        try:
            with anyio.CancelScope(shield=True):
                written = await self._write_queued()
            if not written:
                self._orphaned.set()  # retried by `run` even if every waiter gives up
                if back_off:
                    # Still leading: followers wait here too instead of retrying at once.
                    await anyio.sleep(self._retry)
        finally:
            self._leading = False
            ended, self._commit_ended = self._commit_ended, anyio.Event()
            ended.set()

    async def _write_queued(self) -> bool:
        records, self._records = self._records, []
        increments, self._increments = self._increments, Counter()
        if not records and not increments:
            return True
        self._attempts += 1
        attempt = self._attempts
        try:
            counts = await self._write(records, increments)
        except Exception:
            log.exception("could not write %d activity records; will retry", len(records))
            # Put them back in front of anything queued meanwhile, in order.
            self._records = records + self._records
            self._increments.update(increments)
            self._last_failed = attempt
            return False
        self._settled += len(records) + sum(increments.values())
        now = self._clock()
        for key, count in counts.items():
            tally = self._tallies.get(key)
            if tally is not None:
                tally.committed = count
                tally.pending = max(0, tally.pending - increments[key])
                tally.synced_at = now
        return True

    async def _write(
        self, records: list[dict[str, Any]], increments: Counter[_Period]
    ) -> dict[_Period, int]:
        if self._direct is not None:
            return await self._db.write_direct(partial(self._direct.write, records, increments))
        if not increments and not self._db.is_sqlite:
            # PostgreSQL, where every reservation was already counted by the database
            # (`shared`): the group is one multi-row INSERT numbered by the sequence in the
            # statement itself, atomic alone: one round trip instead of four.
            await self._db.write_one(numbered_activity_insert(), activity_params(records))
            return {}
        counts: dict[_Period, int] = {}
        async with self._db.write("system") as txn:
            # Sorted: concurrent PostgreSQL writers lock counter rows in one order (no deadlock).
            for (org_id, period), added in sorted(increments.items()):
                await self._usage.add(txn, org_id, period, added)
                counts[(org_id, period)] = await self._usage.count_in(txn.conn, org_id, period)
            if records:
                await insert_activity_rows(txn.conn, records)
        return counts


class _DirectGroup:
    """One group's transaction in plain sqlite3, the same rows `UsageCounters.add` and
    `insert_activity_rows` write through SQLAlchemy (values encoded by the same column types)."""

    def __init__(self, dialect: Dialect) -> None:
        # SQLAlchemy's own INSERT for the table, compiled once: every column, in the order of
        # its positional parameters, encoded by each column's type.
        compiled = schema.activity.insert().compile(dialect=dialect)
        self._insert = compiled.string
        self._names = list(compiled.positiontup or ())
        encoders = [schema.activity.c[name].type.bind_processor(dialect) for name in self._names]
        # Only a few columns (JSON) encode; the rest pass as they are. A group of 32 records
        # is built on the event loop, so the plain columns are read in one C-level map.
        self._encoded = [(i, encode) for i, encode in enumerate(encoders) if encode is not None]
        self._seq = self._names.index("seq")

    def _row(self, values: dict[str, Any]) -> list[Any]:
        row = list(map(values.get, self._names))
        for index, encode in self._encoded:
            row[index] = encode(row[index])
        return row

    def write(
        self,
        records: list[dict[str, Any]],
        increments: Counter[_Period],
        conn: sqlite3.Connection,
    ) -> dict[_Period, int]:
        counts: dict[_Period, int] = {}
        for (org_id, period), added in increments.items():
            (count,) = conn.execute(
                "INSERT INTO usage_counters (org_id, period, count) VALUES (?, ?, ?) "
                "ON CONFLICT (org_id, period) DO UPDATE SET count = count + excluded.count "
                "RETURNING count",
                (org_id, period, added),
            ).fetchone()
            counts[(org_id, period)] = int(count)
        if records:
            # Numbered after the highest `seq` in this write transaction, as in
            # `insert_activity_rows`: BEGIN IMMEDIATE keeps every other writer out meanwhile.
            (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM activity").fetchone()
            rows = [self._row(values) for values in records]
            for number, row in enumerate(rows, start=int(top) + 1):
                row[self._seq] = number
            conn.executemany(self._insert, rows)
        return counts
