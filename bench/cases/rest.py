"""Case 4: `POST /api/v1/actions/execute` (the whole pipeline behind REST) vs a bare Starlette
JSON route on uvicorn doing the same work (`bench/bare_server.py`, `POST /rest/echo`)."""

from __future__ import annotations

from typing import Any

from bench.config import ARGS
from bench.env import Env
from bench.load import Side, interleaved
from bench.workers import rest_execute


async def run(env: Env) -> dict[str, Any]:
    sizes = env.sizes
    body = {
        "workspaceId": env.small_workspace,
        "integrationName": "bench-one",
        "integrationAlias": "bench",
        "actionName": "echo",
        "input": ARGS,
    }
    treadle_url = f"{env.treadle.base_url}/api/v1/actions/execute"
    rows: dict[str, Any] = {}
    for concurrency, total, seconds in (
        (1, sizes.rest_c1, sizes.c1_seconds),
        (32, sizes.rest_c32, sizes.c32_seconds),
    ):
        sides = [
            Side(
                "treadle",
                rest_execute(treadle_url, env.treadle.api_key, body),
                env.treadle.process.pid,
                env.treadle.timer("/api/v1/actions/execute"),
            ),
            Side(
                "bare",
                rest_execute(f"{env.bare_one.base_url}/rest/echo", None, {"input": ARGS}),
                env.bare_one.process.pid,
                env.bare_one.timer,
            ),
        ]
        measured = await interleaved(
            sides, total=total, concurrency=concurrency, blocks=sizes.blocks, max_seconds=seconds
        )
        treadle, bare = measured["treadle"], measured["bare"]
        rows[f"c{concurrency}"] = {
            "concurrency": concurrency,
            "treadle": treadle,
            "bare": bare,
            "ratioP50": treadle["p50"] / bare["p50"],
            "throughputRatio": treadle["perSecond"] / bare["perSecond"] if bare["perSecond"] else 0,
        }
    return rows
