"""Cases 2 and 6: a workspace of `aliases` x 25 tools (10,000 in full mode).

Listing: every page, cold (first listing after a configuration change: the tool set is rebuilt
inside the request) and cached, with raw JSON-RPC so page sizes are the HTTP bodies; server-side
time from treadle's access log (one line per request) and from the bare server's own timer.
Once more with the SDK `Client` per era, which is what applications see (and where the bare
server's single 2026-07-28 answer meets the client's 1 MiB SSE-event limit).

Calls: tools/call at concurrency 1 against the large workspace and against the one-tool
workspace, on both servers, alternating.

Context size: the bytes of the full tool list (what a host puts in the model's context), with
tokens approximated as bytes / 4.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.config import (
    ARGS,
    ONE_TOOL,
    big_tool_names,
    configure_many,
    create_server,
    create_workspace,
)
from bench.env import Env
from bench.load import Side, interleaved, pooled_client
from bench.procs import Bare
from bench.rawmcp import ERAS, MODERN_VERSION, RawSession, RpcError
from bench.stats import summary
from bench.workers import raw_mcp

MAX_PAGES = 2000


async def setup(env: Env) -> dict[str, Any]:
    began = time.perf_counter()
    async with env.treadle.rest() as rest:
        env.big_workspace = await create_workspace(rest, "large")
        await configure_many(rest, env.big_workspace, env.sizes.aliases)
        env.big_server = await create_server(rest, env.big_workspace, "large")
    configured = time.perf_counter() - began
    env.bare_big = Bare.start(env.sizes.aliases)
    return {
        "aliases": env.sizes.aliases,
        "tools": env.sizes.aliases * 25,
        "restConfigureSeconds": round(configured, 2),
    }


async def _list_all(session: RawSession) -> dict[str, Any]:
    began = time.perf_counter()
    cursor: str | None = None
    page_bytes: list[int] = []
    tools: list[dict[str, Any]] = []
    failures: list[str] = []
    for _ in range(MAX_PAGES):
        try:
            result, size = await session.list_page(cursor)
        except (RpcError, httpx2.HTTPError) as failure:
            failures.append(str(failure)[:200])
            break
        page_bytes.append(size)
        tools.extend(result["tools"])
        cursor = result.get("nextCursor")
        if not cursor:
            break
    return {
        "ms": (time.perf_counter() - began) * 1000,
        "pages": len(page_bytes),
        "tools": len(tools),
        "uniqueNames": len({t["name"] for t in tools}),
        "pageBytes": page_bytes,
        "failures": failures,
        "_tools": tools,
    }


async def _bump(rest: httpx2.AsyncClient, env: Env, integration_id: str, rev: int) -> None:
    """A configuration write in the large workspace: its tool sets must be rebuilt."""
    response = await rest.patch(
        f"/workspaces/{env.big_workspace}/integrations/{integration_id}",
        json={"settings": {"benchRevision": rev}},
    )
    response.raise_for_status()


async def _mark(env: Env) -> None:
    # The access line is written just after the response is sent: let the previous ones land.
    await anyio.sleep(0.15)
    env.treadle.mark_log()


async def _server_ms(env: Env) -> tuple[float, list[float]]:
    await anyio.sleep(0.15)
    lines = [a for a in env.treadle.access_since_mark() if a["method"] == "POST"]
    return sum(a["ms"] for a in lines), [a["ms"] for a in lines]


async def _treadle_listing(env: Env, era: str) -> dict[str, Any]:
    server_id, token = env.big_server
    url = env.treadle.mcp_url(server_id)
    cold: list[dict[str, Any]] = []
    cached: list[dict[str, Any]] = []
    async with env.treadle.rest() as rest:
        found = await rest.get(f"/workspaces/{env.big_workspace}/integrations")
        first_id = found.json()["integrations"][0]["id"]
        began = time.perf_counter()
        for rep in range(env.sizes.cold_reps):
            if rep and time.perf_counter() - began > env.sizes.listing_seconds:
                break  # a loaded machine gets fewer cold samples, not a run over budget
            await _bump(rest, env, first_id, rep + (100 if era == MODERN_VERSION else 0))
            await anyio.sleep(0.8)  # past the resync hub's coalescing window
            async with pooled_client() as http:
                await _mark(env)
                began = time.perf_counter()
                session = await RawSession(http, url, era, token).open()
                listing = await _list_all(session)
                listing["ms"] = (time.perf_counter() - began) * 1000
                listing["serverMs"], per_request = await _server_ms(env)
                listing["firstRequestsServerMs"] = per_request[:3]
                cold.append(listing)
                # Cached listings once, on the first cold session (the cache is per server).
                for _ in range(env.sizes.cached_reps if rep == 0 else 0):
                    await _mark(env)
                    listing = await _list_all(session)
                    listing["serverMs"], per_page = await _server_ms(env)
                    listing["serverPageMs"] = summary(per_page)
                    cached.append(listing)
                await session.close()
    last = cached[-1] if cached else cold[-1]
    return {
        "cold": _strip(cold),
        "cached": _strip(cached),
        "coldMs": summary([c["ms"] for c in cold]),
        "coldServerMs": summary([c["serverMs"] for c in cold]),
        "cachedMs": summary([c["ms"] for c in cached]),
        "cachedServerMs": summary([c["serverMs"] for c in cached]),
        "pageBytes": summary([float(b) for b in last["pageBytes"]]),
        "everyPageAnswered": all(
            not c["failures"] and c["tools"] == env.sizes.aliases * 25 == c["uniqueNames"]
            for c in cold + cached
        ),
        "_tools": last["_tools"],
    }


async def _bare_listing(env: Env, era: str) -> dict[str, Any]:
    assert env.bare_big is not None
    runs: list[dict[str, Any]] = []
    async with pooled_client() as http:
        session = await RawSession(http, env.bare_big.mcp_url, era).open()
        for _ in range(env.sizes.cached_reps):
            env.bare_big.timings()
            listing = await _list_all(session)
            listing["serverMs"] = sum(env.bare_big.timings())
            runs.append(listing)
        await session.close()
    return {
        "runs": _strip(runs),
        "ms": summary([r["ms"] for r in runs]),
        "serverMs": summary([r["serverMs"] for r in runs]),
        "pageBytes": summary([float(b) for r in runs for b in r["pageBytes"]]),
        "everyPageAnswered": all(not r["failures"] for r in runs),
        "_tools": runs[-1]["_tools"],
    }


async def _sdk_side(env: Env, url: str, era: str, token: str | None) -> dict[str, Any]:
    """Through the SDK `Client`: list every page (response cache bypassed), then call the
    tools with that client (it knows them), then call them from a fresh client that never
    listed (it fetches tools/list on each call to look up the output schema)."""
    names = big_tool_names(env.sizes.aliases)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out: dict[str, Any] = {}
    for listed in (True, False):
        began = time.perf_counter()
        pages = tools = 0
        latencies: list[float] = []
        try:
            with anyio.fail_after(120):
                async with (
                    httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(120)) as http,
                    Client(streamable_http_client(url, http_client=http), mode=era) as client,
                ):
                    listing_began = time.perf_counter()
                    cursor: str | None = None
                    for _ in range(MAX_PAGES if listed else 0):
                        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
                        pages += 1
                        tools += len(page.tools)
                        cursor = page.next_cursor
                        if cursor is None:
                            break
                    if listed:
                        out["listing"] = {
                            "ok": True,
                            "pages": pages,
                            "tools": tools,
                            "ms": (time.perf_counter() - listing_began) * 1000,
                        }
                    count = env.sizes.sdk_calls if listed else 10
                    deadline = time.perf_counter() + env.sizes.sdk_seconds
                    for i in range(count):
                        if time.perf_counter() > deadline:
                            break
                        call_began = time.perf_counter()
                        result = await client.call_tool(names[i % len(names)], ARGS)
                        if result.is_error:
                            raise RuntimeError(str(result)[:200])
                        latencies.append((time.perf_counter() - call_began) * 1000)
        except Exception as failure:  # the baseline's one-page list can exceed the SSE limit
            error = {"error": _describe(failure)}
            if listed and "listing" not in out:
                out["listing"] = {
                    "ok": False,
                    "pages": pages,
                    "tools": tools,
                    **error,
                    "ms": (time.perf_counter() - began) * 1000,
                }
            out["listed first" if listed else "not listed"] = error
            continue
        out["listed first" if listed else "not listed"] = summary(latencies)
    return out


def _describe(failure: BaseException) -> str:
    while isinstance(failure, BaseExceptionGroup) and failure.exceptions:
        failure = failure.exceptions[0]
    return f"{type(failure).__name__}: {str(failure)[:200]}"


def _strip(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in run.items() if not k.startswith("_") and k != "pageBytes"} for run in runs
    ]


def context_size(tools: list[dict[str, Any]]) -> dict[str, Any]:
    compact = json.dumps(tools, separators=(",", ":"), ensure_ascii=False).encode()
    descriptions = sum(len((t.get("description") or "").encode()) for t in tools)
    schemas = sum(len(json.dumps(t.get("inputSchema"), separators=(",", ":"))) for t in tools)
    return {
        "tools": len(tools),
        "bytes": len(compact),
        "approxTokens": len(compact) // 4,
        "bytesPerTool": len(compact) / len(tools) if tools else 0,
        "descriptionBytes": descriptions,
        "inputSchemaBytes": schemas,
    }


async def _calls(env: Env, era: str) -> dict[str, Any]:
    assert env.bare_big is not None
    big_names = big_tool_names(env.sizes.aliases)
    small_id, small_token = env.small_server
    big_id, big_token = env.big_server
    pid, bare_big_pid = env.treadle.process.pid, env.bare_big.process.pid
    treadle = env.treadle
    sides = [
        Side(
            "treadle-large",
            raw_mcp(treadle.mcp_url(big_id), era, big_token, big_names, ARGS),
            pid,
            treadle.timer(f"/mcp/{big_id}"),
        ),
        Side(
            "treadle-one",
            raw_mcp(treadle.mcp_url(small_id), era, small_token, [ONE_TOOL], ARGS),
            pid,
            treadle.timer(f"/mcp/{small_id}"),
        ),
        Side(
            "bare-large",
            raw_mcp(env.bare_big.mcp_url, era, None, big_names, ARGS),
            bare_big_pid,
            env.bare_big.timer,
        ),
        Side(
            "bare-one",
            raw_mcp(env.bare_one.mcp_url, era, None, [ONE_TOOL], ARGS),
            env.bare_one.process.pid,
            env.bare_one.timer,
        ),
    ]
    measured = await interleaved(
        sides,
        total=env.sizes.big_calls,
        concurrency=1,
        blocks=env.sizes.blocks,
        max_seconds=1.5 * env.sizes.c1_seconds,
    )
    measured["treadleLargeOverOne"] = (
        measured["treadle-large"]["p50"] / measured["treadle-one"]["p50"]
    )
    measured["bareLargeOverOne"] = measured["bare-large"]["p50"] / measured["bare-one"]["p50"]
    measured["treadleLargeOverOneServer"] = (
        measured["treadle-large"]["server"]["p50"] / measured["treadle-one"]["server"]["p50"]
    )
    return measured


async def run(env: Env) -> dict[str, Any]:
    assert env.bare_big is not None
    result: dict[str, Any] = {"listing": {}, "sdkListing": {}, "calls": {}, "sdkCalls": {}}
    contexts: dict[str, Any] = {}
    for era in ERAS:
        treadle = await _treadle_listing(env, era)
        bare = await _bare_listing(env, era)
        contexts[f"treadle {era}"] = context_size(treadle.pop("_tools"))
        contexts[f"bare {era}"] = context_size(bare.pop("_tools"))
        result["listing"][era] = {"treadle": treadle, "bare": bare}
        big_id, big_token = env.big_server
        sdk = {
            "treadle": await _sdk_side(env, env.treadle.mcp_url(big_id), era, big_token),
            "bare": await _sdk_side(env, env.bare_big.mcp_url, era, None),
        }
        result["sdkListing"][era] = {side: found["listing"] for side, found in sdk.items()}
        for state in ("listed first", "not listed"):
            result["sdkCalls"][f"{era} {state}"] = {
                f"{side}-large": found[state] for side, found in sdk.items()
            }
        result["calls"][era] = await _calls(env, era)
    result["context"] = contexts
    return result
