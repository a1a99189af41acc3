"""`python -m bench.pg_roundtrips`: the PostgreSQL statements behind one call, counted by the
server itself.

A fresh database gets `log_min_duration_statement = 0` (a setting of that database alone,
dropped with it; the server's own configuration is not touched), so PostgreSQL logs every
parse, bind/execute and simple query its sessions run. One `treadle serve` on it is warmed
up (pooled connections, prepared statements), then each path is called `--calls` times and
the server log lines of that database in between are read back and grouped by statement.

Round trips: asyncpg sends a prepared statement's bind and execute in one message batch (one
round trip, two log lines), a prepare (parse) in another, a simple query (BEGIN, COMMIT) in
one. The server log must be readable (`--log`, default Debian's for PostgreSQL 15).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx2
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.cases.replicas import SERVER_URL, _async_url, _small_server, fresh_database
from bench.config import ARGS, ONE_TOOL
from bench.procs import Treadle
from bench.rawmcp import MODERN_VERSION, RawSession

DEFAULT_LOG = "/var/log/postgresql/postgresql-15-main.log"
_LINE = re.compile(
    r"\[(?P<pid>\d+)\] \S*@(?P<db>\S+) LOG:  duration: [\d.]+ ms  "
    r"(?:(?P<step>parse|bind|execute) [^:]*: |statement: )(?P<sql>.*)"
)


def _kind(sql: str) -> str:
    """A short label for a statement: its verb and first table."""
    text = " ".join(sql.split())
    upper = text.upper()
    for verb in ("INSERT INTO", "UPDATE", "DELETE FROM"):
        if upper.startswith(verb):
            return f"{verb.split()[0]} {text.split()[len(verb.split())]}"
    if upper.startswith("WITH"):
        return "WITH " + text[5:60]
    if upper.startswith("SELECT"):
        found = re.search(r"\bFROM\s+(\w+)", text, re.IGNORECASE)
        return f"SELECT {found.group(1) if found else text[7:50]}"
    return text[:40]


def _read(log: Path, offset: int, database: str) -> list[dict[str, str]]:
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    rows = []
    for line in text.splitlines():
        match = _LINE.search(line)
        if match and match.group("db") == database:
            rows.append(match.groupdict())
    return rows


def _tally(rows: list[dict[str, str]], calls: int) -> dict[str, Any]:
    trips = 0
    by_kind: Counter[str] = Counter()
    for row in rows:
        step = row["step"]
        if step == "bind":
            continue  # same round trip as its execute
        trips += 1
        label = _kind(row["sql"])
        by_kind[("prepare " if step == "parse" else "") + label] += 1
    return {
        "roundTripsPerCall": trips / calls,
        "perCall": {k: round(v / calls, 2) for k, v in by_kind.most_common()},
    }


async def _measure(treadle: Treadle, server: tuple[str, str], log: Path, calls: int) -> Any:
    database = (treadle.env["TREADLE_DATABASE_URL"]).rsplit("/", 1)[1]
    server_id, token = server
    results: dict[str, Any] = {}
    async with httpx2.AsyncClient(timeout=30) as http:
        modern = await RawSession(http, treadle.mcp_url(server_id), MODERN_VERSION, token).open()
        legacy = await RawSession(http, treadle.mcp_url(server_id), "legacy", token).open()
        rest_url = f"{treadle.base_url}/api/v1/actions/execute"
        headers = {"Authorization": f"Bearer {treadle.api_key}"}
        echo = {
            "workspaceId": treadle.workspace_id,
            "integrationName": "bench-one",
            "integrationAlias": "bench",
            "actionName": "echo",
            "input": ARGS,
        }

        async def mcp_modern() -> None:
            await modern.call(ONE_TOOL, ARGS)

        async def mcp_legacy() -> None:
            await legacy.call(ONE_TOOL, ARGS)

        async def rest_echo() -> None:
            answer = await http.post(rest_url, json=echo, headers=headers)
            assert answer.status_code == 200, answer.text

        paths = {
            "MCP tools/call, 2026-07-28": mcp_modern,
            "MCP tools/call, handshake era": mcp_legacy,
            "REST execute": rest_echo,
        }
        for label, call in paths.items():
            for _ in range(30):  # warm: pooled connections, prepared statements, caches
                await call()
            await anyio.sleep(0.3)
            offset = (await anyio.Path(log).stat()).st_size
            for _ in range(calls):
                await call()
            await anyio.sleep(0.5)  # the log is written just after each statement
            results[label] = _tally(_read(log, offset, database), calls)
        await legacy.close()
    return results


async def main_async(calls: int, log: Path) -> dict[str, Any]:
    async with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        admin = create_async_engine(
            _async_url(SERVER_URL, "postgres"), isolation_level="AUTOCOMMIT"
        )
        try:
            async with admin.connect() as conn:
                # This database's sessions only; dropped with the database.
                await conn.execute(
                    sa.text(f'ALTER DATABASE "{name}" SET log_min_duration_statement = 0')
                )
        finally:
            await admin.dispose()
        treadle = Treadle.start(database_url=url)
        try:
            server = await _small_server(treadle, "roundtrips")
            found: dict[str, Any] = await _measure(treadle, server, log, calls)
            return found
        finally:
            treadle.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_roundtrips", description=__doc__)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--log", default=DEFAULT_LOG, help="PostgreSQL's server log")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    found = anyio.run(main_async, args.calls, Path(args.log))
    for label, row in found.items():
        print(f"{label}: {row['roundTripsPerCall']:.2f} round trips per call")
        for kind, count in row["perCall"].items():
            print(f"  {count:5.2f}  {kind}")
    print(f"({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
