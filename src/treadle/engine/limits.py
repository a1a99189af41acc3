"""Rate limits and monthly quotas behind small interfaces, so a shared backend can replace them.

The rate limiter is the sliding-window counter: two fixed-window counts per key, the previous
one weighted by how much of it still overlaps the sliding window. O(1) memory per key, and
accurate enough that a burst at a window edge cannot double the limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from treadle.engine.outcome import RateStatus


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_seconds: int) -> tuple[bool, RateStatus]: ...


@dataclass(slots=True)
class _Windows:
    start: int
    current: int
    previous: int


class SlidingWindowRateLimiter:
    """In-process limiter; correct for one `treadle serve` process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._keys: dict[str, _Windows] = {}

    async def hit(self, key: str, limit: int, window_seconds: int) -> tuple[bool, RateStatus]:
        now = self._clock()
        window = max(1, window_seconds)
        start = int(now // window) * window
        state = self._keys.get(key)
        if state is None or start - state.start >= 2 * window:
            state = _Windows(start, 0, 0)
        elif start != state.start:
            state = _Windows(start, 0, state.current)
        self._keys[key] = state
        overlap = 1.0 - (now - start) / window
        estimate = state.previous * overlap + state.current
        reset_at = start + window
        if estimate + 1 > limit:
            retry_after = self._retry_after(state, limit, window, now, start)
            # Never announce a reset before the moment a call fits again.
            reset_at = max(reset_at, math.ceil(now + retry_after))
            return False, RateStatus(limit, 0, reset_at, retry_after)
        state.current += 1
        remaining = max(0, math.floor(limit - (estimate + 1)))
        return True, RateStatus(limit, remaining, reset_at, 0)

    @staticmethod
    def _retry_after(state: _Windows, limit: int, window: int, now: float, start: int) -> int:
        """Seconds until previous * overlap(t) + current + 1 <= limit; overlap shrinks linearly."""
        if limit < 1:
            return window  # nothing ever fits; ask again a window later
        if state.current + 1 <= limit:
            # Fits later in this window, once the previous window weighs little enough. Being
            # refused here means the previous window still counts, so `previous` is not 0.
            needed_overlap = (limit - 1 - state.current) / state.previous
            at = start + (1.0 - needed_overlap) * window
        else:
            # Not in this window. In the next, this window's count becomes the previous one,
            # weighted from 1 down: wait until current * overlap + 1 <= limit there.
            needed_overlap = (limit - 1) / state.current
            at = start + window + (1.0 - needed_overlap) * window
        return max(1, math.ceil(at - now))


class QuotaGate(Protocol):
    async def reserve(self, org_id: str, limit: int) -> tuple[bool, int]:
        """Count one execution unless the month's limit is reached; (counted, used before)."""
        ...


class UsageReserver(Protocol):
    async def reserve(self, org_id: str, period: str, limit: int) -> tuple[bool, int]: ...


class MonthlyQuota:
    """Monthly counts kept in the database, so restarts and several processes agree.

    `usage` is the execution ledger in a running gateway (counts written in groups, exact near
    the limit; see `treadle.store.ledger`) or the counters themselves."""

    def __init__(self, usage: UsageReserver, clock: Callable[[], datetime] | None = None) -> None:
        self._usage = usage
        self._clock = clock or (lambda: datetime.now(UTC))

    def period(self) -> str:
        return self._clock().strftime("%Y-%m")

    async def reserve(self, org_id: str, limit: int) -> tuple[bool, int]:
        return await self._usage.reserve(org_id, self.period(), limit)
