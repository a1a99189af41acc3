"""The activity page's chart: calls and failed calls per hour (or day), as an SVG drawn on
the server, with a title, a description and the same numbers as a table for those who
cannot see it. The counts come from one grouped query (`Activity.timeline`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from treadle.clock import iso, parse_iso, utcnow
from treadle.errors import ValidationFailed
from treadle.store import ActivityFilter, Store

WIDTH, HEIGHT, PAD = 640, 160, 24
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
DEFAULT_SPAN = timedelta(hours=24)
MAX_BUCKETS = 90


@dataclass(frozen=True, slots=True)
class Bar:
    label: str  # the period, e.g. 2026-12-02T17 (an hour) or 2026-12-02 (a day)
    calls: int
    errors: int
    x: float
    width: float
    calls_y: float
    errors_y: float


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    description: str
    unit: str  # "hour" or "day"
    bars: tuple[Bar, ...]
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD

    @property
    def total_calls(self) -> int:
        return sum(b.calls for b in self.bars)

    @property
    def total_errors(self) -> int:
        return sum(b.errors for b in self.bars)


def _floor(moment: datetime, step: timedelta) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if step == DAY else moment


def _range(where: ActivityFilter) -> tuple[datetime, datetime]:
    try:
        until = parse_iso(where.until) if where.until else utcnow()
        since = parse_iso(where.since) if where.since else until - DEFAULT_SPAN
    except ValueError:
        raise ValidationFailed("since and until are ISO 8601 timestamps", field="since") from None
    return since, max(until, since)


async def activity_chart(store: Store, where: ActivityFilter) -> Chart:
    since, until = _range(where)
    step = HOUR if until - since <= timedelta(hours=48) else DAY
    width = 13 if step == HOUR else 10
    first = _floor(max(since, until - step * (MAX_BUCKETS - 1)), step)
    counted = {
        period: (calls, errors)
        for period, calls, errors in await store.activity.timeline(
            replace(where, since=iso(first), until=iso(until), before_seq=None), width
        )
    }
    periods: list[str] = []
    moment = first
    while moment <= until and len(periods) < MAX_BUCKETS:
        periods.append(iso(moment)[:width])
        moment += step
    peak = max([c for c, _e in counted.values()] + [1])
    slot = (WIDTH - 2 * PAD) / max(len(periods), 1)
    plot = HEIGHT - 2 * PAD
    bars = []
    for index, period in enumerate(periods):
        calls, errors = counted.get(period, (0, 0))
        bars.append(
            Bar(
                label=period,
                calls=calls,
                errors=errors,
                x=round(PAD + index * slot + slot * 0.1, 2),
                width=round(slot * 0.8, 2),
                calls_y=round(plot * calls / peak, 2),
                errors_y=round(plot * errors / peak, 2),
            )
        )
    unit = "hour" if step == HOUR else "day"
    total_calls = sum(b.calls for b in bars)
    total_errors = sum(b.errors for b in bars)
    return Chart(
        title=f"Calls and errors per {unit}",
        description=(
            f"{total_calls} calls, {total_errors} of them failed or refused, "
            f"from {periods[0] if periods else iso(first)} to {periods[-1] if periods else ''}"
            f" (UTC); the busiest {unit} had {peak if total_calls else 0} calls."
        ),
        unit=unit,
        bars=tuple(bars),
        peak=peak,
    )
