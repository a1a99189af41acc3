"""Memory that per-call state may take stays bounded however many calls come and go.

Each test drives many calls (or deliveries, or connections) through one structure that used to
keep an entry per call, and checks the structure's size while they run and after they end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import anyio
import anyio.lowlevel
import pytest
from mcp import Client

from test_gates_execute import Gates, open_gates, pending
from test_gates_webhooks import Delivered, receiver
from treadle.engine.approvals import ApprovalDesk
from treadle.engine.webhooks import WebhookNotifier
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime
from treadle.mcp.server import PAGE_BYTES, encode_cursor
from treadle.mcp.toolset import ToolsetCache
from treadle.net.guard import build_http_client
from treadle.oauth.refresh import _Locks
from treadle.settings import Settings
from treadle.store.gates import Approval
from treadle.store.versioned_memo import VersionedMemo

from mcp_harness import McpEnv
from mcp_harness import test_catalog as kit_catalog

pytestmark = pytest.mark.anyio


# -- approvals waited on ------------------------------------------------------------------


@pytest.fixture
async def gates(settings: Settings) -> AsyncIterator[Gates]:
    async with open_gates(settings) as opened:
        yield opened


async def pending_approvals(gates: Gates, count: int) -> list[Approval]:
    await gates.policy()
    made: list[Approval] = []
    for index in range(count):
        approval = pending(await gates.send({"to": f"user{index}@example.com"}))
        found = await gates.gateway.store.approvals.get(approval["id"])
        assert found is not None
        made.append(found)
    return made


def waited_on(desk: ApprovalDesk) -> int:
    return len(desk._waiters)


async def test_approvals_nobody_waits_for_any_more_are_forgotten(gates: Gates) -> None:
    """Waits that end every way a wait can end: decided here, out of time, cancelled."""
    desk = gates.gateway.approvals
    approvals = await pending_approvals(gates, 30)
    decided, timed_out, cancelled = approvals[:10], approvals[10:20], approvals[20:]
    outcomes: dict[str, str] = {}

    async def wait(approval: Approval, seconds: float) -> None:
        ended = await desk.wait(approval, anyio.current_time() + seconds)
        outcomes[approval.id] = ended.status

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for approval in decided:
                tg.start_soon(wait, approval, 30)
            for approval in timed_out:
                tg.start_soon(wait, approval, 0.05)
            async with anyio.create_task_group() as doomed:
                for approval in cancelled:
                    doomed.start_soon(wait, approval, 30)
                # Every waiter registers before its first suspension.
                await anyio.lowlevel.checkpoint()
                assert waited_on(desk) == 30
                doomed.cancel_scope.cancel()
            for approval in decided:
                answer = await gates.decide(approval.id, "approve")
                assert answer.status_code == 200, answer.text
    assert {outcomes[a.id] for a in decided} == {"approved"}
    assert {outcomes[a.id] for a in timed_out} == {"pending"}
    assert not any(a.id in outcomes for a in cancelled)
    assert waited_on(desk) == 0


async def test_several_calls_waiting_on_one_approval_are_all_woken_and_forgotten(
    gates: Gates,
) -> None:
    desk = gates.gateway.approvals
    (approval,) = await pending_approvals(gates, 1)
    ended: list[str] = []

    async def wait() -> None:
        ended.append((await desk.wait(approval, anyio.current_time() + 30)).status)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(wait)
            await anyio.lowlevel.checkpoint()
            assert waited_on(desk) == 1
            assert len(desk._waiters[approval.id]) == 5
            assert (await gates.decide(approval.id, "reject")).status_code == 200
    assert ended == ["rejected"] * 5
    assert waited_on(desk) == 0


# -- webhook deliveries -------------------------------------------------------------------

IN_FLIGHT = 3
QUEUED = 5


async def test_webhooks_to_a_receiver_that_hangs_stay_within_their_bound() -> None:
    """A receiver that answers nothing: at most IN_FLIGHT deliveries are under way, QUEUED
    wait behind them, and later ones are dropped (counted) instead of piling up."""
    delivered = Delivered()
    async with receiver() as hooks, build_http_client() as http:
        hooks.release = anyio.Event()  # every request waits until this is set
        notifier = WebhookNotifier(
            http,
            backoff_seconds=0.01,
            allow_private_network=True,
            queue_size=QUEUED,
            max_in_flight=IN_FLIGHT,
            on_outcome=delivered.record,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            for index in range(IN_FLIGHT):
                notifier.notify(hooks.url, "whsec_test", "approval.pending", {"n": index})
            for _ in range(IN_FLIGHT):
                await hooks.next()
            for index in range(QUEUED):
                notifier.notify(hooks.url, "whsec_test", "approval.pending", {"queued": index})
            # Let the worker run: with every slot taken it must leave these in the queue.
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            assert (notifier.in_flight, notifier.queued) == (IN_FLIGHT, QUEUED)
            assert hooks.nothing_arrived()
            # The queue is full: these are dropped at once, never held in memory.
            for index in range(10):
                notifier.notify(hooks.url, "whsec_test", "approval.pending", {"late": index})
            assert notifier.dropped == 10
            assert (notifier.in_flight, notifier.queued) == (IN_FLIGHT, QUEUED)

            hooks.release.set()
            await delivered.at_least(IN_FLIGHT + QUEUED)
            tg.cancel_scope.cancel()
    assert list(delivered) == [("approval.pending", 200)] * (IN_FLIGHT + QUEUED)
    assert (notifier.in_flight, notifier.queued) == (0, 0)


# -- resync registrations ------------------------------------------------------------------


async def test_registrations_without_a_connection_do_not_stay_in_the_hub(
    mcp_env: McpEnv,
) -> None:
    """A listen stream the SDK refuses after the hub recorded its list (too many streams, no
    request id) never subscribes; the next pass forgets it instead of rebuilding its list
    forever."""
    hub = mcp_env.runtime.hub
    store = mcp_env.runtime.gateway.store
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    keys: list[str] = []
    for _ in range(20):
        server_id = await mcp_env.create_server()
        await hub.remember(await bind_server(store, server_id, None))
        keys.append(server_id)
    await hub.resync()
    assert not any(key in hub.servers for key in keys)

    # Clients that come and go leave nothing behind either.
    for era in ("legacy", "2026-07-28"):
        for _ in range(5):
            async with mcp_env.connect("memory", era) as client:
                await client.list_tools()
    assert mcp_env.server_id not in hub.servers


# -- structures that were bounded already: their bounds hold ------------------------------


async def test_the_configuration_memo_keeps_at_most_its_cap() -> None:
    memo: VersionedMemo[str, str] = VersionedMemo(max_entries=10)
    for version in range(3):
        for index in range(100):
            key = f"key{index}"

            async def load(key: str = key) -> str:
                return key.upper()

            assert await memo.get(key, version, load) == key.upper()
            assert len(memo._entries) <= 10

    async def gone() -> None:
        return None

    # Keys that load nothing (an unknown workspace, a wrong token) take no entry at all.
    for index in range(100):
        assert await memo.get(f"missing{index}", 3, gone) is None
    assert len(memo._entries) <= 10
    assert not any(key.startswith("missing") for key in memo._entries)


async def test_refresh_locks_are_dropped_when_nobody_holds_or_waits_for_them() -> None:
    locks = _Locks()
    entered = 0

    async def hold(key: str, release: anyio.Event) -> None:
        nonlocal entered
        async with locks.hold(key):
            entered += 1
            await release.wait()

    release = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for index in range(50):
                # Two callers per connection: one holds the lock, one waits for it.
                tg.start_soon(hold, f"conn{index}", release)
                tg.start_soon(hold, f"conn{index}", release)
            await anyio.lowlevel.checkpoint()
            assert len(locks._locks) == 50
            release.set()
    assert entered == 100
    assert locks._locks == {}


# -- tool lists: kept pages and kept tool sets --------------------------------------------


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_forged_cursors_are_answered_but_keep_no_pages(mcp_env: McpEnv, era: str) -> None:
    """Any offset is a valid cursor to answer, but only the list's own pages are kept."""
    await mcp_env.configure("testkit", integrationAlias="kit")
    server_id = await mcp_env.create_server()
    runtime = McpRuntime(mcp_env.runtime.gateway, page_size=2)
    binding = await bind_server(runtime.gateway.store, server_id, None)
    async with Client(runtime.bound_face(binding).server, mode=era) as client:
        listed = await client.list_tools()
        while listed.next_cursor:
            listed = await client.list_tools(cursor=listed.next_cursor)
        toolset = runtime.toolsets.latest(binding.cache_key)
        assert toolset is not None
        pages = toolset.pages(2, PAGE_BYTES)
        kept = set(pages.shaped)
        assert {start for start, _ in kept} == set(pages.cuts[:-1])
        for offset in range(300):
            page = await client.list_tools(cursor=encode_cursor(offset), cache_mode="refresh")
            assert len(page.tools) <= 2
        assert set(pages.shaped) == kept


async def test_the_tool_set_cache_keeps_at_most_its_cap_and_the_latest_used(
    mcp_env: McpEnv,
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    store = mcp_env.runtime.gateway.store
    cache = ToolsetCache(store, mcp_env.runtime.gateway.catalog, max_entries=5)
    bindings = [await bind_server(store, await mcp_env.create_server(), None) for _ in range(12)]
    for binding in bindings:
        assert [t.name for t in (await cache.get(binding)).tools] == ["kit__echo"]
        assert len(cache) <= 5
    await cache.get(bindings[0])  # used again: now the latest
    await cache.get(bindings[-1])
    kept = {b.cache_key for b in bindings if cache.latest(b.cache_key) is not None}
    assert len(kept) == 5
    assert {bindings[0].cache_key, bindings[-1].cache_key} <= kept


async def test_a_tool_set_current_at_a_version_is_answered_again_until_a_version_moves(
    mcp_env: McpEnv,
) -> None:
    """At one configuration version and one catalog version the answer cannot change: it is
    given again as it is (a 2026-07-28 call asks twice), and asked afresh once either moves."""
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    store = mcp_env.runtime.gateway.store
    catalog = kit_catalog()  # its own: the gateway's is shared with the other faces
    cache = ToolsetCache(store, catalog)
    binding = await bind_server(store, await mcp_env.create_server(), None)
    first = await cache.current(binding, await store.config.snapshot())
    assert await cache.current(binding, await store.config.snapshot()) is first

    await mcp_env.configure("testkit", integrationAlias="kit2", allowedActions=["echo"])
    moved = await cache.current(binding, await store.config.snapshot())
    assert moved is not first
    assert {t.name for t in moved.toolset.tools} == {"kit__echo", "kit2__echo"}

    kit = catalog.get("testkit")
    assert kit is not None
    catalog.add(replace(kit, name="testkit-copy"))
    assert await cache.current(binding, await store.config.snapshot()) is not moved


async def test_a_deleted_server_or_workspace_takes_its_tool_set_with_it(
    mcp_env: McpEnv,
) -> None:
    await mcp_env.configure("testkit", integrationAlias="kit", allowedActions=["echo"])
    store = mcp_env.runtime.gateway.store
    cache = ToolsetCache(store, mcp_env.runtime.gateway.catalog)
    server = await bind_server(store, await mcp_env.create_server(), None)
    await cache.get(server)
    deleted = await mcp_env.rest.delete(f"/api/v1/mcp/servers/{server.cache_key}")
    assert deleted.status_code in (200, 204), deleted.text
    assert (await cache.get(server)).tools == ()
    assert cache.latest(server.cache_key) is None

    other = await bind_server(store, await mcp_env.create_server(), None)
    await cache.get(other)
    gone = await mcp_env.rest.delete(f"/api/v1/workspaces/{mcp_env.workspace_id}")
    assert gone.status_code in (200, 204), gone.text
    assert (await cache.get(other)).tools == ()
    assert len(cache) == 0
