"""Federation: a tool of an upstream MCP server called through treadle vs called directly.

The upstream is the bare SDK baseline (`bench/bare_server.py`, one tool `bench__echo`),
registered in treadle as the upstream `benchup` and configured as alias `up`, so the
federated tool is `up__bench__echo`. Both sides are raw JSON-RPC over streamable HTTP,
alternating blocks: "federated" = client → treadle (pipeline, pooled upstream session) →
bare server; "direct" = client → bare server. Target: federated p50 <= 1.3x direct at c=1.

    python -m bench.cases.federation [--quick]   (this case alone; prints JSON)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from bench.config import ARGS, FULL, ONE_TOOL, QUICK, create_server, create_workspace
from bench.env import Env
from bench.load import Side, interleaved
from bench.procs import Bare, Treadle
from bench.rawmcp import ERAS
from bench.workers import raw_mcp

FEDERATED_TOOL = f"up__{ONE_TOOL}"
TARGET_RATIO_C1 = 1.3


async def setup(env: Env) -> tuple[str, str]:
    """Register the bare server as an upstream; the MCP server (id, token) that serves it."""
    async with env.treadle.rest() as api:
        registered = await api.post(
            "/upstreams",
            json={
                "name": "benchup",
                "transport": {"type": "streamable_http", "url": env.bare_one.mcp_url},
                "allowPrivateNetwork": True,
            },
        )
        if (
            registered.status_code != 201
            or not registered.json()["upstream"]["health"]["connected"]
        ):
            raise RuntimeError(
                f"upstream registration: {registered.status_code} {registered.text[:300]}"
            )
        workspace_id = await create_workspace(api, "federation")
        configured = await api.post(
            f"/workspaces/{workspace_id}/integrations",
            json={
                "integrationName": "benchup",
                "integrationAlias": "up",
                "connectionStrategy": "fixed",
            },
        )
        configured.raise_for_status()
        return await create_server(api, workspace_id, "federated")


async def run(env: Env) -> dict[str, Any]:
    sizes = env.sizes
    server_id, token = await setup(env)
    url = env.treadle.mcp_url(server_id)
    rows: dict[str, Any] = {}
    for era in ERAS:
        for concurrency, total, seconds in (
            (1, sizes.calls_c1, sizes.c1_seconds),
            (32, sizes.calls_c32, sizes.c32_seconds),
        ):
            sides = [
                Side(
                    "federated",
                    raw_mcp(url, era, token, [FEDERATED_TOOL], ARGS),
                    env.treadle.process.pid,
                    env.treadle.timer(f"/mcp/{server_id}"),
                ),
                Side(
                    "direct",
                    raw_mcp(env.bare_one.mcp_url, era, None, [ONE_TOOL], ARGS),
                    env.bare_one.process.pid,
                    env.bare_one.timer,
                ),
            ]
            measured = await interleaved(
                sides,
                total=total,
                concurrency=concurrency,
                blocks=sizes.blocks,
                max_seconds=seconds,
            )
            federated, direct = measured["federated"], measured["direct"]
            rows[f"{era} c{concurrency}"] = {
                "era": era,
                "concurrency": concurrency,
                "federated": federated,
                "direct": direct,
                "ratioP50": federated["p50"] / direct["p50"],
                "ratioP99": federated["p99"] / direct["p99"],
                "throughputRatio": (
                    federated["perSecond"] / direct["perSecond"] if direct["perSecond"] else 0.0
                ),
            }
    rows["targetRatioC1"] = TARGET_RATIO_C1
    rows["meetsTargetC1"] = all(
        row["ratioP50"] <= TARGET_RATIO_C1
        for key, row in rows.items()
        if isinstance(row, dict) and row.get("concurrency") == 1
    )
    return rows


async def _alone(quick: bool) -> dict[str, Any]:
    treadle = Treadle.start()
    bare = Bare.start(0)
    try:
        async with treadle.rest() as api:
            small = await create_server(api, treadle.workspace_id, "unused")
        env = Env(QUICK if quick else FULL, treadle, bare, treadle.workspace_id, small)
        found = await run(env)
        found["treadleLogErrors"] = treadle.errors_in_log()
        return found
    finally:
        bare.stop()
        treadle.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    found = anyio.run(_alone, args.quick)
    json.dump(found, sys.stdout, indent=2, default=float)
    print()
    return 0 if found.get("meetsTargetC1") else 1


if __name__ == "__main__":
    sys.exit(main())
