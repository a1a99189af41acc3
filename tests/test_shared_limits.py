"""One rate budget per org, wherever its window is counted: in the process, in the database
(SQLite, or PostgreSQL with TREADLE_TEST_DATABASE=postgresql) or in Redis.

Every case runs against every limiter on the same fake clock and expects the same answers,
down to each `RateStatus` field; a differential case replays an irregular schedule against
the in-process limiter as the reference. Then two gateways on one database (two replicas)
share one budget under concurrency: exactly the limit gets through, never one per replica.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from treadle.app import Gateway
from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.model import JSONObject
from treadle.engine import RateStatus
from treadle.engine.limits import RateLimiter, SlidingWindowRateLimiter
from treadle.settings import Settings
from treadle.store import Database
from treadle.store.rate_windows import DatabaseRateLimiter
from treadle.store.redis_rate_windows import RedisRateLimiter

from conftest import Api, api_on
from databases import BACKEND, ON_POSTGRESQL, database_url, drop, only_on_sqlite

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("TREADLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WINDOW = 64  # a power of two keeps the window fractions exact in floating point
T0 = 1_700_000_000 // WINDOW * WINDOW + WINDOW  # the start of a window


async def _ok(ctx: ActionContext, data: JSONObject) -> JSONObject:
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
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# A maker of limiters over one shared store of counts: each call is another "replica".
Limiters = Callable[[FakeClock], Awaitable[RateLimiter]]


@pytest.fixture(params=["in-process", BACKEND, "redis"])
async def limiters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Limiters]:
    async with limiters_on(request.param, tmp_path) as made:
        yield made


@pytest.fixture(params=[BACKEND, "redis"])
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Limiters]:
    """Limiters that share their counts across processes."""
    async with limiters_on(request.param, tmp_path) as made:
        yield made


@asynccontextmanager
async def limiters_on(kind: str, tmp_path: Path) -> AsyncIterator[Limiters]:
    async with AsyncExitStack() as stack:
        if kind == "in-process":
            # One process, one dict: "replicas" of it would not share; tests use one.
            shared: list[SlidingWindowRateLimiter] = []

            async def in_process(clock: FakeClock) -> RateLimiter:
                if not shared:
                    shared.append(SlidingWindowRateLimiter(clock=clock))
                return shared[0]

            yield in_process
        elif kind == "redis":
            redis = Redis.from_url(REDIS_URL)
            stack.push_async_callback(redis.aclose)

            async def over_redis(clock: FakeClock) -> RateLimiter:
                return RedisRateLimiter(redis, clock=clock)

            yield over_redis
        else:
            data_dir = tmp_path / "data"
            data_dir.mkdir()
            stack.callback(drop, data_dir)
            url = database_url(data_dir)

            async def over_database(clock: FakeClock) -> RateLimiter:
                db = await Database.open(url)  # its own engine and pool, as a replica has
                stack.push_async_callback(db.close)
                return DatabaseRateLimiter(db, clock=clock)

            yield over_database


@pytest.fixture
def key() -> str:
    """A key no other test (on the same Redis) counts under."""
    return f"org-{uuid.uuid4().hex}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_the_limit_counts_down_then_refuses_until_the_call_fits(
    limiters: Limiters, key: str, clock: FakeClock
) -> None:
    limiter = await limiters(clock)
    for remaining in range(7, -1, -1):
        assert await limiter.hit(key, 8, WINDOW) == (
            True,
            RateStatus(8, remaining, T0 + WINDOW, 0),
        )
    # Full current window: the next still counts it at overlap 1 until 8 * overlap + 1 <= 8.
    retry = WINDOW + WINDOW // 8
    assert await limiter.hit(key, 8, WINDOW) == (False, RateStatus(8, 0, T0 + retry, retry))


async def test_the_previous_window_weighs_by_its_overlap(
    limiters: Limiters, key: str, clock: FakeClock
) -> None:
    limiter = await limiters(clock)
    for _ in range(8):
        assert (await limiter.hit(key, 8, WINDOW))[0]
    clock.advance(WINDOW + WINDOW / 4)  # the previous window still overlaps by three quarters
    start = T0 + WINDOW
    assert await limiter.hit(key, 8, WINDOW) == (True, RateStatus(8, 1, start + WINDOW, 0))
    assert await limiter.hit(key, 8, WINDOW) == (True, RateStatus(8, 0, start + WINDOW, 0))
    # 6 weighted + 2 counted: fits again once 8 * overlap <= 5, i.e. 24 s into the window.
    assert await limiter.hit(key, 8, WINDOW) == (False, RateStatus(8, 0, start + WINDOW, 8))


async def test_two_idle_windows_forget_everything(
    limiters: Limiters, key: str, clock: FakeClock
) -> None:
    limiter = await limiters(clock)
    for _ in range(8):
        await limiter.hit(key, 8, WINDOW)
    clock.advance(2 * WINDOW)
    assert await limiter.hit(key, 8, WINDOW) == (True, RateStatus(8, 7, T0 + 3 * WINDOW, 0))


async def test_keys_keep_budgets_of_their_own(
    limiters: Limiters, key: str, clock: FakeClock
) -> None:
    limiter = await limiters(clock)
    for _ in range(2):
        assert (await limiter.hit(key, 2, WINDOW))[0]
    assert not (await limiter.hit(key, 2, WINDOW))[0]
    assert (await limiter.hit(key + "-other", 2, WINDOW))[0]


async def test_a_limit_of_zero_refuses_and_asks_again_a_window_later(
    limiters: Limiters, key: str, clock: FakeClock
) -> None:
    limiter = await limiters(clock)
    clock.advance(16)
    assert await limiter.hit(key, 0, WINDOW) == (
        False,
        RateStatus(0, 0, T0 + 16 + WINDOW, WINDOW),
    )


async def test_every_answer_matches_the_in_process_limiter_on_an_irregular_schedule(
    limiters: Limiters, key: str, clock: FakeClock
) -> None:
    reference_clock = FakeClock()
    reference = SlidingWindowRateLimiter(clock=reference_clock)
    limiter = await limiters(clock)
    for step in range(300):
        # Quarter seconds, fractions of a window, a jump now and then; limit and window vary.
        seconds = (step * 7919) % 11 / 4 + (45 if step % 97 == 0 else 0)
        clock.advance(seconds)
        reference_clock.advance(seconds)
        limit, window = (5, 30) if step < 200 else (3, 8)
        expected = await reference.hit("org", limit, window)
        assert await limiter.hit(key, limit, window) == expected, f"step {step}"


async def test_a_refused_caller_that_waits_retry_after_gets_through(
    limiters: Limiters, key: str, clock: FakeClock
) -> None:
    limiter = await limiters(clock)
    refusals = 0
    for step in range(200):
        clock.advance((step * 7919) % 7 / 2)
        allowed, status = await limiter.hit(key, 5, 30)
        if not allowed:
            refusals += 1
            assert status.retry_after >= 1
            clock.advance(status.retry_after - 1)
            assert not (await limiter.hit(key, 5, 30))[0], f"step {step}: a second early"
            clock.advance(1)
            assert (await limiter.hit(key, 5, 30))[0], f"step {step}"
    assert refusals > 10


async def test_replicas_share_one_window_and_a_lagging_clock_never_resets_it(
    replicas: Limiters, key: str
) -> None:
    ahead, behind = FakeClock(T0 + WINDOW + 1), FakeClock(T0 + WINDOW - 1)
    a, b = await replicas(ahead), await replicas(behind)
    for _ in range(3):
        assert (await a.hit(key, 4, WINDOW))[0]
    # B's clock is still in the window before A's: A's counts stand, none are rolled away.
    assert await b.hit(key, 4, WINDOW) == (True, RateStatus(4, 0, T0 + WINDOW, 0))
    assert not (await a.hit(key, 4, WINDOW))[0]
    assert not (await b.hit(key, 4, WINDOW))[0]


async def test_concurrent_hits_from_two_replicas_get_exactly_the_limit(
    replicas: Limiters, key: str, clock: FakeClock
) -> None:
    a, b = await replicas(clock), await replicas(clock)
    allowed: list[bool] = []

    async def hit(limiter: RateLimiter) -> None:
        allowed.append((await limiter.hit(key, 20, WINDOW))[0])

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(hit, a if n % 2 else b)
    assert sorted(allowed) == [False] * 10 + [True] * 20


# -- two gateways (two replicas) on one database, through the execute pipeline ---------------


async def gateways(settings: Settings, stack: AsyncExitStack) -> tuple[Api, Api]:
    """Two gateways (two replicas) on one database, serving one org with `probe` configured
    and a rate limit of 20 an hour."""
    apis: list[Api] = []
    for _ in range(2):
        gateway = await Gateway.open(settings, catalog=Catalog([PROBE]))
        stack.push_async_callback(gateway.close)
        apis.append(await stack.enter_async_context(api_on(gateway)))
    a, b = apis
    assert a.org_id == b.org_id
    await a.configure("probe")
    async with a.gateway.store.db.write("test") as txn:
        await a.gateway.store.orgs.set_limits(
            txn, a.org_id, rate_limit=20, rate_window_seconds=3600
        )
    return a, b


async def execute_spread(a: Api, b: Api, calls: int) -> list[int]:
    """`calls` concurrent executes, every other one through each gateway: their statuses."""
    statuses: list[int] = []

    async def call(api: Api, n: int) -> None:
        response = await api.execute(integrationName="probe", actionName="ok", input={"n": n})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"] == "RATE_LIMITED"

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(calls):
                tg.start_soon(call, b if n % 2 else a, n)
    return sorted(statuses)


# PostgreSQL counts the window in the database; Redis, when configured, on any database.
SHARED = ["redis", *([BACKEND] if ON_POSTGRESQL else [])]


@pytest.mark.parametrize("shared", SHARED)
async def test_two_gateways_on_one_database_share_the_orgs_rate_budget(
    settings: Settings, shared: str
) -> None:
    if shared == "redis":
        settings = dataclasses.replace(settings, redis_url=REDIS_URL)
    async with AsyncExitStack() as stack:
        a, b = await gateways(settings, stack)
        assert await execute_spread(a, b, 30) == [200] * 20 + [429] * 10


@only_on_sqlite("the embedded default counts rate windows in each process's memory")
async def test_on_sqlite_each_process_has_a_rate_window_of_its_own(settings: Settings) -> None:
    async with AsyncExitStack() as stack:
        a, b = await gateways(settings, stack)
        assert await execute_spread(a, b, 44) == [200] * 40 + [429] * 4
