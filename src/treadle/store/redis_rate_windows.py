"""The sliding-window rate limiter with its counts in Redis (`TREADLE_REDIS_URL`).

One Lua script per hit: Redis runs a script alone, so reading the key's two fixed-window
counts, rolling them forward, deciding and counting are one atomic step for every replica
using the same Redis. The arithmetic is `treadle.engine.limits`' (Lua numbers are IEEE
doubles, and the overlap is passed as Python's shortest round-trip text of the same float),
so the answers are the in-process limiter's. A key lives two windows past its last count.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis

from treadle.engine.limits import WindowHit, overlap, window_of
from treadle.engine.outcome import RateStatus

KEY_PREFIX = "treadle:rate:"

# KEYS[1]: the key's hash (s: window start, c: current count, p: previous count).
# ARGV: window start, window length, overlap, limit, lifetime in milliseconds.
# Returns {counted (1/0), current before this hit, previous} after rolling to ARGV[1].
_HIT = """
local start = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local stored = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
local s = tonumber(stored[1])
local c = tonumber(stored[2]) or 0
local p = tonumber(stored[3]) or 0
if s == nil then
  s, c, p = start, 0, 0
else
  local delta = start - s
  if delta <= 0 then
    -- this window, or one ahead of it (a replica whose clock runs ahead): keep it
  elseif delta < 2 * window then
    s, c, p = start, 0, c
  else
    s, c, p = start, 0, 0
  end
end
if p * weight + c + 1 <= limit then
  redis.call('HSET', KEYS[1], 's', s, 'c', c + 1, 'p', p)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {1, c, p}
end
return {0, c, p}
"""


class RedisRateLimiter:
    """`treadle.engine.limits.RateLimiter` over Redis hashes."""

    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._script = redis.register_script(_HIT)

    async def hit(self, key: str, limit: int, window_seconds: int) -> tuple[bool, RateStatus]:
        now = self._clock()
        window, start = window_of(now, window_seconds)
        weight = overlap(now, start, window)
        if limit < 1:
            return False, WindowHit(now, window, start, 0, 0, False).status(limit)
        lifetime_ms = (2 * window + 1) * 1000
        counted, current, previous = await self._script(
            keys=[KEY_PREFIX + key], args=[start, window, repr(weight), limit, lifetime_ms]
        )
        allowed = int(counted) == 1
        hit = WindowHit(now, window, start, int(previous), int(current), allowed)
        return allowed, hit.status(limit)
