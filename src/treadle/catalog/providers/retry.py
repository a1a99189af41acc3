"""How long a rate-limited call waits before trying again, and how long it may wait in total.

A tool call holds an agent (and maybe a person) waiting, so a provider asking for a long pause
is reported back as `rate_limited` with its `retryAfter` instead of being waited out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx2

_SECONDS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class RetryBudget:
    max_retries: int = 2
    max_total_seconds: float = 10.0
    # When a provider rate-limits without saying for how long: wait this, doubling per retry.
    fallback_seconds: float = 1.0

    def backoff(self, retry: int) -> float:
        return float(self.fallback_seconds * 2**retry)


# Read at call time, so a deployment (or a test) can replace it.
RETRY_BUDGET = RetryBudget()


def retry_after_seconds(headers: httpx2.Headers, now: datetime | None = None) -> float | None:
    """The `Retry-After` header as seconds from now: delta-seconds or an HTTP date."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
