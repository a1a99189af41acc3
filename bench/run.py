"""`python -m bench [--quick] [--cases calls,large,resync,rest,memory,replicas,...]`

Starts `treadle serve` (own temp data dir, ephemeral port) and the bare SDK baseline as
subprocesses, runs each case against its baseline in the same run, prints the tables and the
PASS/FAIL targets, and writes bench/results/<UTC timestamp>[-quick].json.
`python -m bench --render bench/results/X.json` prints the tables of an earlier run.
Cases: calls, large, resync, rest, memory, replicas, discovery, federation (all by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from bench.cases import (
    call_overhead,
    discovery,
    federation,
    large,
    memory,
    replicas,
    rest,
    resync,
)
from bench.config import FULL, QUICK, configure, create_server
from bench.env import Env
from bench.procs import Bare, Treadle
from bench.report import render, targets
from bench.stats import Noise, machine, source_state

RESULTS = Path(__file__).resolve().parent / "results"
CASES = ("calls", "large", "resync", "rest", "memory", "replicas", "discovery", "federation")
# Per-case ceilings (seconds, full mode): a stuck case is recorded as failed, the run goes on.
LIMITS = {
    "calls": 240,
    "large": 330,
    "resync": 150,
    "rest": 150,
    "memory": 200,
    "replicas": 300,
    "federation": 240,
    # Embedding the workspace's 609 distinct tool meanings takes ~2 min on 2 loaded cores.
    "discovery": 420,
}


def _clean(value: Any) -> Any:
    """JSON without NaN (as null) and with floats rounded to 0.01."""
    if isinstance(value, float):
        return None if value != value else round(value, 2)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


async def _case(
    results: dict[str, Any], name: str, body: Callable[[], Awaitable[dict[str, Any]]]
) -> None:
    print(f"-- {name} ...", file=sys.stderr, flush=True)
    noise = Noise().start()
    try:
        with anyio.fail_after(LIMITS[name]):
            results["cases"][name] = await body()
    except Exception as failure:
        results["cases"][name] = {
            "error": f"{type(failure).__name__}: {failure}"[:500],
            "traceback": traceback.format_exc()[-3000:],
        }
    results["noise"][name] = noise.stop()
    print(
        f"   {name} done in {results['noise'][name]['wallSeconds']} s", file=sys.stderr, flush=True
    )


async def main_async(quick: bool, chosen: list[str]) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "source": source_state(RESULTS.parent.parent),
        "sizes": sizes.__dict__,
        "cases": {},
        "noise": {},
    }
    began = time.perf_counter()
    treadle = Treadle.start()
    bare_one: Bare | None = None
    env: Env | None = None
    try:
        bare_one = Bare.start(0)
        async with treadle.rest() as api:
            await configure(api, treadle.workspace_id, "bench-one", "bench")
            small_server = await create_server(api, treadle.workspace_id, "one tool")
        env = Env(sizes, treadle, bare_one, treadle.workspace_id, small_server)
        if "calls" in chosen:
            await _case(results, "calls", lambda: call_overhead.run(env))
        if "large" in chosen:

            async def large_case() -> dict[str, Any]:
                assert env is not None
                found: dict[str, Any] = {"setup": await large.setup(env)}
                found.update(await large.run(env))
                found["treadleRssMiBWithLargeCached"] = float(round(treadle.rss_kib() / 1024, 1))
                return found

            await _case(results, "large", large_case)
            if env.bare_big is not None:
                env.bare_big.stop()
        if "resync" in chosen:
            await _case(results, "resync", lambda: resync.run(env))
        if "rest" in chosen:
            await _case(results, "rest", lambda: rest.run(env))
        if "federation" in chosen:
            await _case(results, "federation", lambda: federation.run(env))
        results["treadleLogErrors"] = treadle.errors_in_log()
    finally:
        if env is not None and env.bare_big is not None:
            env.bare_big.stop()
        if bare_one is not None:
            bare_one.stop()
        treadle.stop()
    if "memory" in chosen:
        await _case(results, "memory", lambda: memory.run(sizes))
    if "replicas" in chosen:
        await _case(results, "replicas", lambda: replicas.run(sizes))
    if "discovery" in chosen:
        # In-process (no treadle serve); --quick leaves out the semantic ranking's embedding.
        await _case(results, "discovery", lambda: discovery.run(sizes.quick, not sizes.quick))
    results["totalSeconds"] = round(time.perf_counter() - began, 1)
    results["machine"]["loadavgAtEnd"] = os.getloadavg()
    results["targets"] = targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 1-2 min)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--render", metavar="JSON", help="print the tables of an earlier run")
    args = parser.parse_args(argv)
    if args.render:
        earlier = json.loads(Path(args.render).read_text())
        earlier["targets"] = targets(earlier)
        print(render(earlier))
        return 0
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(chosen) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    # The SDK client logs a warning per call to a tool it has not listed (one of the rows does
    # that on purpose); keep the table readable.
    for name in ("mcp", "client"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.quick:
        for name in LIMITS:
            LIMITS[name] = min(LIMITS[name], 120)
    results = _clean(anyio.run(main_async, args.quick, chosen))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(render(results))
    print(f"\nresults: {path.relative_to(RESULTS.parent.parent)}  ({results['totalSeconds']} s)")
    # Targets missed are findings, not harness failures; a case that crashed is.
    return 2 if any("error" in c for c in results["cases"].values()) else 0
