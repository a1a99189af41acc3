"""Execution records and quota counts, committed in groups behind the calls that made them.

Every call ends with an activity record and (if it reached the action) one more execution
counted against the org's monthly quota. Written per call, that is two transactions on the
hot path; with SQLite's single writer they also serialise every concurrent call. While the
gateway runs (`run`, started by `treadle serve` and `treadle stdio`), calls hand both to this
ledger and return; one writer commits whatever has accumulated in a single transaction
(group commit). It lingers `LINGER_SECONDS` after the first queued item so that even
one-at-a-time calls share a transaction; nobody waits for that, except `flush()`, which
cuts it short.

What that trades, and what it keeps:
- Read-your-writes holds in this process: the activity API calls `flush()` first.
- A graceful stop (SIGINT/SIGTERM, `Gateway.close`) writes everything queued. A process
  killed outright loses the records of the group being gathered or written (the last
  ~100 ms of calls); their quota counts are lost with them, in the org's favour.
- Quotas stay exact within one process. The count is re-read when it is older than
  `STALE_SECONDS` (and after every group this process commits), and within `EXACT_MARGIN`
  executions of the limit every reservation is a synchronous database write, as before. So
  several processes sharing the database can only overshoot together if they make more than
  `EXACT_MARGIN` executions inside one `STALE_SECONDS` window right at the limit.
Without a running writer (tests, one-shot CLI commands) everything is written inline.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from treadle.clock import now_iso
from treadle.ids import new_uuid
from treadle.store.database import Database, insert_activity, insert_activity_rows
from treadle.store.state import UsageCounters

log = logging.getLogger(__name__)

STALE_SECONDS = 0.5
LINGER_SECONDS = 0.1
MAX_GROUP = 500
EXACT_MARGIN = 256
RETRY_SECONDS = 0.5
# Beyond this many queued records the writer is failing for good; keep memory bounded.
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
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        self._db = db
        self._usage = usage
        self._clock = clock
        self._stale = stale_seconds
        self._margin = exact_margin
        self._linger = linger_seconds
        self._running = False
        self._records: list[dict[str, Any]] = []
        self._increments: Counter[_Period] = Counter()
        self._tallies: dict[_Period, _Tally] = {}
        self._wake = anyio.Event()
        self._hurry = anyio.Event()  # someone waits in flush(): stop lingering
        self._written = anyio.Event()
        # Progress, in items (an activity record or one quota count) and write attempts.
        self._queued = 0  # items ever queued
        self._settled = 0  # items ever written (or dropped: see MAX_QUEUED)
        self._attempts = 0  # write attempts ever started
        self._last_failed = 0  # the number of the latest attempt that failed

    @property
    def running(self) -> bool:
        return self._running

    # -- activity ---------------------------------------------------------------------------

    async def record(self, **values: Any) -> None:
        """An `activity` row (columns as keyword arguments) for an execution."""
        if not self._running:
            async with self._db.write("system") as txn:
                await insert_activity(txn.conn, **values)
            return
        if len(self._records) >= MAX_QUEUED:
            log.error("activity writer is behind by %d records; dropping the oldest", MAX_QUEUED)
            self._records.pop(0)
            self._settled += 1
        self._records.append({"id": new_uuid(), "created_at": now_iso(), **values})
        self._queued += 1
        self._wake.set()
        if len(self._records) >= MAX_GROUP:
            self._hurry.set()

    # -- quota ------------------------------------------------------------------------------

    async def reserve(self, org_id: str, period: str, limit: int) -> tuple[bool, int]:
        """Count one execution unless `limit` is reached: (counted, count before this one)."""
        if not self._running:
            return await self._usage.reserve(org_id, period, limit)
        key = (org_id, period)
        tally = self._tallies.get(key)
        now = self._clock()
        if tally is None or now - tally.synced_at > self._stale:
            committed = await self._usage.current(org_id, period)
            tally = self._tallies.get(key)  # the writer may have created it meanwhile
            if tally is None:
                tally = self._tallies[key] = _Tally(committed, 0, now)
            else:
                # Counts only grow within a month: a group the writer committed while this
                # read was in flight must not be undone by the older number.
                tally.committed = max(tally.committed, committed)
                tally.synced_at = now
        used = tally.committed + tally.pending
        if limit - used <= self._margin:
            # Near the limit: settle what is queued, then count in the database itself,
            # leaving room for whatever of ours is still unwritten (a failing writer).
            await self.flush()
            pending = tally.pending
            counted, before = await self._usage.reserve(org_id, period, limit - pending)
            tally.committed = max(tally.committed, before + (1 if counted else 0))
            tally.synced_at = self._clock()
            return counted, before + pending
        tally.pending += 1
        self._increments[key] += 1
        self._queued += 1
        self._wake.set()
        return True, used

    # -- the writer -------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until everything queued before this call is written, or until a write
        attempt that started after this call failed (the database refuses: do not hang)."""
        target = self._queued
        begun = self._attempts
        while self._running and self._settled < target and self._last_failed <= begun:
            written = self._written
            self._wake.set()
            self._hurry.set()
            await written.wait()

    async def run(self) -> None:
        """Write queued records and counts until cancelled; then write what is left."""
        self._running = True
        try:
            while True:
                await self._wake.wait()
                with anyio.move_on_after(self._linger):
                    await self._hurry.wait()
                self._wake = anyio.Event()
                self._hurry = anyio.Event()
                if not await self._write_queued():
                    await anyio.sleep(RETRY_SECONDS)
                    self._wake.set()  # what failed is still queued: try again
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                await self.drain()

    async def drain(self) -> None:
        """Write everything queued now (for shutdown; a no-op when nothing is queued)."""
        if self._records or self._increments:
            await self._write_queued()

    async def _write_queued(self) -> bool:
        records, self._records = self._records, []
        increments, self._increments = self._increments, Counter()
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
        else:
            self._settled += len(records) + sum(increments.values())
        finally:
            written, self._written = self._written, anyio.Event()
            written.set()
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
        counts: dict[_Period, int] = {}
        if not records and not increments:
            return counts
        async with self._db.write("system") as txn:
            for (org_id, period), added in increments.items():
                await self._usage.add(txn, org_id, period, added)
                counts[(org_id, period)] = await self._usage.count_in(txn.conn, org_id, period)
            if records:
                await insert_activity_rows(txn.conn, records)
        return counts
