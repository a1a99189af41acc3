"""Case 5: resident memory of the server process with many idle connections.

- handshake-era HTTP sessions: initialize, initialized, one tools/list (treadle files the
  session for list_changed on it), and the standalone GET SSE stream that SDK clients keep
  open; then nothing;
- 2026-07-28 `subscriptions/listen` streams, each acknowledged, then idle.

Each measurement uses a fresh server process (freed heap would otherwise be reused and hide
growth): RSS (VmRSS from /proc) after a warm-up connection, then with all N open. Raw httpx2
is used: a thousand SDK `Client`s would cost the 2-core machine more than the servers do.
SDK 2.3's ListenHandler accepts at most 1,024 concurrent listen streams per server.
"""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

from bench.config import Sizes, configure, create_server, create_workspace
from bench.procs import Bare, Treadle
from bench.rawmcp import MODERN_VERSION, RawSession

OPENING_CONCURRENCY = 16
ACK = "notifications/subscriptions/acknowledged"


@dataclass
class Tally:
    target: int
    opened: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    finished: anyio.Event = field(default_factory=anyio.Event)

    def record(self, failure: Exception | None = None) -> None:
        if failure is None:
            self.opened += 1
        else:
            self.failed += 1
            self.errors.append(str(failure)[:200])
        if self.opened + self.failed >= self.target:
            self.finished.set()


async def _hold_session(
    http: httpx2.AsyncClient,
    url: str,
    token: str | None,
    gate: anyio.Semaphore,
    tally: Tally,
    stop: anyio.Event,
) -> None:
    async with AsyncExitStack() as stack:
        async with gate:
            try:
                session = await RawSession(http, url, "legacy", token).open()
                stack.push_async_callback(session.close)
                await session.list_page(None)
                headers = session.headers("x")
                headers["accept"] = "text/event-stream"
                response = await stack.enter_async_context(http.stream("GET", url, headers=headers))
                if response.status_code != 200:
                    raise RuntimeError(f"GET stream: HTTP {response.status_code}")
            except Exception as failure:
                tally.record(failure)
                return
            tally.record()
        await stop.wait()


async def _hold_listen(
    http: httpx2.AsyncClient,
    url: str,
    token: str | None,
    gate: anyio.Semaphore,
    tally: Tally,
    stop: anyio.Event,
) -> None:
    session = RawSession(http, url, MODERN_VERSION, token)
    body = session.body("subscriptions/listen", {"notifications": {"toolsListChanged": True}})
    async with AsyncExitStack() as stack:
        async with gate:
            try:
                response = await stack.enter_async_context(
                    http.stream(
                        "POST", url, content=body, headers=session.headers("subscriptions/listen")
                    )
                )
                if response.status_code != 200:
                    raise RuntimeError(f"listen: HTTP {response.status_code}")
                acked = False
                with anyio.fail_after(30):
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            message = json.loads(line[5:])
                            acked = message.get("method") == ACK
                            if not acked:
                                raise RuntimeError(f"listen: {line[:200]}")
                            break
                if not acked:
                    raise RuntimeError("listen stream ended before its acknowledgement")
            except Exception as failure:
                tally.record(failure)
                return
            tally.record()
        await stop.wait()


async def _measure(rss: Any, url: str, token: str | None, count: int, kind: str) -> dict[str, Any]:
    hold = _hold_session if kind == "sessions" else _hold_listen
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(60), limits=limits) as http:
        # Warm-up: one connection of the kind, opened and closed.
        stop, tally = anyio.Event(), Tally(1)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hold, http, url, token, anyio.Semaphore(1), tally, stop)
                await tally.finished.wait()
                stop.set()
        if not tally.opened:
            raise RuntimeError(f"warm-up connection failed: {tally.errors}")
        await anyio.sleep(0.5)
        idle = rss()
        stop, tally = anyio.Event(), Tally(count)
        gate = anyio.Semaphore(OPENING_CONCURRENCY)
        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                began = time.perf_counter()
                for _ in range(count):
                    tg.start_soon(hold, http, url, token, gate, tally, stop)
                await tally.finished.wait()
                opening = time.perf_counter() - began
                await anyio.sleep(1.0)
                loaded = rss()
                stop.set()
    return {
        "connections": tally.opened,
        "failed": tally.failed,
        "firstErrors": sorted(set(tally.errors))[:3],
        "openSeconds": round(opening, 2),
        "requested": count,
        "rssIdleMiB": round(idle / 1024, 1),
        "rssLoadedMiB": round(loaded / 1024, 1),
        "deltaMiB": round((loaded - idle) / 1024, 1),
        "kibPerConnection": round((loaded - idle) / max(1, tally.opened), 1),
    }


async def _fresh_treadle() -> tuple[Treadle, str, str]:
    treadle = Treadle.start()
    async with treadle.rest() as rest:
        workspace = await create_workspace(rest, "memory")
        await configure(rest, workspace, "bench-one", "bench")
        server_id, token = await create_server(rest, workspace, "memory")
    return treadle, server_id, token


async def run(sizes: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, count in (("sessions", sizes.idle_sessions), ("listen", sizes.listen_streams)):
        treadle, server_id, token = await _fresh_treadle()
        try:
            treadle_row = await _measure(
                treadle.rss_kib, treadle.mcp_url(server_id), token, count, kind
            )
        finally:
            treadle.stop()
        bare = Bare.start(0)
        try:
            bare_row = await _measure(bare.rss_kib, bare.mcp_url, None, count, kind)
        finally:
            bare.stop()
        out[kind] = {"treadle": treadle_row, "bare": bare_row}
    return out
