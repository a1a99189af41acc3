"""Case 7: several replicas on PostgreSQL.

Three measurements, each against its baseline in the same run:
- throughput at concurrency 32: one `treadle serve` on PostgreSQL vs two replicas of it (same
  database, same data dir for the shared secret), the workers split between the two as a
  round-robin balancer would; raw JSON-RPC in the 2026-07-28 era, which needs nothing sticky;
- tools/call p50/p99 at concurrency 1 on PostgreSQL vs the embedded SQLite, both eras;
- resync across replicas: a change through replica A's REST API -> `list_changed` received
  by clients connected to replica B (handshake-era HTTP and 2026-07-28 listen streams),
  from the commit (the change's activity record) to receipt.
Beside the c=1 ratio, the floor under it: the store's own work per call, timed alone in this
process and served by a bare HTTP server (bench/store_floor.py, bench/store_server.py).

The database is a fresh one on `TREADLE_BENCH_POSTGRES_URL` (default: the local server, user
postgres), dropped at the end. Both replicas and the load generator share this machine's
cores, so two replicas can at most use what one leaves idle (see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench import store_floor, wrk_load
from bench.cases.resync import Receipts, _connect_all, _listen_all, _parse_iso, _rounds
from bench.config import ARGS, ONE_TOOL, Sizes, configure, create_server, create_workspace
from bench.load import Request, Side, WorkerFactory, interleaved
from bench.procs import Treadle
from bench.rawmcp import ERAS, MODERN_VERSION, RawSession
from bench.stats import process_cpu_seconds
from bench.workers import raw_mcp

SERVER_URL = os.environ.get("TREADLE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def _async_url(url: str, database: str) -> str:
    base = url.replace("postgresql://", "postgresql+asyncpg://", 1).rstrip("/")
    return f"{base}/{database}"


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database; its URL for `TREADLE_DATABASE_URL`."""
    name = f"treadle_bench_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(_async_url(SERVER_URL, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield f"{SERVER_URL.rstrip('/')}/{name}"
        finally:
            async with admin.connect() as conn:
                await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def _small_server(treadle: Treadle, name: str) -> tuple[str, str]:
    async with treadle.rest() as rest:
        await configure(rest, treadle.workspace_id, "bench-one", "bench")
        return await create_server(rest, treadle.workspace_id, name)


def _split(factories: list[WorkerFactory]) -> WorkerFactory:
    """Workers handed out to the replicas in turn, as a round-robin balancer would."""
    turn = [0]

    async def make(http: httpx2.AsyncClient) -> tuple[Request, Any]:
        factory = factories[turn[0] % len(factories)]
        turn[0] += 1
        return await factory(http)

    return make


# The case's processes (this one, the replicas it starts, their PostgreSQL backends and the
# load generator) run at this niceness when the bench may raise priority (root): other work
# on the machine then takes what they leave instead of time slices in the middle of a call.
# Both sides of every comparison run at the same priority.
NICENESS = -10


def _prioritise(pid: int = 0) -> bool:
    """The niceness of the process and, where the kernel groups processes by session for
    scheduling (autogroup, as on this VM), of its group: there a process's own niceness only
    weighs against its group's other processes, and each PostgreSQL backend is a group."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, NICENESS)
    except (PermissionError, ProcessLookupError):
        return False
    group = Path(f"/proc/{pid or 'self'}/autogroup")
    with contextlib.suppress(OSError):
        group.write_text(str(NICENESS))
    return True


async def _backends(url: str) -> list[int]:
    """The PostgreSQL server processes connected to the case's database."""
    name = url.rsplit("/", 1)[1]
    admin = create_async_engine(_async_url(SERVER_URL, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :name"), {"name": name}
            )
            return [int(row[0]) for row in rows]
    finally:
        await admin.dispose()


def _cpu(pids: list[int]) -> float:
    return sum(process_cpu_seconds(pid) for pid in pids)


async def _throughput(
    sizes: Sizes, url: str, one: Treadle, two: Treadle, server: tuple[str, str]
) -> dict[str, Any]:
    server_id, token = server
    era = MODERN_VERSION
    if not wrk_load.available():
        return await _throughput_python(sizes, one, two, server)
    raw = RawSession(None, "", era, token)  # type: ignore[arg-type]  # only builds messages
    headers = raw.headers("tools/call", ONE_TOOL)
    body = raw.body("tools/call", {"name": ONE_TOOL, "arguments": ARGS})

    def target(treadle: Treadle) -> wrk_load.Target:
        return wrk_load.Target(treadle.mcp_url(server_id), headers, body, 16)

    # Two wrk processes with 16 connections each on both sides: the same client either way,
    # its connections spread over the replicas as a round-robin balancer would.
    sides = {
        "1 replica": ([target(one), target(one)], [one]),
        "2 replicas": ([target(one), target(two)], [one, two]),
    }
    niceness = NICENESS if _prioritise() else None
    for treadle in (one, two):
        wrk_load.run([target(treadle), target(treadle)], 2, niceness)  # warm: pools, caches
    totals: dict[str, dict[str, Any]] = {
        label: {"requests": 0, "seconds": 0.0, "errors": 0, "cpu": {}, "p50": [], "p99": []}
        for label in sides
    }
    block_seconds = sizes.c32_seconds / (sizes.blocks * len(sides))
    labels = list(sides)
    for block in range(sizes.blocks):
        shift = block % len(labels)
        for label in labels[shift:] + labels[:shift]:
            targets, replicas = sides[label]
            backends = await _backends(url)
            for pid in backends:
                _prioritise(pid)
            servers = [t.process.pid for t in replicas]
            before = (_cpu(servers), _cpu(backends))
            found = await anyio.to_thread.run_sync(wrk_load.run, targets, block_seconds, niceness)
            after = (_cpu(servers), _cpu(backends))
            side = totals[label]
            side["requests"] += found["requests"]
            side["seconds"] += found["seconds"]
            side["errors"] += found["errors"]
            side["p50"].append(found["p50"])
            side["p99"].append(found["p99"])
            cpu = side["cpu"]
            cpu["treadle"] = cpu.get("treadle", 0.0) + after[0] - before[0]
            cpu["postgresql"] = cpu.get("postgresql", 0.0) + after[1] - before[1]
            cpu["client"] = cpu.get("client", 0.0) + found["clientCpuSeconds"]
    measured: dict[str, Any] = {}
    for label, side in totals.items():
        calls = max(1, side["requests"])
        measured[label] = {
            "perSecond": side["requests"] / max(1e-9, side["seconds"]),
            "p50": sum(side["p50"]) / len(side["p50"]),
            "p99": max(side["p99"]),
            "errors": side["errors"],
            "calls": side["requests"],
            # CPU per call, per kind of process (ms): the machine's budget is 2 cores.
            "cpuMsPerCall": {k: v * 1000 / calls for k, v in side["cpu"].items()},
        }
    ratio = measured["2 replicas"]["perSecond"] / max(1e-9, measured["1 replica"]["perSecond"])
    return {
        "era": era,
        "client": "wrk",
        "niceness": niceness,
        "sides": measured,
        "throughputRatio": ratio,
        "cores": os.cpu_count() or 1,
    }


async def _throughput_python(
    sizes: Sizes, one: Treadle, two: Treadle, server: tuple[str, str]
) -> dict[str, Any]:
    """Without wrk: the Python load generator of the other cases, in this process."""
    server_id, token = server
    era = MODERN_VERSION
    single = raw_mcp(one.mcp_url(server_id), era, token, [ONE_TOOL], ARGS)
    pair = _split(
        [single, raw_mcp(two.mcp_url(server_id), era, token, [ONE_TOOL], ARGS)],
    )
    measured = await interleaved(
        [Side("1 replica", single, one.process.pid), Side("2 replicas", pair, one.process.pid)],
        total=sizes.calls_c32,
        concurrency=32,
        blocks=sizes.blocks,
        max_seconds=sizes.c32_seconds,
    )
    for side in measured.values():
        side.pop("serverCpuMsPerCall", None)  # one process's CPU: not the pair's
    ratio = measured["2 replicas"]["perSecond"] / max(1e-9, measured["1 replica"]["perSecond"])
    return {"era": era, "client": "python", "sides": measured, "throughputRatio": ratio}


async def _latency(
    sizes: Sizes,
    postgres: Treadle,
    pg_server: tuple[str, str],
    sqlite: Treadle,
    lite_server: tuple[str, str],
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for era in ERAS:
        sides = [
            Side(
                "postgresql",
                raw_mcp(postgres.mcp_url(pg_server[0]), era, pg_server[1], [ONE_TOOL], ARGS),
                postgres.process.pid,
            ),
            Side(
                "sqlite",
                raw_mcp(sqlite.mcp_url(lite_server[0]), era, lite_server[1], [ONE_TOOL], ARGS),
                sqlite.process.pid,
            ),
        ]
        measured = await interleaved(
            sides,
            total=sizes.calls_c1,
            concurrency=1,
            blocks=sizes.blocks,
            max_seconds=sizes.c1_seconds,
        )
        rows[era] = {
            "sides": measured,
            "ratioP50": measured["postgresql"]["p50"] / max(1e-9, measured["sqlite"]["p50"]),
        }
    return rows


async def _resync(sizes: Sizes, a: Treadle, b: Treadle) -> dict[str, Any]:
    receipts = Receipts()
    async with a.rest() as rest:
        workspace = await create_workspace(rest, "resync-replicas")
        await configure(rest, workspace, "bench-one", "r-base")
        server_id, token = await create_server(rest, workspace, "resync-replicas")

        async def change(round_: int) -> float | None:
            await configure(rest, workspace, "bench-one", f"x{round_:03d}")
            found = await rest.get(
                "/activity", params={"workspaceId": workspace, "type": "config_change", "limit": 1}
            )
            return _parse_iso(found.json()["activity"][0]["createdAt"])

        async with AsyncExitStack() as stack:
            modern = await _connect_all(
                stack,
                receipts,
                b.mcp_url(server_id),
                token,
                sizes.resync_http,
                sizes.resync_listen,
                None,
                0,
                None,
            )
            async with anyio.create_task_group() as tg:
                await _listen_all(tg, receipts, modern)
                result = await _rounds(receipts, sizes.resync_rounds, change)
                tg.cancel_scope.cancel()
    return result


async def run(sizes: Sizes) -> dict[str, Any]:
    # Raised first, so the replicas this case starts inherit it (PostgreSQL's backends are
    # the server's children: raised where they are measured); put back at the end, since
    # the autogroup is the whole session's that started the bench.
    saved = _own_priority()
    try:
        return await _run(sizes)
    finally:
        _restore_priority(saved)


def _own_priority() -> tuple[int, str | None]:
    """This process's niceness and its autogroup's (None where there is none)."""
    try:
        found = re.search(r"nice (-?\d+)", Path("/proc/self/autogroup").read_text())
    except OSError:
        found = None
    return os.getpriority(os.PRIO_PROCESS, 0), found[1] if found else None


def _restore_priority(saved: tuple[int, str | None]) -> None:
    own, group = saved
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, own)
    if group is not None:
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(group)


async def _run(sizes: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {"niceness": NICENESS if _prioritise() else None}
    async with fresh_database() as url:
        first = Treadle.start(database_url=url)
        second: Treadle | None = None
        sqlite: Treadle | None = None
        try:
            pg_server = await _small_server(first, "replicas")
            second = first.replica(2)
            out["throughput"] = await _throughput(sizes, url, first, second, pg_server)
            out["resync"] = await _resync(sizes, first, second)
            second.stop()
            second = None
            sqlite = Treadle.start()
            lite_server = await _small_server(sqlite, "sqlite")
            for pid in await _backends(url):
                _prioritise(pid)
            out["latency"] = await _latency(sizes, first, pg_server, sqlite, lite_server)
            # What the store alone takes per call on each (the floor of the c=1 ratio).
            out["store"] = await store_floor.measure(url, calls=sizes.calls_c1, blocks=sizes.blocks)
            # And served over HTTP by a bare server: what the round trips cost any server.
            out["storeServed"] = await store_floor.measure_served(
                url, calls=sizes.calls_c1, blocks=sizes.blocks
            )
            out["errorsInLogs"] = first.errors_in_log()
        finally:
            for treadle in (second, sqlite, first):
                if treadle is not None:
                    treadle.stop()
    return out
