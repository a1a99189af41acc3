"""Case 1: tools/call overhead through the whole treadle pipeline vs a bare SDK server.

Both answer one trivial tool (`bench__echo`, the same function). Raw JSON-RPC over streamable
HTTP at concurrency 1 and 32, both eras, alternating treadle/bare blocks; plus a small row with
the SDK `Client` at concurrency 1, which adds the client's own cost to both sides.
"""

from __future__ import annotations

from typing import Any

from bench.config import ARGS, ONE_TOOL
from bench.env import Env
from bench.load import Side, interleaved
from bench.rawmcp import ERAS
from bench.workers import raw_mcp, sdk_mcp


async def run(env: Env) -> dict[str, Any]:
    sizes = env.sizes
    server_id, token = env.small_server
    url = env.treadle.mcp_url(server_id)
    treadle_timer = env.treadle.timer(f"/mcp/{server_id}")
    rows: dict[str, Any] = {}
    for era in ERAS:
        for concurrency, total, seconds in (
            (1, sizes.calls_c1, sizes.c1_seconds),
            (32, sizes.calls_c32, sizes.c32_seconds),
        ):
            sides = [
                Side(
                    "treadle",
                    raw_mcp(url, era, token, [ONE_TOOL], ARGS),
                    env.treadle.process.pid,
                    treadle_timer,
                ),
                Side(
                    "bare",
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
            rows[f"{era} c{concurrency} raw"] = _compare(measured, era, concurrency, "raw httpx2")
        sides = [
            Side(
                "treadle",
                sdk_mcp(url, era, token, [ONE_TOOL], ARGS),
                env.treadle.process.pid,
                treadle_timer,
            ),
            Side(
                "bare",
                sdk_mcp(env.bare_one.mcp_url, era, None, [ONE_TOOL], ARGS),
                env.bare_one.process.pid,
                env.bare_one.timer,
            ),
        ]
        measured = await interleaved(
            sides, total=sizes.sdk_calls, concurrency=1, blocks=2, max_seconds=sizes.sdk_seconds
        )
        rows[f"{era} c1 sdk"] = _compare(measured, era, 1, "SDK Client")
    return rows


def _compare(measured: dict[str, Any], era: str, concurrency: int, client: str) -> dict[str, Any]:
    treadle, bare = measured["treadle"], measured["bare"]
    return {
        "era": era,
        "concurrency": concurrency,
        "client": client,
        "treadle": treadle,
        "bare": bare,
        "ratioP50": treadle["p50"] / bare["p50"],
        "ratioP99": treadle["p99"] / bare["p99"],
        "serverRatioP50": treadle["server"]["p50"] / bare["server"]["p50"],
        "throughputRatio": treadle["perSecond"] / bare["perSecond"] if bare["perSecond"] else 0.0,
        "cpuRatio": (
            treadle["serverCpuMsPerCall"] / bare["serverCpuMsPerCall"]
            if bare["serverCpuMsPerCall"]
            else 0.0
        ),
    }
