"""CPU per request through treadle's whole ASGI app and the bare SDK's, in one process.

    python -m bench.inproc [--calls 1500] [--repeat 5] [--against DIR] [--rounds 3]
                           [--cases legacy,2026-07-28,rest,list-legacy,list-2026-07-28]

No sockets, no uvicorn, no other process: a raw JSON-RPC client (`bench.rawmcp`) drives each
app through `httpx2.ASGITransport`, and the figure is this process's CPU time (every thread:
the ledger's worker too) per request, the client's share included on both sides. What the
server-process benchmarks show as noise (other jobs on the machine, scheduling, socket writes)
stays out, so differences of tens of µs show up; the absolute figures are not a server's.

Each case prints treadle's and the bare app's µs per request (medians of `--repeat` runs) and
what treadle adds. The list cases list a 10,000-tool workspace (400 aliases x 25 actions; the
bare app has the same tools) from cache, page after page: their unit is one whole listing, and
`--calls` is divided by 100 for them. `--against DIR` runs the same measurement, in a child
process each round, on the source tree `DIR/src/treadle` (e.g. `git archive` of an earlier
commit) and on this one, rounds alternating, and prints both: the price of a change, measured
the same way.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2

from bench.config import ARGS, ONE_TOOL
from bench.procs import EXTRA_INTEGRATIONS, REPO
from bench.rawmcp import ERAS, RawSession

CASES = (*ERAS, "rest", *(f"list-{era}" for era in ERAS))
ALIASES = 400
Measured = dict[str, tuple[float, float]]  # case -> (treadle µs, bare µs)


def _cpu() -> float:
    return time.process_time()


@asynccontextmanager
async def _treadle() -> AsyncIterator[tuple[httpx2.AsyncClient, str, str, dict[str, Any]]]:
    os.environ["TREADLE_EXTRA_INTEGRATIONS"] = EXTRA_INTEGRATIONS
    from treadle.app import Gateway
    from treadle.bootstrap import initialise
    from treadle.http_app import build_http_app
    from treadle.settings import Settings

    with tempfile.TemporaryDirectory(prefix="treadle-inproc-") as directory:
        path = Path(directory)
        gateway = await Gateway.open(Settings.from_env(path))
        try:
            ids = await initialise(gateway.store, path)
            async with gateway.store.db.write("bench") as txn:
                await gateway.store.orgs.set_limits(
                    txn, ids.org_id, rate_limit=10**9, monthly_quota=10**9
                )
            app = build_http_app(gateway)
            transport = httpx2.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {ids.api_key}"}
            async with (
                app.router.lifespan_context(app),
                httpx2.AsyncClient(
                    transport=transport, base_url="http://127.0.0.1:8400", headers=headers
                ) as http,
            ):
                rest = "/api/v1"
                body = {
                    "integrationName": "bench-one",
                    "integrationAlias": "bench",
                    "connectionStrategy": "fixed",
                }
                made = await http.post(
                    f"{rest}/workspaces/{ids.workspace_id}/integrations", json=body
                )
                made.raise_for_status()
                server = await http.post(
                    f"{rest}/mcp/servers", json={"workspaceId": ids.workspace_id, "name": "one"}
                )
                server.raise_for_status()
                found = server.json()
                large = await http.post(f"{rest}/workspaces", json={"name": "large"})
                large.raise_for_status()
                large_id = large.json()["workspace"]["id"]
                for index in range(ALIASES):
                    made = await http.post(
                        f"{rest}/workspaces/{large_id}/integrations",
                        json={
                            **body,
                            "integrationName": "bench-many",
                            "integrationAlias": f"a{index:03d}",
                        },
                    )
                    made.raise_for_status()
                big = await http.post(
                    f"{rest}/mcp/servers", json={"workspaceId": large_id, "name": "large"}
                )
                big.raise_for_status()
                _LARGE[:] = [f"/mcp/{big.json()['server']['id']}", big.json()["token"]]
                execute = {
                    "workspaceId": ids.workspace_id,
                    "integrationName": "bench-one",
                    "integrationAlias": "bench",
                    "actionName": "echo",
                    "input": ARGS,
                }
                yield http, f"/mcp/{found['server']['id']}", found["token"], execute
        finally:
            await gateway.close()


@asynccontextmanager
async def _bare() -> AsyncIterator[tuple[httpx2.AsyncClient, str, str | None, dict[str, Any]]]:
    from starlette.routing import Mount, Route

    from bench.bare_server import BareServer, rest_echo

    bare = BareServer(0)
    app = bare.server.streamable_http_app(streamable_http_path="/mcp")
    app.router.routes.append(Route("/rest/echo", rest_echo, methods=["POST"]))
    large = BareServer(ALIASES)
    big = large.server.streamable_http_app(streamable_http_path="/mcp")
    app.router.routes.append(Mount("/large", big))
    _LARGE_BARE[:] = ["/large/mcp"]
    async with (
        app.router.lifespan_context(app),
        big.router.lifespan_context(big),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8400"
        ) as http,
    ):
        yield http, "/mcp", None, {"input": ARGS}


Loop = Callable[[int], Awaitable[None]]
# The large workspace's server: [path, token] (treadle), [path] (bare).
_LARGE: list[str] = []
_LARGE_BARE: list[str] = []


async def _loop(
    http: httpx2.AsyncClient, path: str, token: str | None, rest: Any, case: str
) -> Loop:
    if case == "rest":
        url = "/api/v1/actions/execute" if path.startswith("/mcp/") else "/rest/echo"

        async def posts(n: int) -> None:
            for _ in range(n):
                response = await http.post(url, json=rest)
                if response.status_code != 200:
                    raise RuntimeError(f"REST {response.status_code}: {response.text[:300]}")

        return posts
    if case.startswith("list-"):
        era = case.removeprefix("list-")
        treadle = path.startswith("/mcp/")
        url, key = (_LARGE[0], _LARGE[1]) if treadle else (_LARGE_BARE[0], None)
        lister = await RawSession(http, url, era, key).open()

        async def listings(n: int) -> None:
            for _ in range(n):
                cursor: str | None = None
                while True:
                    page, _size = await lister.list_page(cursor)
                    cursor = page.get("nextCursor")
                    if not cursor:
                        break

        return listings
    session = RawSession(http, path, case, token)
    await session.open()

    async def calls(n: int) -> None:
        for _ in range(n):
            result = await session.call(ONE_TOOL, ARGS)
            if result.get("isError"):
                raise RuntimeError(f"tools/call failed: {result}")

    return calls


async def _per_request(loop: Loop, calls: int, repeat: int) -> float:
    await loop(max(2, calls // 10))  # warm-up: caches, first pages, the ledger's connection
    gc.collect()
    samples = []
    for _ in range(repeat):
        began = _cpu()
        await loop(calls)
        samples.append((_cpu() - began) * 1e6 / calls)
    return statistics.median(samples)


async def measure(cases: list[str], calls: int, repeat: int) -> Measured:
    found: Measured = {}
    async with _treadle() as treadle, _bare() as bare:
        gc.freeze()  # as `treadle serve` does after start-up
        for case in cases:
            mine = await _loop(*treadle, case)
            theirs = await _loop(*bare, case)
            count = max(2, calls // 100) if case.startswith("list-") else calls
            # Interleaved halves, so a drift of the machine lands on both.
            first = await _per_request(mine, count, repeat)
            base = await _per_request(theirs, count, repeat)
            second = await _per_request(mine, count, repeat)
            found[case] = ((first + second) / 2, base)
    return found


def _print(label: str, measured: Measured) -> None:
    print(f"{label}")
    print(f"  {'case':<12} {'treadle µs':>11} {'bare µs':>9} {'extra':>8} {'ratio':>6}")
    for case, (mine, base) in measured.items():
        print(f"  {case:<12} {mine:11.0f} {base:9.0f} {mine - base:+8.0f} {mine / base:6.2f}")


def _child(tree: Path | None, cases: list[str], calls: int, repeat: int) -> Measured:
    env = dict(os.environ)
    paths = [str(tree / "src")] if tree is not None else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "bench.inproc", "--json", "--cases", ",".join(cases)]
    command += ["--calls", str(calls), "--repeat", str(repeat)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench.inproc child failed:\n{done.stderr[-3000:]}")
    loaded: dict[str, list[float]] = json.loads(done.stdout.splitlines()[-1])
    return {case: (values[0], values[1]) for case, values in loaded.items()}


def against(tree: Path, cases: list[str], calls: int, repeat: int, rounds: int) -> None:
    runs: dict[str, list[Measured]] = {"this tree": [], str(tree): []}
    for number in range(rounds):
        order = [None, tree] if number % 2 == 0 else [tree, None]
        for which in order:
            label = "this tree" if which is None else str(tree)
            runs[label].append(_child(which, cases, calls, repeat))
    print(f"{rounds} rounds, each {repeat} x {calls} requests per case and side; µs/request")
    print(f"  {'case':<12} {'this tree':>10} {'against':>10} {'change':>8}   bare (this / against)")
    for case in cases:
        mine = [run[case][0] for run in runs["this tree"]]
        then = [run[case][0] for run in runs[str(tree)]]
        bare_now = statistics.median(run[case][1] for run in runs["this tree"])
        bare_then = statistics.median(run[case][1] for run in runs[str(tree)])
        change = statistics.median(m - t for m, t in zip(mine, then, strict=True))
        print(
            f"  {case:<12} {statistics.median(mine):10.0f} {statistics.median(then):10.0f} "
            f"{change:+8.0f}   {bare_now:.0f} / {bare_then:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--against", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = [case for case in args.cases.split(",") if case]
    for case in cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r}; known: {', '.join(CASES)}")
    logging.basicConfig(
        stream=open(os.devnull, "w"),  # noqa: SIM115 (lives as long as the process)
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx2", "httpcore2", "mcp", "sqlalchemy", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.against is not None:
        if not (args.against / "src" / "treadle").is_dir():
            parser.error(f"{args.against} has no src/treadle")
        against(args.against, cases, args.calls, args.repeat, args.rounds)
        return
    measured = anyio.run(measure, cases, args.calls, args.repeat)
    if args.json:
        print(json.dumps({case: list(values) for case, values in measured.items()}))
    else:
        _print("in-process CPU per request (this process, every thread)", measured)


if __name__ == "__main__":
    main()
