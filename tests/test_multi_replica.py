"""Three real `treadle serve` replicas on one PostgreSQL database behind real nginx
round-robin (examples/deploy/cluster.py, the layout of docs/deploy.md), once without Redis and
once with TREADLE_REDIS_URL: together they behave as one gateway.

Each cluster gets a fresh, empty database (tests/databases.py) that `treadle migrate` upgrades
before the replicas start with `--no-migrate`. On Redis every key and channel treadle uses is
named by org or scope ID, and each cluster's org is a fresh UUID, so parallel runs on one
Redis never count or hear each other's.

Runs in the PostgreSQL pass (TREADLE_TEST_DATABASE=postgresql), as .ci/run does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ToolListChangedNotification

from treadle.app import Gateway
from treadle.settings import Settings

from databases import ON_POSTGRESQL, database_url, drop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples" / "deploy"))

import cluster as deploy  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
MODERN = "2026-07-28"
LEGACY = "legacy"
WAIT = 10.0  # seconds: a deadline for a loaded CI machine, not a delay

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not ON_POSTGRESQL,
        reason="replicas need PostgreSQL: runs in the TREADLE_TEST_DATABASE=postgresql pass",
    ),
    pytest.mark.skipif(deploy.nginx_binary() is None, reason="nginx is not installed"),
]


@pytest.fixture(scope="module", params=["postgresql", "postgresql+redis"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[deploy.Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    data_dir = workdir / "database"
    tests = str(REPO / "tests")
    started = deploy.start(
        workdir=workdir,
        database_url=database_url(data_dir, migrated=False),
        redis_url=REDIS_URL if request.param.endswith("redis") else None,
        extra_env={
            # The conformance suite's fixture tools, as tests/conformance/live.py serves them.
            "TREADLE_EXTRA_INTEGRATIONS": "fixture_integration:integration",
            "PYTHONPATH": f"{tests}/conformance",
        },
    )
    try:
        yield started
    finally:
        started.stop()
        drop(data_dir)


# -- helpers -----------------------------------------------------------------------------


def upstream(response: httpx2.Response) -> str:
    """The replica nginx sent the request to (examples/deploy/nginx.conf adds the header)."""
    return response.headers["x-treadle-upstream"]


@dataclass
class Tenant:
    """A workspace (and possibly an org) of its own on the cluster, so tests do not share."""

    cluster: deploy.Cluster
    api_key: str
    org_id: str
    workspace_id: str

    def rest(self, base: str | None = None) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=f"{base or self.cluster.url}/api/v1",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )

    async def configure(self, alias: str, base: str | None = None, **fields: Any) -> None:
        body = {
            "integrationName": "kv-store",
            "integrationAlias": alias,
            "connectionStrategy": "fixed",
            "settings": {"persistence": {"scope": "workspace"}},
            **fields,
        }
        async with self.rest(base) as rest:
            made = await rest.post(f"/workspaces/{self.workspace_id}/integrations", json=body)
        assert made.status_code == 201, made.text

    async def server(self) -> tuple[str, str]:
        async with self.rest() as rest:
            made = await rest.post(
                "/mcp/servers", json={"workspaceId": self.workspace_id, "name": "replicas"}
            )
        assert made.status_code == 201, made.text
        return made.json()["server"]["id"], made.json()["token"]

    def execute_body(self, action: str, input: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {
            "workspaceId": self.workspace_id,
            "integrationName": "kv-store",
            "integrationAlias": "notes",
            "actionName": action,
            "input": input,
            **more,
        }


async def workspace_tenant(cluster: deploy.Cluster) -> Tenant:
    """A fresh workspace in the cluster's first org (created through the balancer)."""
    async with httpx2.AsyncClient(
        base_url=f"{cluster.url}/api/v1",
        headers={"Authorization": f"Bearer {cluster.api_key}"},
        timeout=30,
    ) as rest:
        made = await rest.post("/workspaces", json={"name": f"ws-{uuid.uuid4().hex[:12]}"})
    assert made.status_code == 201, made.text
    return Tenant(cluster, cluster.api_key, cluster.org_id, made.json()["workspace"]["id"])


async def org_tenant(cluster: deploy.Cluster, **limits: int) -> Tenant:
    """A fresh org (`treadle org create`) with the given limits, so its budgets are its own."""
    done = await anyio.to_thread.run_sync(
        lambda: cluster.treadle("org", "create", "--name", f"org-{uuid.uuid4().hex[:8]}", "--json")
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    settings = Settings(
        data_dir=cluster.admin_dir,
        database_url=cluster.env["TREADLE_DATABASE_URL"],
        secret_key=cluster.env["TREADLE_SECRET_KEY"],
    )
    gateway = await Gateway.open(settings)
    try:
        async with gateway.store.db.write("test") as txn:
            await gateway.store.orgs.set_limits(txn, shown["orgId"], **limits)
    finally:
        await gateway.close()
    return Tenant(cluster, shown["apiKey"], shown["orgId"], shown["workspaceId"])


@asynccontextmanager
async def mcp_client(
    url: str, token: str, era: str, seen: list[str] | None = None, **kwargs: Any
) -> AsyncIterator[Client]:
    async def note(response: httpx2.Response) -> None:
        if seen is not None:
            seen.append(response.headers.get("x-treadle-upstream", url))

    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx2.Timeout(30),
            event_hooks={"response": [note]},
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode=era, **kwargs) as client,
    ):
        yield client


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


def replayed(response: httpx2.Response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


class Changes:
    """tools/list_changed as a client receives them; `wait` has a deadline."""

    def __init__(self) -> None:
        self.count = 0
        self.faults: list[Exception] = []
        self._moved = anyio.Event()

    async def on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.faults.append(message)
        elif isinstance(message, ToolListChangedNotification):
            self.seen()

    def seen(self) -> None:
        self.count += 1
        self._moved.set()
        self._moved = anyio.Event()

    async def wait(self, count: int) -> None:
        with anyio.fail_after(WAIT):
            while self.count < count:
                await self._moved.wait()


# -- a change through one replica, on the next request to every other -------------------


async def test_a_change_through_any_replica_is_seen_by_every_replica_next(
    cluster: deploy.Cluster,
) -> None:
    tenant = await workspace_tenant(cluster)
    server_id, token = await tenant.server()
    for round, writer in enumerate(cluster.replicas):
        alias = f"notes{round}"
        await tenant.configure(alias, base=writer.url)
        for reader in cluster.replicas:
            async with tenant.rest(reader.url) as rest:
                listed = await rest.get(f"/workspaces/{tenant.workspace_id}/integrations")
            assert listed.status_code == 200, listed.text
            aliases = {item["integrationAlias"] for item in listed.json()["integrations"]}
            assert aliases == {f"notes{n}" for n in range(round + 1)}, reader.url
            async with mcp_client(f"{reader.url}/mcp/{server_id}", token, MODERN) as client:
                assert f"{alias}__put" in await tool_names(client), reader.url


# -- 2026-07-28: nothing sticky ----------------------------------------------------------


async def test_listen_on_one_replica_hears_a_change_made_through_another(
    cluster: deploy.Cluster,
) -> None:
    tenant = await workspace_tenant(cluster)
    await tenant.configure("notes")
    server_id, token = await tenant.server()
    listener, *writers = cluster.replicas
    changes = Changes()
    async with (
        mcp_client(f"{listener.url}/mcp/{server_id}", token, MODERN) as client,
        client.listen(tools_list_changed=True) as sub,
        anyio.create_task_group() as tasks,
    ):

        async def drain() -> None:
            async for _event in sub:
                changes.seen()

        tasks.start_soon(drain)
        for number, writer in enumerate(writers, start=1):
            await tenant.configure(f"more{number}", base=writer.url)
            await changes.wait(number)
        assert {"more1__put", "more2__put"} <= await tool_names(client)
        tasks.cancel_scope.cancel()


async def test_modern_calls_through_the_balancer_land_anywhere_and_all_work(
    cluster: deploy.Cluster,
) -> None:
    tenant = await workspace_tenant(cluster)
    await tenant.configure("notes")
    server_id, token = await tenant.server()
    seen: list[str] = []
    async with mcp_client(f"{cluster.url}/mcp/{server_id}", token, MODERN, seen) as client:
        for n in range(6):
            put = await client.call_tool("notes__put", {"key": f"k{n}", "value": n})
            assert not put.is_error, put
            got = await client.call_tool("notes__get", {"key": f"k{n}"})
            assert got.structured_content == {"key": f"k{n}", "found": True, "value": n}
    assert set(seen) == {f"127.0.0.1:{r.port}" for r in cluster.replicas}


# -- one budget across replicas ----------------------------------------------------------


async def executes_at_once(tenant: Tenant, count: int) -> list[httpx2.Response]:
    answers: list[httpx2.Response] = []
    async with tenant.rest() as rest:

        async def one(n: int) -> None:
            body = tenant.execute_body("put", {"key": f"k{n}", "value": n})
            answers.append(await rest.post("/actions/execute", json=body))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                for n in range(count):
                    tasks.start_soon(one, n)
    return answers


async def test_a_rate_limit_of_20_lets_exactly_20_of_30_through_across_replicas(
    cluster: deploy.Cluster,
) -> None:
    # A day-long window: the test cannot straddle two windows' sliding estimate.
    tenant = await org_tenant(cluster, rate_limit=20, rate_window_seconds=86_400)
    await tenant.configure("notes")
    answers = await executes_at_once(tenant, 30)
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: 20, 429: 10}, [a.text for a in answers if a.status_code != 200]
    assert {a.json()["error"] for a in answers if a.status_code == 429} == {"RATE_LIMITED"}
    assert len({upstream(a) for a in answers}) == len(cluster.replicas)


async def test_the_monthly_quota_is_exact_at_its_limit_across_replicas(
    cluster: deploy.Cluster,
) -> None:
    tenant = await org_tenant(cluster, monthly_quota=12, rate_limit=1000)
    await tenant.configure("notes")
    answers = await executes_at_once(tenant, 30)
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: 12, 403: 18}, [a.text for a in answers if a.status_code != 200]
    assert {a.json()["error"] for a in answers if a.status_code == 403} == {"QUOTA_EXCEEDED"}
    assert len({upstream(a) for a in answers}) == len(cluster.replicas)


# -- exactly once across replicas --------------------------------------------------------


async def list_items(tenant: Tenant, key: str) -> list[Any]:
    async with tenant.rest() as rest:
        got = await rest.post("/actions/execute", json=tenant.execute_body("get", {"key": key}))
    assert got.status_code == 200, got.text
    items: list[Any] = got.json()["output"]["value"]
    return items


async def test_an_approval_started_on_one_replica_runs_once_when_retried_on_others(
    cluster: deploy.Cluster,
) -> None:
    tenant = await workspace_tenant(cluster)
    await tenant.configure("notes")
    async with tenant.rest() as rest:
        policy = await rest.post(
            "/approval-policies",
            json={
                "workspaceId": tenant.workspace_id,
                "name": "gate add_to_list",
                "decision": "require_approval",
                "integrationNames": ["kv-store"],
                "actionNames": ["add_to_list"],
            },
        )
    assert policy.status_code == 201, policy.text
    made = await anyio.to_thread.run_sync(
        lambda: cluster.treadle("keys", "create", "--name", "reviewer", "--json")
    )
    assert made.returncode == 0, made.stderr
    reviewer = json.loads(made.stdout)["apiKey"]
    first, second, *others = cluster.replicas
    body = tenant.execute_body("add_to_list", {"key": "refunds", "value": "order-123"})
    body["idempotencyKey"] = f"refund-{uuid.uuid4().hex}"

    async with tenant.rest(first.url) as rest:
        asked = await rest.post("/actions/execute", json=body)
    assert asked.status_code == 202, asked.text
    approval_id = asked.json()["approval"]["id"]

    async with httpx2.AsyncClient(timeout=30) as http:
        decided = await http.post(
            f"{second.url}/api/v1/approvals/{approval_id}/approve",
            json={},
            headers={"Authorization": f"Bearer {reviewer}"},
        )
    assert decided.status_code == 200, decided.text

    answers: list[httpx2.Response] = []
    bases = [r.url for r in [second, *others, first]] + [cluster.url] * 3

    async def retry(base: str) -> None:
        async with tenant.rest(base) as rest:
            answers.append(await rest.post("/actions/execute", json=body))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for base in bases:
                tasks.start_soon(retry, base)
    fresh = [a for a in answers if a.status_code == 200 and not replayed(a)]
    assert len(fresh) == 1, [(a.status_code, a.text) for a in answers]
    for answer in answers:
        if answer.status_code == 200:
            assert answer.json() == fresh[0].json()
        else:
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"] in ("IDEMPOTENCY_KEY_IN_USE", "APPROVAL_NOT_PENDING")
    assert await list_items(tenant, "refunds") == ["order-123"]
    async with tenant.rest() as rest:
        found = await rest.get(f"/approvals/{approval_id}")
    assert found.json()["approval"]["executedAt"] is not None


async def test_idempotent_retries_across_replicas_run_once(cluster: deploy.Cluster) -> None:
    tenant = await workspace_tenant(cluster)
    await tenant.configure("notes")
    body = tenant.execute_body("add_to_list", {"key": "events", "value": "once"})
    body["idempotencyKey"] = f"event-{uuid.uuid4().hex}"
    answers: list[httpx2.Response] = []

    async def attempt(base: str) -> None:
        async with tenant.rest(base) as rest:
            answers.append(await rest.post("/actions/execute", json=body))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for base in [r.url for r in cluster.replicas] * 2 + [cluster.url] * 3:
                tasks.start_soon(attempt, base)
    assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
    assert len([a for a in answers if a.status_code == 200 and not replayed(a)]) == 1
    assert {a.json()["error"] for a in answers if a.status_code == 409} <= {
        "IDEMPOTENCY_KEY_IN_USE"
    }
    assert await list_items(tenant, "events") == ["once"]
    # Later retries, wherever they land, replay the one answer.
    for replica in cluster.replicas:
        async with tenant.rest(replica.url) as rest:
            again = await rest.post("/actions/execute", json=body)
        assert again.status_code == 200, again.text
        assert replayed(again)
    assert await list_items(tenant, "events") == ["once"]


# -- handshake-era sessions through the balancer -----------------------------------------


async def test_a_handshake_session_continues_on_every_replica(cluster: deploy.Cluster) -> None:
    tenant = await workspace_tenant(cluster)
    await tenant.configure("notes")
    server_id, token = await tenant.server()
    seen: list[str] = []
    async with mcp_client(f"{cluster.url}/mcp/{server_id}", token, LEGACY, seen) as client:
        for n in range(10):
            put = await client.call_tool("notes__put", {"key": f"s{n}", "value": n})
            assert not put.is_error, put
            assert "notes__get" in await tool_names(client)
    assert set(seen) == {f"127.0.0.1:{r.port}" for r in cluster.replicas}


async def test_a_session_get_stream_hears_a_change_made_through_any_replica(
    cluster: deploy.Cluster,
) -> None:
    tenant = await workspace_tenant(cluster)
    await tenant.configure("notes")
    server_id, token = await tenant.server()
    changes = Changes()
    async with mcp_client(
        f"{cluster.url}/mcp/{server_id}", token, LEGACY, message_handler=changes.on_message
    ) as client:
        # The round trip also lets the client's standalone GET stream open first.
        await client.list_tools()
        for number, writer in enumerate(cluster.replicas, start=1):
            await tenant.configure(f"more{number}", base=writer.url)
            await changes.wait(number)
        assert {"more1__put", "more2__put", "more3__put"} <= await tool_names(client)
    assert changes.faults == []


async def test_a_deleted_session_is_gone_on_every_replica(cluster: deploy.Cluster) -> None:
    tenant = await workspace_tenant(cluster)
    await tenant.configure("notes")
    server_id, token = await tenant.server()
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "replicas", "version": "1"},
        },
    }
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    path = f"/mcp/{server_id}"
    async with httpx2.AsyncClient(timeout=30) as http:
        opened = await http.post(f"{cluster.url}{path}", json=initialize, headers=headers)
        assert opened.status_code == 200, opened.text
        session = {**headers, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
        session["MCP-Protocol-Version"] = "2025-11-25"
        for replica in cluster.replicas:
            listed = await http.post(f"{replica.url}{path}", json=listing, headers=session)
            assert listed.status_code == 200, (replica.url, listed.text)
        ended = await http.delete(f"{cluster.replicas[0].url}{path}", headers=session)
        assert ended.status_code in (200, 204), ended.text
        for replica in cluster.replicas:
            gone = await http.post(f"{replica.url}{path}", json=listing, headers=session)
            assert gone.status_code == 404, (replica.url, gone.text)


# -- the MCP conformance suite through the balancer --------------------------------------

SCENARIOS = {
    # Handshake era: every scenario's session continues on whichever replica a request hits.
    "2025-11-25": (
        "server-initialize",
        "server-session-lifecycle",
        "ping",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-error",
        "tools-call-with-progress",
        "tools-call-with-logging",
        "dns-rebinding-protection",
        "tools-call-sampling",
        "tools-call-elicitation",
    ),
    MODERN: (
        "tools-list",
        "tools-call-simple-text",
        "tools-call-image",
        "tools-call-audio",
        "tools-call-embedded-resource",
        "tools-call-mixed-content",
        "tools-call-error",
        "tools-call-with-progress",
        "server-stateless",
        "dns-rebinding-protection",
        "http-header-validation",
    ),
}


# Scenarios that pass against one replica and fail through the balancer, and why. A listed one
# that passes fails the test: take it off the list.
FAILS_THROUGH_THE_BALANCER: dict[tuple[str, str], str] = {}


def run_conformance(
    cluster: deploy.Cluster, version: str, scenarios: tuple[str, ...], out: Path
) -> list[Any]:
    """The suite's scenarios against the balancer, a few at a time; their results."""
    sys.path.insert(0, str(REPO / "tests" / "conformance"))
    import run as suite
    from fixture_integration import tool_overrides
    from live import BearerProxy, node_env, npm_tool

    tenant_id = cluster.workspace_id
    rest = httpx2.Client(
        base_url=f"{cluster.url}/api/v1",
        headers={"Authorization": f"Bearer {cluster.api_key}"},
        timeout=30,
    )
    with rest:
        alias = f"fx{uuid.uuid4().hex[:6]}"
        made = rest.post(
            f"/workspaces/{tenant_id}/integrations",
            json={
                "integrationName": "conformance",
                "integrationAlias": alias,
                "connectionStrategy": "fixed",
            },
        )
        assert made.status_code == 201, made.text
        server = rest.post(
            "/mcp/servers",
            json={
                "workspaceId": tenant_id,
                "name": f"conformance {alias}",
                "toolOverrides": tool_overrides(alias),
            },
        )
        assert server.status_code == 201, server.text
    server_id, token = server.json()["server"]["id"], server.json()["token"]
    results: list[Any] = []
    with BearerProxy(cluster.port, token) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/mcp/{server_id}"
        running = []
        for index, scenario in enumerate(scenarios):
            command = [str(npm_tool("conformance")), "server", "--url", url, "--scenario"]
            command += [scenario, "--spec-version", version, "-o", str(out / str(index))]
            if (scenario, version) in FAILS_THROUGH_THE_BALANCER:
                command += ["--timeout", "10000"]  # it times out: do not wait the full 30 s
            running.append(
                subprocess.Popen(
                    command, env=node_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            if len(running) == 3 or index == len(scenarios) - 1:
                for process in running:
                    process.wait(timeout=300)
                running = []
        for index in range(len(scenarios)):
            results += suite._collect(out / str(index), version)
    return results


@pytest.mark.parametrize("version", sorted(SCENARIOS))
def test_the_conformance_suite_passes_through_the_balancer(
    cluster: deploy.Cluster, version: str, tmp_path: Path
) -> None:
    sys.path.insert(0, str(REPO / "tests" / "conformance"))
    from live import which_node_tool_missing

    missing = which_node_tool_missing()
    if missing is not None:
        pytest.skip(missing)
    results = run_conformance(cluster, version, SCENARIOS[version], tmp_path)
    assert {r.scenario for r in results} == set(SCENARIOS[version])
    unexpected = [
        f"{r.scenario}: {'; '.join(r.failures) or 'passes: take it off the list'}"
        for r in results
        if r.ok == ((r.scenario, version) in FAILS_THROUGH_THE_BALANCER)
    ]
    assert unexpected == []
