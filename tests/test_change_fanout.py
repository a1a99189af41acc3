"""Configuration changes reach every replica: two gateways on one database, the change made
through A, seen by B's very next REST read and told to B's MCP clients by B's change bus.

The bus is PostgreSQL's LISTEN/NOTIFY (when the suite runs on PostgreSQL) or Redis pub/sub
(on either database). B's resync hub is built not to poll at all, so a list_changed that
arrives can only have come through the bus; waits are on events, under deadlines.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest
from mcp import Client

from test_mcp_resync import LEGACY, MODERN, Watch
from test_shared_limits import REDIS_URL
from treadle.app import Gateway
from treadle.mcp.binds import bind_server
from treadle.mcp.runtime import McpRuntime
from treadle.settings import Settings
from treadle.store import ChangeEvent
from treadle.store.pg_changes import PostgresChanges
from treadle.store.redis_changes import RedisChanges

from conftest import Api, api_on, client_for
from databases import ON_POSTGRESQL

pytestmark = pytest.mark.anyio

BUSES = [*(["postgresql"] if ON_POSTGRESQL else []), "redis"]
WAIT_SECONDS = 5.0  # well under the Redis backstop poll: an arrival is the bus's doing


@dataclass
class Heard:
    """The change events one gateway's database hands its listeners."""

    events: list[ChangeEvent] = field(default_factory=list)
    _moved: anyio.Event = field(default_factory=anyio.Event)

    def __call__(self, event: ChangeEvent) -> None:
        self.events.append(event)
        self._moved.set()
        self._moved = anyio.Event()

    async def wait(self, count: int) -> list[ChangeEvent]:
        with anyio.fail_after(WAIT_SECONDS):
            while len(self.events) < count:
                await self._moved.wait()
        return self.events


@dataclass
class Replicas:
    a: Api
    b: Api
    b_runtime: McpRuntime
    heard_a: Heard
    heard_b: Heard

    async def configure(self, alias: str) -> dict[str, object]:
        return await self.a.configure("kv-store", integrationAlias=alias)


@pytest.fixture(params=BUSES)
async def replicas(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Replicas]:
    if request.param == "redis":
        settings = dataclasses.replace(settings, redis_url=REDIS_URL)
    async with AsyncExitStack() as stack:
        gateways = []
        for _ in range(2):
            gateway = await Gateway.open(settings)
            stack.push_async_callback(gateway.close)
            gateways.append(gateway)
        a_gateway, b_gateway = gateways
        bus = b_gateway.store.db.changes
        assert isinstance(bus, RedisChanges if request.param == "redis" else PostgresChanges)
        a = await stack.enter_async_context(api_on(a_gateway))
        b_client = await stack.enter_async_context(client_for(b_gateway, a.api_key))
        b = Api(b_client, b_gateway, a.org_id, a.workspace_id, a.api_key)
        heard_a, heard_b = Heard(), Heard()
        stack.callback(a_gateway.store.db.subscribe(heard_a))
        stack.callback(b_gateway.store.db.subscribe(heard_b))
        # B's hub never polls: only its bus can wake it for A's changes.
        runtime = McpRuntime(b_gateway, poll_seconds=math.inf)
        tasks = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tasks.cancel_scope.cancel)
        for gateway in gateways:
            tasks.start_soon(gateway.run_background)
        tasks.start_soon(runtime.hub.run)
        for gateway in gateways:
            changes = gateway.store.db.changes
            if isinstance(changes, RedisChanges):
                with anyio.fail_after(WAIT_SECONDS):
                    await changes.subscribed.wait()
        await _settle(a_gateway, heard_a, heard_b)
        yield Replicas(a, b, runtime, heard_a, heard_b)


async def _settle(a_gateway: Gateway, *heard: Heard) -> None:
    """Start every test with nothing heard: the setup's own changes (the org, its workspace,
    its key) may still be on their way to B when the fixture subscribes. Notifications arrive
    in commit order, so once both have heard a marker committed after them, none is left."""
    async with a_gateway.store.db.write("test") as txn:
        await txn.changed(
            org_id="-",
            workspace_id=None,
            target_type="test",
            target_id="settled",
            change="marked",
        )
    for listener in heard:
        with anyio.fail_after(WAIT_SECONDS):
            while not any(event.target_id == "settled" for event in listener.events):
                await listener.wait(len(listener.events) + 1)
        listener.events.clear()


def test_on_postgresql_the_hub_waits_for_notifications_and_never_polls() -> None:
    assert PostgresChanges.poll_seconds == math.inf
    assert RedisChanges.poll_seconds < math.inf  # at most once: a backstop reads the version


async def test_a_change_through_a_is_in_bs_very_next_rest_read(replicas: Replicas) -> None:
    path = f"/workspaces/{replicas.a.workspace_id}/integrations"
    assert (await replicas.b.get(path)).json()["total"] == 0  # B has read (and cached) it

    await replicas.configure("notes")

    listed = await replicas.b.get(path)
    assert listed.status_code == 200
    assert [i["integrationAlias"] for i in listed.json()["integrations"]] == ["notes"]


@asynccontextmanager
async def client_on_b(replicas: Replicas, era: str, watch: Watch) -> AsyncIterator[Client]:
    created = await replicas.a.post(
        "/mcp/servers", {"workspaceId": replicas.a.workspace_id, "name": "fan-out"}
    )
    assert created.status_code == 201, created.text
    binding = await bind_server(replicas.b.gateway.store, created.json()["server"]["id"], None)
    face = replicas.b_runtime.bound_face(binding)
    async with Client(face.server, mode=era, message_handler=watch.on_message) as client:
        await client.list_tools()  # registered with B's hub
        if era == LEGACY:
            yield client
        else:
            async with (
                client.listen(tools_list_changed=True) as sub,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(watch.drain, sub)
                yield client
                tg.cancel_scope.cancel()
    assert watch.faults == []


@pytest.mark.parametrize("era", [LEGACY, MODERN])
async def test_bs_mcp_clients_are_told_about_a_change_made_through_a(
    replicas: Replicas, era: str
) -> None:
    watch = Watch(era)
    async with client_on_b(replicas, era, watch) as client:
        assert (await client.list_tools()).tools == []

        await replicas.configure("notes")

        await watch.wait(1, WAIT_SECONDS)
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names
        assert all(name.startswith("notes__") for name in names)


async def test_a_rolled_back_change_is_announced_to_no_one(replicas: Replicas) -> None:
    store = replicas.a.gateway.store

    class Abandoned(Exception):
        pass

    async def abandon() -> None:
        async with store.db.write("test") as txn:
            await store.workspaces.create(txn, replicas.a.org_id, "never")
            raise Abandoned

    with pytest.raises(Abandoned):
        await abandon()
    created = await replicas.a.post("/workspaces", {"name": "kept"})
    assert created.status_code == 201, created.text

    # Events arrive in commit order: once B hears the kept workspace, it would have heard
    # the abandoned one before it.
    [heard] = await replicas.heard_b.wait(1)
    assert (heard.target_type, heard.change) == ("workspace", "created")
    assert heard.target_id == created.json()["workspace"]["id"]


async def test_each_replica_hears_every_change_once_its_own_included(
    replicas: Replicas,
) -> None:
    await replicas.configure("notes")
    [from_a] = await replicas.heard_b.wait(1)
    created = await replicas.b.post("/workspaces", {"name": "through b"})
    assert created.status_code == 201, created.text

    # A heard its own change from its own commit, and B's through the bus: once each.
    heard = await replicas.heard_a.wait(2)
    assert heard == [from_a, replicas.heard_b.events[1]]
    assert len(replicas.heard_b.events) == 2
