"""Run sizes (full and --quick) and the workspace set-up done through treadle's REST API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import httpx2

ONE_TOOL = "bench__echo"
ARGS = {"text": "hello", "count": 3}


@dataclass(frozen=True)
class Sizes:
    quick: bool
    blocks: int  # alternating treadle/baseline blocks per measurement
    calls_c1: int  # per server, per era
    calls_c32: int
    sdk_calls: int  # SDK-Client sanity rows (concurrency 1)
    aliases: int  # x 25 actions
    cold_reps: int
    cached_reps: int
    big_calls: int  # tools/call with the large workspace vs one tool
    resync_rounds: int
    resync_http: int
    resync_stdio: int
    resync_listen: int
    idle_sessions: int
    listen_streams: int
    rest_c1: int
    rest_c32: int
    # Time caps (seconds) per interleaved measurement, both sides together: a loaded machine
    # yields fewer samples rather than a run over budget.
    c1_seconds: float = 24
    c32_seconds: float = 40
    sdk_seconds: float = 12
    listing_seconds: float = 30  # further cold listings of the large workspace start before


FULL = Sizes(
    quick=False,
    blocks=4,
    calls_c1=500,
    calls_c32=2000,
    sdk_calls=150,
    aliases=400,
    cold_reps=3,
    cached_reps=5,
    big_calls=400,
    resync_rounds=10,
    resync_http=20,
    resync_stdio=10,
    resync_listen=20,
    idle_sessions=1000,
    listen_streams=1000,
    rest_c1=500,
    rest_c32=2000,
)
QUICK = Sizes(
    quick=True,
    blocks=2,
    calls_c1=120,
    calls_c32=400,
    sdk_calls=30,
    aliases=40,
    cold_reps=1,
    cached_reps=2,
    big_calls=80,
    resync_rounds=3,
    resync_http=23,
    resync_stdio=2,
    resync_listen=25,
    idle_sessions=200,
    listen_streams=200,
    rest_c1=120,
    rest_c32=400,
)


async def create_workspace(rest: httpx2.AsyncClient, name: str) -> str:
    response = await rest.post("/workspaces", json={"name": name})
    response.raise_for_status()
    workspace_id: str = response.json()["workspace"]["id"]
    return workspace_id


async def configure(
    rest: httpx2.AsyncClient, workspace_id: str, integration: str, alias: str, **fields: Any
) -> dict[str, Any]:
    body = {
        "integrationName": integration,
        "integrationAlias": alias,
        "connectionStrategy": "fixed",
        **fields,
    }
    response = await rest.post(f"/workspaces/{workspace_id}/integrations", json=body)
    if response.status_code != 201:
        raise RuntimeError(f"configure {alias}: {response.status_code} {response.text[:300]}")
    created: dict[str, Any] = response.json()["integration"]
    return created


async def configure_many(
    rest: httpx2.AsyncClient, workspace_id: str, aliases: int, concurrency: int = 4
) -> list[dict[str, Any]]:
    """`aliases` x bench-many (25 actions each), a few REST writes in flight at a time."""
    created: list[dict[str, Any]] = []
    names = iter(f"a{i:03d}" for i in range(aliases))

    async def worker() -> None:
        for alias in names:
            created.append(await configure(rest, workspace_id, "bench-many", alias))

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return created


async def create_server(rest: httpx2.AsyncClient, workspace_id: str, name: str) -> tuple[str, str]:
    response = await rest.post("/mcp/servers", json={"workspaceId": workspace_id, "name": name})
    response.raise_for_status()
    found = response.json()
    return found["server"]["id"], found["token"]


def big_tool_names(aliases: int) -> list[str]:
    """Three tools spread over the large workspace (first, middle, last)."""
    last = aliases - 1
    return ["a000__op_00", f"a{last // 2:03d}__op_12", f"a{last:03d}__op_24"]
