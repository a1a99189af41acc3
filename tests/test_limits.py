"""Per-org sliding-window rate limits and monthly quotas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx2
import pytest

from treadle.app import Gateway
from treadle.catalog import Action, ActionContext, AuthKind, Catalog, Integration
from treadle.catalog.model import JSONObject
from treadle.engine import Executor, RateStatus
from treadle.engine.limits import MonthlyQuota, SlidingWindowRateLimiter
from treadle.errors import ActionRuntimeError, UpstreamError
from treadle.settings import Settings

from conftest import Api, api_on

pytestmark = pytest.mark.anyio

WINDOW = 64  # a power of two keeps the window fractions exact in floating point
T0 = 1_700_000_000 // WINDOW * WINDOW + WINDOW  # the start of a window


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _ok(ctx: ActionContext, data: JSONObject) -> Any:
    return {"ran": True}


async def _upstream(ctx: ActionContext, data: JSONObject) -> Any:
    raise UpstreamError("rate_limited_upstream", "slow down")


async def _broken(ctx: ActionContext, data: JSONObject) -> Any:
    raise ActionRuntimeError("unreachable host", reason="unreachable")


async def _crash(ctx: ActionContext, data: JSONObject) -> Any:
    raise ZeroDivisionError


async def _hang(ctx: ActionContext, data: JSONObject) -> Any:
    await anyio.Event().wait()


def _action(name: str, run: Any, schema: JSONObject | None = None) -> Action:
    return Action(
        name=name,
        display_name=name,
        description=f"Test action {name}.",
        input_schema=schema or {"type": "object"},
        run=run,
    )


PROBE = Integration(
    name="probe",
    display_name="Probe",
    description="Test-only integration with one action per outcome.",
    auth_kind=AuthKind.NONE,
    actions=(
        _action("ok", _ok),
        _action("upstream", _upstream),
        _action("broken", _broken),
        _action("crash", _crash),
        _action("hang", _hang),
        _action("strict", _ok, {"type": "object", "required": ["n"]}),
        _action("hidden", _ok),
    ),
)
KEYED = Integration(
    name="keyed",
    display_name="Keyed",
    description="Test-only integration that needs a connection.",
    auth_kind=AuthKind.API_KEY,
    actions=(_action("ok", _ok),),
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def api(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    limiter = SlidingWindowRateLimiter(clock=clock)
    gateway = await Gateway.open(settings, catalog=Catalog([PROBE, KEYED]), rate_limiter=limiter)
    gateway.executor = Executor(
        gateway.store,
        gateway.catalog,
        gateway.http,
        limiter,
        MonthlyQuota(gateway.store.usage),
        action_timeout=0.05,
    )
    try:
        async with api_on(gateway) as configured:
            await configured.configure("probe", allowedActions=[a.name for a in PROBE.actions[:-1]])
            await configured.configure("keyed", connectionStrategy="per_user")
            yield configured
    finally:
        await gateway.close()


async def set_limits(api: Api, org_id: str | None = None, **limits: Any) -> None:
    store = api.gateway.store
    async with store.db.write("test") as txn:
        await store.orgs.set_limits(txn, org_id or api.org_id, **limits)


async def run(api: Api, action: str = "ok", **fields: Any) -> httpx2.Response:
    fields.setdefault("integrationName", "probe")
    return await api.execute(actionName=action, **fields)


async def used(api: Api, org_id: str | None = None) -> int:
    usage = api.gateway.store.usage
    return await usage.current(org_id or api.org_id, MonthlyQuota(usage).period())


def rate_headers(response: httpx2.Response) -> tuple[int, int, int]:
    headers = response.headers
    return (
        int(headers["X-RateLimit-Limit"]),
        int(headers["X-RateLimit-Remaining"]),
        int(headers["X-RateLimit-Reset"]),
    )


async def another_org(api: Api) -> tuple[str, str, str]:
    """A second org with a workspace where `probe` is configured: (org id, workspace, key)."""
    store = api.gateway.store
    async with store.db.write("test") as txn:
        org = await store.orgs.create(txn, "other org")
        workspace = await store.workspaces.create(txn, org.id, "default")
        _key, token = await store.api_keys.create(txn, org.id, name="other")
    created = await api.post(
        f"/workspaces/{workspace.id}/integrations",
        {"integrationName": "probe", "connectionStrategy": "fixed"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.text
    return org.id, workspace.id, token


async def run_as(api: Api, token: str) -> httpx2.Response:
    return await api.post(
        "/actions/execute",
        {"integrationName": "probe", "actionName": "ok"},
        headers={"Authorization": f"Bearer {token}"},
    )


# The limiter itself, on a fake clock.


async def hit(limiter: SlidingWindowRateLimiter, limit: int = 8) -> tuple[bool, RateStatus]:
    return await limiter.hit("org", limit, WINDOW)


async def test_limiter_allows_the_limit_per_window_and_counts_down(clock: FakeClock) -> None:
    limiter = SlidingWindowRateLimiter(clock=clock)
    for expected_remaining in range(7, -1, -1):
        allowed, status = await hit(limiter)
        assert allowed
        assert status.remaining == expected_remaining
        assert status.limit == 8
        assert status.retry_after == 0
    allowed, status = await hit(limiter)
    assert not allowed
    assert status.remaining == 0
    assert status.retry_after >= 1


async def test_limiter_weights_the_previous_window_by_its_overlap(clock: FakeClock) -> None:
    limiter = SlidingWindowRateLimiter(clock=clock)
    for _ in range(8):
        assert (await hit(limiter))[0]
    clock.advance(WINDOW + WINDOW / 4)  # the previous window still overlaps by three quarters
    results = [(await hit(limiter))[0] for _ in range(3)]
    assert results == [True, True, False]  # 8 * 3/4 = 6 counted, so two more fit


async def test_limiter_forgets_everything_after_two_idle_windows(clock: FakeClock) -> None:
    limiter = SlidingWindowRateLimiter(clock=clock)
    for _ in range(8):
        await hit(limiter)
    clock.advance(2 * WINDOW)
    allowed, status = await hit(limiter)
    assert allowed
    assert status.remaining == 7


async def test_limiter_keeps_keys_apart(clock: FakeClock) -> None:
    limiter = SlidingWindowRateLimiter(clock=clock)
    for _ in range(2):
        await limiter.hit("org-a", 2, WINDOW)
    assert not (await limiter.hit("org-a", 2, WINDOW))[0]
    assert (await limiter.hit("org-b", 2, WINDOW))[0]


@pytest.mark.parametrize(
    ("fill_at", "retry_at", "expected_retry"),
    [
        # Full current window: the next window still counts it at overlap 1, so the wait runs
        # past the window's end until 8 * overlap + 1 <= 8, i.e. 1/8 of the next window.
        (16, 16, WINDOW - 16 + WINDOW // 8),
        # Same, asked later in the window.
        (0, 60, WINDOW - 60 + WINDOW // 8),
        # Previous window weighted: at +16 into the next window it counts 6, two more fit,
        # then 8 * overlap + 2 + 1 <= 8 needs overlap <= 5/8, i.e. 24 seconds in.
        (16, WINDOW + 16, 8),
    ],
    ids=["current-window-full", "late-in-full-window", "previous-window-weighted"],
)
async def test_retry_after_is_exactly_when_the_next_call_fits(
    clock: FakeClock, fill_at: int, retry_at: int, expected_retry: int
) -> None:
    limiter = SlidingWindowRateLimiter(clock=clock)
    clock.now = T0 + fill_at
    for _ in range(8):
        assert (await hit(limiter))[0]
    clock.now = T0 + retry_at
    while (await hit(limiter))[0]:
        pass
    refused_at = clock.now
    _allowed, status = await hit(limiter)
    assert status.retry_after == expected_retry
    assert status.reset_at >= refused_at + status.retry_after

    clock.now = refused_at + status.retry_after - 1
    assert not (await hit(limiter))[0]
    clock.now = refused_at + status.retry_after
    assert (await hit(limiter))[0]


async def test_retry_after_is_always_honoured_on_an_irregular_schedule(clock: FakeClock) -> None:
    limiter = SlidingWindowRateLimiter(clock=clock)
    for step in range(400):
        clock.advance((step * 7919) % 7 / 2)
        allowed, status = await limiter.hit("org", 5, 30)
        if not allowed:
            assert status.retry_after >= 1
            clock.advance(status.retry_after)
            assert (await limiter.hit("org", 5, 30))[0], f"step {step}"


# Through the API.


async def test_execute_responses_carry_rate_limit_headers(api: Api, clock: FakeClock) -> None:
    await set_limits(api, rate_limit=5, rate_window_seconds=WINDOW)
    remaining = []
    for action in ("ok", "upstream", "broken", "ok"):
        response = await run(api, action)
        limit, left, reset = rate_headers(response)
        assert limit == 5
        assert reset == T0 + WINDOW
        remaining.append(left)
    assert remaining == [4, 3, 2, 1]


async def test_rate_limit_headers_default_to_the_orgs_limit(api: Api) -> None:
    org = await api.gateway.store.orgs.get(api.org_id)
    assert org is not None
    response = await run(api)
    assert response.status_code == 200
    assert rate_headers(response)[:2] == (org.rate_limit, org.rate_limit - 1)


async def test_over_the_limit_is_429_with_retry_after(api: Api, clock: FakeClock) -> None:
    await set_limits(api, rate_limit=2, rate_window_seconds=WINDOW)
    clock.advance(10)
    assert (await run(api)).status_code == 200
    assert (await run(api)).status_code == 200
    response = await run(api)
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error", "message", "retryAfter"}
    assert body["error"] == "RATE_LIMITED"
    assert isinstance(body["retryAfter"], int)
    assert body["retryAfter"] >= 1
    assert response.headers["Retry-After"] == str(body["retryAfter"])
    limit, remaining, reset = rate_headers(response)
    assert (limit, remaining) == (2, 0)
    assert reset >= clock.now + body["retryAfter"]

    clock.advance(body["retryAfter"])
    assert (await run(api)).status_code == 200


async def test_a_rate_limited_call_neither_runs_nor_counts_toward_the_quota(api: Api) -> None:
    await set_limits(api, rate_limit=1, rate_window_seconds=WINDOW)
    assert (await run(api)).status_code == 200
    assert await used(api) == 1
    assert (await run(api, "crash")).status_code == 429
    assert await used(api) == 1


async def test_calls_refused_before_the_limiter_do_not_use_it_up(api: Api) -> None:
    await set_limits(api, rate_limit=1, rate_window_seconds=WINDOW)
    invalid = await run(api, "strict")
    assert invalid.status_code == 400
    assert "X-RateLimit-Remaining" not in invalid.headers
    assert (await run(api, "hidden")).status_code == 403
    assert (await run(api, integrationName="keyed")).status_code == 400
    assert (await run(api)).status_code == 200


async def test_each_org_has_its_own_rate_limit(api: Api) -> None:
    await set_limits(api, rate_limit=1, rate_window_seconds=WINDOW)
    other_org, _workspace, token = await another_org(api)
    await set_limits(api, other_org, rate_limit=1, rate_window_seconds=WINDOW)
    assert (await run(api)).status_code == 200
    assert (await run(api)).status_code == 429
    theirs = await run_as(api, token)
    assert theirs.status_code == 200, theirs.text
    assert rate_headers(theirs)[:2] == (1, 0)


async def test_quota_exceeded_is_403_with_current_limit_and_plan(api: Api) -> None:
    await set_limits(api, monthly_quota=2, plan="pro")
    assert (await run(api)).status_code == 200
    assert (await run(api)).status_code == 200
    response = await run(api)
    assert response.status_code == 403, response.text
    body = response.json()
    assert set(body) == {"error", "message", "current", "limit", "plan"}
    assert body["error"] == "QUOTA_EXCEEDED"
    assert (body["current"], body["limit"], body["plan"]) == (2, 2, "pro")
    assert await used(api) == 2


async def test_a_call_refused_by_the_quota_does_not_run(api: Api) -> None:
    await set_limits(api, monthly_quota=1)
    assert (await run(api)).status_code == 200
    assert (await run(api, "crash")).status_code == 403
    activity = (await api.get("/activity", params={"type": "action_execution"})).json()
    latest = activity["activity"][0]
    assert (latest["actionName"], latest["errorCode"]) == ("crash", "QUOTA_EXCEEDED")


async def test_raising_the_quota_lets_calls_through_again(api: Api) -> None:
    await set_limits(api, monthly_quota=1)
    assert (await run(api)).status_code == 200
    assert (await run(api)).status_code == 403
    await set_limits(api, monthly_quota=3)
    assert (await run(api)).status_code == 200
    assert await used(api) == 2


async def test_every_call_that_reached_the_action_counts_once(api: Api) -> None:
    outcomes = {}
    for action in ("ok", "upstream", "broken", "crash", "hang"):
        with anyio.fail_after(5):
            outcomes[action] = (await run(api, action)).status_code
    assert outcomes == {"ok": 200, "upstream": 200, "broken": 400, "crash": 400, "hang": 400}
    assert await used(api) == 5


async def test_calls_refused_before_the_action_do_not_count(api: Api) -> None:
    await set_limits(api, rate_limit=100, monthly_quota=100)
    refused = [
        await run(api, "strict"),  # VALIDATION_ERROR
        await run(api, "hidden"),  # ACTION_NOT_ALLOWED
        await run(api, "missing"),  # NOT_FOUND
        await run(api, integrationName="nope"),  # INTEGRATION_NOT_FOUND
        await run(api, integrationName="keyed"),  # CONNECTION_REQUIRED
        await run(api, integrationAlias="nope"),  # INTEGRATION_NOT_FOUND
    ]
    assert [r.status_code for r in refused] == [400, 403, 404, 400, 400, 400]
    assert await used(api) == 0


async def test_each_org_has_its_own_quota(api: Api) -> None:
    await set_limits(api, monthly_quota=1)
    other_org, _workspace, token = await another_org(api)
    assert (await run(api)).status_code == 200
    assert (await run(api)).status_code == 403
    theirs = await run_as(api, token)
    assert theirs.status_code == 200, theirs.text
    assert await used(api, other_org) == 1


async def test_monthly_quota_starts_over_each_month(api: Api) -> None:
    moment = datetime(2025, 1, 31, 23, 59, tzinfo=UTC)
    quota = MonthlyQuota(api.gateway.store.usage, clock=lambda: moment)
    assert await quota.reserve(api.org_id, 2) == (True, 0)
    assert await quota.reserve(api.org_id, 2) == (True, 1)
    assert await quota.reserve(api.org_id, 2) == (False, 2)
    moment = datetime(2025, 2, 1, 0, 0, tzinfo=UTC)
    assert await quota.reserve(api.org_id, 2) == (True, 0)
    assert await quota.reserve(api.org_id, 0) == (False, 1)


async def test_concurrent_calls_never_exceed_the_quota(api: Api) -> None:
    await set_limits(api, monthly_quota=5)
    statuses: list[int] = []

    async def call() -> None:
        statuses.append((await run(api)).status_code)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            for _ in range(12):
                tasks.start_soon(call)
    assert sorted(statuses) == [200] * 5 + [403] * 7
    assert await used(api) == 5
