"""Closed-loop load: N workers, each sending its next request when the last one answered.

Treadle and its baseline are measured in alternating blocks (A B, B A, ...) so that whatever
else the machine is doing lands on both sides; samples of all blocks are pooled.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

from bench.stats import process_cpu_seconds, summary

Request = Callable[[], Awaitable[Any]]
# Server-side durations (ms) of the requests since the previous call.
ServerTimer = Callable[[], Awaitable[list[float]]]
# Makes one worker's request function (an MCP session for the handshake era).
WorkerFactory = Callable[
    [httpx2.AsyncClient], Awaitable[tuple[Request, Callable[[], Awaitable[None]]]]
]


def pooled_client() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(60),
        limits=httpx2.Limits(max_connections=None, max_keepalive_connections=None),
    )


@dataclass
class Side:
    """One server's share of an interleaved measurement."""

    label: str
    factory: WorkerFactory
    pid: int
    server_timer: ServerTimer | None = None
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    calls: int = 0
    cpu_seconds: float = 0.0
    errors: int = 0
    truncated: bool = False

    def result(self) -> dict[str, Any]:
        out = summary(self.latencies_ms)
        out["perSecond"] = self.calls / self.wall_seconds if self.wall_seconds else 0.0
        out["serverCpuMsPerCall"] = self.cpu_seconds * 1000 / self.calls if self.calls else 0.0
        if self.server_ms:
            out["server"] = summary(self.server_ms)
        out["errors"] = self.errors
        out["hitTimeCap"] = self.truncated
        return out


async def _block(side: Side, total: int, concurrency: int, warmup: int, seconds: float) -> None:
    async with pooled_client() as http:
        workers: list[tuple[Request, Callable[[], Awaitable[None]]]] = []
        try:
            for _ in range(concurrency):
                workers.append(await side.factory(http))
            for request, _close in workers:
                for _ in range(max(1, warmup // concurrency)):
                    await request()
            remaining = total
            samples: list[float] = []

            deadline = time.perf_counter() + seconds

            async def work(request: Request) -> None:
                nonlocal remaining
                # Bounded by count and by time: a slow machine gets fewer samples, not a hang.
                while remaining > 0 and time.perf_counter() < deadline:
                    remaining -= 1
                    began = time.perf_counter()
                    try:
                        await request()
                    except Exception:
                        side.errors += 1
                        continue
                    samples.append((time.perf_counter() - began) * 1000)

            if side.server_timer is not None:
                await side.server_timer()  # forget the warm-up's requests
            cpu = process_cpu_seconds(side.pid)
            began = time.perf_counter()
            with anyio.fail_after(300):
                async with anyio.create_task_group() as tg:
                    for request, _close in workers:
                        tg.start_soon(work, request)
            side.wall_seconds += time.perf_counter() - began
            side.cpu_seconds += process_cpu_seconds(side.pid) - cpu
            side.latencies_ms.extend(samples)
            side.calls += len(samples)
            side.truncated = side.truncated or remaining > 0
            if side.server_timer is not None:
                side.server_ms.extend(await side.server_timer())
        finally:
            for _request, close in workers:
                await close()


async def interleaved(
    sides: list[Side],
    *,
    total: int,
    concurrency: int,
    blocks: int,
    max_seconds: float = 60.0,
    warmup: int = 20,
) -> dict[str, dict[str, Any]]:
    """`total` requests per side, in `blocks` rounds; each block also stops at its share of
    `max_seconds`."""
    per_block = max(concurrency, total // blocks)
    block_seconds = max_seconds / (blocks * len(sides))
    for block in range(blocks):
        # Rotate the order each round: the first block after a pause runs measurably slower.
        shift = block % len(sides)
        for side in sides[shift:] + sides[:shift]:
            await _block(side, per_block, concurrency, warmup, block_seconds)
    return {side.label: side.result() for side in sides}
