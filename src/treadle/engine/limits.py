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


@dataclass(frozen=True, slots=True)
class WindowHit:
    """One hit's view of a key's two fixed windows, for any place the counts are kept.

    `previous` and `current` are the counts before this hit, rolled to the window it falls
    in; `allowed` is whether it was counted. Every limiter (in-process, database, Redis)
    decides with `fits` and answers with `status`, so they agree to the last second."""

    now: float
    window: int
    start: int
    previous: int
    current: int
    allowed: bool

    def status(self, limit: int) -> RateStatus:
        reset_at = self.start + self.window
        estimate = self.previous * overlap(self.now, self.start, self.window) + self.current
        if self.allowed:
            return RateStatus(limit, max(0, math.floor(limit - (estimate + 1))), reset_at, 0)
        retry_after = self._retry_after(limit)
        # Never announce a reset before the moment a call fits again.
        return RateStatus(limit, 0, max(reset_at, math.ceil(self.now + retry_after)), retry_after)

    def _retry_after(self, limit: int) -> int:
        """Seconds until previous * overlap(t) + current + 1 <= limit; overlap shrinks linearly."""
        window, start = self.window, self.start
        if limit < 1:
            return window  # nothing ever fits; ask again a window later
        if self.current + 1 <= limit:
            # Fits later in this window, once the previous window weighs little enough. Being
            # refused here means the previous window still counts, so `previous` is not 0.
            needed_overlap = (limit - 1 - self.current) / self.previous
            at = start + (1.0 - needed_overlap) * window
        else:
            # Not in this window. In the next, this window's count becomes the previous one,
            # weighted from 1 down: wait until current * overlap + 1 <= limit there.
            needed_overlap = (limit - 1) / self.current
            at = start + window + (1.0 - needed_overlap) * window
        return max(1, math.ceil(at - self.now))


def window_of(now: float, window_seconds: int) -> tuple[int, int]:
    """(window length, start of the fixed window `now` falls in); windows align to the epoch,
    so every process cuts the same windows."""
    window = max(1, window_seconds)
    return window, int(now // window) * window


def overlap(now: float, start: int, window: int) -> float:
    """How much of the previous fixed window the sliding window still covers (1 down to 0)."""
    return 1.0 - (now - start) / window


def fits(previous: int, current: int, weight: float, limit: int) -> bool:
    # The database and Redis evaluate this same expression, in this order, in IEEE doubles.
    return previous * weight + current + 1 <= limit


@dataclass(slots=True)
class Windows:
    """A key's two fixed-window counts: the window starting at `start`, and the one before."""

    start: int
    current: int
    previous: int


def rolled(stored_start: int, current: int, previous: int, start: int, window: int) -> Windows:
    """Stored counts moved to the window starting at `start`. A stored window ahead of
    `start` (another replica's clock runs ahead) is kept as it is: counts never go back."""
    delta = start - stored_start
    if delta <= 0:
        return Windows(stored_start, current, previous)
    if delta < 2 * window:
        return Windows(start, 0, current)
    return Windows(start, 0, 0)


class SlidingWindowRateLimiter:
    """In-process limiter: one budget per process (see `treadle.app` for when it is used)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._keys: dict[str, Windows] = {}

    async def hit(self, key: str, limit: int, window_seconds: int) -> tuple[bool, RateStatus]:
        now = self._clock()
        window, start = window_of(now, window_seconds)
        state = self._keys.get(key)
        state = (
            Windows(start, 0, 0)
            if state is None
            else rolled(state.start, state.current, state.previous, start, window)
        )
        self._keys[key] = state
        allowed = fits(state.previous, state.current, overlap(now, start, window), limit)
        hit = WindowHit(now, window, start, state.previous, state.current, allowed)
        if allowed:
            state.current += 1
        return allowed, hit.status(limit)


class QuotaGate(Protocol):
    async def reserve(self, org_id: str, limit: int) -> tuple[bool, int]:
        """Count one execution unless the month's limit is reached; (counted, used before)."""
        ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A rate-limit hit and a quota reservation decided together (`Admission`). The quota is
    only asked when the hit was counted; `quota_used` is the count before this call."""

    rate_allowed: bool
    rate: RateStatus
    quota_counted: bool
    quota_used: int


class Admission(Protocol):
    """The rate-limit hit and the quota reservation of a call with no approval to consume
    between them, in one step: where both are counted in one database, one round trip."""

    async def admit(
        self,
        key: str,
        limit: int,
        window_seconds: int,
        org_id: str,
        quota: int,
        *,
        expected_version: int | None = None,
    ) -> Admitted:
        """With `expected_version`, counts only while the configuration version is still
        that one, read in the same step; raises `StaleConfiguration` (nothing counted) when
        it moved."""
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
        moment = self._clock()
        return f"{moment.year:04d}-{moment.month:02d}"  # strftime costs 4x, on every call

    async def reserve(self, org_id: str, limit: int) -> tuple[bool, int]:
        return await self._usage.reserve(org_id, self.period(), limit)
